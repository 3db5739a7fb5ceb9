package sdk

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/forkd/forkd/sdk/httpdrain"
	"github.com/forkd/forkd/sdk/reqstats"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Defaults for the Server fields left zero.
const (
	// DefaultGracefulTimeout is Server.GracefulTimeout's default, as
	// Gunicorn's graceful_timeout and forkd's.
	DefaultGracefulTimeout = 30 * time.Second
	// DefaultReportEvery is Server.ReportEvery's default: forkd gets at
	// most one request report a second from each worker.
	DefaultReportEvery = time.Second
)

// Server serves an http.Handler on the sockets the worker inherited, the
// way forkd expects a worker to: it reports readiness, heartbeats, request
// counts and latencies on NOTIFY_SOCKET, and gives TERM, INT and QUIT
// their Gunicorn meanings. The zero value serves http.DefaultServeMux with
// the defaults below. A Server runs once; its fields must not change while
// it runs.
type Server struct {
	// Handler answers the requests; nil means http.DefaultServeMux.
	Handler http.Handler
	// Hooks run around every request, inside the worker.
	Hooks Hooks
	// Bounds are the latency buckets' upper bounds reported in
	// FORKD_REQUEST_STATS: strictly increasing, positive, whole
	// microseconds. Empty means DefaultBounds().
	Bounds []time.Duration
	// GracefulTimeout bounds the drain after SIGTERM or a cancelled
	// context: requests still running after it have their connections
	// closed. Zero or less means DefaultGracefulTimeout (30s), Gunicorn's
	// graceful_timeout; forkd's own graceful_timeout should not be shorter.
	GracefulTimeout time.Duration
	// ReportEvery is the shortest time between two request reports on
	// NOTIFY_SOCKET. Zero or less means DefaultReportEvery (1s).
	ReportEvery time.Duration
	// Logger receives the server's few log lines (serving, draining,
	// stopped, notify failures) and net/http's errors; nil means
	// slog.Default().
	Logger *slog.Logger
}

// Serve serves h on the inherited sockets with the Server defaults until
// SIGTERM (graceful), SIGINT or SIGQUIT (at once), and returns nil then.
// It is (&Server{Handler: h}).Run(context.Background()): Run itself
// listens for the signals. It returns an error when there is no socket to
// serve on (ErrNoListeners) or serving failed.
func Serve(h http.Handler) error {
	return (&Server{Handler: h}).Run(context.Background())
}

