package workers

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/forkd/forkd/cgroup"
	"github.com/forkd/forkd/internal/testkit"
)

// TestPool_ListWorkers_Usage: ListWorkers tells a live worker's memory and
// the CPU time it used, from /proc without a cgroup and from its cgroup
// with one (skips without a writable cgroup v2 hierarchy). The worker
// spins for 50 ms of CPU time before it is ready.
func TestPool_ListWorkers_Usage(t *testing.T) {
	withAndWithoutCgroup(t, testListWorkersUsage)
}

func testListWorkersUsage(t *testing.T, tree *cgroup.Tree) {
	h := start(t, testConfig(testkit.Executable(t), "busy", 1), func(o *Options) { o.Cgroups = tree })
	pid := h.waitReady(1)[0]
	list, err := h.pool.ListWorkers(context.Background())
	if err != nil || len(list) != 1 || list[0].PID != pid {
		t.Fatalf("ListWorkers = %+v, %v; want worker %d", list, err, pid)
	}
	if list[0].Memory < 1<<20 {
		t.Errorf("worker memory %d bytes, want more than 1 MiB (a Go program's)", list[0].Memory)
	}
	if list[0].CPU < 10*time.Millisecond {
		t.Errorf("worker CPU %v, want at least 10ms (it spun for 50ms)", list[0].CPU)
	}
}

// fakeClock is a clock that moves when the test says.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) add(d time.Duration) { c.ns.Add(int64(d)) }

// TestPool_ListWorkers_UsageInterval: the calls of ListWorkers within
// UsageInterval of a reading of the workers' usage share it; the first
// call after takes a fresh one.
func TestPool_ListWorkers_UsageInterval(t *testing.T) {
	clock := newFakeClock()
	h := start(t, testConfig(testkit.Executable(t), "serve", 2), func(o *Options) { o.usageNow = clock.now })
	h.waitReady(2)
	list := func(wantReadings int) []Info {
		t.Helper()
		l, err := h.pool.ListWorkers(context.Background())
		if err != nil || len(l) != 2 {
			t.Fatalf("ListWorkers = %+v, %v; want 2 workers", l, err)
		}
		if n := h.pool.usage.readings(); n != wantReadings {
			t.Fatalf("%d readings of the workers' usage, want %d", n, wantReadings)
		}
		return l
	}
	first := list(1)
	for _, w := range first {
		if w.Memory == 0 {
			t.Errorf("worker %d: no memory in the first reading", w.PID)
		}
	}
	clock.add(UsageInterval / 2)
	if again := list(1); !sameUsage(first, again) {
		t.Errorf("within the interval ListWorkers = %+v, want the first reading's %+v", again, first)
	}
	clock.add(UsageInterval/2 - 1)
	list(1)
	clock.add(1)
	list(2)
	list(2)
}

// sameUsage reports whether a and b are the same workers with the same
// Memory and CPU.
func sameUsage(a, b []Info) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].PID != b[i].PID || a[i].Memory != b[i].Memory || a[i].CPU != b[i].CPU {
			return false
		}
	}
	return true
}

// gateMeter is a cgroup.Meter whose first Memory call waits for release,
// having closed entered; it counts its calls.
type gateMeter struct {
	entered, release chan struct{}
	calls            atomic.Int32
}

func (m *gateMeter) Memory() (int64, error) {
	if m.calls.Add(1) == 1 {
		close(m.entered)
		<-m.release
	}
	return 4096, nil
}

func (m *gateMeter) EventsFile() string { return "" }

func (m *gateMeter) CPU() (time.Duration, error) { return 3 * time.Millisecond, nil }

// TestUsageCache_Fill: a caller that comes while a reading is under way
// waits for it and shares it rather than reading again; a caller whose
// context ends meanwhile gives up; a worker the reading did not see is
// measured for that caller alone.
func TestUsageCache_Fill(t *testing.T) {
	clock := newFakeClock()
	asked := make(chan struct{}, 8) // one per call of the cache's clock
	c := newUsageCache(time.Second, func() time.Time { asked <- struct{}{}; return clock.now() })
	m := &gateMeter{entered: make(chan struct{}), release: make(chan struct{})}
	started := clock.now()
	worker := Info{PID: 100, Started: started}
	fill := func(ctx context.Context, ws ...Info) (<-chan error, []Info) {
		list := append([]Info(nil), ws...)
		meters := make([]cgroup.Meter, len(list))
		for i := range meters {
			meters[i] = m
		}
		done := make(chan error, 1)
		go func() { done <- c.fill(ctx, list, meters) }()
		return done, list
	}
	wait := func(what string, ch <-chan struct{}) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("timed out waiting for %s", what)
		}
	}
	result := func(what string, done <-chan error) error {
		t.Helper()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatalf("timed out waiting for %s", what)
			return nil
		}
	}

	firstDone, first := fill(context.Background(), worker)
	wait("the first call", asked)
	wait("the first call's reading", m.entered)
	// Both later calls hold the lock while they ask the clock, which the
	// reading needs to end: once they asked, they have seen it under way.
	secondDone, second := fill(context.Background(), worker, Info{PID: 101, Started: started})
	wait("the second call", asked)
	ctx, cancel := context.WithCancel(context.Background())
	thirdDone, _ := fill(ctx, worker)
	wait("the third call", asked)
	cancel()
	if err := result("the cancelled call", thirdDone); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled call waiting for the reading: %v, want context.Canceled", err)
	}
	close(m.release)
	for _, done := range []<-chan error{firstDone, secondDone} {
		if err := result("the reading", done); err != nil {
			t.Fatal(err)
		}
	}
	// One reading (worker 100) and one measurement of the worker it did
	// not see (101), for the second call.
	if n := m.calls.Load(); n != 2 || c.readings() != 1 {
		t.Errorf("%d reads of the meter in %d readings, want 2 in 1", n, c.readings())
	}
	want := Info{PID: 100, Started: started, Memory: 4096, CPU: 3 * time.Millisecond}
	if first[0] != want || second[0] != want {
		t.Errorf("calls got %+v and %+v, want %+v", first[0], second[0], want)
	}
	if second[1].Memory != 4096 || second[1].CPU != 3*time.Millisecond {
		t.Errorf("worker the reading did not see: %+v, want it measured", second[1])
	}
}
