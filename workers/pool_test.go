package workers

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/hooks"
	"github.com/forkd/forkd/internal/testkit"
)

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func TestPool_StartServeStop(t *testing.T) {
	fdsBefore := countFDs(t)
	h := start(t, testConfig(testkit.Executable(t), "serve", 4), nil)
	pids := h.waitReady(4)
	e := h.rec.wait(t, 5*time.Second, "when_ready", is(hooks.WhenReady))
	if e.Generation != 1 || e.Workers != 4 {
		t.Errorf("when_ready = %+v, want generation 1, 4 workers", e)
	}
	live := h.pids()
	if len(live) != 4 {
		t.Fatalf("ListWorkers: %d workers, want 4", len(live))
	}
	ids := map[string]bool{}
	for range 20 {
		m := h.dial()
		pid := atoi(m["pid"])
		if !live[pid] {
			t.Fatalf("answer from pid %d, not a worker (%v)", pid, live)
		}
		if m["listen_pid"] != m["pid"] {
			t.Errorf("LISTEN_PID=%s in worker %s: must be the worker's own pid", m["listen_pid"], m["pid"])
		}
		if m["fds"] != "1" || m["gen"] != "1" || m["instance"] != "test" {
			t.Errorf("worker env: %v", m)
		}
		ids[m["id"]] = true
	}
	for id := range ids {
		if n := atoi(id); n < 0 || n > 3 {
			t.Errorf("FORKD_WORKER_ID=%s out of 0…3", id)
		}
	}
	s, err := h.pool.Status(context.Background())
	if err != nil || s.State != StateRunning || s.ReadyWorkers != 4 || s.Workers != 4 {
		t.Errorf("Status = %+v, %v", s, err)
	}
	if err := h.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, pid := range pids {
		testkit.WaitExit(t, pid, time.Second)
	}
	if n := countFDs(t); n > fdsBefore+1 { // +1: the harness's socket, closed in Cleanup
		t.Errorf("fd leak: %d open before, %d after", fdsBefore, n)
	}
}

func countFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestPool_KilledWorkerIsReplaced(t *testing.T) {
	for _, shim := range []bool{false, true} {
		t.Run(map[bool]string{false: "direct", true: "through the exec-shim"}[shim], func(t *testing.T) {
			h := start(t, testConfig(testkit.Executable(t), "serve", 1), func(o *Options) { o.ExecShim = shim })
			victim := h.waitReady(1)[0]
			if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			e := h.rec.wait(t, 5*time.Second, "child_exit of the victim", func(e hooks.Event) bool {
				return e.Hook == hooks.ChildExit && e.PID == victim
			})
			if e.Signal != int(syscall.SIGKILL) || e.ExitCode != -1 || e.WorkerID != 0 {
				t.Errorf("child_exit = %+v, want worker 0 killed by signal 9", e)
			}
			r := h.rec.wait(t, 5*time.Second, "replacement ready", is(hooks.PostWorkerInit))
			if r.WorkerID != 0 || r.PID == victim {
				t.Errorf("replacement = %+v, want slot 0 and a new pid", r)
			}
			m := h.dial()
			if atoi(m["pid"]) != r.PID || m["listen_pid"] != m["pid"] || m["id"] != "0" || m["gen"] != "1" || m["fds"] != "1" {
				t.Errorf("replacement worker sees %v, want pid %d with its own LISTEN_PID, id 0, gen 1, 1 fd", m, r.PID)
			}
			if m["shim_parent"] != "" {
				t.Errorf("the worker's environment holds FORKD_SHIM_PARENT")
			}
		})
	}
}

func TestPool_ExitAtOnceBacksOff(t *testing.T) {
	h := start(t, testConfig(testkit.Executable(t), "exit1", 1), nil)
	var forks []time.Time
	for len(forks) < 4 {
		h.rec.wait(t, 10*time.Second, "pre_fork", is(hooks.PreFork))
		forks = append(forks, time.Now())
	}
	// Retries wait 100ms, 200ms, 400ms: never a tight loop.
	for i := 1; i < len(forks); i++ {
		if gap, min := forks[i].Sub(forks[i-1]), Backoff(i)-10*time.Millisecond; gap < min {
			t.Errorf("spawn %d came %s after the previous one, want ≥ %s", i+1, gap, min)
		}
	}
	st, err := h.pool.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Spawned > 5 {
		t.Errorf("spawned %d processes, want ≤ 5", st.Spawned)
	}
}

func TestBackoff(t *testing.T) {
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}
	for i, w := range want {
		if got := Backoff(i + 1); got != w {
			t.Errorf("Backoff(%d) = %s, want %s", i+1, got, w)
		}
	}
	if got := Backoff(100); got != 30*time.Second {
		t.Errorf("Backoff(100) = %s, want the 30s cap", got)
	}
}

