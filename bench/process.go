package bench

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// ErrExited is returned by Process.Err while the process runs and wrapped
// in errors about a master that exited before it should have.
var ErrExited = errors.New("bench: process exited")

// Process is a master (forkd or gunicorn) or a lone worker the benchmark
// started: its exec time, its exit, the tail of its output, and a Stop that
// leaves nothing behind.
type Process struct {
	// Started is taken right before the fork and exec.
	Started time.Time

	cmd    *exec.Cmd
	output *tailBuffer
	exited chan struct{} // closed once Wait returned
	err    error         // Wait's result, once exited is closed

	stopOnce sync.Once
	stopErr  error
}

// Start starts argv with env (the whole environment), dir as working
// directory ("" = the current one) and extra as fds 3…, stdout and stderr
// both kept (the last 64 KiB) for error messages.
func Start(argv, env []string, dir string, extra ...*os.File) (*Process, error) {
	p := &Process{output: &tailBuffer{max: 64 << 10}, exited: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Env = env
	p.cmd.Dir = dir
	p.cmd.ExtraFiles = extra
	p.cmd.Stdout = p.output
	p.cmd.Stderr = p.output
	// Descendants that outlive it keep the output pipe open: do not let
	// that hold up Wait for long.
	p.cmd.WaitDelay = time.Second
	p.Started = time.Now()
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// PID returns the process's pid.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited is closed once the process has exited and been waited for.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Output returns the last 64 KiB the process wrote to stdout and stderr.
func (p *Process) Output() string { return p.output.String() }

// Stop stops the process and everything it started: SIGTERM, then, if it
// has not exited within grace, SIGKILL; then SIGKILL to every descendant
// seen before the TERM that is still alive (workers forkd or gunicorn did
// not take down). It blocks until the process has been waited for, is
// idempotent, and returns an error when the process had to be killed or
// leftovers had to be.
func (p *Process) Stop(grace time.Duration) error {
	p.stopOnce.Do(func() { p.stopErr = p.stop(grace) })
	return p.stopErr
}

func (p *Process) stop(grace time.Duration) error {
	var errs []error
	kids := Descendants(p.PID())
	select {
	case <-p.exited:
	default:
		p.cmd.Process.Signal(syscall.SIGTERM)
		t := time.NewTimer(grace)
		select {
		case <-p.exited:
			t.Stop()
		case <-t.C:
			p.cmd.Process.Kill()
			<-p.exited
			errs = append(errs, fmt.Errorf("stop %s (pid %d): still running %v after SIGTERM, killed",
				p.cmd.Path, p.PID(), grace))
		}
	}
	var left []int
	for _, k := range kids {
		if k.Alive() {
			syscall.Kill(k.PID, syscall.SIGKILL)
			left = append(left, k.PID)
		}
	}
	if len(left) > 0 {
		errs = append(errs, fmt.Errorf("stop %s (pid %d): %d descendants outlived it, killed: %v",
			p.cmd.Path, p.PID(), len(left), head(left, 10)))
	}
	return errors.Join(errs...)
}

// Err returns nil while the process runs, and an error wrapping ErrExited
// with its exit status and last output once it has exited.
func (p *Process) Err() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s (pid %d): %w: %v\n%s", p.cmd.Path, p.PID(), ErrExited, p.err, p.Output())
	default:
		return nil
	}
}

func head(s []int, n int) []int {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// tailBuffer is an io.Writer that keeps the last max bytes written.
type tailBuffer struct {
	max int
	mu  sync.Mutex
	buf []byte
}

// Write appends b, dropping what lies more than max bytes back; it never
// fails.
func (t *tailBuffer) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(b), nil
}

// String returns the bytes kept.
func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
