package hooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/internal/testkit"
)

// testDeadline bounds every wait in these tests.
const testDeadline = 20 * time.Second

// recordLog is a slog JSON handler's output: every record is kept, and also
// sent on records for tests that wait for them.
type recordLog struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	records chan map[string]any
}

func newRecordLog() *recordLog {
	return &recordLog{records: make(chan map[string]any, 1024)}
}

// Write takes one JSON record (slog handlers write a record per call).
func (l *recordLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.buf.Write(p)
	l.mu.Unlock()
	var rec map[string]any
	if err := json.Unmarshal(p, &rec); err != nil {
		return 0, fmt.Errorf("record is not one JSON object: %w", err)
	}
	select {
	case l.records <- rec:
	default:
	}
	return len(p), nil
}

// logger returns a debug-level logger writing to l.
func (l *recordLog) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// String returns everything logged so far.
func (l *recordLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// all returns every record logged so far.
func (l *recordLog) all(t *testing.T) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.String()), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		recs = append(recs, rec)
	}
	return recs
}

// nextOutput returns the next Info record (a command's output line, not one
// of Exec's debug records), failing the test after testDeadline.
func (l *recordLog) nextOutput(t *testing.T) map[string]any {
	t.Helper()
	deadline := time.After(testDeadline)
	for {
		select {
		case rec := <-l.records:
			if rec["level"] == "INFO" {
				return rec
			}
		case <-deadline:
			t.Fatalf("no output record within %s; log so far:\n%s", testDeadline, l.String())
		}
	}
}

// shellArgv returns the argv of a /bin/sh script; args are $0, $1, ….
func shellArgv(script string, args ...string) []string {
	return append([]string{"/bin/sh", "-c", script}, args...)
}

// readEnv parses a file written by env(1).
func readEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	env := make(map[string]string)
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			env[k] = v
		}
	}
	return env
}

// readPID reads a pid a command wrote to path.
func readPID(t *testing.T, path string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read the pid the command wrote: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatalf("pid file %s holds %q: %v", path, data, err)
	}
	return pid
}

// runExec starts x.Run and returns a function that stops it and checks it
// returned nil in time.
func runExec(t *testing.T, x *Exec) (stop func()) {
	t.Helper()
	return testkit.Run(t, x.Run)
}

