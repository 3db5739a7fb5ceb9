//go:build linux

package forkexec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrUnsupported is wrapped by Start's error when the kernel (or a seccomp
// filter) refuses clone with CLONE_PIDFD.
var ErrUnsupported = errors.New("forkexec: clone(CLONE_PIDFD) refused")

// sysClone3 is clone3(2)'s system call number, the same on every Linux
// architecture.
const sysClone3 = 435

// Attr is what Start starts.
type Attr struct {
	// Path is the program to execute: an absolute path, or one relative to
	// Dir (execve(2) does no PATH lookup).
	Path string
	// Args is the argv, Args[0] included.
	Args []string
	// Env is the environment. Entries named in PIDEnv are dropped from it.
	Env []string
	// PIDEnv names the variables set to the child's own pid, such as
	// LISTEN_PID and WATCHDOG_PID.
	PIDEnv []string
	// Dir is the child's working directory; "" keeps the caller's.
	Dir string
	// Files are the child's fds 0, 1, 2, …: Files[i] is the caller's fd that
	// becomes fd i, or -1 to leave fd i closed. Every other fd is closed
	// at exec, close-on-exec in the caller or not (Linux ≥ 5.11).
	Files []int
	// Pdeathsig is sent to the child when the thread that called Start
	// exits (PR_SET_PDEATHSIG); 0 sends nothing. If the caller's process
	// died before the child could arm it, the child gets Pdeathsig at once.
	Pdeathsig syscall.Signal
	// DefaultSlice gives the child the kernel's default time slice before
	// it execs (sched_setattr(2) with sched_runtime 0, policy and nice
	// kept), when its policy is SCHED_OTHER or SCHED_BATCH: a parent that
	// asked for a short slice for itself (Linux ≥ 6.12) keeps it to itself.
	// A kernel that refuses leaves the child the parent's slice.
	DefaultSlice bool
	// UseCgroup starts the child in the cgroup v2 whose directory CgroupFD
	// is open on (clone3 with CLONE_INTO_CGROUP, Linux ≥ 5.7): it runs no
	// instruction in the caller's cgroup. A kernel or seccomp filter that
	// refuses clone3 makes Start fail with an error wrapping ErrUnsupported.
	UseCgroup bool
	CgroupFD  int

	// copyVM makes Start clone a child with a copy of the caller's memory,
	// as it does where there is no rawVfork (sharedVM false), so that the
	// tests run that path on every architecture.
	copyVM bool
}

// pidRoom is the room for a pid in a PIDEnv value: 20 digits and a NUL.
const pidRoom = 21

// child is everything the child needs, prepared by the parent: the child
// may not allocate, so each of these is a finished C-style value.
type child struct {
	path  *byte
	argv  []*byte // NULL-terminated
	envp  []*byte // NULL-terminated
	pids  [][]byte
	dir   *byte // nil: stay
	files []int
	errw  int // write end of the exec-error pipe
	// nextfd is above every fd the child uses: where pass 1 of the fd
	// shuffle parks the ones pass 2 would overwrite.
	nextfd    int
	ppid      int
	pdeathsig int
	// sched is where the child reads its scheduling to reset its time
	// slice (nil: it keeps the caller's).
	sched  *unix.SchedAttr
	copyVM bool  // clone with a copy of the memory even where sharedVM
	pidfd  int32 // set by clone(CLONE_PIDFD)
	// args is clone3's argument when the child goes into a cgroup (nil:
	// plain clone).
	args *cloneArgs
}

// cloneArgs is struct clone_args of clone3(2), up to its cgroup field.
type cloneArgs struct {
	flags      uint64
	pidfd      uint64
	childTID   uint64
	parentTID  uint64
	exitSignal uint64
	stack      uint64
	stackSize  uint64
	tls        uint64
	setTID     uint64
	setTIDSize uint64
	cgroup     uint64
}

// Process is a child that Start started.
type Process struct {
	// PID is the child's pid.
	PID int
	// PIDFD is a close-on-exec pidfd for the child; the caller owns it.
	PIDFD int
	// status is the read end of the pipe that reports a failed exec; the
	// child's end closes when it execs.
	status *os.File
	attr   *Attr
	// pids are the PIDEnv values as this process sees them after the
	// fork: written by a child that shared its memory, untouched by one
	// that had a copy (the tests tell the two clones apart by them).
	pids [][]byte
}

