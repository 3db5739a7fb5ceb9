package workers

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/forkd/forkd/activation"
	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/hooks"
)

// childFiles is a child's fds 0, 1, 2, 3…: stdin, the workers' stdout and
// stderr, then the listening sockets.
func (p *Pool) childFiles(stdin *os.File) []uintptr {
	files := make([]uintptr, 0, 3+len(p.opts.Sockets))
	files = append(files, stdin.Fd(), p.opts.Stdout.Fd(), p.opts.Stderr.Fd())
	for _, s := range p.opts.Sockets {
		files = append(files, s.File.Fd())
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
// that has no respawn pending.
//
// A reload's generation with max_surge set boots at most that many at
// once (see surge).
func (p *Pool) fillSlots(g *generation) {
	room := -1 // no limit
	if g == p.pending && g.cfg.Server.MaxSurge > 0 {
		room = g.cfg.Server.MaxSurge - g.booting()
	}
	for id := 0; id < g.target && room != 0; id++ {
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

// spawn starts the worker for slot id of generation g. A failure to start
// counts as a failed worker: the slot is retried with backoff.
func (p *Pool) spawn(g *generation, id int) {
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

// start forks and execs one worker through the exec-shim and starts
// watching its pidfd.
func (p *Pool) start(g *generation, id int) (*worker, error) {
	files := p.childFiles(p.devnull)
	env := make([]string, len(g.env), len(g.env)+2)
	copy(env, g.env)
	env = append(env,
		"FORKD_WORKER_ID="+strconv.Itoa(id),
		"FORKD_GENERATION="+strconv.FormatUint(g.id, 10),
	)
	if _, err := os.Stat(g.command); err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("command %q: %w", g.cfg.Worker.Command, exec.ErrNotFound)
		}
		return nil, fmt.Errorf("command %q: %w", g.cfg.Worker.Command, err)
	}
	if w := p.takeSpare(g, id, env); w != nil {
		return w, nil
	}
	pidfd := -1
	attr := &syscall.ProcAttr{
		Dir:   g.cfg.Worker.Dir,
		Env:   env,
		Files: files,
		Sys: &syscall.SysProcAttr{
			Pdeathsig: syscall.SIGKILL,
			PidFD:     &pidfd,
		},
	}
	argv := activation.ShimArgv(p.opts.Shim, g.command, g.cfg.Worker.Args)
	pid, err := syscall.ForkExec(p.opts.Shim, argv, attr)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", g.cfg.Worker.Command, err)
	}
	w := &worker{id: id, gen: g, pid: pid, started: time.Now(), inSlot: true}
	if err := p.watch(w, pidfd); err != nil {
		return nil, err
	}
	return w, nil
}
