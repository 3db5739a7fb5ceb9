package forkctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/forkd/forkd/bus"
	"github.com/forkd/forkd/hooks"
	"github.com/forkd/forkd/workers"
)

// forkctl runs Main with a bounded context and returns its output.
func forkctl(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var out, errOut bytes.Buffer
	err = Main(ctx, args, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestMain_Usage(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"--bogus", "status"},
		{"--bus"},
		{"--bus=", "status"},
		{"--socket"},
		{"--socket=", "status"},
		{"scale"},
		{"scale", "many"},
		{"scale", "5000"},
		{"scale", "-1"},
		{"status", "a", "b"},
		{"workers", "--json"},
		{"check"},
		{"monitor", "a", "b"},
	} {
		stdout, stderr, err := forkctl(t, args...)
		if !errors.Is(err, ErrUsage) {
			t.Errorf("forkctl %q: err = %v, want a usage error", args, err)
		}
		if !strings.Contains(stderr, "Usage: forkctl") || stdout != "" {
			t.Errorf("forkctl %q: stdout %q, stderr %q; want the usage on stderr only", args, stdout, stderr)
		}
	}
	stdout, _, err := forkctl(t, "--help")
	if err != nil || !strings.Contains(stdout, "Usage: forkctl") {
		t.Errorf("forkctl --help: %v, stdout %q", err, stdout)
	}
	for args, want := range map[string]string{"--bus=": "--bus needs an address", "--socket": "--socket needs a path"} {
		if _, _, err := forkctl(t, args); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("forkctl %s: %v, want %q", args, err, want)
		}
	}
}

func TestMain_Status(t *testing.T) {
	addr := startDaemon(t)
	ctl := &testController{status: workers.Status{State: "running", Generation: 4, Workers: 3, ReadyWorkers: 2},
		listeners: []workers.Listener{{Name: "web", Addr: "tcp://127.0.0.1:8000", Queue: 5, Backlog: 2048},
			{Name: "admin", Addr: "unix:/run/admin.sock", Backlog: 128}}}
	startBus(t, addr, "web-1", ctl)

	stdout, _, err := forkctl(t, "--bus", addr, "status")
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	for _, want := range []string{
		`Instance:\s+web-1\s+\(io\.github\.forkd\.web_2d1\)`,
		`State:\s+running\n`,
		`Generation:\s+4\n`,
		`Workers:\s+2/3 ready\n`,
		`Listener web:\s+tcp://127\.0\.0\.1:8000, queue 5/2048\n`,
		`Listener admin:\s+unix:/run/admin\.sock, queue 0/128\n`,
		`Dropped signals:\s+0\n`,
	} {
		if !regexp.MustCompile(want).MatchString(stdout) {
			t.Errorf("status output lacks %s:\n%s", want, stdout)
		}
	}
	// Naming the instance works too; --bus=ADDRESS is the same as --bus ADDRESS.
	if out, _, err := forkctl(t, "--bus="+addr, "status", "web-1"); err != nil || out != stdout {
		t.Errorf("status web-1: %v\n%s\nwant\n%s", err, out, stdout)
	}
}

func TestMain_InstanceResolution(t *testing.T) {
	addr := startDaemon(t)
	if _, _, err := forkctl(t, "--bus="+addr, "status"); !errors.Is(err, ErrNoInstance) {
		t.Errorf("status with no instance on the bus: %v, want ErrNoInstance", err)
	}
	startBus(t, addr, "a", &testController{status: workers.Status{State: "running"}})
	startBus(t, addr, "b", &testController{status: workers.Status{State: "stopping"}})
	_, _, err := forkctl(t, "--bus", addr, "status")
	if !errors.Is(err, ErrSeveralInstances) || !strings.Contains(err.Error(), `"a", "b"`) {
		t.Errorf("status with two instances: %v, want ErrSeveralInstances naming both", err)
	}
	stdout, _, err := forkctl(t, "--bus", addr, "status", "b")
	if err != nil || !regexp.MustCompile(`State:\s+stopping`).MatchString(stdout) {
		t.Errorf("status b: %v\n%s", err, stdout)
	}
	if _, _, err := forkctl(t, "--bus", addr, "status", "c"); !errors.Is(err, ErrNotRunning) {
		t.Errorf("status c: %v, want ErrNotRunning", err)
	}
}

