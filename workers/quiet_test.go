package workers

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/forkd/forkd/hooks"
	"github.com/forkd/forkd/internal/notify"
	"github.com/forkd/forkd/internal/testkit"
)

// waitStats polls the pool's counters until ok says yes, failing t after
// d.
func waitStats(t *testing.T, h *harness, d time.Duration, what string, ok func(Stats) bool) Stats {
	t.Helper()
	deadline := time.After(d)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := h.pool.Stats(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if ok(st) {
			return st
		}
		select {
		case <-deadline:
			t.Fatalf("%s: not after %s (stats %+v)", what, d, st)
		case <-tick.C:
		}
	}
}

// quietConfig is two serving workers that heartbeat every 500 ms (the
// helper beats at a quarter of WATCHDOG_USEC): at the kernel's default
// max_dgram_qlen of 10 the pool can leave the socket unwatched for 1.75 s.
func quietConfig(t *testing.T) *harness {
	cfg := testConfig(testkit.Executable(t), "serve", 2)
	cfg.Server.Timeout.Duration = 2 * time.Second
	return start(t, cfg, nil)
}

// TestPool_Quiet: a steady pool stops watching the notify socket, and the
// heartbeats it drains later keep every worker alive.
func TestPool_Quiet(t *testing.T) {
	h := quietConfig(t)
	if q := notify.MaxDgramQlen(); q < 10 {
		t.Skipf("net.unix.max_dgram_qlen is %d: too small a queue to go quiet with 2 workers", q)
	}
	h.waitReady(2)
	st := waitStats(t, h, 10*time.Second, "the pool goes quiet and drains twice", func(s Stats) bool { return s.Drains >= 2 })
	if st.Quiet < 1 {
		t.Errorf("drained without going quiet: %+v", st)
	}
	select {
	case e := <-h.rec.ch:
		if e.Hook == hooks.WorkerAbort || e.Hook == hooks.ChildExit {
			t.Fatalf("a worker was stopped while the pool was quiet: %+v", e)
		}
	default:
	}
	// A request drains the queue first and answers as usual.
	ws, err := h.pool.ListWorkers(context.Background())
	if err != nil || len(ws) != 2 {
		t.Fatalf("ListWorkers: %v, %v", ws, err)
	}
}

// TestPool_QuietHungWorker: a worker that stops heartbeating while the pool
// is quiet is aborted at its deadline, from the drained heartbeats'
// arrival times.
func TestPool_QuietHungWorker(t *testing.T) {
	h := quietConfig(t)
	if q := notify.MaxDgramQlen(); q < 10 {
		t.Skipf("net.unix.max_dgram_qlen is %d: too small a queue to go quiet with 2 workers", q)
	}
	pids := h.waitReady(2)
	waitStats(t, h, 10*time.Second, "the pool goes quiet", func(s Stats) bool { return s.Quiet >= 1 && s.Drains >= 1 })
	hung := time.Now()
	if err := syscall.Kill(pids[0], syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	e := h.rec.wait(t, 5*time.Second, "worker_abort", is(hooks.WorkerAbort))
	took := time.Since(hung)
	if e.PID != pids[0] {
		t.Errorf("aborted %+v, want pid %d", e, pids[0])
	}
	// Its last heartbeat came at most 500 ms before the hang, so the
	// 2 s deadline falls between 1.5 s and 2 s after it (plus scheduling).
	if took < 1400*time.Millisecond || took > 3*time.Second {
		t.Errorf("aborted %s after the hang, want about 1.5–2 s (timeout 2 s)", took)
	}
}

// TestPool_QuietStoppingThenExit: a worker that sends STOPPING=1 and exits
// while the pool is quiet has its exit reported as its own, not as a crash:
// the exit takes what the worker sent before it.
func TestPool_QuietStoppingThenExit(t *testing.T) {
	h := quietConfig(t)
	if q := notify.MaxDgramQlen(); q < 10 {
		t.Skipf("net.unix.max_dgram_qlen is %d: too small a queue to go quiet with 2 workers", q)
	}
	pids := h.waitReady(2)
	waitStats(t, h, 10*time.Second, "the pool goes quiet", func(s Stats) bool { return s.Quiet >= 1 })
	if err := syscall.Kill(pids[0], syscall.SIGHUP); err != nil { // STOPPING=1, exit 0
		t.Fatal(err)
	}
	e := h.rec.wait(t, 10*time.Second, "worker_exit of the worker that left", func(e hooks.Event) bool {
		return e.Hook == hooks.WorkerExit && e.PID == pids[0]
	})
	if e.Reason != "worker stopping by itself" {
		t.Errorf("worker_exit reason %q, want \"worker stopping by itself\"", e.Reason)
	}
}

// TestPool_BarrierStaysWatched: workers that follow their messages with
// sd_notify_barrier(3) — as systemd-notify(1) does — keep the pool from
// going quiet, where a barrier would wait for the next drain: every
// barrier is read within a second (the worker exits 7 otherwise) for
// longer than a pool without barriers takes to go quiet.
func TestPool_BarrierStaysWatched(t *testing.T) {
	cfg := testConfig(testkit.Executable(t), "barrier", 2)
	cfg.Server.Timeout.Duration = 2 * time.Second
	h := start(t, cfg, nil)
	if q := notify.MaxDgramQlen(); q < 10 {
		t.Skipf("net.unix.max_dgram_qlen is %d: too small a queue to go quiet with 2 workers", q)
	}
	h.waitReady(2)
	until := time.Now().Add(notify.QuietAfter + 3*time.Second)
	for time.Now().Before(until) {
		st, err := h.pool.Stats(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.Quiet > 0 {
			t.Fatalf("the pool went quiet with workers that use barriers: %+v", st)
		}
		select {
		case e := <-h.rec.ch:
			if e.Hook == hooks.ChildExit || e.Hook == hooks.WorkerAbort {
				t.Fatalf("a worker stopped: %+v", e)
			}
		case <-time.After(100 * time.Millisecond):
		}
	}
}