func TestExec_Env(t *testing.T) {
	// Stale values in the master's environment must not leak into hooks
	// they do not apply to; unrelated variables pass through.
	t.Setenv("FORKD_WORKER_ID", "99")
	t.Setenv("FORKD_RESULT", "stale")
	t.Setenv("FORKD_EXEC_TEST_MARK", "kept")

	tests := []struct {
		event  Event
		want   map[string]string
		absent []string
	}{
		{
			event: Event{Hook: OnStarting, Instance: "myapp", Generation: 1, WorkerID: -1},
			want: map[string]string{
				"FORKD_HOOK": "on_starting", "FORKD_INSTANCE": "myapp", "FORKD_GENERATION": "1",
			},
			absent: []string{"FORKD_WORKER_ID", "FORKD_PID", "FORKD_EXIT_CODE", "FORKD_SIGNAL",
				"FORKD_REASON", "FORKD_WORKERS", "FORKD_OLD_WORKERS"},
		},
		{
			event: Event{Hook: WorkerExit, Instance: "myapp", Generation: 3, WorkerID: 2, PID: 1234,
				ExitCode: -1, Signal: 9, Reason: "timeout"},
			want: map[string]string{
				"FORKD_HOOK": "worker_exit", "FORKD_INSTANCE": "myapp", "FORKD_GENERATION": "3",
				"FORKD_WORKER_ID": "2", "FORKD_PID": "1234", "FORKD_EXIT_CODE": "-1",
				"FORKD_SIGNAL": "9", "FORKD_REASON": "timeout",
			},
			absent: []string{"FORKD_WORKERS", "FORKD_OLD_WORKERS"},
		},
		{
			event: Event{Hook: NworkersChanged, Instance: "other", Generation: 4, WorkerID: -1,
				Workers: 6, OldWorkers: 4, Reason: "TTIN"},
			want: map[string]string{
				"FORKD_HOOK": "nworkers_changed", "FORKD_INSTANCE": "other", "FORKD_GENERATION": "4",
				"FORKD_WORKERS": "6", "FORKD_OLD_WORKERS": "4", "FORKD_REASON": "TTIN",
			},
			absent: []string{"FORKD_WORKER_ID", "FORKD_PID", "FORKD_EXIT_CODE", "FORKD_SIGNAL"},
		},
		{
			event: Event{Hook: SingletonExited, Instance: "myapp", Generation: 2, WorkerID: -1, Job: "scheduler",
				PID: 777, ExitCode: 3, Reason: "crashed"},
			want: map[string]string{
				"FORKD_HOOK": "singleton_exited", "FORKD_INSTANCE": "myapp", "FORKD_JOB": "scheduler",
				"FORKD_PID": "777", "FORKD_EXIT_CODE": "3", "FORKD_SIGNAL": "0", "FORKD_REASON": "crashed",
			},
			absent: []string{"FORKD_WORKER_ID", "FORKD_RUN_ID", "FORKD_SCHEDULED_AT", "FORKD_RESULT",
				"FORKD_DURATION_USEC"},
		},
		{
			event: Event{Hook: ScheduleStarted, Instance: "myapp", Generation: 2, WorkerID: -1, Job: "cleanup",
				RunID: "0192f-run", PID: 778,
				ScheduledAt: time.Date(2026, 1, 2, 3, 5, 0, 0, time.FixedZone("KST", 9*3600))},
			want: map[string]string{
				"FORKD_HOOK": "schedule_started", "FORKD_JOB": "cleanup", "FORKD_RUN_ID": "0192f-run",
				"FORKD_SCHEDULED_AT": "2026-01-02T03:05:00+09:00", "FORKD_PID": "778",
			},
			absent: []string{"FORKD_WORKER_ID", "FORKD_EXIT_CODE", "FORKD_RESULT", "FORKD_DURATION_USEC", "FORKD_REASON"},
		},
		{
			event: Event{Hook: ScheduleFinished, Instance: "myapp", Generation: 2, WorkerID: -1, Job: "cleanup",
				RunID: "0192f-run", PID: 778, ExitCode: -1, Signal: 15, Duration: 61*time.Second + 5*time.Microsecond,
				Result: "timeout"},
			want: map[string]string{
				"FORKD_HOOK": "schedule_finished", "FORKD_JOB": "cleanup", "FORKD_RUN_ID": "0192f-run",
				"FORKD_EXIT_CODE": "-1", "FORKD_SIGNAL": "15", "FORKD_DURATION_USEC": "61000005",
				"FORKD_RESULT": "timeout",
			},
			absent: []string{"FORKD_WORKER_ID", "FORKD_PID", "FORKD_SCHEDULED_AT", "FORKD_REASON"},
		},
		{
			event: Event{Hook: PreFork, Instance: "myapp", Generation: 2, WorkerID: 0},
			want: map[string]string{
				"FORKD_HOOK": "pre_fork", "FORKD_GENERATION": "2", "FORKD_WORKER_ID": "0",
			},
			absent: []string{"FORKD_PID", "FORKD_EXIT_CODE", "FORKD_REASON"},
		},
	}
	for _, tt := range tests {
		t.Run(string(tt.event.Hook), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "env")
			x := NewExec([]Command{{Hook: tt.event.Hook, Argv: shellArgv(`env > "$0"`, out), Abort: true}}, nil)
			if err := x.RunNow(context.Background(), tt.event); err != nil {
				t.Fatalf("RunNow: %v", err)
			}
			env := readEnv(t, out)
			for k, v := range tt.want {
				if got, ok := env[k]; !ok || got != v {
					t.Errorf("%s = %q (set: %v), want %q", k, got, ok, v)
				}
			}
			for _, k := range tt.absent {
				if v, ok := env[k]; ok {
					t.Errorf("%s = %q is set, want it absent for %s", k, v, tt.event.Hook)
				}
			}
			if env["FORKD_EXEC_TEST_MARK"] != "kept" {
				t.Errorf("the master's environment did not pass through: FORKD_EXEC_TEST_MARK = %q", env["FORKD_EXEC_TEST_MARK"])
			}
		})
	}
}

