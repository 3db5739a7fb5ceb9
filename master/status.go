package master

import (
	"context"
	"sync"
	"time"

	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/hooks"
	"github.com/forkd/forkd/systemd"
	"github.com/forkd/forkd/workers"
)

// reporter tells systemd and the bus about status changes. The arbiter
// hands it the latest status without blocking; its own goroutine talks to
// systemd, so a slow NOTIFY_SOCKET never stalls the arbiter.
type reporter struct {
	notifier *systemd.Notifier
	bus      *hooks.Bus
	boot     time.Duration
	latest   chan hooks.Status // capacity 1: only the newest status matters
	mu       sync.Mutex
	newest   hooks.Status
	// note is appended to STATUS= until the next successful reload: why
	// the last reload failed.
	note string
}

// reloaded is workers.Options.Reloaded: a failed reload stays visible in
// STATUS= ("…; last reload failed: …") until one succeeds.
func (r *reporter) reloaded(err error) {
	r.mu.Lock()
	r.note = ""
	if err != nil {
		r.note = "; last reload failed: " + err.Error()
	}
	s := r.newest
	r.mu.Unlock()
	r.observe(s)
}

// last returns the newest status observed.
func (r *reporter) last() hooks.Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.newest
}

func newReporter(n *systemd.Notifier, cfg *config.Config, bus *hooks.Bus) *reporter {
	return &reporter{notifier: n, bus: bus, boot: cfg.Server.BootTimeout.Duration, latest: make(chan hooks.Status, 1)}
}

// observe is workers.Options.Observe: called on the arbiter goroutine.
func (r *reporter) observe(s hooks.Status) {
	r.mu.Lock()
	r.newest = s
	r.mu.Unlock()
	if r.bus != nil {
		r.bus.UpdateStatus(s)
	}
	for {
		select {
		case r.latest <- s:
			return
		default:
			select {
			case <-r.latest: // drop the stale one
			default:
			}
		}
	}
}

// run maps state transitions to sd_notify until ctx is done:
// starting→running READY=1, →reloading RELOADING=1, reloading→running
// READY=1, →stopping STOPPING=1, and STATUS= on every change.
func (r *reporter) run(ctx context.Context) error {
	prev := workers.StateStarting
	text := ""
	ready := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-r.latest:
			r.mu.Lock()
			t := workers.StatusText(s) + r.note
			r.mu.Unlock()
			if s.State != prev {
				switch s.State {
				case workers.StateRunning:
					_ = r.notifier.Ready(t)
				case workers.StateReloading:
					_ = r.notifier.Reloading()
				case workers.StateStopping:
					_ = r.notifier.Stopping()
				}
				prev = s.State
			}
			if s.State == workers.StateStarting && r.boot > 0 && s.ReadyWorkers > ready {
				// A large generation may take a while: each worker that
				// comes up buys time; a crash loop does not.
				_ = r.notifier.ExtendTimeout(r.boot + 10*time.Second)
			}
			ready = s.ReadyWorkers
			if t != text {
				_ = r.notifier.Status(t)
				text = t
			}
		}
	}
}