// Run serves s.Handler on every socket from Listeners until it is told to
// stop, and returns nil then; it returns an error when it cannot start
// (no sockets, bad Bounds) or a socket fails.
//
// Once serving it sends READY=1 with a STATUS= line naming the addresses.
// When WATCHDOG_USEC is set (and WATCHDOG_PID, if set, is this process) it
// sends WATCHDOG=1 every half of it, draining included. Every ReportEvery
// during which requests finished it sends FieldRequests and
// FieldRequestStats in one datagram; requests that finish after the last
// tick are reported once more as Run returns.
//
// Stopping: a cancelled ctx or SIGTERM sends STOPPING=1 and shuts the
// server down gracefully, for at most GracefulTimeout, after which the
// remaining connections are closed. It closes this process's sockets
// first, so that the kernel hands new connections to the other workers
// sharing them; then it answers every connection it had already accepted
// (one whose client sends nothing for 5 seconds excepted) and every
// request in flight, with keep-alive off; then it closes the idle
// connections and returns. SIGINT or SIGQUIT send STOPPING=1 and close
// every connection at once. SIGUSR1, which forkd forwards for reopening
// logs, is caught so that it does not kill the process (Go's default);
// subscribe to it with signal.Notify to act on it.
func (s *Server) Run(ctx context.Context) error {
	log := s.Logger
	if log == nil {
		log = slog.Default()
	}
	bounds := slices.Clone(s.Bounds) // the recorder keeps them
	if len(bounds) == 0 {
		bounds = DefaultBounds()
	}
	if err := checkBounds(bounds); err != nil {
		return fmt.Errorf("check Server.Bounds: %w", err)
	}
	gracefulTimeout := s.GracefulTimeout
	if gracefulTimeout <= 0 {
		gracefulTimeout = DefaultGracefulTimeout
	}
	reportEvery := s.ReportEvery
	if reportEvery <= 0 {
		reportEvery = DefaultReportEvery
	}
	handler := s.Handler
	if handler == nil {
		handler = http.DefaultServeMux
	}

	// Subscribe before anything else, so that no signal takes its default
	// action (QUIT dumps goroutines, USR1 kills) once Run started.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGUSR1)
	defer signal.Stop(sigs)

	listeners, err := Listeners()
	if err != nil {
		return err
	}

	rec := newRecorder(bounds)
	conns := httpdrain.NewTracker()
	srv := &http.Server{
		Handler:   conns.Wrap(instrument(handler, s.Hooks, rec)),
		ErrorLog:  slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ConnState: conns.ConnState,
	}
	var (
		serving sync.WaitGroup
		// closing is set once a drain closes the listeners: the Serve
		// loops then return net.ErrClosed, which is no failure.
		closing atomic.Bool
	)
	serveErr := make(chan error, len(listeners))
	addrs := make([]string, 0, len(listeners))
	for _, ln := range listeners {
		addrs = append(addrs, ln.Addr().Network()+":"+ln.Addr().String())
		serving.Add(1)
		go func(ln net.Listener) {
			defer serving.Done()
			err := srv.Serve(ln)
			if errors.Is(err, http.ErrServerClosed) || (closing.Load() && errors.Is(err, net.ErrClosed)) {
				return
			}
			serveErr <- fmt.Errorf("serve %s: %w", ln.Addr(), err)
		}(ln)
	}
	served := make(chan struct{}) // closed once every Serve loop returned
	go func() {
		serving.Wait()
		close(served)
	}()
	// A drain runs in the background while the loop below heartbeats;
	// stop cuts it short.
	drainCtx, cancelDrain := context.WithCancel(context.Background())
	defer cancelDrain()
	// stop closes what is left and reports what finished; Run returns
	// after it.
	stop := func() {
		cancelDrain()
		srv.Close()
		serving.Wait()
		send(log, rec.take())
	}

	status := "serving on " + strings.Join(addrs, ", ")
	log.Info("serving", "addrs", strings.Join(addrs, ","))
	// Idle from the start: forkd shows the worker idle, not merely ready,
	// before its first request.
	send(log, daemon.SdNotifyReady+"\nSTATUS="+status+"\n"+reqstats.FieldInflight+"=0")

	var heartbeat <-chan time.Time
	if interval, err := daemon.SdWatchdogEnabled(false); err != nil {
		log.Warn("watchdog disabled: bad WATCHDOG_USEC or WATCHDOG_PID", "err", err)
	} else if interval > 0 {
		t := time.NewTicker(max(interval/2, time.Microsecond))
		defer t.Stop()
		heartbeat = t.C
	}
	report := time.NewTicker(reportEvery)
	defer report.Stop()

	done := ctx.Done()
	var drained <-chan error // non-nil once a drain is under way
	drain := func(why string) {
		if drained != nil {
			return
		}
		log.Info("draining", "reason", why, "graceful_timeout", gracefulTimeout)
		closing.Store(true)
		drained = httpdrain.Start(drainCtx, gracefulTimeout, srv, listeners, served, conns)
		send(log, daemon.SdNotifyStopping+"\nSTATUS=draining")
	}
	for {
		select {
		case <-heartbeat:
			send(log, daemon.SdNotifyWatchdog)
		case <-report.C:
			send(log, rec.take())
		case err := <-serveErr:
			log.Error("serving failed", "err", err)
			stop()
			return err
		case err := <-drained:
			if err != nil {
				log.Warn("graceful timeout elapsed, closing open connections", "err", err)
			}
			stop()
			log.Info("stopped")
			return nil
		case <-done:
			done = nil
			drain("context cancelled")
		case sig := <-sigs:
			switch sig {
			case syscall.SIGTERM:
				drain("SIGTERM")
			case syscall.SIGUSR1:
				log.Info("SIGUSR1: nothing to reopen in the worker SDK")
			default: // SIGINT, SIGQUIT: quick exit
				log.Info("exiting at once", "signal", sig.String())
				if drained == nil {
					send(log, daemon.SdNotifyStopping)
				}
				stop()
				return nil
			}
		}
	}
}

// send sends state to NOTIFY_SOCKET unless it is empty. A failure is
// logged, not returned: the worker serves either way.
func send(log *slog.Logger, state string) {
	if state == "" {
		return
	}
	if err := notify(state); err != nil {
		log.Warn("sd_notify failed", "err", err)
	}
}