func TestExec_RunOrderAndOutput(t *testing.T) {
	log := newRecordLog()
	x := NewExec([]Command{
		{Hook: PostFork, Argv: shellArgv(`echo "$FORKD_WORKER_ID a"`)},
		{Hook: PostFork, Argv: shellArgv(`echo "$FORKD_WORKER_ID b" >&2; printf 'no newline'`)},
	}, log.logger())
	runExec(t, x)

	const n = 5
	for i := range n {
		x.Emit(Event{Hook: PostFork, Instance: "myapp", WorkerID: i, PID: 1000 + i})
	}
	for i := range n {
		a, b, tail := log.nextOutput(t), log.nextOutput(t), log.nextOutput(t)
		for _, rec := range []map[string]any{a, b, tail} {
			if rec["hook"] != "post_fork" {
				t.Errorf("record %v: hook = %v, want post_fork", rec, rec["hook"])
			}
			if pid, _ := rec["pid"].(float64); pid <= 0 {
				t.Errorf("record %v: pid = %v, want the command's pid", rec, rec["pid"])
			}
		}
		if want := fmt.Sprintf("%d a", i); a["msg"] != want {
			t.Fatalf("output record %d = %q, want %q (out of order?)", 3*i, a["msg"], want)
		}
		if want := fmt.Sprintf("%d b", i); b["msg"] != want {
			t.Fatalf("output record %d = %q, want %q (stderr, out of order?)", 3*i+1, b["msg"], want)
		}
		if tail["msg"] != "no newline" {
			t.Fatalf("output record %d = %q, want the unterminated last line", 3*i+2, tail["msg"])
		}
		if a["pid"] == b["pid"] {
			t.Errorf("both commands of event %d logged pid %v; each runs in its own process", i, a["pid"])
		}
		if b["pid"] != tail["pid"] {
			t.Errorf("one command's lines carry pids %v and %v", b["pid"], tail["pid"])
		}
	}
	if got := x.Dropped(); got != 0 {
		t.Errorf("Dropped() = %d, want 0", got)
	}
}

func TestExec_EmitDrops(t *testing.T) {
	log := newRecordLog()
	x := newExec([]Command{{Hook: PostFork, Argv: shellArgv(`echo "$FORKD_WORKER_ID"`)}}, log.logger(), 4)

	// Run is not running: the queue fills, and Emit must still return.
	emitted := make(chan struct{})
	go func() {
		defer close(emitted)
		for i := range 7 {
			x.Emit(Event{Hook: PostFork, WorkerID: i})
		}
		x.Emit(Event{Hook: OnExit}) // no commands: ignored, not a drop
	}()
	select {
	case <-emitted:
	case <-time.After(testDeadline):
		t.Fatalf("Emit blocked on a full queue")
	}
	if got := x.Dropped(); got != 3 {
		t.Fatalf("Dropped() = %d, want 3", got)
	}
	if x.Has(OnExit) || !x.Has(PostFork) {
		t.Errorf("Has(on_exit) = %v, Has(post_fork) = %v; want false, true", x.Has(OnExit), x.Has(PostFork))
	}

	// The first drop of the spell is a warning naming the hook and the
	// count; the two after it are not logged.
	warns := warnings(t, log)
	if len(warns) != 1 || warns[0]["hook"] != "post_fork" || warns[0]["dropped"] != float64(1) ||
		!strings.Contains(fmt.Sprint(warns[0]["msg"]), "dropped") {
		t.Fatalf("warnings %v; want one about a dropped event, with hook=post_fork dropped=1", warns)
	}

	// The events that made it in run, the first four, in order.
	runExec(t, x)
	for i := range 4 {
		if rec := log.nextOutput(t); rec["msg"] != strconv.Itoa(i) {
			t.Fatalf("queued event %d ran as %q, want %q", i, rec["msg"], strconv.Itoa(i))
		}
	}
	// The next event fits: the spell is over, and its count is logged.
	x.Emit(Event{Hook: PostFork, WorkerID: 7})
	if rec := log.nextOutput(t); rec["msg"] != "7" {
		t.Fatalf("the event after the spell ran as %q, want \"7\"", rec["msg"])
	}
	warns = warnings(t, log)
	if len(warns) != 2 || warns[1]["dropped_meanwhile"] != float64(3) || warns[1]["dropped"] != float64(3) {
		t.Fatalf("warnings %v; want a second one saying 3 were dropped meanwhile, 3 in all", warns)
	}
}

// warnings returns the Warn records logged so far.
func warnings(t *testing.T, log *recordLog) []map[string]any {
	t.Helper()
	var warns []map[string]any
	for _, rec := range log.all(t) {
		if rec["level"] == "WARN" {
			warns = append(warns, rec)
		}
	}
	return warns
}