// Start forks a child that execs a.Path. It returns once the child has
// exec'd or given up (amd64, where the child borrows the caller's memory),
// or as soon as the child exists (elsewhere); either way Exec tells how the
// exec went.
// The caller reaps the child (its pidfd becomes readable when it exits)
// and closes PIDFD.
//
// Start fails when the fork does, with an error wrapping ErrUnsupported for
// a clone the system refuses.
//
// The caller should hold its goroutine on one OS thread when Pdeathsig is
// set: the signal follows that thread, not the process.
func Start(a *Attr) (*Process, error) {
	c, err := prepare(a)
	if err != nil {
		return nil, err
	}
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		return nil, fmt.Errorf("forkexec: pipe: %w", err)
	}
	c.errw = p[1]
	c.nextfd = max(len(c.files), p[1]+1)
	for _, fd := range c.files {
		c.nextfd = max(c.nextfd, fd+1)
	}
	c.ppid = syscall.Getpid()

	// ForkLock keeps fds that other goroutines open without O_CLOEXEC
	// (there should be none on Linux) from leaking into the child.
	syscall.ForkLock.Lock()
	r, errno := c.fork()
	syscall.ForkLock.Unlock()
	syscall.Close(p[1])
	if errno != 0 {
		syscall.Close(p[0])
		if errno == syscall.ENOSYS || errno == syscall.EINVAL || errno == syscall.EPERM || errno == syscall.E2BIG {
			if c.args != nil {
				return nil, fmt.Errorf("%w: clone3(CLONE_INTO_CGROUP): %w", ErrUnsupported, errno)
			}
			return nil, fmt.Errorf("%w: %w", ErrUnsupported, errno)
		}
		return nil, fmt.Errorf("forkexec: fork: %w", errno)
	}
	runtime.KeepAlive(c)
	return &Process{PID: int(r), PIDFD: int(c.pidfd), status: os.NewFile(uintptr(p[0]), "exec-status"), attr: a, pids: c.pids}, nil
}

// Exec waits until the child has exec'd the program (nil) or failed to
// (an error naming the step that failed: *os.PathError for chdir and exec).
// A child that failed exits with status 127. Call Exec once; waiting parks
// the goroutine in the runtime's poller, not a thread.
func (p *Process) Exec() error {
	defer p.status.Close()
	var buf [8]byte
	n, err := io.ReadFull(p.status, buf[:])
	switch {
	case n == 0 && err == io.EOF:
		return nil
	case err != nil:
		return fmt.Errorf("forkexec: read the exec status of pid %d: %d bytes, %w", p.PID, n, err)
	}
	st := step(binary.NativeEndian.Uint32(buf[:4]))
	errno := syscall.Errno(binary.NativeEndian.Uint32(buf[4:]))
	return st.error(p.attr, errno)
}

// step is the child's step that failed, as it reports it.
type step uint32

const (
	stepPdeathsig step = iota + 1
	stepParentGone
	stepFiles
	stepDir
	stepExec
)

// error describes the child's failure at s.
func (s step) error(a *Attr, errno syscall.Errno) error {
	switch s {
	case stepPdeathsig:
		return fmt.Errorf("forkexec: prctl(PR_SET_PDEATHSIG): %w", errno)
	case stepParentGone:
		return fmt.Errorf("forkexec: parent exited before the child started: %w", errno)
	case stepFiles:
		return fmt.Errorf("forkexec: put fds 0…%d in place: %w", len(a.Files)-1, errno)
	case stepDir:
		return &os.PathError{Op: "chdir", Path: a.Dir, Err: errno}
	default:
		return &os.PathError{Op: "exec", Path: a.Path, Err: errno}
	}
}