func TestMain_Workers(t *testing.T) {
	addr := startDaemon(t)
	started := time.Now().Add(-90 * time.Second)
	ctl := &testController{workers: []workers.Info{
		{ID: 1, PID: 1235, Generation: 2, State: "starting"},
		{ID: 0, PID: 1234, Generation: 2, State: "ready", Started: started, Memory: 52<<20 + 300<<10, CPU: 1500 * time.Millisecond},
	}}
	startBus(t, addr, "web", ctl)
	stdout, _, err := forkctl(t, "--bus", addr, "workers")
	if err != nil {
		t.Fatalf("workers: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 3 {
		t.Fatalf("workers printed %d lines, want a header and 2 workers:\n%s", len(lines), stdout)
	}
	if f := strings.Fields(lines[0]); strings.Join(f, " ") != "ID PID GENERATION STATE STARTED UPTIME MEMORY CPU" {
		t.Errorf("header %q", lines[0])
	}
	// Sorted by id; uptime from the start time.
	f := strings.Fields(lines[1])
	if len(f) != 9 || f[0] != "0" || f[1] != "1234" || f[2] != "2" || f[3] != "ready" ||
		f[4]+" "+f[5] != started.Format(time.DateTime) || !strings.HasPrefix(f[6], "1m3") || f[7] != "52.3M" || f[8] != "1.5s" {
		t.Errorf("worker 0 line %q", lines[1])
	}
	if f := strings.Fields(lines[2]); strings.Join(f, " ") != "1 1235 2 starting - - - -" {
		t.Errorf("worker 1 line %q", lines[2])
	}
}

// TestMain_WorkersOldForkd: forkctl workers lists the workers of a forkd
// whose ListWorkers predates the workers' memory and CPU, a(iutst), with
// "-" for both.
func TestMain_WorkersOldForkd(t *testing.T) {
	addr := startDaemon(t)
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	type oldWorker struct {
		ID          int32
		PID         uint32
		Generation  uint64
		State       string
		StartedUsec uint64
	}
	methods := map[string]any{
		"ListWorkers": func() ([]oldWorker, *dbus.Error) {
			return []oldWorker{{0, 1234, 1, "ready", 0}}, nil
		},
	}
	if err := conn.ExportMethodTable(methods, bus.ObjectPath, bus.Interface); err != nil {
		t.Fatal(err)
	}
	if reply, err := conn.RequestName(bus.Name("old"), dbus.NameFlagDoNotQueue); err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("request %s: %v, %v", bus.Name("old"), reply, err)
	}
	stdout, _, err := forkctl(t, "--bus", addr, "workers", "old")
	if err != nil {
		t.Fatalf("workers: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 2 || strings.Join(strings.Fields(lines[1]), " ") != "0 1234 1 ready - - - -" {
		t.Errorf("workers of an old forkd:\n%s", stdout)
	}
}

func TestMain_Scale(t *testing.T) {
	addr := startDaemon(t)
	ctl := &testController{}
	startBus(t, addr, "web", ctl)
	stdout, _, err := forkctl(t, "--bus", addr, "scale", "6", "web")
	if err != nil || stdout != "web: workers set to 6\n" {
		t.Fatalf("scale 6 web: %v, %q", err, stdout)
	}
	if _, _, err := forkctl(t, "--bus", addr, "scale", "0"); err != nil {
		t.Fatalf("scale 0: %v", err)
	}
	ctl.mu.Lock()
	defer ctl.mu.Unlock()
	if len(ctl.set) != 2 || ctl.set[0] != 6 || ctl.set[1] != 0 {
		t.Errorf("controller got SetWorkers %v, want [6 0]", ctl.set)
	}
}

func TestMain_Reload(t *testing.T) {
	addr := startDaemon(t)
	ctl := &testController{status: workers.Status{State: "running", Generation: 1}}
	b := startBus(t, addr, "web", ctl)

	// The bus shows the generation the arbiter last reported.
	ctl.mu.Lock()
	ctl.status.Generation = 2
	ctl.mu.Unlock()
	b.UpdateStatus(workers.Status{State: "running", Generation: 2})
	stdout, _, err := forkctl(t, "--bus", addr, "reload")
	if err != nil || stdout != "web: reloaded, generation 2 serving\n" {
		t.Errorf("reload: %v, %q", err, stdout)
	}

	ctl.mu.Lock()
	ctl.reloadErr = errors.New("new generation did not come up: worker 0 exited with status 3")
	ctl.mu.Unlock()
	stdout, _, err = forkctl(t, "--bus", addr, "reload", "web")
	if err == nil {
		t.Fatalf("a failed reload succeeded: %q", stdout)
	}
	if errors.Is(err, ErrUsage) {
		t.Errorf("a failed reload is a usage error: %v", err)
	}
	if want := "reload web: new generation did not come up: worker 0 exited with status 3"; err.Error() != want {
		t.Errorf("reload error %q, want %q", err, want)
	}
	ctl.mu.Lock()
	defer ctl.mu.Unlock()
	if ctl.reloads != 2 {
		t.Errorf("controller saw %d reloads, want 2", ctl.reloads)
	}
}

// lineWriter hands complete lines to a channel.
type lineWriter struct {
	mu    sync.Mutex
	buf   []byte
	lines chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.lines <- string(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
}

func TestMain_MonitorJSON(t *testing.T) {
	addr := startDaemon(t)
	a := startBus(t, addr, "a", nil)
	other := startBus(t, addr, "b", nil)

	stdout, stop := startMonitor(t, "--bus", addr, "monitor", "--json", "a")

	other.Emit(hooks.Event{Hook: hooks.OnStarting, Generation: 1}) // not "a": filtered out
	a.Emit(hooks.Event{Hook: hooks.WorkerExit, Generation: 3, WorkerID: 2, PID: 999, ExitCode: -1, Signal: 9, Reason: "timeout"})
	a.Emit(hooks.Event{Hook: hooks.NworkersChanged, Generation: 3, OldWorkers: 2, Workers: 5})

	var events []monitorEvent
	for len(events) < 2 {
		select {
		case line := <-stdout:
			var ev monitorEvent
			if err := json.Unmarshal([]byte(line), &ev); err != nil {
				t.Fatalf("monitor line %q is not JSON: %v", line, err)
			}
			events = append(events, ev)
		case <-time.After(testTimeout):
			t.Fatalf("monitor printed %d lines, want 2", len(events))
		}
	}
	want := []struct {
		signal string
		args   map[string]any
	}{
		{"WorkerExit", map[string]any{"instance": "a", "generation": 3.0, "worker_id": 2.0, "pid": 999.0,
			"exit_code": -1.0, "signal": 9.0, "reason": "timeout"}},
		{"NworkersChanged", map[string]any{"instance": "a", "generation": 3.0, "old": 2.0, "new": 5.0}},
	}
	for i, ev := range events {
		if ev.Signal != want[i].signal || ev.Instance != "a" || ev.Time.IsZero() || !strings.HasPrefix(ev.Sender, ":") {
			t.Errorf("line %d: %+v, want signal %s from a", i, ev, want[i].signal)
		}
		if len(ev.Args) != len(want[i].args) {
			t.Errorf("line %d args %v, want %v", i, ev.Args, want[i].args)
		}
		for k, v := range want[i].args {
			if ev.Args[k] != v {
				t.Errorf("line %d arg %s = %v, want %v", i, k, ev.Args[k], v)
			}
		}
	}

	stop()
}

// startMonitor runs forkctl with args, a monitor command, and returns once
// it said on stderr that it is monitoring, with the lines it prints and
// stop, which ends it as a cancelled context does and checks that it
// returns nil at once.
func startMonitor(t *testing.T, args ...string) (lines <-chan string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stdout := &lineWriter{lines: make(chan string, 64)}
	stderr := &lineWriter{lines: make(chan string, 64)}
	done := make(chan error, 1)
	go func() { done <- Main(ctx, args, stdout, stderr) }()
	select {
	case line := <-stderr.lines:
		if !strings.HasPrefix(line, "Monitoring") {
			t.Fatalf("monitor said %q on stderr", line)
		}
	case err := <-done:
		t.Fatalf("monitor returned early: %v", err)
	case <-time.After(testTimeout):
		t.Fatal("monitor did not subscribe in time")
	}
	return stdout.lines, func() {
		t.Helper()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("monitor returned %v when its context ended, want nil", err)
			}
		case <-time.After(testTimeout):
			t.Fatal("monitor did not stop when its context ended")
		}
	}
}

