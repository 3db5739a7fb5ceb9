package workers

import (
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/hooks"
	"github.com/forkd/forkd/internal/testkit"
)

// bootWatch follows PostFork and PostWorkerInit events and tracks how many
// workers boot at once.
type bootWatch struct {
	h                    *harness
	booting, most, ready int
}

// until reads events until n workers are ready, and returns the most that
// booted at once meanwhile.
func (b *bootWatch) until(n int) int {
	b.h.t.Helper()
	b.most = b.booting
	for b.ready < n {
		e := b.h.rec.wait(b.h.t, 20*time.Second, "workers booting", func(e hooks.Event) bool {
			return e.Hook == hooks.PostFork || e.Hook == hooks.PostWorkerInit
		})
		if e.Hook == hooks.PostFork {
			b.booting++
			b.most = max(b.most, b.booting)
		} else {
			b.booting--
			b.ready++
		}
	}
	return b.most
}

// fakeRunQueue is a run queue the test sets: 1 + others runnable threads
// (the master's own thread counts).
type fakeRunQueue struct{ others atomic.Int64 }

func (q *fakeRunQueue) read() (int, error) { return int(q.others.Load()) + 1, nil }

func TestPool_MaxBooting(t *testing.T) {
	cfg := testConfig(testkit.Executable(t), "serve", 6)
	cfg.Server.MaxBooting = 2
	h := start(t, cfg, nil)
	b := &bootWatch{h: h}
	if most := b.until(6); most != 2 {
		t.Fatalf("at most %d workers booted at once, want max_booting = 2", most)
	}
	// A killed worker's replacement boots as any does.
	for pid := range h.pids() {
		if err := unix.Kill(pid, unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		break
	}
	if most := b.until(7); most != 1 {
		t.Fatalf("the replacement: %d booting at once, want 1", most)
	}
}

// TestPool_PaceByRunQueue: with max_booting = 0, twice as many workers as
// CPUs boot at once whatever the run queue says, more only while it is
// short.
func TestPool_PaceByRunQueue(t *testing.T) {
	q := &fakeRunQueue{}
	q.others.Store(100) // a busy machine
	cfg := testConfig(testkit.Executable(t), "serve", 4)
	h := start(t, cfg, func(o *Options) { o.cpus, o.runQueue = 1, q.read })
	b := &bootWatch{h: h}
	if most := b.until(4); most != 2 {
		t.Fatalf("busy run queue, 1 CPU: %d workers booted at once, want 2", most)
	}

	q.others.Store(2) // no longer than twice the CPUs: room for more
	if err := h.pool.SetWorkers(t.Context(), 8); err != nil {
		t.Fatal(err)
	}
	if most := b.until(8); most != 4 {
		t.Fatalf("short run queue: %d workers booted at once, want all 4 new ones", most)
	}
}

// TestPool_PaceTimer: a slot held by the run queue starts once the run
// queue is short again, even when no worker event comes to say so.
func TestPool_PaceTimer(t *testing.T) {
	q := &fakeRunQueue{}
	q.others.Store(100)
	cfg := testConfig(testkit.Executable(t), "hang-boot", 3) // never ready: no events
	h := start(t, cfg, func(o *Options) { o.cpus, o.runQueue = 1, q.read })
	h.rec.wait(t, 20*time.Second, "the first worker", is(hooks.PostFork))
	h.rec.wait(t, 20*time.Second, "the second worker", is(hooks.PostFork))
	// The third slot is held; it is not started while the queue is long.
	select {
	case e := <-h.rec.ch:
		if e.Hook == hooks.PostFork {
			t.Fatalf("third worker started on a busy run queue: %+v", e)
		}
	case <-time.After(50 * pacePeriod):
	}
	q.others.Store(0)
	h.rec.wait(t, 20*time.Second, "the held worker, after the run queue emptied", is(hooks.PostFork))
}

// TestPool_StopDropsHeldSlots: stopping while slots are held starts none
// of them, and Run returns.
func TestPool_StopDropsHeldSlots(t *testing.T) {
	q := &fakeRunQueue{}
	q.others.Store(100)
	cfg := testConfig(testkit.Executable(t), "hang-boot", 4)
	h := start(t, cfg, func(o *Options) { o.cpus, o.runQueue = 1, q.read })
	h.rec.wait(t, 20*time.Second, "the first worker", is(hooks.PostFork))
	h.rec.wait(t, 20*time.Second, "the second worker", is(hooks.PostFork))
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	if got := h.pool.stats.Spawned; got != 2 {
		t.Fatalf("spawned %d workers, want only the 2 that booted before the stop", got)
	}
}

func TestLoadavgRunQueue(t *testing.T) {
	n, err := loadavgRunQueue()
	if err != nil {
		t.Fatal(err)
	}
	if n < 1 {
		t.Fatalf("run queue %d: the reading thread itself runs", n)
	}
}
