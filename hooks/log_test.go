package hooks

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"
)

// logOne emits e through NewLog over a JSON handler at level and returns the
// records written.
func logOne(t *testing.T, level slog.Level, e Event) []map[string]any {
	t.Helper()
	var buf bytes.Buffer
	NewLog(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: level}))).Emit(e)
	var recs []map[string]any
	dec := json.NewDecoder(&buf)
	for dec.More() {
		var rec map[string]any
		if err := dec.Decode(&rec); err != nil {
			t.Fatalf("decode %q: %v", buf.String(), err)
		}
		recs = append(recs, rec)
	}
	return recs
}

func TestLog_Fields(t *testing.T) {
	at := time.Date(2024, 5, 6, 7, 8, 9, 123000000, time.UTC)
	recs := logOne(t, slog.LevelInfo, Event{
		Hook: WorkerExit, Time: at, Instance: "myapp", Generation: 3, WorkerID: 2, PID: 1234,
		ExitCode: 1, Reason: "crashed",
		Workers: 7, // not a worker_exit field: must not appear
	})
	if len(recs) != 1 {
		t.Fatalf("got %d records, want 1: %v", len(recs), recs)
	}
	rec := recs[0]
	want := map[string]any{
		"level": "INFO", "msg": "hook worker_exit: worker 2 pid 1234 exited 1 (crashed)",
		"time": at.Format(time.RFC3339Nano), "hook": "worker_exit", "instance": "myapp",
		"generation": 3.0, "worker_id": 2.0, "pid": 1234.0, "exit_code": 1.0, "signal": 0.0,
		"reason": "crashed",
	}
	for k, v := range want {
		if rec[k] != v {
			t.Errorf("%s = %v (%T), want %v (%T)", k, rec[k], rec[k], v, v)
		}
	}
	if len(rec) != len(want) {
		t.Errorf("record has fields %v, want exactly %v", rec, want)
	}
}

func TestLog_JobFields(t *testing.T) {
	due := time.Date(2026, 1, 2, 3, 5, 0, 250000000, time.FixedZone("KST", 9*3600))
	recs := logOne(t, slog.LevelInfo, Event{
		Hook: ScheduleStarted, Instance: "myapp", Generation: 1, WorkerID: -1, Job: "cleanup",
		RunID: "0192f-run", ScheduledAt: due, PID: 4242,
	})
	if len(recs) != 1 {
		t.Fatalf("got %d records, want 1: %v", len(recs), recs)
	}
	want := map[string]any{"hook": "schedule_started", "instance": "myapp", "generation": 1.0, "job": "cleanup",
		"run_id": "0192f-run", "scheduled_at": due.Format(time.RFC3339Nano), "pid": 4242.0,
		"msg": "hook schedule_started: schedule cleanup run 0192f-run pid 4242 started, due 2026-01-02T03:05:00+09:00"}
	for k, v := range want {
		if recs[0][k] != v {
			t.Errorf("%s = %v, want %v", k, recs[0][k], v)
		}
	}
	for _, k := range []string{"worker_id", "exit_code", "result", "duration_usec", "reason"} {
		if v, ok := recs[0][k]; ok {
			t.Errorf("schedule_started record has %s = %v", k, v)
		}
	}

	recs = logOne(t, slog.LevelInfo, Event{Hook: ScheduleFinished, Instance: "myapp", WorkerID: -1, Job: "cleanup",
		RunID: "0192f-run", ExitCode: 2, Duration: 1500 * time.Millisecond, Result: "failed"})
	if len(recs) != 1 || recs[0]["level"] != "WARN" || recs[0]["duration_usec"] != 1500000.0 ||
		recs[0]["result"] != "failed" || recs[0]["exit_code"] != 2.0 {
		t.Errorf("a failed run logged %v, want one WARN record with duration_usec 1500000, result failed, exit_code 2", recs)
	}
	// A run without a due time (zero) leaves scheduled_at out.
	recs = logOne(t, slog.LevelInfo, Event{Hook: ScheduleStarted, WorkerID: -1, Job: "cleanup", RunID: "r", PID: 1})
	if v, ok := recs[0]["scheduled_at"]; ok {
		t.Errorf("a zero ScheduledAt was logged as %v", v)
	}
}

