package workers

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/activation"
)

// A warm spare is an exec-shim started ahead of need, with the sockets,
// standard output and error and the parent-death signal already in place,
// blocked on a pipe. When a worker must be replaced, the master writes the
// command, directory and environment into the pipe and the spare execs it
// at once: the replacement skips fork and the shim's Go runtime start. The
// pool keeps one spare while no worker is booting, so making the next one
// never competes with a generation coming up.

// maxOrder bounds what is written to a spare's pipe, so the write never
// blocks the arbiter (a pipe holds 64 KiB).
const maxOrder = 60 << 10

// spare is the pool's warm spare: a worker struct in phaseSpare and the
// write end of its order pipe.
type spare struct {
	w     *worker
	order *os.File
}

// ensureSpare starts a spare when the pool has none and nothing is
// booting.
func (p *Pool) ensureSpare() {
	if p.opts.NoSpare || p.spare != nil || p.stopping || p.current == nil {
		return
	}
	for _, w := range p.byPID {
		if w.phase == phaseStarting {
			return
		}
	}
	s, err := p.startSpare()
	if err != nil {
		p.log.Warn("warm spare", "err", err)
		p.opts.NoSpare = true // don't retry on every event
		return
	}
	p.spare = s
}

// startSpare forks and execs a spare shim.
func (p *Pool) startSpare() (*spare, error) {
	r, wr, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("spare: %w", err)
	}
	defer r.Close()
	files := p.childFiles(r)
	pidfd := -1
	attr := &syscall.ProcAttr{
		// One P and no GC: the fewest threads for execve to tear down.
		Env:   []string{"PATH=" + os.Getenv("PATH"), "GOMAXPROCS=1", "GOGC=off"},
		Files: files,
		Sys:   &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, PidFD: &pidfd},
	}
	argv := activation.SpareArgv(p.opts.Shim)
	pid, err := syscall.ForkExec(p.opts.Shim, argv, attr)
	if err != nil {
		wr.Close()
		return nil, fmt.Errorf("spare: start: %w", err)
	}
	w := &worker{id: -1, pid: pid, phase: phaseSpare, started: time.Now()}
	if err := p.watch(w, pidfd); err != nil {
		wr.Close()
		return nil, err
	}
	p.log.Debug("warm spare started", "pid", pid)
	return &spare{w: w, order: wr}, nil
}

// takeSpare turns the spare into the worker for slot id of g, or returns
// nil when there is no usable spare.
func (p *Pool) takeSpare(g *generation, id int, env []string) *worker {
	s := p.spare
	if s == nil {
		return nil
	}
	p.spare = nil
	order := activation.SpareOrder(g.cfg.Worker.Dir, g.command, g.cfg.Worker.Args, env)
	if len(order) > maxOrder {
		p.dropSpare(s)
		return nil
	}
	if _, err := s.order.Write(order); err != nil {
		p.log.Warn("warm spare: order", "pid", s.w.pid, "err", err)
		p.dropSpare(s)
		return nil
	}
	s.order.Close()
	w := s.w
	w.id, w.gen, w.phase, w.started, w.inSlot = id, g, phaseStarting, time.Now(), true
	p.stats.SparesUsed++
	return w
}

// dropSpare tells an unused spare to exit (EOF without an order); the
// pool waits for it to be reaped before Run returns.
func (p *Pool) dropSpare(s *spare) {
	s.order.Close()
	p.sparesExiting++
}

// watch opens w's pidfd (when the kernel did not hand one over) and starts
// its reaper.
func (p *Pool) watch(w *worker, pidfd int) error {
	var err error
	if pidfd < 0 {
		if pidfd, err = unix.PidfdOpen(w.pid, 0); err != nil {
			_ = unix.Kill(w.pid, unix.SIGKILL)
			var ws unix.WaitStatus
			_, _ = unix.Wait4(w.pid, &ws, 0, nil)
			return fmt.Errorf("pidfd_open %d: %w", w.pid, err)
		}
	}
	if err := unix.SetNonblock(pidfd, true); err != nil {
		return fmt.Errorf("pidfd %d: %w", w.pid, err)
	}
	w.pidfd = os.NewFile(uintptr(pidfd), "pidfd:"+strconv.Itoa(w.pid))
	go reap(w, p.exits, p.done)
	return nil
}