// prepare turns a into the child's C-style values.
func prepare(a *Attr) (*child, error) {
	c := &child{files: append([]int(nil), a.Files...), pdeathsig: int(a.Pdeathsig), copyVM: a.copyVM}
	if a.DefaultSlice {
		c.sched = &unix.SchedAttr{}
	}
	if a.UseCgroup {
		if a.CgroupFD < 0 {
			return nil, fmt.Errorf("forkexec: cgroup fd %d: not a file descriptor", a.CgroupFD)
		}
		c.args = &cloneArgs{
			flags:      unix.CLONE_PIDFD | unix.CLONE_INTO_CGROUP,
			pidfd:      uint64(uintptr(unsafe.Pointer(&c.pidfd))),
			exitSignal: uint64(syscall.SIGCHLD),
			cgroup:     uint64(a.CgroupFD),
		}
	}
	var err error
	if c.path, err = syscall.BytePtrFromString(a.Path); err != nil {
		return nil, fmt.Errorf("forkexec: path %q: %w", a.Path, err)
	}
	if c.argv, err = syscall.SlicePtrFromStrings(a.Args); err != nil {
		return nil, fmt.Errorf("forkexec: args: %w", err)
	}
	c.argv = append(c.argv, nil)
	for _, kv := range a.Env {
		name, _, _ := strings.Cut(kv, "=")
		if contains(a.PIDEnv, name) {
			continue
		}
		b, err := syscall.BytePtrFromString(kv)
		if err != nil {
			return nil, fmt.Errorf("forkexec: env: %w", err)
		}
		c.envp = append(c.envp, b)
	}
	for _, name := range a.PIDEnv {
		if name == "" || strings.ContainsAny(name, "=\x00") {
			return nil, fmt.Errorf("forkexec: PIDEnv %q: not a variable name", name)
		}
		b := make([]byte, len(name)+1+pidRoom)
		copy(b, name+"=")
		c.envp = append(c.envp, &b[0])
		c.pids = append(c.pids, b[len(name)+1:])
	}
	c.envp = append(c.envp, nil)
	if a.Dir != "" {
		if c.dir, err = syscall.BytePtrFromString(a.Dir); err != nil {
			return nil, fmt.Errorf("forkexec: dir %q: %w", a.Dir, err)
		}
	}
	return c, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// cloneFlags: a pidfd for the child, and SIGCHLD when it exits. vfork adds
// CLONE_VM|CLONE_VFORK.
const cloneFlags = unix.CLONE_PIDFD | uintptr(syscall.SIGCHLD)

// fork blocks every signal on this thread, clones, and runs the child's
// part in the child. In the parent it restores the signal mask and returns
// the child's pid.
//
// Blocked signals keep a signal from running a Go handler in the child
// before it has reset them; nosplit keeps the goroutine on this thread
// between the mask and the clone (no stack check, no preemption point).
//
//go:nosplit
//go:norace
func (c *child) fork() (uintptr, syscall.Errno) {
	all := ^uint64(0)
	var old uint64
	syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK,
		uintptr(unsafe.Pointer(&all)), uintptr(unsafe.Pointer(&old)), 8, 0, 0)
	var r uintptr
	var errno syscall.Errno
	if sharedVM && !c.copyVM {
		r, errno = c.vfork()
	} else {
		r, errno = c.copyFork()
	}
	syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK,
		uintptr(unsafe.Pointer(&old)), 0, 8, 0, 0)
	return r, errno
}

// vfork clones a child that shares this memory and runs on this stack
// until it execs; this thread waits meanwhile. The child writes only below
// this frame's stack pointer and into the child struct, which the parent
// does not read again but for pidfd. In the parent it returns at once,
// using nothing but rawVfork's results, which the parent writes after the
// child is gone (syscall.forkAndExecInChild1 works the same way).
//
//go:nosplit
//go:norace
func (c *child) vfork() (uintptr, syscall.Errno) {
	var r, errno uintptr
	if c.args != nil {
		c.args.flags |= syscall.CLONE_VM | syscall.CLONE_VFORK
		r, errno = rawVfork(sysClone3, uintptr(unsafe.Pointer(c.args)), unsafe.Sizeof(*c.args), 0)
	} else {
		r, errno = rawVfork(syscall.SYS_CLONE, cloneFlags|syscall.CLONE_VM|syscall.CLONE_VFORK, 0, uintptr(unsafe.Pointer(&c.pidfd)))
	}
	if errno == 0 && r == 0 {
		c.run() // the child: never returns
	}
	return r, syscall.Errno(errno)
}

// copyFork clones a child with a copy of this memory; the parent goes on
// at once.
//
//go:nosplit
//go:norace
func (c *child) copyFork() (uintptr, syscall.Errno) {
	var r uintptr
	var errno syscall.Errno
	if c.args != nil {
		r, _, errno = syscall.RawSyscall(sysClone3, uintptr(unsafe.Pointer(c.args)), unsafe.Sizeof(*c.args), 0)
	} else {
		r, _, errno = syscall.RawSyscall6(syscall.SYS_CLONE, cloneFlags, 0,
			uintptr(unsafe.Pointer(&c.pidfd)), 0, 0, 0)
	}
	if errno == 0 && r == 0 {
		c.run() // the child: never returns
	}
	return r, errno
}