func TestLog_Levels(t *testing.T) {
	tests := []struct {
		event     Event
		threshold slog.Level
		want      string // level logged, "" for none
	}{
		{Event{Hook: PreFork, WorkerID: 1}, slog.LevelInfo, ""},
		{Event{Hook: PostFork, WorkerID: 1, PID: 10}, slog.LevelInfo, ""},
		{Event{Hook: PreFork, WorkerID: 1}, slog.LevelDebug, "DEBUG"},
		{Event{Hook: PostFork, WorkerID: 1, PID: 10}, slog.LevelDebug, "DEBUG"},
		{Event{Hook: PostWorkerInit, WorkerID: 1, PID: 10}, slog.LevelInfo, "INFO"},
		{Event{Hook: OnStarting, WorkerID: -1}, slog.LevelInfo, "INFO"},
		{Event{Hook: WorkerAbort, WorkerID: 1, PID: 10, Signal: 6}, slog.LevelWarn, "WARN"},
		{Event{Hook: ScheduleFinished, Job: "j", Result: "ok"}, slog.LevelInfo, "INFO"},
		{Event{Hook: ScheduleFinished, Job: "j", Result: "skipped"}, slog.LevelWarn, ""},
		{Event{Hook: ScheduleFinished, Job: "j", Result: "failed"}, slog.LevelWarn, "WARN"},
		{Event{Hook: ScheduleFinished, Job: "j", Result: "timeout"}, slog.LevelWarn, "WARN"},
		{Event{Hook: SingletonExited, Job: "j", PID: 3, ExitCode: 1, Reason: "crashed"}, slog.LevelInfo, "INFO"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %s at %s", tt.event.Hook, tt.event.Result, tt.threshold), func(t *testing.T) {
			recs := logOne(t, tt.threshold, tt.event)
			if tt.want == "" {
				if len(recs) != 0 {
					t.Fatalf("logged %v, want nothing at threshold %s", recs, tt.threshold)
				}
				return
			}
			if len(recs) != 1 || recs[0]["level"] != tt.want {
				t.Fatalf("logged %v, want one %s record", recs, tt.want)
			}
		})
	}
}

func TestLog_MasterHookFields(t *testing.T) {
	// A hook about the master carries no worker fields, and an empty
	// reason is left out.
	recs := logOne(t, slog.LevelInfo, Event{Hook: OnExit, Instance: "myapp", Generation: 2, WorkerID: -1})
	if len(recs) != 1 {
		t.Fatalf("got %d records, want 1", len(recs))
	}
	for _, k := range []string{"worker_id", "pid", "exit_code", "signal", "reason", "workers"} {
		if v, ok := recs[0][k]; ok {
			t.Errorf("on_exit record has %s = %v", k, v)
		}
	}
	if recs[0]["instance"] != "myapp" || recs[0]["generation"] != 2.0 {
		t.Errorf("record %v lacks instance myapp, generation 2", recs[0])
	}
}

func TestLog_NilLogger(t *testing.T) {
	NewLog(nil).Emit(Event{Hook: OnStarting}) // must not panic
}

func TestHookFields_EveryHookListed(t *testing.T) {
	for _, h := range All {
		if hookFields(h) == fieldsAll {
			t.Errorf("hook %s has no field list of its own", h)
		}
	}
	if hookFields(Hook("custom")) != fieldsAll {
		t.Errorf("an unknown hook should carry every field")
	}
}

