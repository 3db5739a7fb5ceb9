package process

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/activation"
	"github.com/forkd/forkd/internal/forkexec"
)

// ErrUnsupported is wrapped by Start's error when the kernel refuses a
// direct start and Attr.Shim names no exec-shim to fall back to.
var ErrUnsupported = forkexec.ErrUnsupported

// Attr is what Start starts.
type Attr struct {
	// Path is the program, also its argv[0]: an absolute path, or one
	// relative to Dir. It must hold a slash: Start looks nothing up in
	// PATH.
	Path string
	// Args are the program's arguments, after argv[0].
	Args []string
	// Env is the program's environment, less the entries PIDEnv names.
	Env []string
	// PIDEnv names the variables set to the program's own pid, such as
	// LISTEN_PID and WATCHDOG_PID.
	PIDEnv []string
	// Dir is the program's working directory; "" keeps the caller's.
	Dir string
	// Files are the program's fds 0, 1, 2, …: Files[i] becomes fd i. At
	// least stdin, stdout and stderr; none nil.
	Files []*os.File
	// Shim is the executable that implements the exec-shim (forkd itself,
	// whose main calls activation.Shim): an absolute path. "" for none:
	// a process the kernel refuses to start directly does not start.
	Shim string
	// ExecShim starts the process through Shim even where a direct start
	// works.
	ExecShim bool
	// Cgroup, when not nil, is the directory of the cgroup v2 the process
	// starts in: directly with clone3's CLONE_INTO_CGROUP (Linux ≥ 5.7),
	// so that it never runs in the caller's; through the exec-shim, which
	// writes itself into the cgroup's cgroup.procs before it execs, where
	// the kernel (or a seccomp filter) refuses clone3.
	Cgroup *os.File
}

// Process is a child process that Start started or Adopt adopted.
type Process struct {
	// PID is the process's pid.
	PID int
	// Fallback is why the kernel refused a direct start, when Start
	// started the process through the exec-shim instead; nil otherwise.
	Fallback error
	pidfd    *os.File // non-blocking, in the runtime's poller
	// exec reports whether the process exec'd its program; nil when there
	// is nothing to learn (Adopt).
	exec func() error
	// reaped is set by Wait once the process is reaped, before it closes
	// pidfd.
	reaped chan struct{}
}

// Start starts a process running a.Path, as the package documentation
// promises, and returns it. The caller must Wait for it.
//
// Start fails when a is not valid, when the fork fails, or when the
// kernel refuses a direct start and a.Shim is "" (an error wrapping
// ErrUnsupported). A program that cannot be exec'd is reported by Start or
// by Wait (Exit.ExecErr).
func Start(a *Attr) (*Process, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	defer runtime.KeepAlive(a.Files)
	defer runtime.KeepAlive(a.Cgroup)
	fds := make([]int, len(a.Files))
	for i, f := range a.Files {
		fds[i] = int(f.Fd())
	}
	var fallback error
	if !a.ExecShim {
		p, err := startDirect(a, fds)
		if !errors.Is(err, forkexec.ErrUnsupported) || a.Shim == "" {
			if err != nil {
				return nil, fmt.Errorf("process: start %s: %w", a.Path, err)
			}
			return p, nil
		}
		fallback = err
	}
	p, err := startShim(a, fds)
	if err != nil {
		return nil, fmt.Errorf("process: start %s through the exec-shim %s: %w", a.Path, a.Shim, err)
	}
	p.Fallback = fallback
	return p, nil
}

// check says what makes a unfit for Start (nil: nothing).
func (a *Attr) check() error {
	switch {
	case !strings.Contains(a.Path, "/"):
		return fmt.Errorf("process: program %q: not a path (no PATH lookup; a file in the working directory is ./%[1]s)", a.Path)
	case len(a.Files) < 3:
		return fmt.Errorf("process: start %s: %d files, want at least stdin, stdout and stderr", a.Path, len(a.Files))
	case a.Shim != "" && !filepath.IsAbs(a.Shim):
		return fmt.Errorf("process: exec-shim %q: not an absolute path", a.Shim)
	case a.ExecShim && a.Shim == "":
		return fmt.Errorf("process: start %s: the exec-shim is asked for and there is none", a.Path)
	}
	for i, f := range a.Files {
		if f == nil {
			return fmt.Errorf("process: start %s: file %d is nil", a.Path, i)
		}
	}
	return nil
}

