package systemd

import (
	"context"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/forkd/forkd/internal/testkit"
)

// watchdogUsec is the WATCHDOG_USEC the tests use: pings every 100ms.
const watchdogUsec = 200_000

// runWatchdog runs n.Watchdog until the test ends or stop is called
// (testkit.Run).
func runWatchdog(t *testing.T, n *Notifier, healthy func(context.Context) bool) (stop func()) {
	t.Helper()
	return testkit.RunWithin(t, wait, func(ctx context.Context) error { return n.Watchdog(ctx, healthy) })
}

func setWatchdog(t *testing.T, usec int, pid int) {
	t.Setenv("WATCHDOG_USEC", strconv.Itoa(usec))
	t.Setenv("WATCHDOG_PID", strconv.Itoa(pid))
}

func TestNotifier_WatchdogPings(t *testing.T) {
	r := listenTemp(t)
	setWatchdog(t, watchdogUsec, os.Getpid())
	n := NewNotifier()
	period := time.Duration(watchdogUsec) * time.Microsecond / 2
	if got := n.WatchdogInterval(); got != 2*period {
		t.Fatalf("WatchdogInterval() = %v, want %v", got, 2*period)
	}
	var calls atomic.Int32
	var sawDeadline atomic.Bool
	start := time.Now()
	runWatchdog(t, n, func(ctx context.Context) bool {
		calls.Add(1)
		if d, ok := ctx.Deadline(); ok && time.Until(d) <= period && time.Until(d) > 0 {
			sawDeadline.Store(true)
		}
		return true
	})

	const pings = 6
	var at []time.Time
	for i := 0; i < pings; i++ {
		m := r.Next()
		if m.Text != "WATCHDOG=1" {
			t.Fatalf("ping %d = %q, want WATCHDOG=1", i, m.Text)
		}
		at = append(at, m.At)
	}
	if first := at[0].Sub(start); first > period {
		t.Errorf("first ping after %v, want at once (within one period %v)", first, period)
	}
	// Pings come every period: the average gap over five periods is close
	// to it (generous bounds for a loaded machine and the race detector),
	// and never as long as the whole watchdog timeout.
	avg := at[pings-1].Sub(at[0]) / (pings - 1)
	if avg < period*7/10 || avg > period*3/2 {
		t.Errorf("average gap between pings = %v, want about %v", avg, period)
	}
	for i := 1; i < pings; i++ {
		if gap := at[i].Sub(at[i-1]); gap >= 2*period {
			t.Errorf("gap %d = %v, reaches WATCHDOG_USEC %v", i, gap, 2*period)
		}
	}
	if c := calls.Load(); c < pings {
		t.Errorf("healthy called %d times for %d pings", c, pings)
	}
	if !sawDeadline.Load() {
		t.Error("healthy's context had no deadline within one period")
	}
}

func TestNotifier_WatchdogUnhealthy(t *testing.T) {
	r := listenTemp(t)
	setWatchdog(t, watchdogUsec, os.Getpid())
	n := NewNotifier()
	period := time.Duration(watchdogUsec) * time.Microsecond / 2

	var healthy atomic.Bool
	healthy.Store(true)
	asked := make(chan bool, 100)
	runWatchdog(t, n, func(ctx context.Context) bool {
		h := healthy.Load()
		select {
		case asked <- h:
		default:
		}
		return h
	})
	r.Next() // pinging while healthy

	healthy.Store(false)
	// Wait until healthy has answered false once, then drain pings that were
	// already on their way; after that no ping may come.
	for deadline := time.After(wait); ; {
		var h bool
		select {
		case h = <-asked:
		case <-deadline:
			t.Fatal("healthy not asked again within the deadline")
		}
		if !h {
			break
		}
	}
	r.Flush()
	expectNothing(t, r, 4*period)

	healthy.Store(true)
	if m := r.Next(); m.Text != "WATCHDOG=1" {
		t.Errorf("after recovering: %q, want WATCHDOG=1", m.Text)
	}
}

func TestNotifier_WatchdogBlocked(t *testing.T) {
	r := listenTemp(t)
	setWatchdog(t, watchdogUsec, os.Getpid())
	n := NewNotifier()
	period := time.Duration(watchdogUsec) * time.Microsecond / 2

	t.Run("answers after its deadline", func(t *testing.T) {
		// A healthy that honours its context but only answers when it
		// expires — true, too late — must not earn a ping.
		var calls atomic.Int32
		stop := runWatchdog(t, n, func(ctx context.Context) bool {
			calls.Add(1)
			<-ctx.Done()
			return true
		})
		expectNothing(t, r, 4*period)
		stop()
		if c := calls.Load(); c < 2 {
			t.Errorf("healthy called %d times in 4 periods, want a call per period", c)
		}
	})

	t.Run("ignores its context", func(t *testing.T) {
		// A healthy wedged beyond its context: no ping, and no second call
		// piles up while the first one hangs.
		release := make(chan struct{})
		var calls atomic.Int32
		stop := runWatchdog(t, n, func(ctx context.Context) bool {
			calls.Add(1)
			<-release
			return true
		})
		expectNothing(t, r, 4*period)
		if c := calls.Load(); c != 1 {
			t.Errorf("healthy called %d times while the first call hung, want 1", c)
		}
		// Once it unwedges, pinging resumes.
		close(release)
		if m := r.Next(); m.Text != "WATCHDOG=1" {
			t.Errorf("after unwedging: %q, want WATCHDOG=1", m.Text)
		}
		stop()
	})
}

func TestNotifier_WatchdogNotConfigured(t *testing.T) {
	tests := []struct {
		name   string
		env    map[string]string
		notify bool
	}{
		{"no WATCHDOG_USEC", map[string]string{"WATCHDOG_USEC": "", "WATCHDOG_PID": ""}, true},
		{"another pid's watchdog", map[string]string{"WATCHDOG_USEC": "200000", "WATCHDOG_PID": strconv.Itoa(os.Getpid() + 1)}, true},
		{"no NOTIFY_SOCKET", map[string]string{"WATCHDOG_USEC": "200000", "WATCHDOG_PID": strconv.Itoa(os.Getpid())}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r *testkit.Notify
			if tt.notify {
				r = listenTemp(t)
			} else {
				t.Setenv("NOTIFY_SOCKET", "")
			}
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			n := NewNotifier()
			if d := n.WatchdogInterval(); d != 0 {
				t.Errorf("WatchdogInterval() = %v, want 0", d)
			}
			done := make(chan error, 1)
			called := make(chan struct{}, 1)
			go func() {
				done <- n.Watchdog(context.Background(), func(context.Context) bool {
					called <- struct{}{}
					return true
				})
			}()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Watchdog = %v, want nil", err)
				}
			case <-time.After(wait):
				t.Fatal("Watchdog did not return at once without a watchdog")
			}
			select {
			case <-called:
				t.Error("healthy was called without a watchdog")
			default:
			}
			if r != nil {
				expectNothing(t, r, 50*time.Millisecond)
			}
		})
	}
}

func TestNotifier_WatchdogMalformed(t *testing.T) {
	listenTemp(t)
	t.Setenv("WATCHDOG_USEC", "soon")
	t.Setenv("WATCHDOG_PID", "")
	n := NewNotifier()
	if err := n.Watchdog(context.Background(), func(context.Context) bool { return true }); err == nil {
		t.Error("Watchdog with WATCHDOG_USEC=soon: nil error")
	}
}