func TestPool_CommandMissing(t *testing.T) {
	cfg := testConfig(testkit.Executable(t), "serve", 1)
	cfg.Worker.Command = filepath.Join(t.TempDir(), "no-such-program")
	h := start(t, cfg, nil)
	h.rec.wait(t, 5*time.Second, "pre_fork", is(hooks.PreFork))
	h.rec.wait(t, 5*time.Second, "retry", is(hooks.PreFork))
	st, err := h.pool.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Spawned != 0 {
		t.Errorf("spawned %d processes for a missing command", st.Spawned)
	}
	if err := h.stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
}

// TestPool_CommandNotExecutable: the exec itself fails (here EACCES) in a
// worker process that already exists; the pool reports why and backs off.
func TestPool_CommandNotExecutable(t *testing.T) {
	cfg := testConfig(testkit.Executable(t), "serve", 1)
	cfg.Worker.Command = filepath.Join(t.TempDir(), "not-executable")
	if err := os.WriteFile(cfg.Worker.Command, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	logs := &testkit.Buffer{}
	h := start(t, cfg, func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(logs, nil)) })
	first := h.rec.wait(t, 5*time.Second, "child_exit", is(hooks.ChildExit))
	if first.ExitCode != 127 {
		t.Errorf("child_exit %+v, want exit code 127", first)
	}
	h.rec.wait(t, 5*time.Second, "retry", is(hooks.PreFork))
	if err := h.stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
	if want := "could not start: exec " + cfg.Worker.Command + ": permission denied"; !strings.Contains(logs.String(), want) {
		t.Errorf("log does not say %q:\n%s", want, logs.String())
	}
}

func TestPool_BootTimeout(t *testing.T) {
	cfg := testConfig(testkit.Executable(t), "hang-boot", 1)
	cfg.Server.BootTimeout.Duration = 300 * time.Millisecond
	cfg.Server.KillTimeout.Duration = 300 * time.Millisecond
	h := start(t, cfg, nil)
	f := h.rec.wait(t, 5*time.Second, "post_fork", is(hooks.PostFork))
	a := h.rec.wait(t, 5*time.Second, "worker_abort", is(hooks.WorkerAbort))
	if a.PID != f.PID || !strings.Contains(a.Reason, "boot timeout") || a.Signal != int(syscall.SIGABRT) {
		t.Errorf("worker_abort = %+v", a)
	}
	h.rec.wait(t, 5*time.Second, "child_exit", func(e hooks.Event) bool {
		return e.Hook == hooks.ChildExit && e.PID == f.PID
	})
}

// TestPool_USR1SkipsBooting: USR1 is forwarded to the ready workers only;
// one still booting may not handle it yet, and would die of it.
func TestPool_USR1SkipsBooting(t *testing.T) {
	h := start(t, testConfig(testkit.Executable(t), "hang-boot", 1), nil)
	f := h.rec.wait(t, 5*time.Second, "post_fork", is(hooks.PostFork))
	exited := testkit.Exited(t, f.PID)
	h.sigs <- syscall.SIGUSR1
	h.sigs <- syscall.SIGTTIN // handled after USR1: its event says USR1 was
	h.rec.wait(t, 5*time.Second, "nworkers_changed", is(hooks.NworkersChanged))
	select {
	case <-exited:
		t.Fatalf("the booting worker %d exited after USR1", f.PID)
	case <-time.After(500 * time.Millisecond):
	}
}

func TestPool_HeartbeatTimeout(t *testing.T) {
	cfg := testConfig(testkit.Executable(t), "no-heartbeat", 1)
	cfg.Server.Timeout.Duration = 300 * time.Millisecond
	cfg.Server.KillTimeout.Duration = 300 * time.Millisecond
	h := start(t, cfg, nil)
	pid := h.waitReady(1)[0]
	a := h.rec.wait(t, 5*time.Second, "worker_abort", is(hooks.WorkerAbort))
	if a.PID != pid || !strings.Contains(a.Reason, "timeout") {
		t.Errorf("worker_abort = %+v, want pid %d", a, pid)
	}
	// The replacement starts at once, before the hung worker is gone.
	r := h.rec.wait(t, 5*time.Second, "replacement", is(hooks.PostFork))
	if r.PID == pid {
		t.Errorf("replacement has the hung worker's pid")
	}
	testkit.WaitExit(t, pid, 5*time.Second)
}

