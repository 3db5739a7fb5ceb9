package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	sdactivation "github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/forkd/forkd/sdk/httpdrain"
)

// errCrash is what run returns when -exit-after elapses.
var errCrash = errors.New("-exit-after elapsed: crashing on purpose")

// options are the demo's command-line flags.
type options struct {
	addr            string
	bootDelay       time.Duration
	exitAfter       time.Duration
	gracefulTimeout time.Duration
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("forkd-demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.addr, "addr", "127.0.0.1:8080", "address to listen on when no socket is inherited (LISTEN_FDS unset)")
	fs.DurationVar(&o.bootDelay, "boot-delay", 0, "wait this long before serving and READY=1 (simulates a slow boot)")
	fs.DurationVar(&o.exitAfter, "exit-after", 0, "crash (exit 1) after this long, for crash-loop demos; 0 = never")
	fs.DurationVar(&o.gracefulTimeout, "graceful-timeout", 30*time.Second, "longest drain after SIGTERM before open connections are closed")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("parse flags: unexpected arguments %q", fs.Args())
	}
	return o, nil
}

// run is the whole worker: it gets its sockets, serves HTTP on them,
// reports readiness and heartbeats, and handles signals until it is told to
// stop. A cancelled ctx stops it like SIGTERM does. It returns nil on an
// ordinary stop, errCrash when -exit-after elapsed, and any other error when
// it could not serve.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	opts, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	workerID := envOr("FORKD_WORKER_ID", "-")
	generation := envOr("FORKD_GENERATION", "-")
	pid := os.Getpid()
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("worker_id", workerID, "pid", pid)

	// Subscribe before anything slow so that no signal takes its default
	// action (QUIT would dump goroutines) while the worker boots.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGUSR1)
	defer signal.Stop(sigs)

	listeners, err := listen(opts.addr)
	if err != nil {
		return err
	}

	var crash <-chan time.Time
	if opts.exitAfter > 0 {
		t := time.NewTimer(opts.exitAfter)
		defer t.Stop()
		crash = t.C
	}

	if opts.bootDelay > 0 {
		log.Info("booting", "boot_delay", opts.bootDelay)
		boot := time.NewTimer(opts.bootDelay)
		defer boot.Stop()
		for booted := false; !booted; {
			select {
			case <-boot.C:
				booted = true
			case <-crash:
				closeAll(listeners)
				return errCrash
			case <-ctx.Done():
				closeAll(listeners)
				return nil
			case sig := <-sigs:
				if sig == syscall.SIGUSR1 {
					log.Info("reopening logs")
					continue
				}
				log.Info("stopping before serving", "signal", sig.String())
				closeAll(listeners)
				return nil
			}
		}
	}

	conns := httpdrain.NewTracker()
	srv := &http.Server{
		Handler:           conns.Wrap(handler(workerID, generation, pid)),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ConnState:         conns.ConnState,
	}
	// closing is set once a drain closes the listeners: the Serve loops
	// then return net.ErrClosed, which is no failure.
	var closing atomic.Bool
	var serving sync.WaitGroup
	serveErr := make(chan error, len(listeners))
	addrs := make([]string, 0, len(listeners))
	for _, ln := range listeners {
		addrs = append(addrs, ln.Addr().Network()+":"+ln.Addr().String())
		serving.Add(1)
		go func() {
			defer serving.Done()
			err := srv.Serve(ln)
			if errors.Is(err, http.ErrServerClosed) || (closing.Load() && errors.Is(err, net.ErrClosed)) {
				return
			}
			serveErr <- fmt.Errorf("serve %s: %w", ln.Addr(), err)
		}()
	}
	served := make(chan struct{}) // closed once every Serve loop returned
	go func() {
		serving.Wait()
		close(served)
	}()
	// A drain runs in the background while the loop below heartbeats;
	// returning cuts it short.
	drainCtx, cancelDrain := context.WithCancel(context.Background())
	defer cancelDrain()
	var drained <-chan error // non-nil once a drain is under way
	drain := func(why string) {
		if drained != nil {
			return // one drain is enough
		}
		log.Info("draining", "reason", why, "graceful_timeout", opts.gracefulTimeout)
		closing.Store(true)
		drained = httpdrain.Start(drainCtx, opts.gracefulTimeout, srv, listeners, served, conns)
		notify(log, daemon.SdNotifyStopping+"\nSTATUS=draining")
	}
	status := "serving on " + strings.Join(addrs, ", ")
	log.Info("serving", "addrs", strings.Join(addrs, ","))
	notify(log, daemon.SdNotifyReady+"\nSTATUS="+status)

	var heartbeat <-chan time.Time
	if interval, err := daemon.SdWatchdogEnabled(false); err != nil {
		log.Warn("watchdog disabled", "err", err)
	} else if interval > 0 {
		ticker := time.NewTicker(interval / 2)
		defer ticker.Stop()
		heartbeat = ticker.C
		log.Info("heartbeating", "every", interval/2)
	}

	done := ctx.Done()
	for {
		select {
		case <-heartbeat:
			notify(log, daemon.SdNotifyWatchdog)
		case err := <-serveErr:
			srv.Close()
			return err
		case <-crash:
			log.Error("exit-after elapsed, crashing", "exit_after", opts.exitAfter)
			srv.Close()
			return errCrash
		case err := <-drained:
			if err != nil {
				log.Warn("drain cut short, closing open connections", "err", err)
				srv.Close()
			}
			log.Info("stopped")
			return nil
		case <-done:
			done = nil // drain once
			drain("context cancelled")
		case sig := <-sigs:
			switch sig {
			case syscall.SIGUSR1:
				log.Info("reopening logs") // nothing to reopen: logs go to stderr
			case syscall.SIGTERM:
				drain("SIGTERM")
			default: // SIGINT, SIGQUIT: quick exit
				log.Info("exiting at once", "signal", sig.String())
				srv.Close()
				return nil
			}
		}
	}
}

// listen returns the inherited sockets, or binds addr when there are none.
func listen(addr string) ([]net.Listener, error) {
	inherited, err := sdactivation.Listeners()
	if err != nil {
		return nil, fmt.Errorf("get inherited sockets: %w", err)
	}
	var listeners []net.Listener
	for _, ln := range inherited {
		if ln != nil { // nil: an inherited fd that is not a stream socket
			listeners = append(listeners, ln)
		}
	}
	if len(inherited) > 0 {
		if len(listeners) == 0 {
			return nil, fmt.Errorf("get inherited sockets: none of the %d is a listening stream socket", len(inherited))
		}
		return listeners, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s (no LISTEN_FDS): %w", addr, err)
	}
	return []net.Listener{ln}, nil
}

// handler answers GET / and GET /sleep?d=<duration>.
func handler(workerID, generation string, pid int) http.Handler {
	hello := fmt.Sprintf("hello from worker %s (pid %d, generation %s)\n", workerID, pid, generation)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, hello)
	})
	mux.HandleFunc("GET /sleep", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("d"))
		if err != nil || d < 0 {
			http.Error(w, "d must be a duration such as 2s", http.StatusBadRequest)
			return
		}
		// Headers first, so that a client knows the request is in flight.
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		http.NewResponseController(w).Flush()
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			io.WriteString(w, hello)
		case <-r.Context().Done():
		}
	})
	return mux
}

// notify sends state to NOTIFY_SOCKET if there is one; failures are logged,
// not fatal: the worker serves either way.
func notify(log *slog.Logger, state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		log.Warn("sd_notify failed", "state", state, "err", err)
	}
}

func closeAll(listeners []net.Listener) {
	for _, ln := range listeners {
		ln.Close()
	}
}

func envOr(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}
