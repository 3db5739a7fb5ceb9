package main

import (
	"bufio"
	"context"
	"errors"
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

	"github.com/forkd/forkd/internal/testkit"
)

// helperEnv makes the test binary run as the demo worker (TestMain).
const helperEnv = "FORKD_DEMO_TEST_HELPER"

// deadline bounds every wait; a race-enabled binary on a busy machine is slow.
const deadline = 20 * time.Second

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		// systemd and forkd's exec shim set LISTEN_PID to the worker's own
		// pid between fork and exec; os/exec cannot, so the helper does.
		if os.Getenv("LISTEN_FDS") != "" {
			os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
		}
		if err := run(context.Background(), os.Args[1:], os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "forkd-demo:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// demo is the test binary re-executed as the demo worker, socket-activated
// the way systemd and forkd do it: a TCP listener at fd 3 and a unixgram
// NOTIFY_SOCKET owned by the test.
type demo struct {
	t      *testing.T
	cmd    *exec.Cmd
	url    string      // http://host:port of the inherited listener
	notify string      // the NOTIFY_SOCKET path
	notes  chan string // sd_notify datagrams, one message each
	lines  chan string // stderr lines
	exited chan error  // cmd.Wait's result, once

	mu     sync.Mutex
	stderr []string
}

// startDemo starts the worker with the given extra environment and flags.
func startDemo(t *testing.T, env []string, args ...string) *demo {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	lnFile, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatalf("listener file: %v", err)
	}
	d := &demo{
		t:      t,
		url:    "http://" + ln.Addr().String(),
		notes:  make(chan string, 256),
		lines:  make(chan string, 256),
		exited: make(chan error, 1),
	}

	notifyPath := filepath.Join(t.TempDir(), "notify")
	d.notify = notifyPath
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
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
			default: // nobody waits for that many; the tests need only the first few
			}
		}
	}()

	d.cmd = exec.Command(os.Args[0], args...)
	d.cmd.Env = append(cleanEnv(),
		helperEnv+"=1",
		"LISTEN_FDS=1",
		"LISTEN_FDNAMES=web",
		"NOTIFY_SOCKET="+notifyPath,
	)
	d.cmd.Env = append(d.cmd.Env, env...)
	d.cmd.ExtraFiles = []*os.File{lnFile}
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatalf("stderr pipe: %v", err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start demo: %v", err)
	}
	// The worker holds the socket now; closing ours means connections are
	// refused once it exits.
	lnFile.Close()
	ln.Close()

	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			d.mu.Lock()
			d.stderr = append(d.stderr, sc.Text())
			d.mu.Unlock()
			select {
			case d.lines <- sc.Text():
			default:
			}
		}
		d.exited <- d.cmd.Wait()
	}()
	t.Cleanup(func() {
		d.cmd.Process.Kill()
		<-d.exited
		if t.Failed() {
			d.mu.Lock()
			t.Logf("demo stderr:\n%s", strings.Join(d.stderr, "\n"))
			d.mu.Unlock()
		}
	})
	return d
}

// cleanEnv is the test's environment without anything a service manager
// around the test run may have set for the test itself.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET",
			"WATCHDOG_USEC", "WATCHDOG_PID", "FORKD_WORKER_ID", "FORKD_GENERATION":
		default:
			env = append(env, kv)
		}
	}
	return env
}

// waitNote waits for a notify message with the line want and returns the
// whole message.
func (d *demo) waitNote(want string) string {
	d.t.Helper()
	return waitNote(d.t, d.notes, want)
}

func waitNote(t *testing.T, notes <-chan string, want string) string {
	t.Helper()
	timeout := time.After(deadline)
	for {
		select {
		case msg := <-notes:
			for _, line := range strings.Split(msg, "\n") {
				if line == want {
					return msg
				}
			}
		case <-timeout:
			t.Fatalf("no %q on NOTIFY_SOCKET within %v", want, deadline)
		}
	}
}

// waitLog waits for a stderr line containing substr and returns it.
func (d *demo) waitLog(substr string) string {
	d.t.Helper()
	timeout := time.After(deadline)
	for {
		select {
		case line := <-d.lines:
			if strings.Contains(line, substr) {
				return line
			}
		case <-timeout:
			d.t.Fatalf("no log line containing %q within %v", substr, deadline)
			return ""
		}
	}
}

// signal sends sig to the worker.
func (d *demo) signal(sig os.Signal) {
	d.t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		d.t.Fatalf("send %v: %v", sig, err)
	}
}

// waitExit waits for the worker to exit and returns cmd.Wait's error.
func (d *demo) waitExit() error {
	d.t.Helper()
	select {
	case err := <-d.exited:
		d.exited <- err // for Cleanup
		return err
	case <-time.After(deadline):
		d.t.Fatalf("demo did not exit within %v", deadline)
		return nil
	}
}