func TestPool_HeartbeatsKeepWorkerAlive(t *testing.T) {
	cfg := testConfig(testkit.Executable(t), "serve", 1)
	cfg.Server.Timeout.Duration = 200 * time.Millisecond
	h := start(t, cfg, nil)
	h.waitReady(1)
	// Heartbeats every 50ms: over 1s (5 timeouts) no abort may happen.
	deadline := time.After(time.Second)
	for {
		select {
		case e := <-h.rec.ch:
			if e.Hook == hooks.WorkerAbort || e.Hook == hooks.ChildExit {
				t.Fatalf("heartbeating worker got %s: %+v", e.Hook, e)
			}
		case <-deadline:
			return
		}
	}
}

func TestPool_IgnoredTermGetsKilled(t *testing.T) {
	cfg := testConfig(testkit.Executable(t), "ignore-term", 1)
	cfg.Server.GracefulTimeout.Duration = 300 * time.Millisecond
	h := start(t, cfg, nil)
	pid := h.waitReady(1)[0]
	h.sigs <- syscall.SIGTERM
	e := h.rec.wait(t, 5*time.Second, "child_exit", is(hooks.ChildExit))
	if e.PID != pid || e.Signal != int(syscall.SIGKILL) {
		t.Errorf("child_exit = %+v, want pid %d killed by KILL", e, pid)
	}
	select {
	case err := <-h.ran:
		close(h.ran)
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after TERM")
	}
}