// run is the child between clone and execve: raw system calls on values
// the parent prepared, nothing else.
//
//go:nosplit
//go:norace
func (c *child) run() {
	// Signal handlers: the Go runtime's would run in this copy of the
	// parent. execve resets caught signals but keeps ignored ones ignored;
	// a worker starts with every signal at SIG_DFL, as under systemd.
	var dfl [4]uint64 // struct sigaction{SIG_DFL}
	for sig := uintptr(1); sig <= 64; sig++ {
		if sig == uintptr(syscall.SIGKILL) || sig == uintptr(syscall.SIGSTOP) {
			continue
		}
		syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, sig, uintptr(unsafe.Pointer(&dfl)), 0, 8, 0, 0)
	}

	if c.pdeathsig != 0 {
		_, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(c.pdeathsig), 0)
		if e != 0 {
			c.fail(stepPdeathsig, e)
		}
		if r, _, _ := syscall.RawSyscall(syscall.SYS_GETPPID, 0, 0, 0); int(r) != c.ppid {
			// The parent died before the signal was armed.
			self, _, _ := syscall.RawSyscall(syscall.SYS_GETPID, 0, 0, 0)
			syscall.RawSyscall(syscall.SYS_KILL, self, uintptr(c.pdeathsig), 0)
			c.fail(stepParentGone, syscall.ESRCH)
		}
	}

	if c.sched != nil {
		_, _, e := syscall.RawSyscall6(unix.SYS_SCHED_GETATTR, 0, uintptr(unsafe.Pointer(c.sched)), unix.SizeofSchedAttr, 0, 0, 0)
		if e == 0 && (c.sched.Policy == unix.SCHED_NORMAL || c.sched.Policy == unix.SCHED_BATCH) {
			c.sched.Size = unix.SizeofSchedAttr
			c.sched.Runtime = 0
			c.sched.Flags &= unix.SCHED_FLAG_RESET_ON_FORK
			syscall.RawSyscall(unix.SYS_SCHED_SETATTR, 0, uintptr(unsafe.Pointer(c.sched)), 0)
		}
	}

	// Pass 1: park out of the way every fd that pass 2 would overwrite
	// before it is used, the error pipe included.
	next := c.nextfd
	if c.errw < len(c.files) {
		if _, _, e := syscall.RawSyscall(syscall.SYS_DUP3, uintptr(c.errw), uintptr(next), syscall.O_CLOEXEC); e != 0 {
			c.fail(stepFiles, e)
		}
		c.errw = next
		next++
	}
	for i := 0; i < len(c.files); i++ {
		if fd := c.files[i]; fd >= 0 && fd < i {
			if _, _, e := syscall.RawSyscall(syscall.SYS_DUP3, uintptr(fd), uintptr(next), syscall.O_CLOEXEC); e != 0 {
				c.fail(stepFiles, e)
			}
			c.files[i] = next
			next++
		}
	}
	// Pass 2: put each in place, without close-on-exec.
	for i := 0; i < len(c.files); i++ {
		fd := c.files[i]
		var e syscall.Errno
		switch {
		case fd < 0:
			syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(i), 0, 0)
		case fd == i:
			_, _, e = syscall.RawSyscall(syscall.SYS_FCNTL, uintptr(i), syscall.F_SETFD, 0)
		default:
			_, _, e = syscall.RawSyscall(syscall.SYS_DUP3, uintptr(fd), uintptr(i), 0)
		}
		if e != 0 {
			c.fail(stepFiles, e)
		}
	}

	// Every other fd closes at exec, also those the parent holds without
	// close-on-exec (inherited from whoever started it): the child gets
	// Files and nothing else, as from systemd. Kernels before 5.11 lack
	// CLOSE_RANGE_CLOEXEC; there such fds still cross.
	syscall.RawSyscall(unix.SYS_CLOSE_RANGE, uintptr(len(c.files)), uintptr(^uint32(0)), unix.CLOSE_RANGE_CLOEXEC)

	if c.dir != nil {
		if _, _, e := syscall.RawSyscall(syscall.SYS_CHDIR, uintptr(unsafe.Pointer(c.dir)), 0, 0); e != 0 {
			c.fail(stepDir, e)
		}
	}

	self, _, _ := syscall.RawSyscall(syscall.SYS_GETPID, 0, 0, 0)
	for k := 0; k < len(c.pids); k++ {
		putPID(c.pids[k], self)
	}

	var none uint64
	syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&none)), 0, 8, 0, 0)
	_, _, e := syscall.RawSyscall(syscall.SYS_EXECVE, uintptr(unsafe.Pointer(c.path)),
		uintptr(unsafe.Pointer(&c.argv[0])), uintptr(unsafe.Pointer(&c.envp[0])))
	c.fail(stepExec, e)
}

// putPID writes v in decimal and a NUL into b (pidRoom bytes).
//
//go:nosplit
//go:norace
func putPID(b []byte, v uintptr) {
	var digits [pidRoom - 1]byte
	i := len(digits)
	for {
		i--
		digits[i] = byte('0' + v%10)
		v /= 10
		if v == 0 || i == 0 {
			break
		}
	}
	n := 0
	for ; i < len(digits); i++ {
		b[n] = digits[i]
		n++
	}
	b[n] = 0
}

// fail reports the failed step and errno through the pipe and exits with
// status 127.
//
//go:nosplit
//go:norace
func (c *child) fail(s step, errno syscall.Errno) {
	v := [2]uint32{uint32(s), uint32(errno)}
	syscall.RawSyscall(syscall.SYS_WRITE, uintptr(c.errw), uintptr(unsafe.Pointer(&v)), 8)
	for {
		syscall.RawSyscall(syscall.SYS_EXIT_GROUP, 127, 0, 0)
	}
}
