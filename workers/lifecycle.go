package workers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/hooks"
)

// stopMode is how the pool stops its workers.
type stopMode int

const (
	stopGraceful stopMode = iota // TERM, KILL after graceful_timeout
	stopQuick                    // INT/QUIT, KILL after kill_timeout
)

// generationProgress advances the pool when g gained a ready worker: the
// first generation makes the instance ready, a reload's new generation
// takes over from the old one once all of it serves.
func (p *Pool) generationProgress(g *generation) {
	switch {
	case g == p.current && !g.announced && g.readyCount() >= g.minReady:
		g.announced = true
		p.everReady = true
		if p.state == StateStarting {
			p.state = StateRunning
		}
		p.log.Info("ready", "generation", g.id,
			"ready_workers", g.readyCount(), "workers", g.target)
		p.emit(hooks.Event{Hook: hooks.WhenReady, Generation: g.id, Workers: g.target})
	case g == p.pending && g.readyCount() >= g.minReady:
		p.promote()
	case g == p.pending && g.cfg.Server.MaxSurge > 0:
		p.surge(g)
	}
}

// clearSlot empties slot id of g: its worker and any recycled predecessor
// are sent sig (SIGKILL after grace), and a pending respawn is cancelled.
func (p *Pool) clearSlot(g *generation, id int, sig syscall.Signal, grace time.Duration, reason string) {
	if w := g.slots[id]; w != nil {
		p.retire(w, sig, grace, reason)
	}
	if pred := g.predecessor[id]; pred != nil {
		g.predecessor[id] = nil
		p.retire(pred, sig, grace, reason)
	}
	if t := g.respawn[id]; t != nil {
		t.Stop()
		g.respawn[id] = nil
	}
}

// surge advances a rolling reload: one old worker retires for each new
// one that became ready, and the next new ones start.
func (p *Pool) surge(g *generation) {
	old := p.current
	for id := len(old.slots) - 1; id >= 0; id-- {
		if w := old.slots[id]; w != nil && old.readyCount() > 0 {
			p.retire(w, syscall.SIGTERM, old.cfg.Server.GracefulTimeout.Duration,
				fmt.Sprintf("replaced by generation %d", g.id))
			break
		}
	}
	p.fillSlots(g)
}

// promote makes the pending generation current and stops the old one.
func (p *Pool) promote() {
	old, g := p.current, p.pending
	p.current, p.pending = g, nil
	p.applySlice(g.cfg)
	g.announced = true
	p.state = StateRunning
	for id := range old.slots {
		p.clearSlot(old, id, syscall.SIGTERM, old.cfg.Server.GracefulTimeout.Duration, "replaced by generation "+fmt.Sprint(g.id))
	}
	p.log.Info("reload done", "generation", g.id, "workers", g.target)
	p.emit(hooks.Event{Hook: hooks.WhenReady, Generation: g.id, Workers: g.target})
	if g.target != old.target {
		p.emit(hooks.Event{Hook: hooks.NworkersChanged, Generation: g.id, Workers: g.target, OldWorkers: old.target,
			Reason: "reload"})
	}
	// Status first, then the outcome: whoever waited for the reload (D-Bus
	// Reload, forkctl reload) and then reads the status sees the new
	// generation.
	p.observe()
	p.reloaded(nil)
	for _, c := range g.whenDone {
		c <- nil
	}
	g.whenDone = nil
}

// failReload rolls back a reload whose generation did not come up: its
// workers are stopped and the current generation keeps serving.
func (p *Pool) failReload(err error) {
	g := p.pending
	if g == nil {
		return
	}
	p.pending = nil
	if p.state == StateReloading {
		p.state = StateRunning
	}
	for id := range g.slots {
		p.clearSlot(g, id, syscall.SIGKILL, g.cfg.Server.KillTimeout.Duration, "reload rolled back")
	}
	if !p.stopping {
		p.fillSlots(p.current) // a rolling reload may have retired some
	}
	err = fmt.Errorf("reload failed, generation %d still serving: %w", p.current.id, err)
	p.log.Error("reload failed", "generation", g.id, "err", err)
	p.observe() // as in promote: the status before the outcome
	p.reloaded(err)
	for _, c := range g.whenDone {
		c <- err
	}
	g.whenDone = nil
}