func TestPool_IgnoresForeignNotify(t *testing.T) {
	dir := t.TempDir()
	h := start(t, testConfig(testkit.Executable(t), "hang-boot", 1), func(o *Options) { o.NotifyDir = dir })
	h.rec.wait(t, 5*time.Second, "post_fork", is(hooks.PostFork))
	socks, _ := filepath.Glob(filepath.Join(dir, "forkd-*", "notify"))
	if len(socks) != 1 {
		t.Fatalf("notify socket not found in %s: %v", dir, socks)
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: socks[0], Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("READY=1\nWATCHDOG=1")); err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(5 * time.Second)
	for {
		st, err := h.pool.Stats(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.IgnoredNotify == 1 {
			break
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatal("the foreign message was never processed")
		}
	}
	s, _ := h.pool.Status(context.Background())
	if s.ReadyWorkers != 0 || s.State != StateStarting {
		t.Errorf("a message from a non-worker changed the pool: %+v", s)
	}
}

func TestPool_Signals(t *testing.T) {
	h := start(t, testConfig(testkit.Executable(t), "serve", 2), nil)
	h.waitReady(2)

	t.Run("TTIN", func(t *testing.T) {
		h.sigs <- syscall.SIGTTIN
		e := h.rec.wait(t, 5*time.Second, "nworkers_changed", is(hooks.NworkersChanged))
		if e.OldWorkers != 2 || e.Workers != 3 || e.Reason != "SIGTTIN" {
			t.Errorf("nworkers_changed = %+v, want 2 → 3 for SIGTTIN", e)
		}
		h.waitReady(1)
	})
	t.Run("TTOU", func(t *testing.T) {
		h.sigs <- syscall.SIGTTOU
		e := h.rec.wait(t, 5*time.Second, "nworkers_changed", is(hooks.NworkersChanged))
		if e.OldWorkers != 3 || e.Workers != 2 {
			t.Errorf("nworkers_changed = %+v, want 3 → 2", e)
		}
		x := h.rec.wait(t, 5*time.Second, "worker_exit", is(hooks.WorkerExit))
		if x.WorkerID != 2 || x.ExitCode != 0 {
			t.Errorf("scaled-down worker_exit = %+v, want slot 2, clean exit", x)
		}
	})
	t.Run("USR1 is forwarded", func(t *testing.T) {
		before := h.pids()
		h.sigs <- syscall.SIGUSR1
		for range before {
			e := h.rec.wait(t, 5*time.Second, "child_exit", is(hooks.ChildExit))
			if !before[e.PID] || e.ExitCode != 42 {
				t.Errorf("child_exit = %+v, want a worker exiting 42 after USR1", e)
			}
		}
		h.waitReady(len(before))
	})
	t.Run("HUP reloads", func(t *testing.T) {
		before := h.pids()
		h.sigs <- syscall.SIGHUP
		e := h.rec.wait(t, 10*time.Second, "when_ready of generation 2", is(hooks.WhenReady))
		if e.Generation != 2 || e.Workers != 2 {
			t.Errorf("when_ready = %+v", e)
		}
		for pid := range before {
			testkit.WaitExit(t, pid, 10*time.Second)
		}
		m := h.dial()
		if m["gen"] != "2" || before[atoi(m["pid"])] {
			t.Errorf("after reload a request reached %v", m)
		}
	})
	t.Run("WINCH stops the workers, keeps the master", func(t *testing.T) {
		before := h.pids()
		h.sigs <- syscall.SIGWINCH
		for pid := range before {
			testkit.WaitExit(t, pid, 10*time.Second)
		}
		h.rec.wait(t, 5*time.Second, "nworkers_changed to 0", func(e hooks.Event) bool {
			return e.Hook == hooks.NworkersChanged && e.Workers == 0
		})
		s, err := h.pool.Status(context.Background())
		if err != nil || s.Workers != 0 || s.State != StateRunning {
			t.Errorf("Status = %+v, %v", s, err)
		}
	})
	t.Run("HUP after WINCH starts the config's workers", func(t *testing.T) {
		h.sigs <- syscall.SIGHUP
		if e := h.rec.wait(t, 5*time.Second, "on_reload", is(hooks.OnReload)); e.Reason != "SIGHUP" {
			t.Errorf("on_reload reason %q, want SIGHUP", e.Reason)
		}
		h.waitReady(2)
		s, err := h.pool.Status(context.Background())
		if err != nil || s.Workers != 2 {
			t.Errorf("Status = %+v, %v; want the config's 2 workers", s, err)
		}
	})
	t.Run("INT stops quickly", func(t *testing.T) {
		pids := h.pids()
		h.sigs <- syscall.SIGINT
		h.rec.wait(t, 5*time.Second, "worker_int", is(hooks.WorkerInt))
		for pid := range pids {
			testkit.WaitExit(t, pid, 5*time.Second)
		}
		select {
		case err := <-h.ran:
			close(h.ran)
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return after INT")
		}
	})
}

func TestPool_ReloadRollsBack(t *testing.T) {
	cfg := testConfig(testkit.Executable(t), "serve", 2)
	next := make(chan *config.Config, 1)
	h := start(t, cfg, func(o *Options) {
		o.Load = func() (*config.Config, error) {
			select {
			case c := <-next:
				return c, nil
			default:
				return nil, errors.New("demo.toml:3:11: server.workers: must be between 1 and 4096, got 0")
			}
		}
	})
	h.waitReady(2)
	before := h.pids()

	t.Run("invalid config changes nothing", func(t *testing.T) {
		err := h.pool.Reload(context.Background())
		if err == nil || !strings.Contains(err.Error(), "server.workers") {
			t.Fatalf("Reload = %v, want the config error", err)
		}
		if after := h.pids(); !samePIDs(before, after) {
			t.Errorf("workers changed: %v → %v", before, after)
		}
	})
	t.Run("crashing generation is rolled back", func(t *testing.T) {
		next <- testConfig(testkit.Executable(t), "exit1", 2)
		err := h.pool.Reload(context.Background())
		if err == nil || !strings.Contains(err.Error(), "exited with status 1") {
			t.Fatalf("Reload = %v, want the new generation's failure", err)
		}
		if after := h.pids(); !samePIDs(before, after) {
			t.Errorf("old workers changed: %v → %v", before, after)
		}
		for range 10 {
			if pid := atoi(h.dial()["pid"]); !before[pid] {
				t.Errorf("request served by %d, not an old worker", pid)
			}
		}
		s, _ := h.pool.Status(context.Background())
		if s.Generation != 1 || s.State != StateRunning {
			t.Errorf("Status after rollback = %+v", s)
		}
	})
	t.Run("working generation replaces the old one", func(t *testing.T) {
		next <- testConfig(testkit.Executable(t), "serve", 2)
		if err := h.pool.Reload(context.Background()); err != nil {
			t.Fatalf("Reload: %v", err)
		}
		// Reload returned: the new generation serves now.
		s, _ := h.pool.Status(context.Background())
		if s.ReadyWorkers != 2 || s.Generation == 1 {
			t.Errorf("Status after reload = %+v", s)
		}
		for pid := range before {
			testkit.WaitExit(t, pid, 10*time.Second)
		}
	})
}

func samePIDs(a, b map[int]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func TestPool_ScaleSurvivesReload(t *testing.T) {
	h := start(t, testConfig(testkit.Executable(t), "serve", 1), nil)
	h.waitReady(1)
	if err := h.pool.SetWorkers(context.Background(), 3); err != nil {
		t.Fatal(err)
	}
	h.waitReady(2)
	if err := h.pool.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	s, _ := h.pool.Status(context.Background())
	if s.Workers != 3 || s.ReadyWorkers != 3 {
		t.Errorf("after reload Status = %+v, want the 3 workers set by SetWorkers", s)
	}
}

// masterProc is the test binary running as a master (runMaster).
type masterProc struct {
	cmd   *exec.Cmd
	lines chan string // its stdout, closed at EOF
	port  string
	// whenReady lists the generations of the when_ready events report
	// read so far.
	whenReady []int
}

func startMaster(t *testing.T, env ...string) *masterProc {
	t.Helper()
	cmd := testkit.Command(t, "master")
	// The master makes its notify socket's directory under
	// RUNTIME_DIRECTORY: in the test's, which goes with the test even when
	// the master is killed and cannot remove it.
	cmd.Env = append(append(cmd.Env, "GOTRACEBACK=none", "RUNTIME_DIRECTORY="+t.TempDir()), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	m := &masterProc{cmd: cmd, lines: make(chan string, 64)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			m.lines <- sc.Text()
		}
		close(m.lines)
	}()
	return m
}

// report reads one ready report: the master's pid, whether it adopted its
// workers, and their pids.
func (m *masterProc) report(t *testing.T) (pid int, adopted bool, workers map[int]bool) {
	t.Helper()
	workers = map[int]bool{}
	deadline := time.After(20 * time.Second)
	for {
		select {
		case line, ok := <-m.lines:
			if !ok {
				t.Fatal("master exited before reporting")
			}
			f := strings.Fields(line)
			switch {
			case line == "ready":
				return pid, adopted, workers
			case len(f) == 6 && f[0] == "master":
				pid, m.port, adopted = atoi(f[1]), f[3], f[5] == "true"
			case len(f) == 2 && f[0] == "worker":
				workers[atoi(f[1])] = true
			case len(f) == 2 && f[0] == "when_ready":
				m.whenReady = append(m.whenReady, atoi(f[1]))
			default:
				t.Fatalf("master said %q", line)
			}
		case <-deadline:
			t.Fatal("master did not report within 20s")
		}
	}
}

// waitLog waits for a log line of the master that contains text.
func (m *masterProc) waitLog(t *testing.T, text string) string {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case line, ok := <-m.lines:
			if !ok {
				t.Fatalf("master exited before logging %q", text)
			}
			if strings.Contains(line, text) {
				return line
			}
		case <-deadline:
			t.Fatalf("master did not log %q within 20s", text)
		}
	}
}