func TestExec_Timeout(t *testing.T) {
	t.Run("term", func(t *testing.T) {
		pidFile := filepath.Join(t.TempDir(), "child.pid")
		x := NewExec([]Command{{
			Hook:    OnStarting,
			Argv:    shellArgv(`sleep 100 & echo $! > "$0"; wait`, pidFile),
			Timeout: 2 * time.Second,
			Abort:   true,
		}}, nil)
		start := time.Now()
		err := x.RunNow(context.Background(), Event{Hook: OnStarting, WorkerID: -1})
		took := time.Since(start)

		var cerr *CommandError
		if !errors.As(err, &cerr) || !cerr.TimedOut {
			t.Fatalf("RunNow = %v, want a *CommandError that timed out", err)
		}
		if !strings.Contains(err.Error(), "timed out after 2s") || !strings.Contains(err.Error(), "sleep 100") {
			t.Errorf("error %q does not say the command timed out after 2s", err)
		}
		if took < 2*time.Second || took >= execKillDelay+2*time.Second {
			t.Errorf("RunNow took %s; want the 2s timeout, and SIGTERM to end it before the kill delay", took)
		}
		testkit.WaitExit(t, readPID(t, pidFile), testDeadline)
	})

	t.Run("kill", func(t *testing.T) {
		// The command and its child ignore SIGTERM: SIGKILL must follow.
		pidFile := filepath.Join(t.TempDir(), "child.pid")
		x := NewExec([]Command{{
			Hook:    OnStarting,
			Argv:    shellArgv(`trap '' TERM; sleep 100 & echo $! > "$0"; wait`, pidFile),
			Timeout: time.Second,
			Abort:   true,
		}}, nil)
		x.killDelay = 300 * time.Millisecond
		err := x.RunNow(context.Background(), Event{Hook: OnStarting, WorkerID: -1})
		var cerr *CommandError
		if !errors.As(err, &cerr) || !cerr.TimedOut {
			t.Fatalf("RunNow = %v, want a *CommandError that timed out", err)
		}
		if code := cerr.ExitCode(); code != -1 {
			t.Errorf("ExitCode() = %d, want -1 (killed)", code)
		}
		if !strings.Contains(err.Error(), "killed") {
			t.Errorf("error %q does not say the command was killed", err)
		}
		testkit.WaitExit(t, readPID(t, pidFile), testDeadline)
	})

	t.Run("escaped child", func(t *testing.T) {
		// A child in a session of its own outlives the group's kill and
		// holds the output: RunNow returns after the kill delay with a
		// warning, and the child's output is still logged.
		log := newRecordLog()
		x := NewExec([]Command{{
			Hook:    OnStarting,
			Argv:    shellArgv(`setsid sh -c 'echo $$; exec sleep 100' & wait`),
			Timeout: 500 * time.Millisecond,
			Abort:   true,
		}}, log.logger())
		x.killDelay = 300 * time.Millisecond
		err := x.RunNow(context.Background(), Event{Hook: OnStarting, WorkerID: -1})
		var cerr *CommandError
		if !errors.As(err, &cerr) || !cerr.TimedOut {
			t.Fatalf("RunNow = %v, want a *CommandError that timed out", err)
		}
		rec := log.nextOutput(t)
		pid, err := strconv.Atoi(fmt.Sprint(rec["msg"]))
		if err != nil {
			t.Fatalf("output %q is not the escaped child's pid", rec["msg"])
		}
		if err := unix.Kill(pid, 0); err != nil {
			t.Errorf("the escaped child %d does not run any more: %v", pid, err)
		}
		if warns := warnings(t, log); len(warns) != 1 || !strings.Contains(fmt.Sprint(warns[0]["msg"]), "still running") {
			t.Errorf("warnings %v; want one saying a process the hook started is still running", warns)
		}
		_ = unix.Kill(pid, unix.SIGKILL)
		testkit.WaitExit(t, pid, testDeadline)
	})
}

func TestExec_RunCancelKills(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "pid.fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	x := NewExec([]Command{{
		Hook:    WorkerExit,
		Argv:    shellArgv(`sleep 100 & echo $! > "$0"; wait`, fifo),
		Timeout: time.Hour,
	}}, nil)
	stop := runExec(t, x)

	// Opening the fifo waits for the command to open it: it is running.
	pids := make(chan string, 1)
	go func() {
		data, err := os.ReadFile(fifo)
		if err != nil {
			pids <- err.Error()
			return
		}
		pids <- string(data)
	}()
	x.Emit(Event{Hook: WorkerExit, WorkerID: 1})
	var pid int
	select {
	case s := <-pids:
		var err error
		if pid, err = strconv.Atoi(strings.TrimSpace(s)); err != nil {
			t.Fatalf("reading the child's pid: %q", s)
		}
	case <-time.After(testDeadline):
		t.Fatalf("the hook command did not start within %s", testDeadline)
	}

	start := time.Now()
	stop()
	if took := time.Since(start); took >= execKillDelay {
		t.Errorf("Run took %s to return after cancel; SIGTERM should end the command at once", took)
	}
	testkit.WaitExit(t, pid, testDeadline)
}

