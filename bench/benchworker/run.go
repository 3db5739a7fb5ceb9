package benchworker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	sdactivation "github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
)

// Run is the bench worker's main: it reads its configuration from the
// environment (the Env constants, LISTEN_FDS, NOTIFY_SOCKET, WATCHDOG_USEC),
// serves HTTP on the inherited sockets (fds 3…), answering "ok PID" to
// every request, sends READY=1 to NOTIFY_SOCKET and a WATCHDOG=1 heartbeat
// every WATCHDOG_USEC/2, and reports its start and readiness to the probe
// socket (EnvProbe).
//
// GET /hang makes it a hung worker: it stops heartbeating, stops accepting
// and never answers, so Run never returns (only a signal's default action
// ends the process). SIGTERM, or the end of ctx, makes it report "stop",
// finish in-flight requests (not a hung one) and return nil. It returns an error when it
// cannot serve. EnvBootDelay, EnvCountRequests and EnvNotifyRate add a boot
// time, request counting and a notify flood; EnvSyncMS makes it a slow
// synchronous worker.
func Run(ctx context.Context) error {
	started := time.Now()
	probe := dialProbe(os.Getenv(EnvProbe))
	defer probe.Close()
	probe.Send(KindStart, started)

	if ms, _ := strconv.Atoi(os.Getenv(EnvBootDelay)); ms > 0 {
		<-time.After(time.Duration(ms) * time.Millisecond) // the simulated boot itself
	}

	if os.Getenv(EnvAlone) == "1" {
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	}
	listeners, err := sdactivation.Listeners()
	if err != nil {
		return fmt.Errorf("bench worker: take inherited sockets: %w", err)
	}
	if len(listeners) == 0 {
		return errors.New("bench worker: no inherited sockets (LISTEN_FDS unset or not for this pid)")
	}

	pid := os.Getpid()
	hung := make(chan struct{})
	var hangOnce sync.Once
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "ok %d\n", pid)
	})
	mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) {
		hangOnce.Do(func() {
			close(hung)
			for _, l := range listeners {
				l.Close()
			}
			probe.Send(KindHang, time.Now())
		})
		select {} // hung: never answers
	})
	var handler http.Handler = mux
	if os.Getenv(EnvCountRequests) == "1" {
		handler = newRequestCounter(mux)
	}
	if ms, _ := strconv.Atoi(os.Getenv(EnvSyncMS)); ms > 0 {
		handler = slowly(handler, time.Duration(ms)*time.Millisecond)
		for i, l := range listeners {
			listeners[i] = newSyncListener(l)
		}
	}
	conns := newConnTracker()
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, ConnState: conns.track}

	served := make(chan error, len(listeners))
	for _, l := range listeners {
		go func(l net.Listener) { served <- srv.Serve(l) }(l)
	}

	usec, _ := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if usec > 0 {
		go heartbeat(time.Duration(usec)*time.Microsecond/2, hung)
	}

	probe.Send(KindReady, time.Now())
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		return fmt.Errorf("bench worker: notify ready: %w", err)
	}

	if rate, _ := strconv.Atoi(os.Getenv(EnvNotifyRate)); rate > 0 {
		usr1 := make(chan os.Signal, 1)
		signal.Notify(usr1, syscall.SIGUSR1)
		go flood(rate, usr1, probe)
	}

	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	select {
	case <-term:
	case <-ctx.Done():
	case <-hung:
		select {} // a hung worker only leaves by a signal's default action
	case err := <-served:
		select {
		case <-hung: // the hang closed the listeners
			select {}
		default:
			return fmt.Errorf("bench worker: serve: %w", err)
		}
	}
	probe.Send(KindStop, time.Now())
	dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	drain(dctx, srv, listeners, served, conns)
	return nil
}
