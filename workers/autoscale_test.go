package workers

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/hooks"
	"github.com/forkd/forkd/internal/testkit"
)

// serveSlow answers one HTTP/1.1 request on c after 50 ms of "work", with
// line as the body, and asks the client to close: every request of a load
// generator is then a new connection in the listening socket's accept
// queue, and a worker serves one at a time, as a synchronous worker does.
func serveSlow(c net.Conn, line string) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if _, err := http.ReadRequest(r); err != nil {
		return
	}
	time.Sleep(50 * time.Millisecond) // the request's work, not a synchronization
	fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(line), line)
}

// autoscaleConfig is testConfig in mode with [server.autoscale] a and
// workers, the initial count.
func autoscaleConfig(t *testing.T, mode string, workers int, a config.Autoscale) *config.Config {
	cfg := testConfig(testkit.Executable(t), mode, workers)
	a.On = true
	cfg.Server.Autoscale = a
	return cfg
}

func ms(n int) config.Duration { return config.Duration{Duration: time.Duration(n) * time.Millisecond} }

// isChange matches nworkers_changed events.
var isChange = is(hooks.NworkersChanged)

// TestPool_AutoscaleLoad: slow workers (50 ms a request, one at a time)
// under wrk with 3 connections: the pool grows from 1 to cover the load,
// never above max, and shrinks back to min once the load is gone — every
// change an nworkers_changed with reason "autoscale".
func TestPool_AutoscaleLoad(t *testing.T) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		t.Skip("wrk is not installed (Debian package wrk, make deps): it is the load of this test")
	}
	const max = 6
	h := start(t, autoscaleConfig(t, "slow", 1, config.Autoscale{Min: 1, Max: max, Queue: 0,
		UpAfter: ms(100), DownAfter: ms(300)}), nil)
	h.waitReady(1)
	h.rec.wait(t, 10*time.Second, "when_ready", is(hooks.WhenReady))

	out, err := exec.Command(wrk, "-t1", "-c3", "-d3s", "--timeout", "5s", "http://"+h.addr+"/").CombinedOutput()
	if err != nil {
		t.Fatalf("wrk: %v\n%s", err, out)
	}
	t.Logf("wrk:\n%s", out)
	if !strings.Contains(string(out), "requests in") {
		t.Fatalf("wrk made no requests:\n%s", out)
	}
	peak, last := 1, 1
	// The changes so far, then those until the pool is back at min.
	for done := false; !done; {
		select {
		case e := <-h.rec.ch:
			if e.Hook != hooks.NworkersChanged {
				continue
			}
			last = checkChange(t, e, last, max)
			peak = maxInt(peak, last)
		default:
			done = true
		}
	}
	if peak < 3 {
		t.Errorf("the pool grew to %d workers under 3 connections to workers that serve one at a time; want 3 or more", peak)
	}
	for last != 1 {
		e := h.rec.wait(t, 20*time.Second, "the pool back at min (1 worker)", isChange)
		if e.Workers > last {
			t.Fatalf("nworkers_changed %d → %d after the load ended; want it to shrink", e.OldWorkers, e.Workers)
		}
		if e.OldWorkers-e.Workers != 1 {
			t.Errorf("nworkers_changed %d → %d: scaling down stops one worker at a time", e.OldWorkers, e.Workers)
		}
		last = checkChange(t, e, last, max)
	}
	if s, err := h.pool.Status(context.Background()); err != nil || s.Workers != 1 {
		t.Errorf("Status = %+v, %v; want 1 worker", s, err)
	}
}

// checkChange checks an nworkers_changed event of the scaler against the
// count before (last) and max, and returns its new count.
func checkChange(t *testing.T, e hooks.Event, last, max int) int {
	t.Helper()
	if e.Reason != "autoscale" {
		t.Errorf("nworkers_changed reason %q, want autoscale", e.Reason)
	}
	if e.OldWorkers != last {
		t.Errorf("nworkers_changed from %d, want from %d", e.OldWorkers, last)
	}
	if e.Workers > max {
		t.Errorf("nworkers_changed to %d workers, above max %d", e.Workers, max)
	}
	t.Logf("nworkers_changed %d → %d", e.OldWorkers, e.Workers)
	return e.Workers
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}

