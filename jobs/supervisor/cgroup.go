package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/forkd/forkd/cgroup"
)

// Each singleton process runs in a cgroup of its own when the supervisor
// has a delegated subtree (Options.Cgroups), made with its table's limits
// before it starts and removed once it was reaped. One the OOM killer
// killed exits with reason "oom"; one whose memory passes max_memory is
// stopped (TERM) and started again, with reason "memory": a singleton is
// never two processes at once, so unlike a worker it has no successor
// running first.

// Exit reasons of this file, as the singleton_exited hook reports them.
const (
	reasonOOM    = "oom"
	reasonMemory = "memory"
)

// startMemory starts the supervisor's cgroup.Watcher, which ends when
// the returned function is called (and has ended when it returns).
func (s *Supervisor) startMemory() (stop func()) {
	s.memory = cgroup.NewWatcher(0)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.memory.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			s.log.Warn("memory watcher", "err", err)
		}
	}
}

// newCgroup makes the cgroup sg's next process starts in; nil without a
// delegated subtree.
func (s *Supervisor) newCgroup(sg *singleton) (*cgroup.Group, error) {
	t := s.opts.Cgroups
	if t == nil {
		return nil, nil
	}
	for range 100 {
		s.cgroupSeq++
		cg, err := t.New(fmt.Sprintf("singleton-%s.%d", sg.cfg.Name, s.cgroupSeq), sg.cfg.Limits.Cgroup())
		if errors.Is(err, os.ErrExist) {
			continue // still in use by a process an upgrade handed over
		}
		return cg, err
	}
	return nil, fmt.Errorf("cgroup for singleton %s: every name is taken", sg.cfg.Name)
}

// dropCgroup closes cg and removes it once empty.
func (s *Supervisor) dropCgroup(cg *cgroup.Group) {
	if cg == nil {
		return
	}
	_ = cg.Close()
	s.memory.Remove(cg.Path, nil)
}

// endCgroup is called once sg's process was reaped: it stops watching its
// memory, removes its cgroup, and reports whether the OOM killer acted in
// it.
func (s *Supervisor) endCgroup(sg *singleton) (oom bool) {
	s.memory.Unwatch(sg)
	if sg.cg == nil {
		return false
	}
	if ev, err := sg.cg.Events(); err == nil {
		oom = ev.OOMKill > 0
	}
	s.dropCgroup(sg.cg)
	sg.cg = nil
	return oom
}

// watchMemory has sg's process restarted when its memory passes
// max_memory.
func (s *Supervisor) watchMemory(sg *singleton) {
	limit := int64(sg.cfg.MaxMemory)
	if limit <= 0 || sg.proc == nil {
		return
	}
	var m cgroup.Meter = cgroup.RSS(sg.proc.PID)
	if sg.cg != nil && sg.cg.Accounts() {
		m = sg.cg
	}
	proc := sg.proc
	// crossed runs on the watcher's goroutine, which Run may be waiting
	// for (Unwatch): it hands the event over without waiting.
	s.memory.Watch(sg, m, limit, func(int64) {
		go s.post(func(s *Supervisor) {
			if sg.proc != proc || sg.state == stateStopping {
				return
			}
			s.log.Warn("singleton passed max_memory; restarting it", "singleton", sg.cfg.Name, "pid", proc.PID,
				"max_memory", sg.cfg.MaxMemory)
			sg.memoryStop = true
			s.stopSingleton(sg)
		})
	})
}

// post hands fn to Run's goroutine, or drops it once Run has returned.
func (s *Supervisor) post(fn func(*Supervisor)) {
	select {
	case s.requests <- fn:
	case <-s.done:
	}
}