func TestMain_MonitorText(t *testing.T) {
	addr := startDaemon(t)
	b := startBus(t, addr, "web", nil)
	stdout, stop := startMonitor(t, "--bus", addr, "monitor")
	b.Emit(hooks.Event{Hook: hooks.WorkerAbort, Generation: 1, WorkerID: 0, PID: 42, Reason: "boot timeout"})
	select {
	case line := <-stdout:
		re := `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\S* web WorkerAbort generation=1 worker_id=0 pid=42 reason="boot timeout"$`
		if !regexp.MustCompile(re).MatchString(line) {
			t.Errorf("monitor line %q, want it to match %s", line, re)
		}
	case <-time.After(testTimeout):
		t.Fatal("monitor printed nothing")
	}
	stop()
}

func TestMain_Check(t *testing.T) {
	stdout, _, err := forkctl(t, "check", "testdata/good.toml")
	if err != nil {
		t.Fatalf("check good.toml: %v", err)
	}
	if want := `testdata/good.toml: ok: instance "web", 3 workers, command /bin/true, bind tcp://127.0.0.1:8000` + "\n"; stdout != want {
		t.Errorf("check good.toml printed %q, want %q", stdout, want)
	}
	_, _, err = forkctl(t, "check", "testdata/bad.toml")
	if err == nil || errors.Is(err, ErrUsage) {
		t.Fatalf("check bad.toml: %v, want a config error", err)
	}
	if !strings.Contains(err.Error(), "testdata/bad.toml:3:1") || !strings.Contains(err.Error(), "workerz") {
		t.Errorf("check bad.toml error %q does not point at bad.toml:3:1 workerz", err)
	}
	if _, _, err := forkctl(t, "check", "testdata/missing.toml"); err == nil {
		t.Error("check of a missing file succeeded")
	}
}
