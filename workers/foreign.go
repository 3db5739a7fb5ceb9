package workers

import (
	"encoding/json"

	"github.com/forkd/forkd/internal/notify"
	"github.com/forkd/forkd/internal/process"
)

// Started is the outcome of StartProcess.
type Started struct {
	// Proc is the process (nil when Err is set).
	Proc *process.Process
	// Err says why it could not start.
	Err error
	// Tag is StartProcess's tag, handed back.
	Tag any
}

// StartProcess starts a process for another part of the master (the
// singletons and schedule runs of package jobs/supervisor) on the
// arbiter's goroutine: the main thread, whose exit sends the process its
// parent-death signal and which outlives an in-place upgrade, so that the
// successor can adopt the process. It returns at once; done receives the
// outcome and must have room for it (the arbiter does not wait). a's Shim
// and ExecShim are the pool's.
//
// With notes set, the process gets NOTIFY_SOCKET (the workers' socket) and
// what it sends there goes to notes, until Unroute; a full notes drops the
// message.
func (p *Pool) StartProcess(a *process.Attr, tag any, notes chan<- notify.Note, done chan<- Started) {
	p.post(func(p *Pool) {
		a.Shim, a.ExecShim = p.opts.Shim, p.opts.ExecShim
		if notes != nil {
			a.Env = append(a.Env, "NOTIFY_SOCKET="+p.notifyAdr)
		}
		proc, err := process.Start(a)
		if err == nil && notes != nil {
			p.routes[proc.PID] = notes
		}
		done <- Started{Proc: proc, Err: err, Tag: tag}
	}, func() { done <- Started{Err: ErrClosed, Tag: tag} })
}

// Route sends what pid sends on NOTIFY_SOCKET to notes, as StartProcess
// does for the processes it starts (for one adopted after an upgrade).
func (p *Pool) Route(pid int, notes chan<- notify.Note) {
	p.post(func(p *Pool) { p.routes[pid] = notes }, nil)
}

// Unroute stops sending pid's messages anywhere: it has exited.
func (p *Pool) Unroute(pid int) {
	p.post(func(p *Pool) { delete(p.routes, pid) }, nil)
}

// post hands fn to the arbiter without waiting for it; closed runs instead
// when the pool has stopped (may be nil).
func (p *Pool) post(fn func(p *Pool), closed func()) {
	req := fn
	select {
	case p.requests <- req:
		return
	case <-p.done:
		if closed != nil {
			closed()
		}
		return
	default:
	}
	go func() {
		select {
		case p.requests <- req:
		case <-p.done:
			if closed != nil {
				closed()
			}
		}
	}()
}

// routeNote hands m to the process's route, reporting whether it had one.
func (p *Pool) routeNote(m notify.Note) bool {
	c, ok := p.routes[m.PID]
	if !ok {
		return false
	}
	select {
	case c <- m:
	default:
		p.log.Warn("dropped a notify message: its receiver is behind", "pid", m.PID)
	}
	return true
}

// freeze asks Options.Freeze for the state an upgrade hands over besides
// the pool's (nil when there is no Freeze).
func (p *Pool) freeze() (json.RawMessage, error) {
	if p.opts.Freeze == nil {
		return nil, nil
	}
	return p.opts.Freeze()
}

// thaw tells Options.Thaw that an upgrade that froze did not happen.
func (p *Pool) thaw() {
	if p.opts.Thaw != nil {
		p.opts.Thaw()
	}
}