// reload re-reads the config and starts a new generation beside the
// current one, for why (the on_reload hook's reason: "SIGHUP", "Reload",
// …); reply (buffered) receives the outcome when it is known.
func (p *Pool) reload(reply chan error, why string) {
	switch {
	case p.stopping:
		reply <- ErrStopping
		return
	case p.pending != nil:
		// A reload already runs: wait for its outcome rather than stack another.
		p.pending.whenDone = append(p.pending.whenDone, reply)
		return
	}
	old := p.current
	p.reloads++
	ev := hooks.Event{Hook: hooks.OnReload, Generation: old.id, Reason: why}
	p.emit(ev)
	if err := p.runHook(ev); err != nil {
		err = fmt.Errorf("reload aborted by on_reload hook, generation %d still serving: %w", old.id, err)
		p.log.Error("reload aborted", "err", err)
		p.refused(err, reply)
		return
	}
	cfg := old.cfg
	if p.opts.Load != nil {
		c, err := p.opts.Load()
		if err != nil {
			err = fmt.Errorf("reload rejected, generation %d still serving: %w", old.id, err)
			p.log.Error("reload rejected", "err", err)
			p.refused(err, reply)
			return
		}
		cfg = c
	}
	if !sameSockets(cfg, old.cfg) {
		p.log.Warn("server.bind and server.backlog apply at start only; restart forkd to change the sockets")
	}
	if cfg.Server.Name != old.cfg.Server.Name {
		p.log.Warn("server.name cannot change on reload; keeping the old one", "name", old.cfg.Server.Name)
		cfg.Server.Name = old.cfg.Server.Name
	}
	if p.opts.Staged != nil {
		p.opts.Staged(cfg)
	}
	n := cfg.Server.Workers
	if n == old.cfg.Server.Workers && old.target > 0 {
		// Keep TTIN/TTOU/SetWorkers changes unless the config changed
		// workers; after WINCH (no workers at all) the config's count
		// applies, as Gunicorn's HUP does.
		n = old.target
	}
	n = autoscaleClamp(cfg, n)
	g := p.newGeneration(cfg, n)
	g.whenDone = append(g.whenDone, reply)
	p.pending = g
	p.state = StateReloading
	p.log.Info("reloading", "generation", g.id, "workers", n)
	p.observe()
	if n == 0 {
		p.promote()
		return
	}
	p.fillSlots(g)
}

// refused ends a reload refused before a new generation started: the
// status, with Reloads counting it, is observed before the outcome is
// reported (systemd's Type=notify-reload waits for RELOADING=1 and READY=1
// even then), and reply gets err.
func (p *Pool) refused(err error, reply chan error) {
	p.observe()
	p.reloaded(err)
	reply <- err
}

// reloaded reports a reload's outcome to Options.Reloaded.
func (p *Pool) reloaded(err error) {
	if p.opts.Reloaded != nil {
		p.opts.Reloaded(err)
	}
}

// sameSockets reports whether a and b ask for the same listening sockets.
func sameSockets(a, b *config.Config) bool {
	if a.Server.Backlog != b.Server.Backlog || len(a.Server.Bind) != len(b.Server.Bind) {
		return false
	}
	for i := range a.Server.Bind {
		if a.Server.Bind[i] != b.Server.Bind[i] {
			return false
		}
	}
	return true
}

// runHook runs a blocking hook through Options.RunHook.
func (p *Pool) runHook(e hooks.Event) error {
	if p.opts.RunHook == nil {
		return nil
	}
	e.Instance = p.instance()
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	return p.opts.RunHook(context.Background(), e)
}

// ErrOutOfRange is wrapped by the error of a worker count outside
// 0…config.MaxWorkers.
var ErrOutOfRange = errors.New("workers: worker count out of range")

