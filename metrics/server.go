package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/forkd/forkd/config"
)

// Server serves a registry's metrics over HTTP at /metrics, on a socket of
// the master's own: never one the workers accept on.
type Server struct {
	bind config.Bind
	ln   net.Listener
	srv  *http.Server
}

// Listen binds the [metrics] address b now, so that an address in use or
// a path that cannot be created fails the start with an error naming b; a
// unix socket file left by a dead process is replaced, one that answers is
// not. Run serves it.
func Listen(b config.Bind, reg *prometheus.Registry) (*Server, error) {
	fail := func(err error) (*Server, error) {
		return nil, fmt.Errorf("metrics: listen on [metrics] bind %q: %w", b.Raw, err)
	}
	var ln net.Listener
	var err error
	switch b.Network {
	case "tcp":
		ln, err = net.Listen("tcp", b.Address)
	case "unix":
		if err := removeStale(b.Address); err != nil {
			return fail(err)
		}
		ln, err = net.Listen("unix", b.Address)
		if err == nil && b.Mode != 0 {
			if cerr := os.Chmod(b.Address, os.FileMode(b.Mode)); cerr != nil {
				ln.Close()
				return fail(cerr)
			}
		}
	default:
		return fail(errors.New("no address"))
	}
	if err != nil {
		return fail(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             scrapeTimeout + time.Second,
	}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "forkd: metrics at /metrics")
	})
	return &Server{bind: b, ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}, nil
}

// Addr is the address the server listens on (the port the kernel chose
// for tcp port 0).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Run serves until ctx is cancelled (not an error), then closes the
// socket, waiting a moment for scrapes in progress.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("metrics: serve [metrics] bind %q: %w", s.bind.Raw, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil {
		s.srv.Close()
	}
	<-errc
	return nil
}

// removeStale removes a unix socket file at path that nothing answers on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 {
		return nil // absent, or not a socket: listen says what is wrong
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return errors.New("another process listens on it")
	}
	return os.Remove(path)
}