func TestExec_RunNow(t *testing.T) {
	t.Run("abort", func(t *testing.T) {
		marker := filepath.Join(t.TempDir(), "marker")
		x := NewExec([]Command{
			{Hook: OnStarting, Argv: shellArgv("exit 3"), Abort: true},
			{Hook: OnStarting, Argv: []string{"touch", marker}},
		}, nil)
		err := x.RunNow(context.Background(), Event{Hook: OnStarting})
		var cerr *CommandError
		if !errors.As(err, &cerr) {
			t.Fatalf("RunNow = %v, want a *CommandError", err)
		}
		if cerr.ExitCode() != 3 || cerr.TimedOut || cerr.Hook != OnStarting {
			t.Errorf("CommandError = %+v (exit code %d), want on_starting, exit code 3, not timed out", cerr, cerr.ExitCode())
		}
		for _, want := range []string{"on_starting", `"exit 3"`, "exit status 3"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %s", err, want)
			}
		}
		if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the command after the aborting one ran (stat: %v)", err)
		}
	})

	t.Run("no abort", func(t *testing.T) {
		marker := filepath.Join(t.TempDir(), "marker")
		log := newRecordLog()
		x := NewExec([]Command{
			{Hook: PreFork, Argv: shellArgv("exit 3")},
			{Hook: PreFork, Argv: []string{"touch", marker}},
		}, log.logger())
		if err := x.RunNow(context.Background(), Event{Hook: PreFork}); err != nil {
			t.Fatalf("RunNow = %v, want nil: the failing command has no Abort", err)
		}
		if _, err := os.Stat(marker); err != nil {
			t.Errorf("the command after the failing one did not run: %v", err)
		}
		var warned bool
		for _, rec := range log.all(t) {
			if rec["level"] == "WARN" && strings.Contains(fmt.Sprint(rec["err"]), "exit status 3") {
				warned = true
			}
		}
		if !warned {
			t.Errorf("the failure was not logged as a warning; log:\n%s", log.String())
		}
	})

	t.Run("start failure", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "no-such-program")
		x := NewExec([]Command{{Hook: PreExec, Argv: []string{missing}, Abort: true}}, nil)
		err := x.RunNow(context.Background(), Event{Hook: PreExec})
		var cerr *CommandError
		if !errors.As(err, &cerr) || !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("RunNow = %v, want a *CommandError wrapping a missing file", err)
		}
		if !strings.Contains(err.Error(), missing) {
			t.Errorf("error %q does not name the command", err)
		}
	})

	t.Run("no commands", func(t *testing.T) {
		x := NewExec([]Command{{Hook: OnStarting, Argv: shellArgv("exit 1"), Abort: true}, {Hook: OnReload}}, nil)
		if x.Has(OnReload) {
			t.Errorf("Has(on_reload) = true for a command without argv")
		}
		if err := x.RunNow(context.Background(), Event{Hook: OnReload}); err != nil {
			t.Errorf("RunNow(on_reload) = %v, want nil: no commands", err)
		}
	})

	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		x := NewExec([]Command{{Hook: OnStarting, Argv: shellArgv("exit 0")}}, nil)
		if err := x.RunNow(ctx, Event{Hook: OnStarting}); !errors.Is(err, context.Canceled) {
			t.Errorf("RunNow with a canceled context = %v, want context.Canceled", err)
		}
	})
}

func TestExec_LeftoverChildKeepsOutputOpen(t *testing.T) {
	// The command exits at once but leaves a child holding its stdout:
	// RunNow must not wait for the child.
	log := newRecordLog()
	x := NewExec([]Command{{Hook: OnReload, Argv: shellArgv(`sleep 100 & echo $!`), Abort: true}}, log.logger())
	x.killDelay = 300 * time.Millisecond
	done := make(chan error, 1)
	go func() { done <- x.RunNow(context.Background(), Event{Hook: OnReload}) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("RunNow = %v, want nil: the command exited 0", err)
		}
	case <-time.After(testDeadline):
		t.Fatalf("RunNow waited %s for a child that holds the command's stdout", testDeadline)
	}
	rec := log.nextOutput(t)
	pid, err := strconv.Atoi(fmt.Sprint(rec["msg"]))
	if err != nil {
		t.Fatalf("output %q is not the child's pid", rec["msg"])
	}
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		t.Errorf("the command's child %d was not left running: %v", pid, err)
	}
	testkit.WaitExit(t, pid, testDeadline)
}