// scale sets the current generation's target worker count, for why (the
// nworkers_changed hook's reason: "SIGTTIN", "SetWorkers", …).
func (p *Pool) scale(n int, why string) error {
	switch {
	case p.stopping:
		return ErrStopping
	case p.pending != nil:
		return ErrReloading
	case n < 0 || n > config.MaxWorkers:
		return fmt.Errorf("%w: %d is not within 0…%d", ErrOutOfRange, n, config.MaxWorkers)
	}
	if err := p.autoscaleBounds(n, why); err != nil {
		return err
	}
	g := p.current
	old := g.target
	if n == old {
		return nil
	}
	g.target = n
	g.grow(n)
	if g.minReady > n || g.cfg.Server.MinReady <= 0 {
		g.minReady = n
	}
	for id := n; id < len(g.slots); id++ {
		p.clearSlot(g, id, syscall.SIGTERM, g.cfg.Server.GracefulTimeout.Duration, "scaled down")
		g.failures[id] = 0
	}
	p.log.Info("workers changed", "old", old, "new", n)
	p.emit(hooks.Event{Hook: hooks.NworkersChanged, Generation: g.id, Workers: n, OldWorkers: old, Reason: why})
	p.fillSlots(g)
	p.observe()
	return nil
}

// stop stops every worker: mode says how; the loop returns once all exited.
func (p *Pool) stop(mode stopMode, why string) {
	sig, grace := syscall.SIGTERM, p.current.cfg.Server.GracefulTimeout.Duration
	if mode == stopQuick {
		sig, grace = syscall.SIGQUIT, p.current.cfg.Server.KillTimeout.Duration
	}
	if p.stopping {
		if mode != stopQuick {
			return
		}
		// A quick stop during a graceful one hurries it up.
	}
	p.stopping = true
	p.state = StateStopping
	p.stopPacing()
	p.log.Info("stopping", "reason", why, "signal", unix.SignalName(sig),
		"grace", grace, "workers", len(p.byPID))
	if p.pending != nil {
		p.failReload(ErrStopping)
	}
	for _, g := range []*generation{p.current} {
		for id := range g.respawn {
			if t := g.respawn[id]; t != nil {
				t.Stop()
				g.respawn[id] = nil
			}
		}
	}
	for _, w := range p.byPID {
		if mode == stopQuick {
			p.emit(hooks.Event{Hook: hooks.WorkerInt, Generation: w.gen.id, WorkerID: w.id, PID: w.pid,
				Signal: int(sig), Reason: why})
		}
		if w.phase == phaseStopping && mode == stopGraceful {
			continue // already on its way out, with its own deadline
		}
		p.retire(w, sig, grace, why)
	}
	p.observe()
}

// handleSignal maps the master's signals to actions, as Gunicorn does.
func (p *Pool) handleSignal(sig os.Signal) {
	s, _ := sig.(syscall.Signal)
	p.log.Info("signal", "signal", signalName(sig))
	switch s {
	case syscall.SIGHUP:
		reply := make(chan error, 1)
		p.reload(reply, "SIGHUP")
		go func() {
			if err := <-reply; err != nil && !errors.Is(err, ErrStopping) {
				p.log.Debug("HUP reload finished", "err", err)
			}
		}()
	case syscall.SIGTTIN:
		if err := p.scale(p.current.target+1, "SIGTTIN"); err != nil {
			p.log.Warn("TTIN ignored", "err", err)
		}
	case syscall.SIGTTOU:
		if p.current.target <= 1 {
			p.log.Warn("TTOU ignored: TTOU stops at one worker (WINCH stops them all)", "workers", p.current.target)
			return
		}
		if err := p.scale(p.current.target-1, "SIGTTOU"); err != nil {
			p.log.Warn("TTOU ignored", "err", err)
		}
	case syscall.SIGWINCH:
		if err := p.scale(0, "SIGWINCH"); err != nil {
			p.log.Warn("WINCH ignored", "err", err)
		}
	case syscall.SIGTERM:
		p.stop(stopGraceful, "SIGTERM")
	case syscall.SIGINT, syscall.SIGQUIT:
		p.stop(stopQuick, unix.SignalName(s))
	case syscall.SIGUSR1:
		// A worker still booting may not handle USR1 yet, and would die
		// of it; it opens its logs afresh as it starts anyway.
		for _, w := range p.byPID {
			if w.phase == phaseReady {
				p.signal(w, syscall.SIGUSR1)
			}
		}
	case syscall.SIGUSR2:
		if err := p.upgrade("SIGUSR2"); err != nil {
			p.upgradeRefused(err)
		}
	}
}

// signalName is sig's name as the logs spell it: "SIGTERM".
func signalName(sig os.Signal) string {
	s, _ := sig.(syscall.Signal)
	return unix.SignalName(s)
}

// now is the pool's clock.
func (p *Pool) now() time.Time { return time.Now() }
