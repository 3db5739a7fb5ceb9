package workers

import (
	"context"
	"sort"
	"time"
)

// request is a control call into the arbiter loop; it carries its reply.
type request struct {
	do func(p *Pool)
}

// call runs fn on the arbiter goroutine and waits for it.
func (p *Pool) call(ctx context.Context, fn func(p *Pool)) error {
	done := make(chan struct{})
	req := request{do: func(p *Pool) { fn(p); close(done) }}
	select {
	case p.requests <- req:
	case <-p.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-p.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *Pool) handleRequest(req request) { req.do(p) }

// Reload re-reads the config and replaces the workers with a new
// generation; it returns once the new generation serves (nil) or was
// rolled back, or the config was rejected (an error saying why; the old
// workers keep serving either way).
func (p *Pool) Reload(ctx context.Context) error {
	reply := make(chan error, 1)
	if err := p.call(ctx, func(p *Pool) { p.reload(reply, "Reload") }); err != nil {
		return err
	}
	select {
	case err := <-reply:
		return err
	case <-p.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// SetWorkers sets the number of workers of the current generation.
func (p *Pool) SetWorkers(ctx context.Context, n int) error {
	var err error
	if cerr := p.call(ctx, func(p *Pool) { err = p.scale(n, "SetWorkers") }); cerr != nil {
		return cerr
	}
	return err
}

// ListWorkers returns the live workers, by generation then id.
func (p *Pool) ListWorkers(ctx context.Context) ([]Info, error) {
	var list []Info
	err := p.call(ctx, func(p *Pool) {
		for _, w := range p.byPID {
			list = append(list, Info{ID: w.id, PID: w.pid, Generation: w.gen.id,
				State: w.phase.String(), Started: w.started})
		}
	})
	sort.Slice(list, func(i, j int) bool {
		if list[i].Generation != list[j].Generation {
			return list[i].Generation < list[j].Generation
		}
		if list[i].ID != list[j].ID {
			return list[i].ID < list[j].ID
		}
		return list[i].PID < list[j].PID
	})
	return list, err
}

// Status returns the pool's state and worker counts.
func (p *Pool) Status(ctx context.Context) (Status, error) {
	var s Status
	err := p.call(ctx, func(p *Pool) { s = p.status() })
	return s, err
}

// Healthy reports whether the arbiter's loop answers within ctx and at
// least min_ready workers of the current generation serve: the condition
// for pinging systemd's watchdog.
func (p *Pool) Healthy(ctx context.Context) bool {
	ok := false
	err := p.call(ctx, func(p *Pool) {
		ok = !p.stopping && p.current != nil && p.everReady && p.current.readyCount() >= p.current.minReady
	})
	return err == nil && ok
}

// Stats returns the pool's counters.
func (p *Pool) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	err := p.call(ctx, func(p *Pool) {
		s = p.stats
		p.ns.quiet.mu.Lock()
		s.Drains += p.ns.quiet.drains
		p.ns.quiet.mu.Unlock()
	})
	return s, err
}

// Upgrade starts an in-place upgrade, as USR2 does, and returns nil once
// it is under way: a moment later (so that the caller's reply gets out)
// the master re-executes itself. It returns an error when the upgrade is
// refused (no executable, a reload in progress, stopping, a config the new
// master could not start with, or the pre_exec hook's refusal).
func (p *Pool) Upgrade(ctx context.Context) error {
	var err error
	if cerr := p.call(ctx, func(p *Pool) {
		if err = p.prepareUpgrade("Upgrade"); err == nil {
			time.AfterFunc(100*time.Millisecond, func() { p.fire(timerEvent{kind: timerUpgrade}) })
		}
	}); cerr != nil {
		return cerr
	}
	return err
}