// workersFile writes n (or any text) to the file a test master reads its
// worker count from (FORKD_TEST_WORKERS_FILE).
func workersFile(t *testing.T, path, n string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(n), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestPool_UpgradeRefusedBadConfig: USR2 with a config that does not load
// is refused by the old master — the new one would exit at once, and every
// worker with it — and the old master goes on serving, reloading once the
// file is fixed.
func TestPool_UpgradeRefusedBadConfig(t *testing.T) {
	file := filepath.Join(t.TempDir(), "workers")
	workersFile(t, file, "2")
	m := startMaster(t, "FORKD_TEST_WORKERS_FILE="+file)
	pid, _, before := m.report(t)
	workersFile(t, file, "two")
	if err := m.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	if line := m.waitLog(t, "upgrade refused"); !strings.Contains(line, "workers") {
		t.Errorf("the refusal does not say what is wrong with the config: %s", line)
	}
	workersFile(t, file, "3")
	if err := m.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	pid2, adopted, after := m.report(t)
	if pid2 != pid || adopted {
		t.Fatalf("after the refused upgrade: master %d (want %d), adopted %v (want false)", pid2, pid, adopted)
	}
	if len(after) != 3 {
		t.Errorf("after the reload: %d workers, want 3", len(after))
	}
	for p := range before {
		testkit.WaitExit(t, p, 10*time.Second)
	}
}

// TestPool_UpgradeThenWorkersChange: a worker count changed in the file
// before an upgrade applies at the next reload — the adopted generation
// keeps the count it was started with, and the reload compares the file
// with that, not with what the new master read at its start.
func TestPool_UpgradeThenWorkersChange(t *testing.T) {
	file := filepath.Join(t.TempDir(), "workers")
	workersFile(t, file, "3")
	m := startMaster(t, "FORKD_TEST_WORKERS_FILE="+file)
	pid, _, before := m.report(t)
	if len(before) != 3 {
		t.Fatalf("%d workers at start, want 3", len(before))
	}
	workersFile(t, file, "2")
	if err := m.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	pid2, adopted, adoptedWorkers := m.report(t)
	if pid2 != pid || !adopted || !samePIDs(before, adoptedWorkers) {
		t.Fatalf("after USR2: master %d (want %d), adopted %v, workers %v → %v", pid2, pid, adopted, before, adoptedWorkers)
	}
	if err := m.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	_, _, after := m.report(t)
	if len(after) != 2 {
		t.Errorf("after the reload: %d workers (%v), want the file's 2", len(after), after)
	}
}

// TestPool_UpgradeKeepsDeadlines: a worker stopping when the master is
// upgraded is killed at the deadline its stop began with, not a whole
// graceful_timeout after the upgrade.
func TestPool_UpgradeKeepsDeadlines(t *testing.T) {
	const grace, gap = 3 * time.Second, 1500 * time.Millisecond
	m := startMaster(t, "FORKD_TEST_WORKER_MODE=ignore-term", "FORKD_TEST_GRACE="+grace.String())
	_, _, before := m.report(t)
	ttou := time.Now()
	if err := m.cmd.Process.Signal(syscall.SIGTTOU); err != nil { // one worker stops, ignoring TERM
		t.Fatal(err)
	}
	exits := make([]<-chan struct{}, 0, len(before))
	for pid := range before {
		exits = append(exits, testkit.Exited(t, pid))
	}
	// The scenario: the upgrade comes well into the stopping worker's
	// grace. This sleep is the gap between the two signals, not a wait for
	// a condition.
	time.Sleep(gap)
	if err := m.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	done := make(chan time.Duration, len(exits))
	over := make(chan struct{})
	defer close(over)
	for _, exited := range exits {
		go func() {
			select {
			case <-exited:
				done <- time.Since(ttou)
			case <-over:
			}
		}()
	}
	var first time.Duration
	select {
	case first = <-done:
	case <-time.After(3 * grace):
		t.Fatalf("no worker gone %s after TTOU", 3*grace)
	}
	if first > grace+gap/2 {
		t.Errorf("the stopping worker was gone %s after TTOU, want about its grace %s (the upgrade came %s in)", first, grace, gap)
	}
	if first < grace-100*time.Millisecond {
		t.Errorf("the stopping worker was gone %s after TTOU, before its grace %s", first, grace)
	}
}

// TestPool_MasterKilled kills -9 a master (the test binary as a separate
// process) and checks that no worker survives it.
func TestPool_MasterKilled(t *testing.T) {
	m := startMaster(t)
	_, _, pids := m.report(t)
	if len(pids) != 2 {
		t.Fatalf("master reported %d workers", len(pids))
	}
	if err := m.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	m.cmd.Wait()
	for pid := range pids {
		testkit.WaitExit(t, pid, 5*time.Second)
	}
}

// TestPool_Upgrade re-executes a master in place (USR2), twice: same pid,
// the same worker processes adopted, the socket still served.
func TestPool_Upgrade(t *testing.T) {
	m := startMaster(t)
	pid, adopted, before := m.report(t)
	if pid != m.cmd.Process.Pid || adopted || len(before) != 2 {
		t.Fatalf("first report: master %d adopted %v workers %v", pid, adopted, before)
	}
	for i := range 2 {
		if err := m.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
			t.Fatal(err)
		}
		pid, adopted, after := m.report(t)
		if pid != m.cmd.Process.Pid || !adopted {
			t.Fatalf("upgrade %d: master pid %d (want %d), adopted %v", i+1, pid, m.cmd.Process.Pid, adopted)
		}
		if !samePIDs(before, after) {
			t.Fatalf("upgrade %d changed the workers: %v → %v", i+1, before, after)
		}
		// Each master, the first and each successor, said it serves.
		if len(m.whenReady) != i+2 {
			t.Errorf("after upgrade %d: when_ready came for generations %v, want one per master (%d)", i+1, m.whenReady, i+2)
		}
		for range 4 {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+m.port, 5*time.Second)
			if err != nil {
				t.Fatalf("after upgrade %d: %v", i+1, err)
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if err != nil || !before[atoi(strings.TrimPrefix(strings.Fields(line)[0], "pid="))] {
				t.Fatalf("after upgrade %d the socket answered %q, %v", i+1, line, err)
			}
		}
	}
}