func TestExec_LeftoverChildOutlivesHook(t *testing.T) {
	// The command backgrounds a process that holds its output and writes to
	// it later, once the test opens the gate: the command is done when sh
	// exits, a warning says what was left behind, and the late line is
	// logged rather than killing its writer with SIGPIPE.
	gate, log := newGate(t), newRecordLog()
	status := filepath.Join(t.TempDir(), "status")
	x := NewExec([]Command{{
		Hook: OnStarting,
		Argv: shellArgv(`(cat "$0" > /dev/null; echo late && echo ok > "$1") & echo "$!"; echo started`,
			gate, status),
		Abort: true,
	}}, log.logger())

	start := time.Now()
	err := x.RunNow(context.Background(), Event{Hook: OnStarting, WorkerID: -1})
	took := time.Since(start)
	if err != nil {
		t.Fatalf("RunNow = %v, want nil: the command exited 0", err)
	}
	if took >= time.Second {
		t.Errorf("RunNow took %s; it must return as soon as sh exits, not wait for what sh left running", took)
	}

	rec := log.nextOutput(t)
	pid, err := strconv.Atoi(fmt.Sprint(rec["msg"]))
	if err != nil {
		t.Fatalf("output %q is not the background process's pid", rec["msg"])
	}
	t.Cleanup(func() { _ = unix.Kill(pid, unix.SIGKILL) })
	wantOutputs(t, log, "started")

	warns := warnings(t, log)
	if len(warns) != 1 || warns[0]["hook"] != "on_starting" ||
		!strings.Contains(fmt.Sprint(warns[0]["msg"]), "a process started by the on_starting hook is still running") ||
		!strings.Contains(fmt.Sprint(warns[0]["msg"]), "[[singleton]]") {
		t.Fatalf("warnings %v; want one naming on_starting, saying a process it started still runs, pointing at [[singleton]]", warns)
	}

	openGate(t, gate).Close()
	late := log.nextOutput(t)
	if late["msg"] != "late" || late["hook"] != "on_starting" {
		t.Fatalf("output after the gate = %v, want \"late\" logged as the on_starting command's", late)
	}
	testkit.WaitExit(t, pid, testDeadline)
	if data, err := os.ReadFile(status); err != nil || strings.TrimSpace(string(data)) != "ok" {
		t.Fatalf("the background process did not finish after writing (status file: %q, %v): killed by SIGPIPE?", data, err)
	}
}

func TestExec_NoLeftoverNoWarning(t *testing.T) {
	// A command whose background child exits before it does, and one whose
	// child let go of stdout and stderr before it exits (it says so through
	// a fifo), leave nothing that holds the output: no warning, and every
	// line is logged before RunNow returns.
	fifo := newGate(t)
	log := newRecordLog()
	x := NewExec([]Command{
		{Hook: OnStarting, Argv: shellArgv(`echo child & wait; echo parent`)},
		{Hook: OnStarting, Argv: shellArgv(
			`(exec > /dev/null 2>&1; echo > "$0"; exec sleep 100) & read x < "$0"; echo "$!"`, fifo)},
	}, log.logger())
	if err := x.RunNow(context.Background(), Event{Hook: OnStarting, WorkerID: -1}); err != nil {
		t.Fatalf("RunNow = %v", err)
	}
	var outputs []string
	for _, rec := range log.all(t) {
		if rec["level"] == "INFO" {
			outputs = append(outputs, fmt.Sprint(rec["msg"]))
		}
	}
	if len(outputs) != 3 || outputs[0] != "child" || outputs[1] != "parent" {
		t.Fatalf("output logged by the time RunNow returned: %q, want child, parent and a pid", outputs)
	}
	pid, err := strconv.Atoi(outputs[2])
	if err != nil {
		t.Fatalf("output %q is not the background process's pid", outputs[2])
	}
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		t.Errorf("the background process %d was not left running: %v", pid, err)
	}
	testkit.WaitExit(t, pid, testDeadline)
	if warns := warnings(t, log); len(warns) != 0 {
		t.Errorf("warnings %v; want none: nothing the commands started holds their output", warns)
	}
}

