package metrics

import (
	"context"
	"errors"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/forkd/forkd/hooks"
	"github.com/forkd/forkd/internal/testkit"
	"github.com/forkd/forkd/metrics/metricstest"
	"github.com/forkd/forkd/metrics/status"
	"github.com/forkd/forkd/workers"
)

func TestExitReason(t *testing.T) {
	for reason, want := range map[string]string{
		"crashed":                                  ExitCrashed,
		"timeout (no heartbeat for 30s)":           ExitTimeout,
		"worker sent WATCHDOG=trigger":             ExitTimeout,
		"boot timeout (30s)":                       ExitBootTimeout,
		"recycled: max_requests (1000)":            ExitRecycled,
		"recycled: max_lifetime (1h0m0s)":          ExitRecycled,
		"recycled: memory 512MiB above memory_max": ExitMemory,
		"killed by the OOM killer":                 ExitOOM,
		"replaced by generation 3":                 ExitReload,
		"reload rolled back":                       ExitReload,
		"scaled down":                              ExitScale,
		"autoscale: queue empty":                   ExitAutoscale,
		"worker stopping by itself":                ExitExited,
		"stopping":                                 ExitStopped,
		"SIGTERM":                                  ExitStopped,
		"something new":                            ExitOther,
	} {
		if got := exitReason(reason); got != want {
			t.Errorf("exitReason(%q) = %q, want %q", reason, got, want)
		}
	}
}

func TestReloadResult(t *testing.T) {
	for err, want := range map[error]string{
		nil: "ok",
		errors.New("reload rejected, generation 1 still serving: bad"):             "rejected",
		errors.New("reload aborted by on_reload hook, generation 1 still serving"): "rejected",
		errors.New("reload failed, generation 1 still serving: worker 0 exited"):   "failed",
	} {
		if got := reloadResult(err); got != want {
			t.Errorf("reloadResult(%v) = %q, want %q", err, got, want)
		}
	}
}

func TestRebucket(t *testing.T) {
	ms := time.Millisecond
	// The SDK's own bounds map one to one; others fold into the first
	// bound at least as wide; the overflow bucket stays the overflow.
	got := rebucket([]time.Duration{ms, 3 * ms, 10 * time.Second}, []uint64{1, 2, 3, 4})
	want := make([]uint64, len(Bounds)+1)
	want[0], want[1], want[len(Bounds)] = 1, 2, 3+4
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("rebucket = %v, want %v", got, want)
		}
	}
	if got := rebucket(nil, []uint64{5}); got[len(Bounds)] != 5 {
		t.Errorf("a single bucket (no bounds) = %v, want all 5 past every bound", got)
	}
}

func TestWindowQuantile(t *testing.T) {
	var w window
	now := time.Now()
	if _, ok := w.quantile(now, 0.5); ok {
		t.Error("quantile of an empty window reports a value")
	}
	counts := make([]uint64, len(Bounds)+1)
	counts[1] = 100 // 100 requests between 1ms and 5ms
	w.add(now.Add(-2*time.Minute), append([]uint64(nil), counts...))
	counts[1], counts[5] = 0, 100 // 100 between 50ms and 100ms, now
	w.add(now, counts)
	p50, ok := w.quantile(now, 0.5)
	if !ok || math.Abs(p50-0.075) > 1e-9 {
		t.Errorf("p50 = %v, %v; want 0.075 (the old period forgotten, interpolated within 50…100ms)", p50, ok)
	}
	if _, ok := w.quantile(now.Add(2*time.Minute), 0.99); ok {
		t.Error("a minute later the window still reports")
	}
}

