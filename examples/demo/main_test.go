package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/forkd/forkd/internal/testkit"
)

// deadline bounds every wait.
const deadline = testkit.Deadline

func TestMain(m *testing.M) {
	testkit.Main(m, testkit.Roles{"demo": testkit.WorkerRole("forkd-demo", func(args []string) error {
		return run(context.Background(), args, os.Stderr)
	})})
}

// demo is the test binary re-executed as the demo worker, socket-activated
// the way systemd and forkd do it (testkit.Worker).
type demo struct {
	*testkit.Worker
	url string // http://host:port of the inherited listener
}

// startDemo starts the worker with the given extra environment and flags,
// on a listening socket of its own.
func startDemo(t *testing.T, env []string, args ...string) *demo {
	t.Helper()
	return startDemoOn(t, nil, env, args...)
}

// startDemoOn starts the worker on ln (nil: a socket of its own).
func startDemoOn(t testing.TB, ln *net.TCPListener, env []string, args ...string) *demo {
	t.Helper()
	w := testkit.StartWorker(t, testkit.WorkerSpec{Role: "demo", Args: args, Env: env, Listener: ln})
	return &demo{Worker: w, url: "http://" + w.Addr}
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

	ready, _ := d.Notify.Wait("READY=1")
	if want := "STATUS=serving on tcp:" + d.Addr; !strings.Contains(ready.Text, want) {
		t.Errorf("READY message %q lacks %q", ready, want)
	}

	code, body := get(t, d.url+"/")
	want := fmt.Sprintf("hello from worker 2 (pid %d, generation 7)\n", d.Cmd.Process.Pid)
	if code != http.StatusOK || body != want {
		t.Errorf("GET / = %d %q, want 200 %q", code, body, want)
	}
	if code, _ := get(t, d.url+"/nothing-here"); code != http.StatusNotFound {
		t.Errorf("GET /nothing-here = %d, want 404", code)
	}

	// WATCHDOG_USEC=100ms: a heartbeat every 50ms, well within the deadline.
	d.Notify.Wait("WATCHDOG=1")
	d.Notify.Wait("WATCHDOG=1")

	d.Signal(syscall.SIGUSR1)
	line := d.Stderr.WaitFor(t, "reopening logs")
	if want := fmt.Sprintf("worker_id=2 pid=%d", d.Cmd.Process.Pid); !strings.Contains(line, want) {
		t.Errorf("log line %q lacks %q", line, want)
	}
	if d.Exited() {
		t.Fatal("demo exited on SIGUSR1")
	}

	d.Signal(syscall.SIGTERM)
	d.Notify.Wait("STOPPING=1")
	if err := d.Wait(); err != nil {
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
			d.Notify.Wait("READY=1")
			// Keep the worker busy for 400ms: 40 heartbeats' worth at 20ms/2.
			resp, err := client.Get(d.url + "/sleep?d=400ms")
			if err != nil {
				t.Fatalf("GET /sleep: %v", err)
			}
			defer resp.Body.Close()
			d.Signal(syscall.SIGTERM)
			if _, err := io.ReadAll(resp.Body); err != nil {
				t.Fatalf("read in-flight body: %v", err)
			}
			if err := d.Wait(); err != nil {
				t.Fatalf("exit after SIGTERM: %v, want status 0", err)
			}
			// Everything the worker sent, now that it is gone.
			for _, n := range d.Notify.Flush() {
				if n.Has("WATCHDOG=1") {
					t.Fatalf("got %q with the watchdog disabled", n.Text)
				}
			}
		})
	}
}

func TestDemo_TermDrainsInFlightRequest(t *testing.T) {
	d := startDemo(t, []string{"FORKD_WORKER_ID=0", "FORKD_GENERATION=1"})
	d.Notify.Wait("READY=1")

	// The handler sends its headers at once and its body after 2s: once
	// the headers are here the request is in flight.
	resp, err := client.Get(d.url + "/sleep?d=2s")
	if err != nil {
		t.Fatalf("GET /sleep: %v", err)
	}
	defer resp.Body.Close()

	d.Signal(syscall.SIGTERM)
	d.Notify.Wait("STOPPING=1")
	if d.Exited() {
		t.Fatal("demo exited with a request in flight")
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read in-flight body: %v", err)
	}
	want := fmt.Sprintf("hello from worker 0 (pid %d, generation 1)\n", d.Cmd.Process.Pid)
	if string(body) != want {
		t.Errorf("in-flight body = %q, want %q", body, want)
	}
	if err := d.Wait(); err != nil {
		t.Errorf("exit after drain: %v, want status 0", err)
	}
}

func TestDemo_DrainIsBounded(t *testing.T) {
	d := startDemo(t, nil, "-graceful-timeout", "200ms")
	d.Notify.Wait("READY=1")
	resp, err := client.Get(d.url + "/sleep?d=1h")
	if err != nil {
		t.Fatalf("GET /sleep: %v", err)
	}
	defer resp.Body.Close()

	d.Signal(syscall.SIGTERM)
	if err := d.Wait(); err != nil {
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
			d.Notify.Wait("READY=1")
			resp, err := client.Get(d.url + "/sleep?d=1h")
			if err != nil {
				t.Fatalf("GET /sleep: %v", err)
			}
			defer resp.Body.Close()

			d.Signal(sig)
			if err := d.Wait(); err != nil {
				t.Errorf("exit after %v: %v, want status 0", sig, err)
			}
		})
	}
}

func TestDemo_ExitAfter(t *testing.T) {
	d := startDemo(t, nil, "-exit-after", "100ms")
	err := d.Wait()
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

	d.Notify.Wait("READY=1")
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
	notify := testkit.ListenNotify(t)
	for _, k := range []string{"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID", "FORKD_GENERATION"} {
		t.Setenv(k, "")
	}
	t.Setenv("NOTIFY_SOCKET", notify.Path)
	t.Setenv("FORKD_WORKER_ID", "5")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr testkit.Buffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-addr", "127.0.0.1:0"}, &stderr) }()

	ready, _ := notify.Wait("READY=1")
	status, _ := ready.Field("STATUS")
	addr, ok := strings.CutPrefix(status, "serving on tcp:")
	if !ok {
		t.Fatalf("READY message %q names no address", ready.Text)
	}
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
