package workers

import (
	"context"
	"testing"
	"time"

	"github.com/forkd/forkd/hooks"
	"github.com/forkd/forkd/internal/testkit"
)

// observer records every status the pool reports.
type observer struct{ ch chan Status }

func (o *observer) observe(s Status) {
	select {
	case o.ch <- s:
	default:
		panic("observer full")
	}
}

// minReadySince returns the lowest ReadyWorkers reported once the pool
// first ran with want ready workers, among the statuses observed so far.
func (o *observer) minReadySince(want int) int {
	low, running := want, false
	for {
		select {
		case s := <-o.ch:
			if s.State == StateRunning && s.ReadyWorkers >= want {
				running = true
			}
			if running && s.State == StateRunning && s.ReadyWorkers < low {
				low = s.ReadyWorkers
			}
		default:
			return low
		}
	}
}

// checkHandOver waits for a recycle in the pool: the successor of some
// worker becomes ready before that worker is asked to stop and exits.
func checkHandOver(t *testing.T, h *harness, pids map[int]bool) {
	t.Helper()
	var succ hooks.Event
	for {
		e := h.rec.wait(t, 10*time.Second, "a recycled worker's successor", func(e hooks.Event) bool {
			return e.Hook == hooks.PostWorkerInit || e.Hook == hooks.ChildExit
		})
		if e.Hook == hooks.ChildExit {
			t.Fatalf("worker %d (pid %d) exited before its successor was ready: %+v", e.WorkerID, e.PID, e)
		}
		if !pids[e.PID] {
			succ = e
			break
		}
	}
	// Other slots may be recycling at the same time: wait for this one's.
	x := h.rec.wait(t, 10*time.Second, "the predecessor's exit", func(e hooks.Event) bool {
		return e.Hook == hooks.ChildExit && e.WorkerID == succ.WorkerID
	})
	if !pids[x.PID] || x.ExitCode != 0 {
		t.Errorf("after successor %+v, exit %+v: want the old worker of slot %d exiting cleanly", succ, x, succ.WorkerID)
	}
}

func TestPool_RecycleMaxLifetime(t *testing.T) {
	cfg := testConfig(testkit.Executable(t), "serve", 2)
	cfg.Server.MaxLifetime.Duration = 500 * time.Millisecond
	obs := &observer{ch: make(chan Status, 1<<14)}
	h := start(t, cfg, func(o *Options) { o.Observe = obs.observe })
	pids := map[int]bool{}
	for _, pid := range h.waitReady(2) {
		pids[pid] = true
	}
	checkHandOver(t, h, pids)
	if low := obs.minReadySince(2); low < 2 {
		t.Errorf("ready workers fell to %d during recycling, want never below 2", low)
	}
}

func TestPool_RecycleMaxRequests(t *testing.T) {
	cfg := testConfig(testkit.Executable(t), "serve", 1)
	cfg.Server.MaxRequests = 3
	obs := &observer{ch: make(chan Status, 1<<14)}
	h := start(t, cfg, func(o *Options) { o.Observe = obs.observe })
	old := h.waitReady(1)[0]
	for range 3 {
		if pid := atoi(h.dial()["pid"]); pid != old {
			t.Fatalf("request served by %d, want the only worker %d", pid, old)
		}
	}
	checkHandOver(t, h, map[int]bool{old: true})
	if low := obs.minReadySince(1); low < 1 {
		t.Errorf("ready workers fell to %d during recycling, want never below 1", low)
	}
	s, err := h.pool.Status(context.Background())
	if err != nil || s.ReadyWorkers != 1 || s.Workers != 1 {
		t.Errorf("Status after recycling = %+v, %v", s, err)
	}
}