func ExampleExec_RunNow() {
	// Drop what changes from run to run: the time and the command's pid.
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey || a.Key == "pid" {
				return slog.Attr{}
			}
			return a
		},
	}))
	x := NewExec([]Command{{
		Hook:  OnStarting,
		Argv:  []string{"/bin/sh", "-c", `echo "starting $FORKD_INSTANCE"; exit 4`},
		Abort: true,
	}}, logger)
	err := x.RunNow(context.Background(), Event{Hook: OnStarting, Instance: "myapp", WorkerID: -1})
	fmt.Println(err)
	// Output:
	// level=INFO msg="starting myapp" hook=on_starting
	// hooks: on_starting command ["/bin/sh" "-c" "echo \"starting $FORKD_INSTANCE\"; exit 4"] failed: exit status 4
}

// gateArgv is the argv of a command that prints its worker id once the test
// lets it through the gate fifo (see openGate).
func gateArgv(fifo string) []string {
	return shellArgv(`cat "$0" > /dev/null; echo "$FORKD_WORKER_ID"`, fifo)
}

// openGate opens fifo for writing, which returns once a command opened it
// for reading: that command runs, and waits until the returned file is
// closed. It fails the test after testDeadline.
func openGate(t *testing.T, fifo string) *os.File {
	t.Helper()
	opened := make(chan *os.File, 1)
	go func() {
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			t.Errorf("open the gate: %v", err)
		}
		opened <- f
	}()
	select {
	case f := <-opened:
		if f == nil {
			t.FailNow()
		}
		return f
	case <-time.After(testDeadline):
		t.Fatalf("no command opened the gate within %s", testDeadline)
		return nil
	}
}

// newGate makes the fifo for gateArgv and openGate.
func newGate(t *testing.T) string {
	t.Helper()
	fifo := filepath.Join(t.TempDir(), "gate")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	return fifo
}

// wantOutputs checks that the next output records are msgs, in order.
func wantOutputs(t *testing.T, log *recordLog, msgs ...string) {
	t.Helper()
	for _, want := range msgs {
		if rec := log.nextOutput(t); rec["msg"] != want {
			t.Fatalf("a command printed %q, want %q", rec["msg"], want)
		}
	}
}

func TestExec_DropSpells(t *testing.T) {
	// Each spell of drops is logged twice: at its first drop, and when the
	// queue takes an event again.
	gate, log := newGate(t), newRecordLog()
	x := newExec([]Command{{Hook: PostFork, Argv: gateArgv(gate)}}, log.logger(), 1)
	runExec(t, x)

	x.Emit(Event{Hook: PostFork, WorkerID: 0})
	hold := openGate(t, gate) // Run is in event 0's command; the queue is empty
	x.Emit(Event{Hook: PostFork, WorkerID: 1})
	x.Emit(Event{Hook: PostFork, WorkerID: 2}) // full: the spell begins
	x.Emit(Event{Hook: PostFork, WorkerID: 3})
	hold.Close()
	wantOutputs(t, log, "0")
	hold = openGate(t, gate)                   // in event 1's command
	x.Emit(Event{Hook: PostFork, WorkerID: 4}) // queued: the spell ends
	x.Emit(Event{Hook: PostFork, WorkerID: 5}) // a new one begins
	hold.Close()
	wantOutputs(t, log, "1")
	openGate(t, gate).Close()
	wantOutputs(t, log, "4")

	if got := x.Dropped(); got != 3 {
		t.Errorf("Dropped() = %d, want 3", got)
	}
	warns := warnings(t, log)
	ok := len(warns) == 3 &&
		warns[0]["hook"] == "post_fork" && warns[0]["dropped"] == float64(1) &&
		warns[1]["dropped_meanwhile"] == float64(2) && warns[1]["dropped"] == float64(2) &&
		warns[2]["hook"] == "post_fork" && warns[2]["dropped"] == float64(3)
	if !ok {
		t.Errorf("warnings:\n%s\nwant: dropped (post_fork, 1), room again (2 meanwhile, 2), dropped (post_fork, 3)", log.String())
	}
}