// startDirect starts the process with forkexec.
func startDirect(a *Attr, fds []int) (*Process, error) {
	fp, err := forkexec.Start(&forkexec.Attr{
		Path:         a.Path,
		Args:         append([]string{a.Path}, a.Args...),
		Env:          a.Env,
		PIDEnv:       a.PIDEnv,
		Dir:          a.Dir,
		Files:        fds,
		Pdeathsig:    syscall.SIGKILL,
		DefaultSlice: true,
		UseCgroup:    a.Cgroup != nil,
		CgroupFD:     cgroupFD(a.Cgroup),
	})
	if err != nil {
		return nil, err
	}
	pidfd, err := pollable(fp.PID, fp.PIDFD)
	if err != nil {
		_ = fp.Exec()
		return nil, err
	}
	return &Process{PID: fp.PID, pidfd: pidfd, exec: fp.Exec, reaped: make(chan struct{})}, nil
}

// startShim starts the process through the exec-shim, which reports a
// failure to exec the program on a pipe after the program's files.
func startShim(a *Attr, fds []int) (*Process, error) {
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("status pipe: %w", err)
	}
	files := make([]uintptr, 0, len(fds)+1)
	for _, fd := range fds {
		files = append(files, uintptr(fd))
	}
	files = append(files, statusW.Fd())
	setup := activation.ShimSetup{Parent: os.Getpid(), PIDEnv: a.PIDEnv, Files: len(fds), Status: len(fds)}
	if a.Cgroup != nil {
		procs, err := unix.Openat(int(a.Cgroup.Fd()), "cgroup.procs", unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			statusR.Close()
			statusW.Close()
			return nil, fmt.Errorf("open the cgroup's cgroup.procs: %w", err)
		}
		defer unix.Close(procs)
		setup.Cgroup = len(files)
		files = append(files, uintptr(procs))
	}
	pidfd := -1
	attr := &syscall.ProcAttr{
		Dir:   a.Dir,
		Env:   slices.Concat(a.Env, setup.Env()),
		Files: files,
		Sys:   &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, PidFD: &pidfd},
	}
	pid, err := syscall.ForkExec(a.Shim, activation.ShimArgv(a.Shim, a.Path, a.Args), attr)
	statusW.Close()
	if err != nil {
		statusR.Close()
		return nil, err
	}
	exec := func() error {
		defer statusR.Close()
		b, err := io.ReadAll(statusR)
		if err != nil {
			return fmt.Errorf("process: read the exec-shim's status of pid %d: %w", pid, err)
		}
		return activation.ShimStatus(b)
	}
	f, err := pollable(pid, pidfd)
	if err != nil {
		_ = exec()
		return nil, err
	}
	return &Process{PID: pid, pidfd: f, exec: exec, reaped: make(chan struct{})}, nil
}

// cgroupFD is f's fd, -1 for nil.
func cgroupFD(f *os.File) int {
	if f == nil {
		return -1
	}
	return int(f.Fd())
}

// Adopt returns the process pid, a child of this process that it did not
// start (one an in-place upgrade handed over), for Wait and Signal; its
// Exit carries no ExecErr. A child Adopt cannot watch is killed and
// reaped, so that it does not run unsupervised.
func Adopt(pid int) (*Process, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("process: adopt pid %d: not a process", pid)
	}
	f, err := pollable(pid, -1)
	if err != nil {
		return nil, fmt.Errorf("process: adopt: %w", err)
	}
	return &Process{PID: pid, pidfd: f, reaped: make(chan struct{})}, nil
}

// pollable returns pid's pidfd (fd, or one it opens when fd is negative)
// as a non-blocking file in the runtime's poller. When that fails it
// kills and reaps pid and closes fd.
func pollable(pid, fd int) (*os.File, error) {
	var err error
	if fd < 0 {
		fd, err = unix.PidfdOpen(pid, 0)
		if err != nil {
			err = fmt.Errorf("pidfd_open %d: %w", pid, err)
		}
	}
	if err == nil {
		if err = unix.SetNonblock(fd, true); err == nil {
			return os.NewFile(uintptr(fd), "pidfd:"+strconv.Itoa(pid)), nil
		}
		unix.Close(fd)
		err = fmt.Errorf("pidfd of %d: %w", pid, err)
	}
	_ = unix.Kill(pid, unix.SIGKILL)
	var ws unix.WaitStatus
	_, _ = unix.Wait4(pid, &ws, 0, nil)
	return nil, err
}
