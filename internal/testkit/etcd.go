package testkit

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// EtcdBinary is where Debian's etcd-server package puts etcd.
const EtcdBinary = "/usr/bin/etcd"

// Etcd is a one-member etcd started by a test: its client and peer
// endpoints are unix sockets in the test's temporary directory (no port
// to pick), as is its data, so that it can be stopped and started again
// with what it stored. Reach it through Dial (a Proxy's dial function).
type Etcd struct {
	t    testing.TB
	dir  string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

// StartEtcd starts etcd for t and stops it when the test ends; it skips
// the test when EtcdBinary is missing (make deps installs etcd-server).
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	if _, err := os.Stat(EtcdBinary); err != nil {
		t.Skipf("testkit: %s missing (apt-get install etcd-server, or make deps): %v", EtcdBinary, err)
	}
	e := &Etcd{t: t, dir: t.TempDir()}
	f, err := os.Create(filepath.Join(e.dir, "etcd.log"))
	if err != nil {
		t.Fatal(err)
	}
	e.log = f
	t.Cleanup(func() {
		e.Stop()
		if t.Failed() {
			if b, err := os.ReadFile(f.Name()); err == nil && len(b) > 0 {
				t.Logf("etcd log (last 4 KiB):\n%s", tail(b, 4096))
			}
		}
		f.Close()
	})
	e.Start()
	return e
}

// tail returns the last n bytes of b.
func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// socket is the client socket's path; etcd's unix URLs are written
// unix://NAME:PORT and make a socket file NAME:PORT in its directory.
func (e *Etcd) socket() string { return filepath.Join(e.dir, "client:1") }

// Start starts etcd (again, after Stop) and returns once it serves
// clients, failing the test if it does not within 20 seconds.
func (e *Etcd) Start() {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd != nil {
		e.t.Fatal("testkit: etcd already runs")
	}
	cmd := exec.Command(EtcdBinary, "--name", "test", "--data-dir", "data",
		"--listen-client-urls", "unix://client:1", "--advertise-client-urls", "unix://client:1",
		"--listen-peer-urls", "unix://peer:2", "--initial-advertise-peer-urls", "unix://peer:2",
		"--initial-cluster", "test=unix://peer:2", "--logger", "zap", "--log-outputs", "stderr")
	cmd.Dir = e.dir
	cmd.Env = append(os.Environ(), "ETCD_UNSUPPORTED_ARCH=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		e.t.Fatalf("testkit: start etcd: %v", err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		closed := false
		for sc.Scan() {
			fmt.Fprintln(e.log, sc.Text())
			if !closed && strings.Contains(sc.Text(), "serving client traffic") {
				close(ready)
				closed = true
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	e.cmd, e.done = cmd, done
	select {
	case <-ready:
	case <-done:
		e.t.Fatalf("testkit: etcd exited at start (its log is in %s)", e.log.Name())
	case <-time.After(20 * time.Second):
		e.t.Fatalf("testkit: etcd not ready within 20s")
	}
}

// Stop stops etcd (TERM, KILL after 10 seconds) and waits for it; it does
// nothing when etcd is not running.
func (e *Etcd) Stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd == nil {
		return
	}
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.done:
	case <-time.After(10 * time.Second):
		_ = e.cmd.Process.Kill()
		<-e.done
	}
	e.cmd = nil
}

// Dial connects to etcd's client socket.
func (e *Etcd) Dial() (net.Conn, error) {
	return net.Dial("unix", e.socket())
}

// Metrics returns the sum of etcd's counter metric name (e.g.
// "grpc_server_msg_received_total") over the series whose labels contain
// every one of match (e.g. `grpc_method="Txn"`), read from /metrics.
func (e *Etcd) Metrics(ctx context.Context, name string, match ...string) (float64, error) {
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", e.socket())
	}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://etcd/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("testkit: etcd metrics: %w", err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
lines:
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		for _, m := range match {
			if !strings.Contains(line, m) {
				continue lines
			}
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("testkit: etcd metrics: %q: %w", line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}
