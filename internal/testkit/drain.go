package testkit

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// DrainCase is a worker implementation the drain scenarios run against:
// any HTTP worker that answers GET / with a hello, says STOPPING=1 on
// SIGTERM, answers what it accepted and exits 0.
type DrainCase struct {
	// Start starts a worker on ln (nil: a socket of its own), with a
	// graceful timeout long enough for a drain under load, and returns
	// once it is started (not yet ready).
	Start func(t testing.TB, ln *net.TCPListener) *Worker
	// Hello checks the body of a 200 answer to GET /.
	Hello func(body string) error
}

// GetHello makes one request to url with c and checks it got a 200 and a
// body Hello accepts.
func (dc DrainCase) GetHello(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s = %s %q, want 200", url, resp.Status, body)
	}
	if err := dc.Hello(string(body)); err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	return nil
}

// freshClient makes a new connection for every request (Connection:
// close), as many clients do: each one is accepted by any worker.
func freshClient() *http.Client {
	return &http.Client{Timeout: Deadline, Transport: &http.Transport{DisableKeepAlives: true}}
}

// DrainSharedSocket stops workers one at a time, each replaced first,
// while clients keep sending requests to the listening socket all of them
// share, and checks that no request fails: a worker told to stop must
// answer every connection it accepted, and leave the ones it did not to
// the others.
func DrainSharedSocket(t *testing.T, dc DrainCase) {
	const (
		workers = 4
		stops   = 10
		clients = 4
		// perStop is how many requests must succeed between a
		// replacement's READY=1 and its predecessor's SIGTERM, so that
		// every stop happens under load.
		perStop = 100
	)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	// The test keeps the socket open (and never accepts on it), so that
	// connections queue for the workers whichever of them is running.
	ln := l.(*net.TCPListener)
	defer ln.Close()
	url := "http://" + ln.Addr().String() + "/"

	start := func() *Worker {
		t.Helper()
		w := dc.Start(t, ln)
		w.Notify.Wait("READY=1")
		return w
	}
	pool := make([]*Worker, workers)
	for i := range pool {
		pool[i] = start()
	}

	var ok, failed atomic.Int64
	var mu sync.Mutex
	var failures []string              // the first few
	served := make(chan struct{}, 256) // a value per success, while there is room
	stopLoad := make(chan struct{})
	var load sync.WaitGroup
	for range clients {
		load.Add(1)
		go func() {
			defer load.Done()
			c := freshClient()
			defer c.CloseIdleConnections()
			for {
				select {
				case <-stopLoad:
					return
				default:
				}
				if err := dc.GetHello(c, url); err != nil {
					failed.Add(1)
					mu.Lock()
					if len(failures) < 10 {
						failures = append(failures, err.Error())
					}
					mu.Unlock()
					continue
				}
				ok.Add(1)
				select {
				case served <- struct{}{}:
				default: // nobody is counting now
				}
			}
		}()
	}
	var stopOnce sync.Once
	endLoad := func() {
		stopOnce.Do(func() { close(stopLoad) })
		load.Wait()
	}
	defer endLoad()

	// waitServed waits for n more requests to succeed.
	waitServed := func(n int) {
		t.Helper()
		for drained := false; !drained; { // successes from before
			select {
			case <-served:
			default:
				drained = true
			}
		}
		timeout := time.NewTimer(Deadline)
		defer timeout.Stop()
		for i := range n {
			select {
			case <-served:
			case <-timeout.C:
				t.Fatalf("%d requests succeeded in %v, want %d (%d failed so far)", i, Deadline, n, failed.Load())
			}
		}
	}

	waitServed(perStop)
	for i := range stops {
		old := pool[i%workers]
		pool[i%workers] = start()
		waitServed(perStop)
		old.Signal(syscall.SIGTERM)
		old.Notify.Wait("STOPPING=1")
		old.WaitExit(0)
	}
	waitServed(perStop)
	endLoad()
	for _, w := range pool {
		w.Signal(syscall.SIGTERM)
		w.WaitExit(0)
	}

	t.Logf("%d requests answered, %d failed, across %d stops", ok.Load(), failed.Load(), stops)
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d requests failed while workers sharing the socket were stopped; first ones:\n%s",
			n, n+ok.Load(), strings.Join(failures, "\n"))
	}
}

// AcceptedConn opens a connection to w, writes head to it, and returns it
// once the worker has accepted it: a second connection, accepted after it
// (the listening socket's queue is first in, first out, and w is its only
// worker), has been answered. The connection closes when the test ends.
func (dc DrainCase) AcceptedConn(t testing.TB, w *Worker, head string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", w.Addr, Deadline)
	if err != nil {
		t.Fatalf("dial %s: %v", w.Addr, err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatalf("write %q: %v", head, err)
	}
	if err := dc.GetHello(freshClient(), "http://"+w.Addr+"/"); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(Deadline))
	return c
}

// DrainAnswersAcceptedConnection sends the rest of a request after
// SIGTERM on a connection the worker accepted before: it must be answered,
// with Connection: close.
func DrainAnswersAcceptedConnection(t *testing.T, dc DrainCase) {
	w := dc.Start(t, nil)
	w.Notify.Wait("READY=1")
	c := dc.AcceptedConn(t, w, "GET / HTTP/1.1\r\nHost: worker\r\n")
	w.Signal(syscall.SIGTERM)
	w.Notify.Wait("STOPPING=1")
	if _, err := io.WriteString(c, "\r\n"); err != nil {
		t.Fatalf("finish the request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read the answer to a request sent while draining: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("answer %s %q, %v; want 200", resp.Status, body, err)
	} else if err := dc.Hello(string(body)); err != nil {
		t.Errorf("answer while draining: %v", err)
	}
	if !resp.Close {
		t.Errorf("answer while draining without Connection: close (header %q)", resp.Header.Get("Connection"))
	}
	w.WaitExit(0)
}

// DrainAnswersIdleKeepAlive sends a second request after SIGTERM on a
// keep-alive connection that was idle when the drain began, as a client's
// connection pool does: it must be answered, with Connection: close,
// rather than find the connection closed under it.
func DrainAnswersIdleKeepAlive(t *testing.T, dc DrainCase) {
	w := dc.Start(t, nil)
	w.Notify.Wait("READY=1")
	c, err := net.DialTimeout("tcp", w.Addr, Deadline)
	if err != nil {
		t.Fatalf("dial %s: %v", w.Addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(Deadline))
	r := bufio.NewReader(c)
	get := func(what string) *http.Response {
		t.Helper()
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: worker\r\n\r\n"); err != nil {
			t.Fatalf("%s: write: %v", what, err)
		}
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("%s: read the answer: %v", what, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: answer %s %q, %v; want 200", what, resp.Status, body, err)
		}
		if err := dc.Hello(string(body)); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return resp
	}
	if first := get("before the drain"); first.Close {
		t.Fatal("the first answer closed the connection: no keep-alive to test")
	}
	w.Signal(syscall.SIGTERM)
	w.Notify.Wait("STOPPING=1")
	if second := get("on the idle connection, while draining"); !second.Close {
		t.Errorf("answer while draining without Connection: close (header %q)", second.Header.Get("Connection"))
	}
	w.WaitExit(0)
}