// exitedYet reports whether the worker has exited.
func (d *demo) exitedYet() bool {
	select {
	case err := <-d.exited:
		d.exited <- err
		return true
	default:
		return false
	}
}

var client = &http.Client{
	Timeout:   deadline,
	Transport: &http.Transport{DisableKeepAlives: true},
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

func TestDemo_SocketActivated(t *testing.T) {
	d := startDemo(t, []string{"FORKD_WORKER_ID=2", "FORKD_GENERATION=7", "WATCHDOG_USEC=100000"})

	ready := d.waitNote("READY=1")
	host := strings.TrimPrefix(d.url, "http://")
	if want := "STATUS=serving on tcp:" + host; !strings.Contains(ready, want) {
		t.Errorf("READY message %q lacks %q", ready, want)
	}

	code, body := get(t, d.url+"/")
	want := fmt.Sprintf("hello from worker 2 (pid %d, generation 7)\n", d.cmd.Process.Pid)
	if code != http.StatusOK || body != want {
		t.Errorf("GET / = %d %q, want 200 %q", code, body, want)
	}
	if code, _ := get(t, d.url+"/nothing-here"); code != http.StatusNotFound {
		t.Errorf("GET /nothing-here = %d, want 404", code)
	}

	// WATCHDOG_USEC=100ms: a heartbeat every 50ms, well within the deadline.
	d.waitNote("WATCHDOG=1")
	d.waitNote("WATCHDOG=1")

	d.signal(syscall.SIGUSR1)
	line := d.waitLog("reopening logs")
	if want := fmt.Sprintf("worker_id=2 pid=%d", d.cmd.Process.Pid); !strings.Contains(line, want) {
		t.Errorf("log line %q lacks %q", line, want)
	}
	if d.exitedYet() {
		t.Fatal("demo exited on SIGUSR1")
	}

	d.signal(syscall.SIGTERM)
	d.waitNote("STOPPING=1")
	if err := d.waitExit(); err != nil {
		t.Errorf("exit after SIGTERM: %v, want status 0", err)
	}
	if _, err := client.Get(d.url + "/"); err == nil {
		t.Error("GET / after exit succeeded; the socket should be gone")
	}
}

func TestDemo_NoHeartbeatWhenWatchdogDisabled(t *testing.T) {
	for name, env := range map[string][]string{
		"unset":     nil,
		"other pid": {"WATCHDOG_USEC=20000", "WATCHDOG_PID=1"}, // meant for another process
	} {
		t.Run(name, func(t *testing.T) {
			d := startDemo(t, env)
			d.waitNote("READY=1")
			// Keep the worker busy for 400ms: 40 heartbeats' worth at 20ms/2.
			resp, err := client.Get(d.url + "/sleep?d=400ms")
			if err != nil {
				t.Fatalf("GET /sleep: %v", err)
			}
			defer resp.Body.Close()
			d.signal(syscall.SIGTERM)
			if _, err := io.ReadAll(resp.Body); err != nil {
				t.Fatalf("read in-flight body: %v", err)
			}
			if err := d.waitExit(); err != nil {
				t.Fatalf("exit after SIGTERM: %v, want status 0", err)
			}
			// A marker queued after everything the worker sent: once it is
			// read, every message of the worker has been seen.
			marker, err := net.Dial("unixgram", d.notify)
			if err != nil {
				t.Fatalf("dial notify socket: %v", err)
			}
			defer marker.Close()
			if _, err := marker.Write([]byte("TEST_END=1")); err != nil {
				t.Fatalf("write marker: %v", err)
			}
			for {
				select {
				case msg := <-d.notes:
					if strings.Contains(msg, "WATCHDOG=1") {
						t.Fatalf("got %q with the watchdog disabled", msg)
					}
					if msg == "TEST_END=1" {
						return
					}
				case <-time.After(deadline):
					t.Fatalf("marker not read back within %v", deadline)
				}
			}
		})
	}
}

func TestDemo_TermDrainsInFlightRequest(t *testing.T) {
	d := startDemo(t, []string{"FORKD_WORKER_ID=0", "FORKD_GENERATION=1"})
	d.waitNote("READY=1")

	// The handler sends its headers at once and its body after 2s: once
	// the headers are here the request is in flight.
	resp, err := client.Get(d.url + "/sleep?d=2s")
	if err != nil {
		t.Fatalf("GET /sleep: %v", err)
	}
	defer resp.Body.Close()

	d.signal(syscall.SIGTERM)
	d.waitNote("STOPPING=1")
	if d.exitedYet() {
		t.Fatal("demo exited with a request in flight")
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read in-flight body: %v", err)
	}
	want := fmt.Sprintf("hello from worker 0 (pid %d, generation 1)\n", d.cmd.Process.Pid)
	if string(body) != want {
		t.Errorf("in-flight body = %q, want %q", body, want)
	}
	if err := d.waitExit(); err != nil {
		t.Errorf("exit after drain: %v, want status 0", err)
	}
}

func TestDemo_DrainIsBounded(t *testing.T) {
	d := startDemo(t, nil, "-graceful-timeout", "200ms")
	d.waitNote("READY=1")
	resp, err := client.Get(d.url + "/sleep?d=1h")
	if err != nil {
		t.Fatalf("GET /sleep: %v", err)
	}
	defer resp.Body.Close()

	d.signal(syscall.SIGTERM)
	if err := d.waitExit(); err != nil {
		t.Errorf("exit after a cut-short drain: %v, want status 0", err)
	}
	if body, _ := io.ReadAll(resp.Body); len(body) != 0 {
		t.Errorf("a request cut short by the drain bound got a body: %q", body)
	}
}

func TestDemo_QuickExit(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGQUIT} {
		t.Run(sig.String(), func(t *testing.T) {
			d := startDemo(t, nil)
			d.waitNote("READY=1")
			resp, err := client.Get(d.url + "/sleep?d=1h")
			if err != nil {
				t.Fatalf("GET /sleep: %v", err)
			}
			defer resp.Body.Close()

			d.signal(sig)
			if err := d.waitExit(); err != nil {
				t.Errorf("exit after %v: %v, want status 0", sig, err)
			}
		})
	}
}

