package master

import (
	"context"
	"log/slog"
	"time"

	"github.com/forkd/forkd/bus"
	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/systemd"
	"github.com/forkd/forkd/workers"
)

// reporter tells systemd and the bus about status changes. The arbiter
// hands it the latest status without blocking; its own goroutine talks to
// systemd, so a slow NOTIFY_SOCKET never stalls the arbiter.
//
// Its state has two owners, and nothing is shared: newest and note belong
// to the arbiter's goroutine (observe, reloaded, last), which sends run
// each update with the note in force; failing belongs to run's.
type reporter struct {
	notifier *systemd.Notifier
	bus      *bus.Service
	log      *slog.Logger
	boot     time.Duration
	latest   chan update // capacity 1: only the newest update matters
	// cluster carries the cluster's note for STATUS= (capacity 1: only
	// the newest matters).
	cluster chan string

	// newest is the latest status observed.
	newest workers.Status
	// note is appended to STATUS= until the next successful reload: why
	// the last reload failed.
	note string

	// failing says the last message to systemd failed: the next failure is
	// not logged again, a success is.
	failing bool
}

// update is what run learns from the arbiter: a status and the note to
// append to its STATUS= text.
type update struct {
	status workers.Status
	note   string
}

// clusterStatus puts the connection to etcd in STATUS= ("; cluster jobs
// wait: etcd unreachable: …") while it is not connected; it may be called
// from any goroutine and never blocks.
func (r *reporter) clusterStatus(connected bool, text string) {
	note := ""
	if !connected {
		note = "; cluster jobs wait: " + text
	}
	for {
		select {
		case r.cluster <- note:
			return
		default:
			select {
			case <-r.cluster:
			default:
			}
		}
	}
}

// reloaded is workers.Options.Reloaded, called on the arbiter's
// goroutine: a failed reload stays visible in STATUS= ("…; last reload
// failed: …") until one succeeds.
func (r *reporter) reloaded(err error) {
	r.note = ""
	if err != nil {
		r.note = "; last reload failed: " + err.Error()
	}
	r.observe(r.newest)
}

// last returns the newest status observed. Only the arbiter's goroutine
// may call it (the one that runs the pool, once the pool has returned).
func (r *reporter) last() workers.Status { return r.newest }

func newReporter(n *systemd.Notifier, cfg *config.Config, svc *bus.Service, log *slog.Logger) *reporter {
	return &reporter{notifier: n, bus: svc, log: log, boot: cfg.Server.BootTimeout.Duration,
		latest: make(chan update, 1), cluster: make(chan string, 1)}
}

// sent logs the outcome of a message to systemd: the first failure of a
// spell as a warning (a lost READY=1 fails the unit's start), the success
// that ends it.
func (r *reporter) sent(err error) {
	switch {
	case err != nil && !r.failing:
		r.log.Warn("sd_notify failed; messages to systemd are lost until it works again", "err", err)
	case err == nil && r.failing:
		r.log.Info("sd_notify works again")
	}
	r.failing = err != nil
}

// observe is workers.Options.Observe: called on the arbiter goroutine.
func (r *reporter) observe(s workers.Status) {
	r.newest = s
	if r.bus != nil {
		r.bus.UpdateStatus(s)
	}
	u := update{status: s, note: r.note}
	for {
		select {
		case r.latest <- u:
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
// READY=1, →stopping STOPPING=1, and STATUS= on every change; a reload it
// did not see in state reloading (one refused at once) still gets
// RELOADING=1 and READY=1.
func (r *reporter) run(ctx context.Context) error {
	prev := workers.StateStarting
	text := ""
	ready := 0
	var reloads uint64
	var last update
	cluster := ""
	for {
		select {
		case <-ctx.Done():
			return nil
		case cluster = <-r.cluster:
			if t := workers.StatusText(last.status) + last.note + cluster; t != text && last.status.State != "" {
				r.sent(r.notifier.Status(t))
				text = t
			}
		case u := <-r.latest:
			last = u
			s := u.status
			t := workers.StatusText(s) + u.note + cluster
			if s.Reloads != reloads {
				if s.State == workers.StateRunning && prev == workers.StateRunning {
					// A reload came and went unseen (refused before a new
					// generation started, or over before this look):
					// systemd's Type=notify-reload still waits for both.
					r.sent(r.notifier.Reloading())
					r.sent(r.notifier.Ready(t))
				}
				reloads = s.Reloads
			}
			if s.State != prev {
				switch s.State {
				case workers.StateRunning:
					r.sent(r.notifier.Ready(t))
				case workers.StateReloading:
					r.sent(r.notifier.Reloading())
				case workers.StateStopping:
					r.sent(r.notifier.Stopping())
				}
				prev = s.State
			}
			if s.State == workers.StateStarting && r.boot > 0 && s.ReadyWorkers > ready {
				// A large generation may take a while: each worker that
				// comes up buys time; a crash loop does not.
				r.sent(r.notifier.ExtendTimeout(r.boot + 10*time.Second))
			}
			ready = s.ReadyWorkers
			if t != text {
				r.sent(r.notifier.Status(t))
				text = t
			}
		}
	}
}
