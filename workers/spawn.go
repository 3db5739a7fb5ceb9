package workers

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/hooks"
	"github.com/forkd/forkd/internal/process"
)

// childFiles is a worker's fds 0, 1, 2, 3…: stdin, the workers' stdout and
// stderr, then the listening sockets.
func (p *Pool) childFiles(stdin *os.File) []*os.File {
	files := make([]*os.File, 0, 3+len(p.opts.Sockets))
	files = append(files, stdin, p.opts.Stdout, p.opts.Stderr)
	for _, s := range p.opts.Sockets {
		files = append(files, s.File)
	}
	return files
}

// newGeneration prepares (but does not start) a generation of n workers
// running cfg.
func (p *Pool) newGeneration(cfg *config.Config, n int) *generation {
	g := &generation{
		id:     p.nextGen,
		cfg:    cfg,
		target: n,
		env:    baseEnv(cfg, p.opts.Sockets, p.notifyAdr),
	}
	g.pidEnv = pidEnv(g.env)
	p.nextGen++
	g.minReady = cfg.Server.MinReady
	if g.minReady <= 0 || g.minReady > n {
		g.minReady = n
	}
	g.command = cfg.Worker.Path // resolved by config.Load
	if g.command == "" {
		g.command = cfg.Worker.Command
	}
	g.grow(n)
	return g
}

// grow makes room for n slots.
func (g *generation) grow(n int) {
	for len(g.slots) < n {
		g.slots = append(g.slots, nil)
		g.failures = append(g.failures, 0)
		g.respawn = append(g.respawn, nil)
		g.predecessor = append(g.predecessor, nil)
	}
}

// fillSlots starts a worker in every empty slot of g below its target
// that has no respawn pending, while g is the current or the pending
// generation and the pool is not stopping.
//
// A reload's generation with max_surge set boots at most that many at
// once (see surge).
func (p *Pool) fillSlots(g *generation) {
	room := -1 // no limit
	if g == p.pending && g.cfg.Server.MaxSurge > 0 {
		room = g.cfg.Server.MaxSurge - g.booting()
	}
	for id := 0; id < g.target && room != 0; id++ {
		if g != p.current && g != p.pending || p.stopping {
			return // a failed spawn ended g (a reload rolled back) or the pool
		}
		if g.slots[id] == nil && g.respawn[id] == nil {
			p.spawn(g, id)
			room--
		}
	}
}

// booting counts g's workers that are not ready yet.
func (g *generation) booting() int {
	n := 0
	for _, w := range g.slots {
		if w != nil && w.phase == phaseStarting {
			n++
		}
	}
	return n
}

// spawn starts the worker for slot id of generation g, or holds the slot
// until it is its turn to boot (see pace.go): behind the slots held
// already, or when too many workers boot.
func (p *Pool) spawn(g *generation, id int) {
	if len(p.held) > 0 {
		p.hold(g, id, false)
		return
	}
	if ok, byLoad := p.mayBoot(g); !ok {
		p.hold(g, id, byLoad)
		return
	}
	p.spawnNow(g, id)
}

// spawnNow starts the worker for slot id of generation g. A failure to
// start counts as a failed worker: the slot is retried with backoff.
func (p *Pool) spawnNow(g *generation, id int) {
	ev := hooks.Event{Hook: hooks.PreFork, Generation: g.id, WorkerID: id}
	p.emit(ev)
	if err := p.runHook(ev); err != nil {
		p.log.Error("pre_fork hook failed; not spawning", "worker_id", id, "generation", g.id, "err", err)
		p.slotFailed(g, id, "pre_fork hook: "+err.Error())
		return
	}
	w, err := p.start(g, id)
	if err != nil {
		p.log.Error("spawn worker", "worker_id", id, "generation", g.id, "err", err)
		p.slotFailed(g, id, err.Error())
		return
	}
	p.stats.Spawned++
	g.slots[id] = w
	p.byPID[w.pid] = w
	ev.Hook, ev.PID = hooks.PostFork, w.pid
	p.emit(ev)
	p.log.Debug("spawned worker", "worker_id", id, "pid", w.pid, "generation", g.id)
	switch {
	case g.cfg.Worker.Ready == config.ReadyStarted:
		p.arm(w, g.cfg.Worker.ReadyDelay.Duration, timerReadyDelay)
	case g.cfg.Server.BootTimeout.Duration > 0:
		p.arm(w, g.cfg.Server.BootTimeout.Duration, timerBoot)
	}
}

// start starts one worker and its reaper.
func (p *Pool) start(g *generation, id int) (*worker, error) {
	env := make([]string, len(g.env), len(g.env)+3)
	copy(env, g.env)
	env = append(env,
		"FORKD_WORKER_ID="+strconv.Itoa(id),
		"FORKD_GENERATION="+strconv.FormatUint(g.id, 10),
	)
	if _, err := os.Stat(g.command); err != nil {
		if os.IsNotExist(err) {
			if strings.Contains(g.cfg.Worker.Command, "/") {
				return nil, fmt.Errorf("command %q: %s does not exist", g.cfg.Worker.Command, g.command)
			}
			return nil, fmt.Errorf("command %q: %w", g.cfg.Worker.Command, exec.ErrNotFound)
		}
		return nil, fmt.Errorf("command %q: %w", g.cfg.Worker.Command, err)
	}
	// The worker gets its own pid in LISTEN_PID and WATCHDOG_PID; it is
	// started directly, or through the exec-shim when Options.ExecShim
	// asks for it or the kernel refuses a direct start (after which every
	// worker is).
	cg, err := p.newCgroup(g, id)
	if err != nil {
		return nil, err
	}
	attr := &process.Attr{
		Path:     g.command,
		Args:     g.cfg.Worker.Args,
		Env:      env,
		PIDEnv:   g.pidEnv,
		Dir:      g.cfg.Worker.Dir,
		Files:    p.childFiles(p.devnull),
		Shim:     p.opts.Shim,
		ExecShim: p.opts.ExecShim,
	}
	if cg != nil {
		attr.Cgroup = cg.Dir()
	}
	proc, err := process.Start(attr)
	if err != nil {
		if cg != nil {
			_ = cg.Close()
			p.memory.Remove(cg.Path, nil)
		}
		return nil, fmt.Errorf("start %s: %w", g.cfg.Worker.Command, err)
	}
	if proc.Fallback != nil {
		p.log.Warn("the kernel refused a direct start; starting workers through the exec-shim", "err", proc.Fallback)
		p.opts.ExecShim = true
	}
	w := &worker{id: id, gen: g, pid: proc.PID, proc: proc, started: time.Now(), inSlot: true, cg: cg}
	p.watch(w)
	return w, nil
}

// watchAdopted watches w, a worker an upgrade handed over, and starts its
// reaper.
func (p *Pool) watchAdopted(w *worker) error {
	proc, err := process.Adopt(w.pid)
	if err != nil {
		return err
	}
	w.proc = proc
	p.joinCgroup(w)
	p.watch(w)
	return nil
}

// watch starts w's reaper.
func (p *Pool) watch(w *worker) {
	go reap(w, p.exits, p.done)
}