func TestEventMessage(t *testing.T) {
	tests := []struct {
		event Event
		want  string
	}{
		{Event{Hook: OnStarting, Instance: "myapp"}, "hook on_starting: instance myapp starting"},
		{Event{Hook: OnReload, Instance: "myapp", Generation: 2, Reason: "SIGHUP"},
			"hook on_reload: instance myapp reloading from generation 2 (SIGHUP)"},
		{Event{Hook: WhenReady, Generation: 3, Workers: 4}, "hook when_ready: generation 3 ready with 4 workers"},
		{Event{Hook: PreFork, Generation: 3, WorkerID: 1}, "hook pre_fork: spawning worker 1 of generation 3"},
		{Event{Hook: PostFork, WorkerID: 1, PID: 99}, "hook post_fork: worker 1 pid 99 spawned"},
		{Event{Hook: PostWorkerInit, WorkerID: 1, PID: 99}, "hook post_worker_init: worker 1 pid 99 ready"},
		{Event{Hook: WorkerInt, WorkerID: 1, PID: 99, Signal: 2}, "hook worker_int: worker 1 pid 99 asked to quit with SIGINT"},
		{Event{Hook: WorkerAbort, WorkerID: 1, PID: 99, Signal: 6, Reason: "timeout"},
			"hook worker_abort: worker 1 pid 99 aborted with SIGABRT (timeout)"},
		{Event{Hook: WorkerExit, WorkerID: 2, PID: 1234, ExitCode: 1}, "hook worker_exit: worker 2 pid 1234 exited 1"},
		{Event{Hook: ChildExit, WorkerID: 2, PID: 1234, ExitCode: -1, Signal: 9, Reason: "timeout"},
			"hook child_exit: worker 2 pid 1234 killed by SIGKILL (timeout)"},
		{Event{Hook: NworkersChanged, Workers: 5, OldWorkers: 4, Reason: "TTIN"},
			"hook nworkers_changed: workers 4 -> 5 (TTIN)"},
		{Event{Hook: OnExit, Instance: "myapp"}, "hook on_exit: instance myapp exiting"},
		{Event{Hook: SingletonStarted, Job: "scheduler", PID: 300}, "hook singleton_started: singleton scheduler pid 300 started"},
		{Event{Hook: SingletonExited, Job: "scheduler", PID: 300, ExitCode: 1, Reason: "crashed"},
			"hook singleton_exited: singleton scheduler pid 300 exited 1 (crashed)"},
		{Event{Hook: SingletonExited, Job: "scheduler", PID: 300, ExitCode: -1, Signal: 15, Reason: "stopping"},
			"hook singleton_exited: singleton scheduler pid 300 killed by SIGTERM (stopping)"},
		{Event{Hook: ScheduleStarted, Job: "cleanup", RunID: "r1", PID: 301},
			"hook schedule_started: schedule cleanup run r1 pid 301 started"},
		{Event{Hook: ScheduleFinished, Job: "cleanup", RunID: "r1", Duration: 1234567 * time.Microsecond, Result: "ok"},
			"hook schedule_finished: schedule cleanup run r1 ok after 1.235s: exited 0"},
		{Event{Hook: ScheduleFinished, Job: "cleanup", RunID: "r1", ExitCode: -1, Signal: 15, Duration: time.Minute, Result: "timeout"},
			"hook schedule_finished: schedule cleanup run r1 timeout after 1m0s: killed by SIGTERM"},
		{Event{Hook: ScheduleFinished, Job: "cleanup", RunID: "r2", Result: "skipped"},
			"hook schedule_finished: schedule cleanup run r2 skipped"},
		// A reason on a hook that has none is not shown.
		{Event{Hook: PostFork, WorkerID: 0, PID: 5, Reason: "ignored"}, "hook post_fork: worker 0 pid 5 spawned"},
	}
	for _, tt := range tests {
		if got := eventMessage(tt.event); got != tt.want {
			t.Errorf("eventMessage(%+v)\n got %q\nwant %q", tt.event, got, tt.want)
		}
	}
	for _, h := range All {
		if msg := eventMessage(Event{Hook: h}); !strings.HasPrefix(msg, "hook "+string(h)+": ") || strings.HasSuffix(msg, ": ") {
			t.Errorf("eventMessage for %s = %q, want \"hook %s: \" and a description", h, msg, h)
		}
	}
}

func ExampleNewLog() {
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	sink := NewLog(logger)
	sink.Emit(Event{Hook: WorkerExit, Instance: "myapp", Generation: 3, WorkerID: 2, PID: 1234, ExitCode: 1, Reason: "crashed"})
	sink.Emit(Event{Hook: PreFork, Instance: "myapp", Generation: 3, WorkerID: 2}) // Debug: below the handler's level
	// Output:
	// level=INFO msg="hook worker_exit: worker 2 pid 1234 exited 1 (crashed)" hook=worker_exit instance=myapp generation=3 worker_id=2 pid=1234 exit_code=1 signal=0 reason=crashed
}
