package exporter

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/forkd/forkd/metrics"
)

// scrapeTimeout bounds how long one scrape waits for the master's answer.
const scrapeTimeout = 5 * time.Second

// Main is forkd-metrics' main: it serves /metrics on the listening socket
// of fd 3 with the numbers of the master on the socket of fd 4 (see
// Serve), and returns the exit code. SIGINT, SIGTERM and SIGHUP are
// ignored: the sidecar ends when the master closes its socket, or, after
// answering what it accepted, on SIGUSR1 (StopSignal) from the master.
func Main() int {
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, metrics.StopSignal)
	lf, conn := os.NewFile(3, "metrics socket"), os.NewFile(4, "forkd")
	if lf == nil || conn == nil {
		fmt.Fprintln(os.Stderr, "forkd-metrics: no sockets on fds 3 and 4: forkd starts this program, not a user")
		return 2
	}
	ln, err := net.FileListener(lf)
	lf.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "forkd-metrics: fd 3:", err)
		return 2
	}
	if err := Serve(ln, conn, os.Getppid(), stop); err != nil {
		fmt.Fprintln(os.Stderr, "forkd-metrics:", err)
		return 1
	}
	return 0
}

// Serve serves /metrics on ln, asking the master on conn once per scrape
// (metrics.Scrape, metrics.Answer), with the process_* families read from
// /proc/PID of the master's pid. It returns nil once something arrives on
// stop or conn reaches end of file (the master closed it): then it closes
// ln, stops keeping connections alive, and answers the scrapes of the
// connections it accepted, for a moment at most — after stop with the
// master's numbers, after end of file with an HTTP 500 (the master can no
// longer answer).
func Serve(ln net.Listener, conn io.ReadWriteCloser, pid int, stop <-chan os.Signal) error {
	defer conn.Close()
	gos, err := goFamilies()
	if err != nil {
		return fmt.Errorf("list the go_* families: %w", err)
	}
	m := newMaster(conn)
	reg := Registry(m.ask, gos, pid)
	// Every connection accepted is answered, the last ones after the
	// master is gone too (http.Server.Shutdown would close those whose
	// request it had not read yet, unanswered).
	var conns sync.WaitGroup
	srv := &http.Server{Handler: Handler(reg), ReadHeaderTimeout: 10 * time.Second,
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				conns.Add(1)
			case http.StateClosed, http.StateHijacked:
				conns.Done()
			}
		}}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-m.gone:
	case <-stop:
	}
	ln.Close()
	<-errc // Serve has counted every connection it accepted
	srv.SetKeepAlivesEnabled(false)
	answered := make(chan struct{})
	go func() {
		conns.Wait()
		close(answered)
	}()
	select {
	case <-answered:
	case <-time.After(time.Second):
	}
	srv.Close()
	return nil
}

// Handler serves g at /metrics (promhttp) and a line naming it at /. A
// scrape that g cannot gather whole (the master did not answer) is an
// HTTP 500 saying why, which Prometheus records as the target down, rather
// than a page missing families.
func Handler(g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.HTTPErrorOnError,
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
	return mux
}

// Registry returns the registry a scrape gathers: one Answer asked for
// (ask) and exported — forkd's families and go_* (of the families gos) —
// and the process_* of the process pid (the master's), read from /proc
// meanwhile.
func Registry(ask func(context.Context) (metrics.Answer, error), gos []goFamily, pid int) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{ask: ask, gos: gos}, collectors.NewProcessCollector(collectors.ProcessCollectorOpts{
		PidFn: func() (int, error) { return pid, nil },
	}))
	return reg
}

// errMasterGone is a scrape's error once the master closed the socket.
var errMasterGone = errors.New("forkd-metrics: the master closed its socket")

// master is the master at the other end of the socket: one scrape at a
// time asks it.
type master struct {
	conn io.Writer
	turn chan struct{} // holds a token while a scrape asks
	gone chan struct{} // closed at the socket's end of file

	mu      sync.Mutex
	nextID  int64
	waiting map[int64]chan metrics.Answer // by Scrape.ID, each buffered for its one answer
}

// newMaster reads conn's answers until its end of file.
func newMaster(conn io.ReadWriter) *master {
	m := &master{conn: conn, turn: make(chan struct{}, 1), gone: make(chan struct{}),
		waiting: make(map[int64]chan metrics.Answer)}
	go func() {
		defer close(m.gone)
		in := bufio.NewScanner(conn)
		in.Buffer(make([]byte, 64<<10), 64<<20)
		for in.Scan() {
			var a metrics.Answer
			if json.Unmarshal(in.Bytes(), &a) != nil {
				continue
			}
			m.mu.Lock()
			if ch, ok := m.waiting[a.ID]; ok { // else the answer to a scrape that gave up
				delete(m.waiting, a.ID)
				ch <- a
			}
			m.mu.Unlock()
		}
	}()
	return m
}

// ask sends one Scrape and returns its Answer.
func (m *master) ask(ctx context.Context) (metrics.Answer, error) {
	select {
	case m.turn <- struct{}{}:
	case <-ctx.Done():
		return metrics.Answer{}, fmt.Errorf("forkd-metrics: wait for the scrapes before: %w", ctx.Err())
	case <-m.gone:
		return metrics.Answer{}, errMasterGone
	}
	defer func() { <-m.turn }()
	ch := make(chan metrics.Answer, 1)
	m.mu.Lock()
	m.nextID++
	id := m.nextID
	m.waiting[id] = ch
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.waiting, id)
		m.mu.Unlock()
	}()
	b, _ := json.Marshal(metrics.Scrape{ID: id})
	if _, err := m.conn.Write(append(b, '\n')); err != nil {
		return metrics.Answer{}, fmt.Errorf("forkd-metrics: ask the master: %w", err)
	}
	select {
	case a := <-ch:
		return a, nil
	case <-ctx.Done():
		return metrics.Answer{}, fmt.Errorf("forkd-metrics: the master's answer: %w", ctx.Err())
	case <-m.gone:
		return metrics.Answer{}, errMasterGone
	}
}