// TestPool_AutoscaleOnDemand: with min = 0 no worker starts until a
// connection waits; that connection is answered by the worker it started,
// the pool goes back to none once idle, and the next connection starts one
// again. Its watch on the sockets leaves no fd behind.
func TestPool_AutoscaleOnDemand(t *testing.T) {
	fdsBefore := countFDs(t)
	h := start(t, autoscaleConfig(t, "serve", 0, config.Autoscale{Min: 0, Max: 2, Queue: 0,
		UpAfter: ms(100), DownAfter: ms(200)}), nil)
	if e := h.rec.wait(t, 10*time.Second, "when_ready", is(hooks.WhenReady)); e.Workers != 0 {
		t.Errorf("when_ready with %d workers, want 0", e.Workers)
	}
	if s, err := h.pool.Stats(context.Background()); err != nil || s.Spawned != 0 {
		t.Fatalf("Stats = %+v, %v; want no worker spawned before the first connection", s, err)
	}
	for round := range 2 {
		m := h.dial() // fails the test unless a worker answers
		if m["id"] != "0" {
			t.Errorf("round %d: answered by %v, want worker 0", round, m)
		}
		e := h.rec.wait(t, 10*time.Second, "nworkers_changed to 1", isChange)
		if e.Workers != 1 || e.OldWorkers != 0 || e.Reason != "autoscale" {
			t.Errorf("round %d: nworkers_changed = %d → %d (%s), want 0 → 1 (autoscale)", round, e.OldWorkers, e.Workers, e.Reason)
		}
		e = h.rec.wait(t, 10*time.Second, "nworkers_changed back to 0", isChange)
		if e.Workers != 0 || e.Reason != "autoscale" {
			t.Errorf("round %d: nworkers_changed = %d → %d (%s), want 1 → 0 (autoscale)", round, e.OldWorkers, e.Workers, e.Reason)
		}
		h.rec.wait(t, 10*time.Second, "the worker's exit", is(hooks.WorkerExit))
	}
	if s, err := h.pool.Stats(context.Background()); err != nil || s.Spawned != 2 {
		t.Errorf("Stats = %+v, %v; want 2 workers spawned, one per connection after idle", s, err)
	}
	// A reload with no worker is done at once, and its generation waits
	// for connections as well.
	if err := h.pool.Reload(context.Background()); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if m := h.dial(); m["gen"] != "2" {
		t.Errorf("after the reload: answered by %v, want a worker of generation 2", m)
	}
	if err := h.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := countFDs(t); n > fdsBefore+1 { // +1: the harness's socket, closed in Cleanup
		t.Errorf("fd leak: %d open before, %d after", fdsBefore, n)
	}
}

// TestPool_AutoscaleBounds: TTIN, TTOU and SetWorkers move the count
// within min…max and no further.
func TestPool_AutoscaleBounds(t *testing.T) {
	h := start(t, autoscaleConfig(t, "serve", 2, config.Autoscale{Min: 1, Max: 3, Queue: 1000,
		UpAfter: ms(100), DownAfter: config.Duration{Duration: time.Hour}}), nil)
	h.waitReady(2)
	ctx := context.Background()
	for _, n := range []int{0, 4} {
		if err := h.pool.SetWorkers(ctx, n); !errors.Is(err, ErrOutOfRange) {
			t.Errorf("SetWorkers(%d) = %v, want ErrOutOfRange", n, err)
		}
	}
	if err := h.pool.SetWorkers(ctx, 3); err != nil {
		t.Fatalf("SetWorkers(3): %v", err)
	}
	h.rec.wait(t, 5*time.Second, "nworkers_changed to 3", isChange)
	// TTIN past max is refused; the TTOU after it is the next change.
	h.sigs <- syscall.SIGTTIN
	h.sigs <- syscall.SIGTTOU
	if e := h.rec.wait(t, 5*time.Second, "nworkers_changed", isChange); e.OldWorkers != 3 || e.Workers != 2 || e.Reason != "SIGTTOU" {
		t.Errorf("nworkers_changed = %d → %d (%s), want 3 → 2 (SIGTTOU): TTIN past max must be refused", e.OldWorkers, e.Workers, e.Reason)
	}
}

// TestPool_Listeners: the accept queue of the pool's socket, as the kernel
// reports it, holds the connection no worker took.
func TestPool_Listeners(t *testing.T) {
	h := start(t, testConfig(testkit.Executable(t), "serve", 1), nil)
	pids := h.waitReady(1)
	h.sigs <- syscall.SIGWINCH // no worker: connections stay queued
	testkit.WaitExit(t, pids[0], 10*time.Second)
	ls, err := h.pool.Listeners(context.Background())
	if err != nil || len(ls) != 1 {
		t.Fatalf("Listeners = %+v, %v; want one", ls, err)
	}
	if l := ls[0]; l.Name != "test" || l.Addr != "tcp://"+h.addr || l.Queue != 0 || l.Backlog == 0 {
		t.Errorf("Listeners = %+v, want test, tcp://%s, an empty queue and a backlog", l, h.addr)
	}
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The kernel queues the connection as the handshake ends, which the
	// test cannot wait on: it reads the queue until it shows, or fails.
	deadline := time.Now().Add(5 * time.Second)
	for {
		ls, err = h.pool.Listeners(context.Background())
		if err == nil && ls[0].Queue == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Listeners = %+v, %v; want a queue of 1", ls, err)
		}
		runtime.Gosched()
	}
}

// TestPool_AutoscaleReloadClamps: a reload keeps the current count, moved
// within the new config's min…max.
func TestPool_AutoscaleReloadClamps(t *testing.T) {
	a := config.Autoscale{Min: 1, Max: 4, Queue: 1000, UpAfter: ms(100), DownAfter: config.Duration{Duration: time.Hour}}
	cfg := autoscaleConfig(t, "serve", 3, a)
	next := *cfg
	next.Server.Autoscale.Max = 2
	h := start(t, cfg, func(o *Options) { o.Load = func() (*config.Config, error) { c := next; return &c, nil } })
	h.waitReady(3)
	if err := h.pool.Reload(context.Background()); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if s, err := h.pool.Status(context.Background()); err != nil || s.Workers != 2 || s.Generation != 2 {
		t.Errorf("Status after the reload = %+v, %v; want generation 2 with 2 workers (the new max)", s, err)
	}
}