func TestDemo_ExitAfter(t *testing.T) {
	d := startDemo(t, nil, "-exit-after", "100ms")
	err := d.waitExit()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 1 {
		t.Fatalf("exit = %v, want exit status 1", err)
	}
}

func TestDemo_BootDelay(t *testing.T) {
	const bootDelay = 300 * time.Millisecond
	start := time.Now()
	d := startDemo(t, []string{"FORKD_WORKER_ID=1"}, "-boot-delay", bootDelay.String())

	// A connection made while the worker boots waits in the backlog and
	// is answered once it serves.
	answered := make(chan string, 1)
	go func() {
		resp, err := client.Get(d.url + "/")
		if err != nil {
			answered <- "error: " + err.Error()
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		answered <- string(body)
	}()

	d.waitNote("READY=1")
	if elapsed := time.Since(start); elapsed < bootDelay {
		t.Errorf("READY=1 after %v, before the %v boot delay", elapsed, bootDelay)
	}
	select {
	case body := <-answered:
		if !strings.HasPrefix(body, "hello from worker 1 ") {
			t.Errorf("request made during boot got %q", body)
		}
	case <-time.After(deadline):
		t.Fatalf("request made during boot not answered within %v", deadline)
	}
}

// TestRun_Standalone runs the worker in-process with no inherited socket:
// it binds -addr itself, and cancelling the context stops it.
func TestRun_Standalone(t *testing.T) {
	notifyPath := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen on notify socket: %v", err)
	}
	defer conn.Close()
	notes := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			notes <- string(buf[:n])
		}
	}()
	for _, k := range []string{"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID", "FORKD_GENERATION"} {
		t.Setenv(k, "")
	}
	t.Setenv("NOTIFY_SOCKET", notifyPath)
	t.Setenv("FORKD_WORKER_ID", "5")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr testkit.Buffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-addr", "127.0.0.1:0"}, &stderr) }()

	ready := waitNote(t, notes, "READY=1")
	_, status, ok := strings.Cut(ready, "STATUS=serving on tcp:")
	if !ok {
		t.Fatalf("READY message %q names no address", ready)
	}
	addr := strings.TrimSpace(status)
	code, body := get(t, "http://"+addr+"/")
	want := fmt.Sprintf("hello from worker 5 (pid %d, generation -)\n", os.Getpid())
	if code != http.StatusOK || body != want {
		t.Errorf("GET / = %d %q, want 200 %q", code, body, want)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run after cancel = %v, want nil", err)
		}
	case <-time.After(deadline):
		t.Fatalf("run did not return within %v of cancel", deadline)
	}
	logs := stderr.String()
	for _, want := range []string{"worker_id=5", "pid=" + strconv.Itoa(os.Getpid()), "msg=draining", "msg=stopped"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
	if _, err := net.DialTimeout("tcp", addr, deadline); err == nil {
		t.Errorf("%s still accepts connections after run returned", addr)
	}
}

func TestRun_BadFlags(t *testing.T) {
	for _, args := range [][]string{{"-boot-delay", "soon"}, {"stray"}, {"-no-such-flag"}} {
		if err := run(context.Background(), args, io.Discard); err == nil {
			t.Errorf("run(%q) = nil, want an error", args)
		}
	}
}
