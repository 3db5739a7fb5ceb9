package workers

import (
	"context"

	"github.com/forkd/forkd/cgroup"
	"github.com/forkd/forkd/internal/actor"
)

// ask runs fn on the arbiter's goroutine and returns its result (see
// actor.Ask).
func ask[T any](ctx context.Context, p *Pool, fn func(p *Pool) T) (T, error) {
	return actor.Ask(ctx, p.requests, p.done, ErrClosed, fn)
}

// Reload re-reads the config and replaces the workers with a new
// generation; it returns once the new generation serves (nil) or was
// rolled back, or the config was rejected (an error saying why; the old
// workers keep serving either way).
func (p *Pool) Reload(ctx context.Context) error {
	outcome, err := ask(ctx, p, func(p *Pool) <-chan error {
		c := make(chan error, 1)
		p.reload(c, "Reload")
		return c
	})
	if err != nil {
		return err
	}
	select {
	case err := <-outcome:
		return err
	case <-p.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// SetWorkers sets the number of workers of the current generation.
func (p *Pool) SetWorkers(ctx context.Context, n int) error {
	err, cerr := ask(ctx, p, func(p *Pool) error { return p.scale(n, "SetWorkers") })
	if cerr != nil {
		return cerr
	}
	return err
}

// ListWorkers returns the live workers, by generation then id, with what
// each uses (Memory and CPU) as of at most UsageInterval ago: the pool
// reads its workers' cgroups (or /proc) at most once per UsageInterval,
// when a call finds its latest reading older than that, off the arbiter's
// goroutine; calls meanwhile share that reading. A worker started since
// the reading is measured on its own for each call until the next one.
func (p *Pool) ListWorkers(ctx context.Context) ([]Info, error) {
	type entry struct {
		info  Info
		meter cgroup.Meter
	}
	entries, err := ask(ctx, p, func(p *Pool) []entry {
		list := make([]entry, 0, len(p.byPID))
		for _, w := range p.byPID {
			list = append(list, entry{w.info(), w.meter()})
		}
		return list
	})
	if err != nil {
		return nil, err
	}
	list := make([]Info, len(entries))
	meters := make([]cgroup.Meter, len(entries))
	for i, e := range entries {
		list[i], meters[i] = e.info, e.meter
	}
	if err := p.usage.fill(ctx, list, meters); err != nil {
		return nil, err
	}
	sortInfo(list)
	return list, nil
}

// Status returns the pool's state and worker counts.
func (p *Pool) Status(ctx context.Context) (Status, error) {
	return ask(ctx, p, func(p *Pool) Status { return p.status() })
}

// Healthy reports whether the arbiter's loop answers within ctx and at
// least min_ready workers of the current generation serve: the condition
// for pinging systemd's watchdog.
func (p *Pool) Healthy(ctx context.Context) bool {
	ok, err := ask(ctx, p, func(p *Pool) bool {
		return !p.stopping && p.current != nil && p.everReady && p.current.readyCount() >= p.current.minReady
	})
	return err == nil && ok
}

// Stats returns the pool's counters, the notify socket's included.
func (p *Pool) Stats(ctx context.Context) (Stats, error) {
	s, err := ask(ctx, p, func(p *Pool) Stats { return p.stats })
	if err != nil {
		return s, err
	}
	ns, err := p.ns.Stats(ctx)
	if err != nil {
		return s, err
	}
	s.Quiet, s.Drains = ns.Quiet, ns.Drains
	return s, nil
}

// Upgrade starts an in-place upgrade, as USR2 does, and returns nil once
// it is under way; the master re-executes itself as soon as Upgrade has
// returned that nil to its caller. It returns an error when the upgrade is
// refused (no executable, a reload or another upgrade in progress,
// stopping, a config the new master could not start with, or the pre_exec
// hook's refusal).
func (p *Pool) Upgrade(ctx context.Context) error {
	return p.UpgradeAfter(ctx, nil)
}

// UpgradeAfter is Upgrade for a caller that has to pass the reply on
// first: the master re-executes once UpgradeAfter returned nil and sent is
// closed (nil: at once). A caller that gives up (ctx) before it has the
// reply cancels the upgrade.
func (p *Pool) UpgradeAfter(ctx context.Context, sent <-chan struct{}) error {
	ack := make(chan bool, 1)
	err, cerr := ask(ctx, p, func(p *Pool) error { return p.startUpgrade(ack) })
	if cerr != nil {
		ack <- false // if the request was taken, the arbiter cancels it
		return cerr
	}
	if err == nil {
		if sent == nil {
			ack <- true
		} else {
			go func() {
				select {
				case <-sent:
					ack <- true
				case <-ctx.Done():
					ack <- false
				case <-p.done:
				}
			}()
		}
	}
	return err
}

// startUpgrade runs an Upgrade request on the arbiter: when the upgrade
// may go ahead, the arbiter waits for ack — its caller has the reply
// (true) or gave up (false) — before it re-executes.
func (p *Pool) startUpgrade(ack <-chan bool) error {
	if err := p.prepareUpgrade("Upgrade"); err != nil {
		p.upgradeRefused(err)
		return err
	}
	p.upgradeAck = ack
	return nil
}

// upgradeAcked goes on with an upgrade whose caller has the reply (ok), or
// drops it.
func (p *Pool) upgradeAcked(ok bool) {
	if !ok {
		p.log.Warn("upgrade abandoned: its caller gave up before it had the reply")
		return
	}
	if err := p.execUpgrade(); err != nil {
		p.upgradeRefused(err)
	}
}
