package main

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

// startShared starts the demo, as startDemo does, but on a listening
// socket it shares with other workers: lnFile becomes its fd 3, as forkd
// hands the same socket to every worker.
func startShared(t *testing.T, lnFile *os.File, url string, args ...string) *demo {
	t.Helper()
	d := &demo{
		t:      t,
		url:    url,
		notes:  make(chan string, 256),
		lines:  make(chan string, 256),
		exited: make(chan error, 1),
	}
	d.notify = filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: d.notify, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen on notify socket: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			select {
			case d.notes <- string(buf[:n]):
			default:
			}
		}
	}()

	d.cmd = exec.Command(os.Args[0], args...)
	d.cmd.Env = append(cleanEnv(), helperEnv+"=1", "LISTEN_FDS=1", "LISTEN_FDNAMES=web", "NOTIFY_SOCKET="+d.notify,
		// A race-enabled binary sleeps a second before it exits unless told not to.
		"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	d.cmd.ExtraFiles = []*os.File{lnFile}
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatalf("stderr pipe: %v", err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start demo: %v", err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			d.mu.Lock()
			d.stderr = append(d.stderr, sc.Text())
			d.mu.Unlock()
		}
		d.exited <- d.cmd.Wait()
	}()
	t.Cleanup(func() {
		d.cmd.Process.Kill()
		<-d.exited
		if t.Failed() {
			d.mu.Lock()
			t.Logf("demo %d stderr:\n%s", d.cmd.Process.Pid, strings.Join(d.stderr, "\n"))
			d.mu.Unlock()
		}
	})
	return d
}

// TestDemo_DrainSharedSocket stops demo workers one at a time, each
// replaced first, while clients keep sending requests to the listening
// socket all of them share, and checks that no request fails: a worker
// told to stop must answer every connection it accepted, and leave the ones
// it did not to the others.
func TestDemo_DrainSharedSocket(t *testing.T) {
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
	url := "http://" + ln.Addr().String() + "/"

	start := func() *demo {
		t.Helper()
		d := startShared(t, lnFile, url, "-graceful-timeout", "10s")
		d.waitNote("READY=1")
		return d
	}
	pool := make([]*demo, workers)
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
			for {
				select {
				case <-stopLoad:
					return
				default:
				}
				if err := getHello(c, url); err != nil {
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
		if err := old.waitExit(); err != nil {
			t.Fatalf("exit after SIGTERM: %v, want status 0", err)
		}
	}
	waitServed(perStop)
	endLoad()
	for _, d := range pool {
		d.signal(syscall.SIGTERM)
		if err := d.waitExit(); err != nil {
			t.Errorf("exit after SIGTERM: %v, want status 0", err)
		}
	}

	t.Logf("%d requests answered, %d failed, across %d stops", ok.Load(), failed.Load(), stops)
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d requests failed while workers sharing the socket were stopped; first ones:\n%s",
			n, n+ok.Load(), strings.Join(failures, "\n"))
	}
}

// getHello makes one request to url and checks it got the demo's hello.
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
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "hello from worker ") {
		return fmt.Errorf("GET %s = %s %q, want 200 and a hello", url, resp.Status, body)
	}
	return nil
}

// TestDemo_DrainAnswersAcceptedConnection sends the rest of a request after
// SIGTERM on a connection the worker accepted before: it must be answered,
// with Connection: close.
func TestDemo_DrainAnswersAcceptedConnection(t *testing.T) {
	d := startDemo(t, nil)
	d.waitNote("READY=1")
	host := strings.TrimPrefix(d.url, "http://")
	c, err := net.DialTimeout("tcp", host, deadline)
	if err != nil {
		t.Fatalf("dial %s: %v", host, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(deadline))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: demo\r\n"); err != nil {
		t.Fatalf("start a request: %v", err)
	}
	// A second connection, accepted after the first (the socket's queue is
	// first in, first out, and the demo its only worker): once it is
	// answered, the first one has been accepted.
	if err := getHello(client, d.url+"/"); err != nil {
		t.Fatal(err)
	}

	d.signal(syscall.SIGTERM)
	d.waitNote("STOPPING=1")
	if _, err := io.WriteString(c, "\r\n"); err != nil {
		t.Fatalf("finish the request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read the answer to a request sent while draining: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "hello from worker ") {
		t.Errorf("answer %s %q, %v; want 200 and a hello", resp.Status, body, err)
	}
	if !resp.Close {
		t.Errorf("answer while draining without Connection: close (header %q)", resp.Header.Get("Connection"))
	}
	if err := d.waitExit(); err != nil {
		t.Errorf("exit after drain: %v, want status 0", err)
	}
}