func TestExec_Replace(t *testing.T) {
	log := newRecordLog()
	x := NewExec([]Command{
		{Hook: PostFork, Argv: shellArgv(`echo "old $FORKD_WORKER_ID"`)},
		{Hook: WhenReady, Argv: shellArgv(`echo "old when_ready"`)},
	}, log.logger())
	x.Emit(Event{Hook: PostFork, WorkerID: 0}) // queued with the old commands

	x.Replace([]Command{
		{Hook: PostFork, Argv: shellArgv(`echo "new $FORKD_WORKER_ID"`)},
		{Hook: PreFork, Argv: shellArgv(`echo "new pre_fork"`)},
	})
	if x.Has(WhenReady) || !x.Has(PreFork) || !x.Has(PostFork) {
		t.Errorf("after Replace: Has(when_ready, pre_fork, post_fork) = %v, %v, %v; want false, true, true",
			x.Has(WhenReady), x.Has(PreFork), x.Has(PostFork))
	}
	x.Emit(Event{Hook: WhenReady}) // no command any more: ignored
	x.Emit(Event{Hook: PostFork, WorkerID: 1})
	runExec(t, x)
	wantOutputs(t, log, "old 0", "new 1")
	if err := x.RunNow(context.Background(), Event{Hook: PreFork}); err != nil {
		t.Fatalf("RunNow(pre_fork) = %v", err)
	}
	wantOutputs(t, log, "new pre_fork")
}

func TestExec_Shutdown(t *testing.T) {
	t.Run("drains", func(t *testing.T) {
		gate, log := newGate(t), newRecordLog()
		x := NewExec([]Command{{Hook: ChildExit, Argv: gateArgv(gate)}}, log.logger())
		runExec(t, x)
		for i := range 3 {
			x.Emit(Event{Hook: ChildExit, WorkerID: i})
		}
		hold := openGate(t, gate) // event 0's command runs; 1 and 2 wait

		shut := make(chan error, 1)
		go func() { shut <- x.Shutdown(context.Background()) }()
		select {
		case <-x.closing:
		case <-time.After(testDeadline):
			t.Fatalf("Shutdown did not begin within %s", testDeadline)
		}
		x.Emit(Event{Hook: ChildExit, WorkerID: 3}) // too late: dropped
		if got := x.Dropped(); got != 1 {
			t.Errorf("Dropped() = %d after an Emit that followed Shutdown, want 1", got)
		}

		hold.Close()
		wantOutputs(t, log, "0")
		openGate(t, gate).Close()
		wantOutputs(t, log, "1")
		hold = openGate(t, gate)
		select {
		case err := <-shut:
			t.Fatalf("Shutdown returned %v while event 2's command still ran", err)
		default:
		}
		hold.Close()
		select {
		case err := <-shut:
			if err != nil {
				t.Fatalf("Shutdown = %v, want nil", err)
			}
		case <-time.After(testDeadline):
			t.Fatalf("Shutdown did not return within %s of the last command", testDeadline)
		}
		// Run has returned: everything it did is logged.
		for _, rec := range log.all(t) {
			if rec["level"] == "INFO" && rec["msg"] != "0" && rec["msg"] != "1" && rec["msg"] != "2" {
				t.Errorf("unexpected output %v: the event emitted after Shutdown ran", rec)
			}
		}
		select {
		case <-x.stopped:
		default:
			t.Errorf("Shutdown returned before Run did")
		}
	})

	t.Run("no Run", func(t *testing.T) {
		log := newRecordLog()
		x := NewExec([]Command{
			{Hook: ChildExit, Argv: shellArgv(`echo child_exit`)},
			{Hook: OnExit, Argv: shellArgv(`echo on_exit`)},
		}, log.logger())
		x.Emit(Event{Hook: ChildExit})
		shut := make(chan error, 1)
		go func() { shut <- x.Shutdown(context.Background()) }()
		select {
		case err := <-shut:
			if err != nil {
				t.Fatalf("Shutdown = %v, want nil", err)
			}
		case <-time.After(testDeadline):
			t.Fatalf("Shutdown without Run did not return within %s", testDeadline)
		}
		// The blocking hooks' commands still run.
		if err := x.RunNow(context.Background(), Event{Hook: OnExit}); err != nil {
			t.Fatalf("RunNow(on_exit) after Shutdown = %v", err)
		}
		wantOutputs(t, log, "on_exit")
	})

	t.Run("deadline", func(t *testing.T) {
		gate := newGate(t)
		x := NewExec([]Command{{Hook: ChildExit, Argv: gateArgv(gate)}}, nil)
		stop := runExec(t, x)
		x.Emit(Event{Hook: ChildExit})
		hold := openGate(t, gate)
		defer hold.Close()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := x.Shutdown(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("Shutdown with a canceled context while a command runs = %v, want context.Canceled", err)
		}
		stop() // Run's own context kills the command
	})
}