func TestReadUsage(t *testing.T) {
	u, err := readUsage(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if u.RSSBytes == 0 {
		t.Errorf("RSS of this process = 0")
	}
	if _, err := readUsage(-1); err == nil {
		t.Error("readUsage(-1) = nil error")
	}
}

// startRecorder runs a recorder until the test ends.
func startRecorder(t *testing.T, opts Options) *Recorder {
	t.Helper()
	r := New(opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return r
}

// TestRecorder_Counters feeds a recorder the events of a pool's life and
// reads its page: starts and exits by reason, reloads, upgrades, runs,
// request reports (a malformed one counted and ignored).
func TestRecorder_Counters(t *testing.T) {
	r := startRecorder(t, Options{Instance: "web", Version: "1.0", Upgraded: true})
	r.SetPool(metricstest.Pool{N: 2})
	pid := os.Getpid()
	for _, e := range []hooks.Event{
		{Hook: hooks.PostFork, Generation: 1, WorkerID: 0, PID: 100},
		{Hook: hooks.PostFork, Generation: 1, WorkerID: 1, PID: 101},
		{Hook: hooks.ChildExit, Generation: 1, WorkerID: 0, PID: 100, Reason: "crashed"},
		{Hook: hooks.PostFork, Generation: 1, WorkerID: 0, PID: 102},
		{Hook: hooks.PostFork, Generation: 1, WorkerID: 1, PID: 103}, // 101 still runs: recycling
		{Hook: hooks.ChildExit, Generation: 1, WorkerID: 1, PID: 101, Reason: "recycled: max_requests (10)"},
		{Hook: hooks.NworkersChanged, Generation: 1, OldWorkers: 2, Workers: 3, Reason: "SIGTTIN"},
		{Hook: hooks.PostFork, Generation: 1, WorkerID: 2, PID: 104},
		{Hook: hooks.NworkersChanged, Generation: 2, OldWorkers: 3, Workers: 3, Reason: "reload"},
		{Hook: hooks.PostFork, Generation: 2, WorkerID: 0, PID: 105},
		{Hook: hooks.PreExec, Generation: 2},
		{Hook: hooks.ScheduleFinished, Job: "cleanup", Result: "ok", Time: time.Unix(1000, 0)},
		{Hook: hooks.ScheduleFinished, Job: "cleanup", Result: "failed"},
		{Hook: hooks.PostWorkerInit, Generation: 1, WorkerID: 0, PID: 102}, // not counted
	} {
		r.Emit(e)
	}
	r.Reloaded(nil)
	r.Reloaded(errors.New("reload failed, generation 2 still serving: boom"))
	r.UpgradeRefused()
	r.Requests(workers.RequestReport{Generation: 1, WorkerID: 0, PID: pid, Requests: 3, HasRequests: true,
		Stats: "3;1000,5000;1,1,1", SumUsec: 9000, HasSum: true, Inflight: 1, HasInflight: true})
	r.Requests(workers.RequestReport{Generation: 1, WorkerID: 0, PID: pid, Stats: "3;1000;x"})
	r.Requests(workers.RequestReport{Generation: 1, WorkerID: 0, PID: pid, Inflight: 0, HasInflight: true})

	p, err := r.Page(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c := p.Counters
	for what, got := range map[string][2]uint64{
		"starts initial": {c.Starts[StartInitial], 2}, "starts replace": {c.Starts[StartReplace], 1},
		"starts recycle": {c.Starts[StartRecycle], 1}, "starts scale": {c.Starts[StartScale], 1},
		"starts reload": {c.Starts[StartReload], 1}, "exits crashed": {c.Exits[ExitCrashed], 1},
		"exits recycled": {c.Exits[ExitRecycled], 1}, "reloads ok": {c.Reloads["ok"], 1},
		"reloads failed": {c.Reloads["failed"], 1}, "upgrades started": {c.Upgrades["started"], 1},
		"upgrades ok": {c.Upgrades["ok"], 1}, "upgrades refused": {c.Upgrades["refused"], 1},
		"malformed": {c.MalformedReports, 1}, "requests": {p.Requests.Count, 3},
	} {
		if got[0] != got[1] {
			t.Errorf("%s = %d, want %d", what, got[0], got[1])
		}
	}
	if p.LastReload == nil || p.LastReload.Result != "failed" || !strings.Contains(p.LastReload.Error, "boom") {
		t.Errorf("last reload %+v, want the failed one", p.LastReload)
	}
	if p.Requests.Sum != 0.009 {
		t.Errorf("request sum %v, want 0.009", p.Requests.Sum)
	}
	if len(c.Jobs) != 1 || c.Jobs[0].Runs["ok"] != 1 || c.Jobs[0].Runs["failed"] != 1 || !c.Jobs[0].LastSuccess.Equal(time.Unix(1000, 0)) {
		t.Errorf("jobs %+v, want cleanup with one ok run at 1000 and one failed", c.Jobs)
	}
	if len(p.WorkerList) != 2 || p.WorkerList[0].P50 == nil || p.WorkerList[0].RSS == 0 {
		t.Errorf("workers %+v: want 2, this process's RSS, and the reported requests' p50", p.WorkerList)
	}
	if p.WorkerList[0].State != "idle" {
		t.Errorf("worker state %q, want idle (reported 0 in flight)", p.WorkerList[0].State)
	}
}

// stuckPool answers no Snapshot: it tells each ask's arrival on asked and
// waits for the ask's end, as a pool handed over by an upgrade does.
type stuckPool struct{ asked chan struct{} }

func (p stuckPool) Snapshot(ctx context.Context) (workers.Snapshot, error) {
	p.asked <- struct{}{}
	<-ctx.Done()
	return workers.Snapshot{}, ctx.Err()
}

// TestRecorder_Hold: once held, Page answers with the held snapshot — an
// ask already waiting for the pool too — until Release, after which it
// asks the pool again.
func TestRecorder_Hold(t *testing.T) {
	r := startRecorder(t, Options{Instance: "web"})
	pool := stuckPool{asked: make(chan struct{}, 4)}
	r.SetPool(pool)
	type result struct {
		p   status.Page
		err error
	}
	page := func(ctx context.Context) <-chan result {
		got := make(chan result, 1)
		go func() {
			p, err := r.Page(ctx)
			got <- result{p, err}
		}()
		return got
	}
	wait := func(what string, ch <-chan struct{}) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(testkit.Deadline):
			t.Fatalf("timed out waiting for %s", what)
		}
	}
	waiting := page(context.Background())
	wait("the page's ask of the pool", pool.asked)
	r.Hold(workers.Snapshot{Status: workers.Status{Generation: 7, Workers: 3}})
	for i, got := range []<-chan result{waiting, page(context.Background())} {
		select {
		case res := <-got:
			if res.err != nil || res.p.Generation != 7 || res.p.Workers != 3 {
				t.Errorf("page %d while held: generation %d, %d workers, %v; want the held 7 and 3",
					i, res.p.Generation, res.p.Workers, res.err)
			}
		case <-time.After(testkit.Deadline):
			t.Fatalf("page %d while held not answered", i)
		}
	}
	r.Release()
	ctx, cancel := context.WithCancel(context.Background())
	after := page(ctx)
	wait("the ask of the pool after Release", pool.asked)
	cancel()
	if res := <-after; !errors.Is(res.err, context.Canceled) {
		t.Errorf("page after Release: %v, want it to have waited for the pool until cancelled", res.err)
	}
}
