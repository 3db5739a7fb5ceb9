package process

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// Exit is how a process ended.
type Exit struct {
	// Status is its wait status.
	Status unix.WaitStatus
	// ExecErr says why it could not exec its program (it then exited
	// with status 127); nil when it did, or when it was adopted.
	ExecErr error
}

// Code is the exit status, or -1 when a signal ended the process.
func (e Exit) Code() int {
	if e.Status.Signaled() {
		return -1
	}
	return e.Status.ExitStatus()
}

// Signal is the signal that ended the process, or 0 when it exited.
func (e Exit) Signal() syscall.Signal {
	if e.Status.Signaled() {
		return e.Status.Signal()
	}
	return 0
}

// String says how the process ended: "could not start: …", "killed by
// SIGKILL" or "exited with status 1".
func (e Exit) String() string {
	switch {
	case e.ExecErr != nil:
		return "could not start: " + e.ExecErr.Error()
	case e.Status.Signaled():
		return "killed by " + unix.SignalName(e.Status.Signal())
	default:
		return fmt.Sprintf("exited with status %d", e.Status.ExitStatus())
	}
}

// Wait waits until the process has ended, reaps it and returns how it
// ended; the error says why that could not be learned. Call it once, from
// any goroutine: it parks the goroutine in the runtime's poller, not a
// thread, first until the process has exec'd its program or failed to,
// then until its pidfd says it has exited. Wait releases the pidfd.
func (p *Process) Wait() (Exit, error) {
	var e Exit
	if p.exec != nil {
		e.ExecErr = p.exec()
	}
	defer p.pidfd.Close()
	defer close(p.reaped)
	rc, err := p.pidfd.SyscallConn()
	if err != nil {
		return e, fmt.Errorf("process: wait for %d: %w", p.PID, err)
	}
	var werr error
	err = rc.Read(func(uintptr) bool {
		for {
			pid, err := unix.Wait4(p.PID, &e.Status, unix.WNOHANG, nil)
			switch {
			case errors.Is(err, unix.EINTR):
				continue
			case err != nil:
				werr = err
				return true
			case pid == 0:
				return false // still running: wait for the pidfd
			default:
				return true
			}
		}
	})
	if err == nil {
		err = werr
	}
	if err != nil {
		return e, fmt.Errorf("process: wait for %d: %w", p.PID, err)
	}
	return e, nil
}

// Signal sends sig to the process through its pidfd, so never to another
// process that took its pid. A process that has ended, reaped or not, is
// no error.
func (p *Process) Signal(sig syscall.Signal) error {
	// Not p.pidfd.Fd(): that would switch the pidfd to blocking mode
	// under Wait, which waits on it through the runtime's poller.
	rc, err := p.pidfd.SyscallConn()
	if err == nil {
		cerr := rc.Control(func(fd uintptr) {
			err = unix.PidfdSendSignal(int(fd), sig, nil, 0)
		})
		if cerr != nil {
			err = cerr
		}
	}
	select {
	case <-p.reaped:
		return nil // Wait may have closed the pidfd meanwhile
	default:
	}
	if err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("process: signal %d with %s: %w", p.PID, unix.SignalName(sig), err)
	}
	return nil
}
