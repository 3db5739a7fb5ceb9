package bench

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

// The environment variables of the bench worker.
const (
	// EnvWorker set to "1" makes the bench test binary run RunWorker
	// instead of its tests.
	EnvWorker = "BENCH_WORKER"
	// EnvProbe names the unixgram socket the worker reports its "start",
	// "ready" and "hang" events to; unset, it reports nothing.
	EnvProbe = "BENCH_PROBE"
	// EnvAlone set to "1" makes the worker take the inherited sockets
	// whatever LISTEN_PID says: the benchmark runs it without a master to
	// time its own boot, and cannot know its pid before exec.
	EnvAlone = "BENCH_ALONE"
	// EnvBootDelay is a boot time in milliseconds the worker spends after
	// its "start" probe and before it serves (an application's imports
	// and warm-up); unset or 0, none. bench/app.py sleeps as long at
	// import when Gunicorn's workers get it.
	EnvBootDelay = "BENCH_BOOT_DELAY_MS"
	// EnvCountRequests set to "1" makes the worker report its finished
	// requests as FORKD_REQUESTS=<total> on NOTIFY_SOCKET, as the worker
	// SDK does for max_requests: at most every 100 ms, and once more 100 ms
	// after the last request of a burst.
	EnvCountRequests = "BENCH_COUNT_REQUESTS"
	// EnvNotifyRate is a rate in datagrams per second: SIGUSR1 toggles a
	// flood of WATCHDOG=1 and STATUS= datagrams at that rate on
	// NOTIFY_SOCKET, and while it runs the worker reports how many it has
	// sent ("sent PID COUNT UNIX-NANOS", see ParseSent) every 250 ms.
	EnvNotifyRate = "BENCH_NOTIFY_RATE"
)

// The kinds of probe events.
const (
	// KindStart is sent first thing in the worker's main (in Gunicorn's
	// post_fork hook).
	KindStart = "start"
	// KindReady is sent right before the worker's READY=1 (in Gunicorn's
	// post_worker_init hook).
	KindReady = "ready"
	// KindHang is sent when a worker starts serving GET /hang, after which
	// it never answers, heartbeats nor accepts again.
	KindHang = "hang"
	// KindStop is sent when the worker gets SIGTERM, before it stops
	// accepting (in-flight requests still finish).
	KindStop = "stop"
	// KindSent is the flood's progress report: "sent PID COUNT UNIX-NANOS";
	// KindFlooded the same, sent when the flood is toggled off.
	KindSent    = "sent"
	KindFlooded = "flooded"
)

// RunWorker is the bench worker: the program forkd manages in the
// benchmarks, written against the plain systemd protocols with go-systemd.
// It serves HTTP on the inherited sockets (fds 3…, LISTEN_FDS), answering
// "ok PID" to every request, sends READY=1 to NOTIFY_SOCKET and a WATCHDOG=1
// heartbeat every WATCHDOG_USEC/2, and reports its start and readiness to
// the probe socket (EnvProbe).
//
// GET /hang makes it a hung worker: it stops heartbeating, stops accepting
// and never answers. SIGTERM makes it report "stop", finish in-flight
// requests (not a hung one) and return nil. It returns an error when it
// cannot serve. EnvBootDelay, EnvCountRequests and EnvNotifyRate add a boot
// time, request counting and a notify flood.
func RunWorker() error {
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
		probe.Send(KindStop, time.Now())
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		drain(ctx, srv, listeners, served, conns)
		return nil
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
}

// heartbeat sends WATCHDOG=1 every interval until hung is closed.
func heartbeat(interval time.Duration, hung <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			daemon.SdNotify(false, daemon.SdNotifyWatchdog)
		case <-hung:
			return
		}
	}
}

// probeConn sends probe events; a nil one sends nothing.
type probeConn struct{ c *net.UnixConn }

// dialProbe connects to the probe socket at path; "" or a failure give a
// probeConn that sends nothing (the worker must serve regardless).
func dialProbe(path string) *probeConn {
	if path == "" {
		return &probeConn{}
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench worker: probe %s: %v\n", path, err)
		return &probeConn{}
	}
	return &probeConn{c: c}
}

// Send reports an event of kind at t as "KIND PID UNIX-NANOS". It is safe
// for concurrent use (each event is one datagram).
func (p *probeConn) Send(kind string, t time.Time) {
	if p.c == nil {
		return
	}
	fmt.Fprintf(p.c, "%s %d %d", kind, os.Getpid(), t.UnixNano())
}

// SendCount reports a count at t as "KIND PID COUNT UNIX-NANOS".
func (p *probeConn) SendCount(kind string, n uint64, t time.Time) {
	if p.c == nil {
		return
	}
	fmt.Fprintf(p.c, "%s %d %d %d", kind, os.Getpid(), n, t.UnixNano())
}

// Close closes the connection.
func (p *probeConn) Close() {
	if p.c != nil {
		p.c.Close()
	}
}