// TestPool_UpgradeCallRepliesFirst: an Upgrade call gets its nil reply,
// and passes it on, before the master re-executes and adopts its workers.
func TestPool_UpgradeCallRepliesFirst(t *testing.T) {
	m := startMaster(t)
	pid, _, before := m.report(t)
	if err := m.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	select {
	case line := <-m.lines:
		if line != "upgrade reply <nil>" {
			t.Fatalf("after the Upgrade call the master said %q, want its nil reply first", line)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no reply to the Upgrade call within 20s")
	}
	pid2, adopted, after := m.report(t)
	if pid2 != pid || !adopted || !samePIDs(before, after) {
		t.Fatalf("after the Upgrade call: master %d (want %d), adopted %v, workers %v → %v", pid2, pid, adopted, before, after)
	}
}

// TestPool_ReloadRollbackSpawnsNoMore: when the first spawn of a reload's
// generation fails (here its pre_fork hook refuses), the reload is rolled
// back and none of that generation's other slots is started after all.
func TestPool_ReloadRollbackSpawnsNoMore(t *testing.T) {
	cfg := testConfig(testkit.Executable(t), "serve", 3)
	h := start(t, cfg, func(o *Options) {
		o.Load = func() (*config.Config, error) { return testConfig(testkit.Executable(t), "serve", 3), nil }
		o.RunHook = func(_ context.Context, e hooks.Event) error {
			if e.Hook == hooks.PreFork && e.Generation == 2 && e.WorkerID == 0 {
				return errors.New("refused")
			}
			return nil
		}
	})
	h.waitReady(3)
	if err := h.pool.Reload(context.Background()); err == nil || !strings.Contains(err.Error(), "pre_fork") {
		t.Fatalf("Reload = %v, want the pre_fork hook's refusal", err)
	}
	list, err := h.pool.ListWorkers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range list {
		if w.Generation != 1 {
			t.Errorf("worker %d (pid %d) of generation %d is running after the rollback", w.ID, w.PID, w.Generation)
		}
	}
	if len(list) != 3 {
		t.Errorf("%d workers after the rollback, want the 3 of generation 1: %+v", len(list), list)
	}
}

// TestPool_ReloadMaxSurge reloads with max_surge = 1: the new generation
// boots one worker at a time, each ready one retiring an old one, so live
// capacity never drops and never more than one worker boots.
func TestPool_ReloadMaxSurge(t *testing.T) {
	cfg := testConfig(testkit.Executable(t), "serve", 3)
	cfg.Server.MaxSurge = 1
	h := start(t, cfg, nil)
	old := map[int]bool{}
	for _, pid := range h.waitReady(3) {
		old[pid] = true
	}
	done := make(chan error, 1)
	go func() { done <- h.pool.Reload(context.Background()) }()
	booting, retired := 0, 0
	for {
		e := h.rec.wait(t, 20*time.Second, "the rolling reload", func(e hooks.Event) bool {
			return e.Hook == hooks.PostFork || e.Hook == hooks.PostWorkerInit ||
				e.Hook == hooks.ChildExit || e.Hook == hooks.WhenReady
		})
		switch {
		case e.Hook == hooks.PostFork:
			booting++
			if booting > 1 {
				t.Fatalf("%d new workers booting at once, want at most max_surge = 1", booting)
			}
		case e.Hook == hooks.PostWorkerInit:
			booting--
			if retired == 0 {
				// The arbiter retired an old worker as it marked this one
				// ready: by now at most two old ones still serve.
				serving := 0
				for pid := range h.pids() {
					if old[pid] {
						serving++
					}
				}
				if serving > 2 {
					t.Fatalf("a new worker is ready but all %d old ones still serve: not a rolling reload", serving)
				}
				retired++
			}
		}
		if e.Hook == hooks.WhenReady && e.Generation == 2 {
			break
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("Reload: %v", err)
	}
	for pid := range old {
		testkit.WaitExit(t, pid, 10*time.Second)
	}
}

// TestPool_UpgradeThenReload: with reload_after_upgrade, the new master
// adopts the workers, then replaces them with a new generation.
func TestPool_UpgradeThenReload(t *testing.T) {
	m := startMaster(t, "FORKD_TEST_RELOAD_AFTER_UPGRADE=1")
	pid, _, before := m.report(t)
	if err := m.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	pid2, adopted, after := m.report(t)
	if pid2 != pid || !adopted {
		t.Fatalf("after USR2: master %d (want %d), adopted %v", pid2, pid, adopted)
	}
	if samePIDs(before, after) {
		// The adopted generation was reported first; the reload's follows.
		_, _, after = m.report(t)
	}
	for p := range after {
		if before[p] {
			t.Fatalf("worker %d of the old generation still serves after the reload: %v → %v", p, before, after)
		}
	}
	for p := range before {
		testkit.WaitExit(t, p, 10*time.Second)
	}
}

// TestPool_MaxFailures: a slot that keeps failing stops the instance with
// ErrCrashLoop once it failed max_failures times in a row.
func TestPool_MaxFailures(t *testing.T) {
	cfg := testConfig(testkit.Executable(t), "exit1", 2)
	cfg.Server.MaxFailures = 3
	h := start(t, cfg, nil)
	select {
	case err := <-h.ran:
		close(h.ran)
		if !errors.Is(err, ErrCrashLoop) || !strings.Contains(err.Error(), "failed 3 times in a row") {
			t.Fatalf("Run = %v, want the crash loop error", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a crash-looping instance did not stop")
	}
}

// TestPool_ReloadObservedBeforeOutcome checks that a reload's new status is
// observed before its outcome is reported: D-Bus Reload, and forkctl
// reload that reads Generation right after it, must see the new
// generation.
func TestPool_ReloadObservedBeforeOutcome(t *testing.T) {
	// Observe and Reloaded run on the arbiter's goroutine; the test reads
	// the latest status once Reload returned.
	var latest atomic.Pointer[Status]
	atOutcome := make(chan Status, 1)
	h := start(t, testConfig(testkit.Executable(t), "serve", 1), func(o *Options) {
		o.Observe = func(s Status) { latest.Store(&s) }
		o.Reloaded = func(error) { atOutcome <- *latest.Load() }
	})
	h.waitReady(1)
	if err := h.pool.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	after := *latest.Load()
	if s := <-atOutcome; s.Generation != 2 || s.State != StateRunning {
		t.Errorf("status observed when the reload's outcome was reported: %+v, want generation 2 running", s)
	}
	if after.Generation != 2 || after.State != StateRunning {
		t.Errorf("status observed when Reload returned: %+v, want generation 2 running", after)
	}
}

// TestPool_MasterSlice: with master_slice set, every thread of the master
// (here, the test process) has that time slice while the pool runs, its
// workers run with the kernel's default — started directly or through the
// exec-shim — and Run puts the default back when it returns.
func TestPool_MasterSlice(t *testing.T) {
	base := threadSlices(t)
	def := base[unix.Gettid()]
	if def == 0 {
		t.Skip("sched_getattr reports no time slice for SCHED_OTHER: a kernel before Linux 6.12")
	}
	const asked = 300 * time.Microsecond
	for _, shim := range []bool{false, true} {
		t.Run(map[bool]string{false: "direct", true: "through the exec-shim"}[shim], func(t *testing.T) {
			cfg := testConfig(testkit.Executable(t), "serve", 2)
			cfg.Server.MasterSlice = config.Duration{Duration: asked}
			h := start(t, cfg, func(o *Options) { o.ExecShim = shim })
			pids := h.waitReady(2)
			for tid, d := range threadSlices(t) {
				if d != asked {
					t.Errorf("thread %d of the master: slice %v while the pool runs, want %v", tid, d, asked)
				}
			}
			for _, pid := range pids {
				if d := threadSlices(t)[pid]; d != 0 {
					t.Fatalf("worker %d is listed as a thread of the master", pid)
				}
				a, err := unix.SchedGetAttr(pid, 0)
				if err != nil {
					t.Fatal(err)
				}
				if got := time.Duration(a.Runtime); got != def {
					t.Errorf("worker %d: slice %v, want the kernel's default %v", pid, got, def)
				}
			}
			if err := h.stop(); err != nil {
				t.Fatal(err)
			}
			for tid, d := range threadSlices(t) {
				if d != def {
					t.Errorf("thread %d: slice %v after Run returned, want the default %v back", tid, d, def)
				}
			}
		})
	}
	// A master that USR2 re-executed inherits its predecessor's slice; with
	// master_slice = "0" it goes back to the kernel's default, and so do
	// its workers.
	t.Run("0 after an inherited short slice", func(t *testing.T) {
		short := unix.SchedAttr{Policy: unix.SCHED_NORMAL, Runtime: uint64(asked)}
		for tid := range threadSlices(t) {
			if err := unix.SchedSetAttr(tid, &short, 0); err != nil {
				t.Fatal(err)
			}
		}
		h := start(t, testConfig(testkit.Executable(t), "serve", 1), nil) // MasterSlice 0
		pid := h.waitReady(1)[0]
		for tid, d := range threadSlices(t) {
			if d != def {
				t.Errorf("thread %d of the master: slice %v with master_slice 0, want the default %v", tid, d, def)
			}
		}
		if a, err := unix.SchedGetAttr(pid, 0); err != nil || time.Duration(a.Runtime) != def {
			t.Errorf("worker %d: sched_getattr = %+v, %v; want the default slice %v", pid, a, err, def)
		}
	})
}

// threadSlices is the time slice of every thread of this process, by tid,
// as sched_getattr reports it (0 before Linux 6.12).
func threadSlices(t *testing.T) map[int]time.Duration {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	m := map[int]time.Duration{}
	for _, e := range ents {
		tid := atoi(e.Name())
		a, err := unix.SchedGetAttr(tid, 0)
		if err != nil {
			continue // the thread is gone
		}
		m[tid] = time.Duration(a.Runtime)
	}
	return m
}
