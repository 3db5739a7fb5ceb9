package workers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/forkd/forkd/cgroup"
)

// Each worker runs in a cgroup of its own when the pool has a delegated
// subtree (Options.Cgroups), made with [worker]'s limits before the worker
// starts and removed once it was reaped. A worker whose memory passes
// max_memory is recycled (replacement first, then TERM) with reason
// ReasonMemory; one the OOM killer killed ends with reason ReasonOOM.

// Exit and recycling reasons of this file, in logs, hook events and
// D-Bus signals.
const (
	// ReasonMemory: the worker was recycled for passing max_memory.
	ReasonMemory = "memory"
	// ReasonOOM: the kernel's OOM killer killed a process of the worker's
	// cgroup (memory.events oom_kill), at memory_max.
	ReasonOOM = "oom"
)

// startMemory starts the pool's cgroup.Watcher, which ends when the
// returned function is called (and has ended when it returns).
func (p *Pool) startMemory() (stop func()) {
	p.memory = cgroup.NewWatcher(0)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.memory.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			p.log.Warn("memory watcher", "err", err)
		}
	}
}

// newCgroup makes the cgroup of a worker about to start in slot id of g;
// nil without a delegated subtree.
func (p *Pool) newCgroup(g *generation, id int) (*cgroup.Group, error) {
	t := p.opts.Cgroups
	if t == nil {
		return nil, nil
	}
	for range 100 {
		p.cgroupSeq++
		cg, err := t.New(fmt.Sprintf("worker-%d.g%d.%d", id, g.id, p.cgroupSeq), g.cfg.Worker.Limits.Cgroup())
		if errors.Is(err, os.ErrExist) {
			continue // still in use by a worker an upgrade handed over
		}
		return cg, err
	}
	return nil, fmt.Errorf("cgroup for worker %d: every name is taken", id)
}

// joinCgroup finds the cgroup of w, a worker an upgrade handed over,
// when it has one of its own in the pool's subtree.
func (p *Pool) joinCgroup(w *worker) {
	t := p.opts.Cgroups
	if t == nil {
		return
	}
	path, err := cgroup.Of(w.pid)
	if err != nil {
		return
	}
	dir := filepath.Join(cgroup.Mount, path)
	if filepath.Dir(dir) != t.Root || strings.HasPrefix(filepath.Base(dir), cgroup.MasterLeaf) {
		return
	}
	if cg, err := cgroup.Join(dir); err == nil {
		w.cg = cg
	}
}

// endCgroup is called once w was reaped: it stops watching w's memory,
// removes its cgroup, and reports whether the OOM killer acted in it.
func (p *Pool) endCgroup(w *worker) (oom bool) {
	p.memory.Unwatch(w)
	if w.cg == nil {
		return false
	}
	if ev, err := w.cg.Events(); err == nil {
		oom = ev.OOMKill > 0
	}
	_ = w.cg.Close()
	p.memory.Remove(w.cg.Path, nil)
	w.cg = nil
	return oom
}

// meter is what measures w's memory: its cgroup, else (no cgroup, or one
// without the memory controller) its RSS.
func (w *worker) meter() cgroup.Meter {
	if w.cg != nil && w.cg.Accounts() {
		return w.cg
	}
	return cgroup.RSS(w.pid)
}

// watchMemory has w recycled when its memory passes max_memory, from
// when it serves.
func (p *Pool) watchMemory(w *worker) {
	limit := int64(w.gen.cfg.Worker.MaxMemory)
	if limit <= 0 {
		return
	}
	// crossed runs on the watcher's goroutine, which the arbiter may be
	// waiting for (Unwatch): it hands the event over without waiting.
	p.memory.Watch(w, w.meter(), limit, func(int64) { go p.fire(timerEvent{kind: timerMemory, w: w}) })
}

// memoryCrossed recycles w, whose memory passed max_memory.
func (p *Pool) memoryCrossed(w *worker) {
	if p.byPID[w.pid] != w {
		return
	}
	limit := w.gen.cfg.Worker.MaxMemory
	p.recycleFor(w, ReasonMemory, fmt.Sprintf("max_memory (%v)", limit))
}
