package sdk

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// startShared starts a worker, as startHelper does, but on a listening
// socket it shares with other workers: lnFile becomes its fd 3, as forkd
// hands the same socket to every worker. Its stdout (a few lines per
// request) is discarded.
func startShared(t *testing.T, lnFile *os.File, addr string, args ...string) *helper {
	t.Helper()
	h := &helper{
		t:      t,
		addr:   addr,
		notes:  make(chan note, 4096),
		exited: make(chan error, 1),
	}
	h.notify = filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: h.notify, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen on notify socket: %v", err)
	}
	readerDone := make(chan struct{})
	t.Cleanup(func() { conn.Close(); <-readerDone })
	go func() {
		defer close(readerDone)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			select {
			case h.notes <- note{time.Now(), string(buf[:n])}:
			default: // request reports nobody waits for
			}
		}
	}()

	h.cmd = exec.Command(os.Args[0], args...)
	h.cmd.Env = append(cleanEnv(), helperEnv+"=1", "LISTEN_FDS=1", "LISTEN_FDNAMES=web", "NOTIFY_SOCKET="+h.notify,
		"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	h.cmd.ExtraFiles = []*os.File{lnFile}
	h.cmd.Stderr = &h.stderr
	if err := h.cmd.Start(); err != nil {
		t.Fatalf("start helper: %v", err)
	}
	go func() { h.exited <- h.cmd.Wait() }()
	t.Cleanup(func() {
		h.cmd.Process.Kill()
		if t.Failed() {
			t.Logf("helper %d stderr:\n%s", h.cmd.Process.Pid, h.stderr.String())
		}
	})
	return h
}

// TestServer_DrainSharedSocket stops workers one at a time, each replaced
// first, while clients keep sending requests to the listening socket all of
// them share, and checks that no request fails: a worker told to stop must
// answer every connection it accepted, and leave the ones it did not to the
// others.
func TestServer_DrainSharedSocket(t *testing.T) {
	const (
		workers = 4
		stops   = 10
		clients = 4
		// perStop is how many requests must succeed between a
		// replacement's READY=1 and its predecessor's SIGTERM, so that
		// every stop happens under load.
		perStop = 100
	)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	// The test keeps the socket open (and never accepts on it), so that
	// connections queue for the workers whichever of them is running.
	defer ln.Close()
	lnFile, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatalf("listener file: %v", err)
	}
	defer lnFile.Close()
	addr := ln.Addr().String()

	start := func() *helper {
		t.Helper()
		h := startShared(t, lnFile, addr, "-graceful-timeout", "10s")
		h.waitNote("READY=1")
		return h
	}
	pool := make([]*helper, workers)
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
			// A new connection for every request (Connection: close), as
			// from many clients: each one is accepted by any worker.
			c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			defer c.CloseIdleConnections()
			for {
				select {
				case <-stopLoad:
					return
				default:
				}
				if err := getHello(c, "http://"+addr+"/"); err != nil {
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
	defer func() {
		select {
		case <-stopLoad:
		default:
			close(stopLoad)
		}
		load.Wait()
	}()

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
		timeout := time.After(deadline)
		for i := range n {
			select {
			case <-served:
			case <-timeout:
				t.Fatalf("%d requests succeeded in %v, want %d (%d failed so far)", i, deadline, n, failed.Load())
			}
		}
	}

	waitServed(perStop)
	for i := range stops {
		old := pool[i%workers]
		pool[i%workers] = start()
		waitServed(perStop)
		old.signal(syscall.SIGTERM)
		old.waitNote("STOPPING=1")
		old.waitExit(0)
	}
	waitServed(perStop)
	close(stopLoad)
	load.Wait()
	for _, h := range pool {
		h.signal(syscall.SIGTERM)
		h.waitExit(0)
	}

	t.Logf("%d requests answered, %d failed, across %d stops", ok.Load(), failed.Load(), stops)
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d requests failed while workers sharing the socket were stopped; first ones:\n%s",
			n, n+ok.Load(), strings.Join(failures, "\n"))
	}
}

// getHello makes one request to url and checks it got the helper's
// "hello\n".
func getHello(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK || string(body) != "hello\n" {
		return fmt.Errorf("GET %s = %s %q, want 200 %q", url, resp.Status, body, "hello\n")
	}
	return nil
}

// acceptedConn opens a connection to h, writes head to it, and returns it
// once the worker has accepted it: a second connection, accepted after it
// (the listening socket's queue is first in, first out, and h is its only
// worker), has been answered.
func acceptedConn(t *testing.T, h *helper, head string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", h.addr, deadline)
	if err != nil {
		t.Fatalf("dial %s: %v", h.addr, err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatalf("write %q: %v", head, err)
	}
	fresh := &http.Client{Timeout: deadline, Transport: &http.Transport{DisableKeepAlives: true}}
	if err := getHello(fresh, "http://"+h.addr+"/"); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(deadline))
	return c
}

// TestServer_DrainAnswersAcceptedConnection sends the rest of a request
// after SIGTERM on a connection the worker accepted before: it must be
// answered, with Connection: close.
func TestServer_DrainAnswersAcceptedConnection(t *testing.T) {
	h := startHelper(t, nil)
	h.waitNote("READY=1")
	c := acceptedConn(t, h, "GET / HTTP/1.1\r\nHost: worker\r\n")
	h.signal(syscall.SIGTERM)
	h.waitNote("STOPPING=1")
	if _, err := io.WriteString(c, "\r\n"); err != nil {
		t.Fatalf("finish the request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read the answer to a request sent while draining: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || string(body) != "hello\n" {
		t.Errorf("answer %s %q, %v; want 200 %q", resp.Status, body, err, "hello\n")
	}
	if !resp.Close {
		t.Errorf("answer while draining without Connection: close (header %q)", resp.Header.Get("Connection"))
	}
	h.waitExit(0)
}

// TestServer_DrainSilentConnection stops a worker holding a connection
// whose client never sends a request (a browser's speculative one): it
// waits for it for newConnPatience, not for the whole graceful timeout, and
// closes it unanswered.
func TestServer_DrainSilentConnection(t *testing.T) {
	const gracefulTimeout = 20 * time.Second
	h := startHelper(t, nil, "-graceful-timeout", gracefulTimeout.String())
	h.waitNote("READY=1")
	c := acceptedConn(t, h, "")
	sent := time.Now()
	h.signal(syscall.SIGTERM)
	h.waitExit(0)
	if took := time.Since(sent); took > newConnPatience+gracefulTimeout/4 {
		t.Errorf("exited %v after SIGTERM; a silent connection should hold it about %v, not the %v graceful timeout",
			took, newConnPatience, gracefulTimeout)
	}
	if n, err := c.Read(make([]byte, 1)); n > 0 || err == nil {
		t.Errorf("silent connection read %d bytes, %v; want it closed unanswered", n, err)
	}
}
