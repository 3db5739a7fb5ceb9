package activation

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// ShimArg is os.Args[1] of a process forkd started to become a worker:
// forkd's main calls Shim(os.Args[2:]) when it sees it, before anything
// else.
const ShimArg = "__forkd-exec-shim"

// ErrMasterGone is returned by Shim when FORKD_SHIM_PARENT names a process
// that is no longer its parent: the master died before the worker started.
var ErrMasterGone = errors.New("activation: master gone")

// listenFdsStart is SD_LISTEN_FDS_START, the first passed fd.
const listenFdsStart = 3

// ShimArgv returns the argv that starts command with args through the exec
// shim: shimPath (forkd's own executable) is argv[0], then ShimArg, command
// and args.
func ShimArgv(shimPath, command string, args []string) []string {
	argv := make([]string, 0, 3+len(args))
	argv = append(argv, shimPath, ShimArg, command)
	return append(argv, args...)
}

// Shim turns the current process into the worker: args is the command as
// configured followed by its arguments (os.Args[2:] of the shim), and the
// command gets them as its argv. What else it does it reads from its
// environment, which the process starting it sets with ShimSetup.Env; it
// removes those variables (FORKD_SHIM_*) from the command's environment:
//
//   - FORKD_SHIM_PARENT: if it is set and is not the parent's pid, the
//     master has died and Shim returns an error wrapping ErrMasterGone
//     without starting the command.
//   - FORKD_SHIM_PIDENV: the variables (comma-separated) Shim sets to its own
//     pid, which is the command's. Unset: LISTEN_PID when LISTEN_FDS is set
//     and WATCHDOG_PID when WATCHDOG_USEC is set.
//   - FORKD_SHIM_FDS: the command gets fds 0…FORKD_SHIM_FDS-1 (Shim clears
//     FD_CLOEXEC on those from 3 up) and no other: every fd above them
//     closes at exec. Unset: 3+LISTEN_FDS.
//   - FORKD_SHIM_STATUS: an fd, close-on-exec from Shim's start, where Shim
//     writes why it failed before it returns (ShimStatus reads it).
//   - FORKD_SHIM_CGROUP: an fd open for writing on a cgroup v2's
//     cgroup.procs: Shim moves itself, and so the command, into that
//     cgroup before it execs, and closes the fd.
//
// The command takes the kernel's default time slice and otherwise the
// shim's scheduling. A command without a slash is looked up in PATH.
//
// Shim returns only on failure; the caller reports the error and exits
// with status 127.
func Shim(args []string) error {
	environ := os.Environ()
	status := shimStatusFD(environ)
	err := shimExec(args, environ)
	if status >= 0 {
		reportShimFailure(status, err)
	}
	return err
}

// The environment variables through which a shim learns what to do (see
// Shim).
const (
	shimParentEnv = "FORKD_SHIM_PARENT"
	shimPIDEnv    = "FORKD_SHIM_PIDENV"
	shimFDsEnv    = "FORKD_SHIM_FDS"
	shimStatusEnv = "FORKD_SHIM_STATUS"
	shimCgroupEnv = "FORKD_SHIM_CGROUP"
)

// ShimParentEnv is the environment entry that tells a shim its master's
// pid: a shim whose parent is no longer that pid does not start the command.
func ShimParentEnv(master int) string {
	return shimParentEnv + "=" + strconv.Itoa(master)
}

// ShimSetup is what the process that starts a shim tells it (see Shim).
type ShimSetup struct {
	// Parent is the starting process's pid: a shim whose parent is no
	// longer it does not start the command.
	Parent int
	// PIDEnv names the variables set to the command's own pid.
	PIDEnv []string
	// Files is how many fds, 0…Files-1, the command gets.
	Files int
	// Status is the fd, at least 3, on which the shim reports a failure
	// (see ShimStatus); 0 for none.
	Status int
	// Cgroup is the fd, at least 3, open for writing on the cgroup.procs
	// of the cgroup the command runs in; 0 for none (it stays in the
	// shim's).
	Cgroup int
}

// Env returns the environment entries that tell a shim s.
func (s ShimSetup) Env() []string {
	env := []string{
		ShimParentEnv(s.Parent),
		shimPIDEnv + "=" + strings.Join(s.PIDEnv, ","),
		shimFDsEnv + "=" + strconv.Itoa(s.Files),
	}
	if s.Status > 0 {
		env = append(env, shimStatusEnv+"="+strconv.Itoa(s.Status))
	}
	if s.Cgroup > 0 {
		env = append(env, shimCgroupEnv+"="+strconv.Itoa(s.Cgroup))
	}
	return env
}

// ShimStatus returns the failure a shim wrote to its status fd before it
// exited, or nil when it wrote nothing (b empty: it exec'd the command).
// The error unwraps to the system call's errno where one failed.
func ShimStatus(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if len(b) < 4 {
		return fmt.Errorf("exec-shim: failed, reporting %d bytes", len(b))
	}
	return &shimError{errno: syscall.Errno(binary.NativeEndian.Uint32(b)), text: string(b[4:])}
}

// shimError is a failure a shim reported: its text and, when a system
// call failed, the errno.
type shimError struct {
	errno syscall.Errno
	text  string
}

func (e *shimError) Error() string { return e.text }

// Unwrap returns the errno, or nil when none was reported.
func (e *shimError) Unwrap() error {
	if e.errno == 0 {
		return nil
	}
	return e.errno
}

// shimStatusFD returns the fd that FORKD_SHIM_STATUS names in env, marked
// close-on-exec, or -1 when there is none.
func shimStatusFD(env []string) int {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, shimStatusEnv+"="); ok {
			fd, err := strconv.Atoi(v)
			if err != nil || fd < 3 {
				return -1
			}
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
				return -1
			}
			return fd
		}
	}
	return -1
}

// reportShimFailure writes err to fd as ShimStatus reads it: the errno
// (native byte order, 0 for none), then the error's text.
func reportShimFailure(fd int, err error) {
	var errno syscall.Errno
	errors.As(err, &errno)
	b := binary.NativeEndian.AppendUint32(nil, uint32(errno))
	_, _ = unix.Write(fd, append(b, err.Error()...)) // at worst the starter sees an exit with status 127
}

// shimExec execs args with environ, adjusted as Shim documents.
func shimExec(args, environ []string) error {
	if len(args) == 0 || args[0] == "" {
		return errors.New("exec-shim: no command")
	}
	env, keep, err := shimEnv(environ, os.Getpid(), os.Getppid())
	if err != nil {
		return err
	}
	if err := joinCgroup(environ); err != nil {
		return err
	}
	for fd := listenFdsStart; fd < keep; fd++ {
		// FD_CLOEXEC is the only fd flag: clearing all of them keeps fd open.
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			return fmt.Errorf("exec-shim: keep fd %d (of %d) open across exec: %w", fd, keep, err)
		}
	}
	// Every fd above them closes at exec, also those the master inherited
	// without close-on-exec: the worker gets its fds and nothing else, as
	// from systemd. Kernels before 5.11 lack CLOSE_RANGE_CLOEXEC.
	_ = unix.CloseRange(uint(keep), ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	defaultSlice()
	path := args[0]
	if !strings.Contains(path, "/") {
		if path, err = exec.LookPath(path); err != nil {
			return fmt.Errorf("exec-shim: %w", err)
		}
	}
	err = unix.Exec(path, args, env)
	return fmt.Errorf("exec-shim: exec %s: %w", path, err)
}

// joinCgroup moves this process into the cgroup whose cgroup.procs
// FORKD_SHIM_CGROUP names (writing "0" there moves the writer), and
// closes that fd; nothing when the variable is unset.
func joinCgroup(environ []string) error {
	for _, kv := range environ {
		v, ok := strings.CutPrefix(kv, shimCgroupEnv+"=")
		if !ok {
			continue
		}
		fd, err := strconv.Atoi(v)
		if err != nil || fd < 3 {
			return fmt.Errorf("exec-shim: %s=%q is not an fd", shimCgroupEnv, v)
		}
		_, err = unix.Write(fd, []byte("0"))
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("exec-shim: join the worker's cgroup (fd %d): %w", fd, err)
		}
	}
	return nil
}

// shimEnv checks FORKD_SHIM_PARENT against ppid and returns the command's
// environment — env with the FORKD_SHIM_PIDENV variables set to pid and
// the FORKD_SHIM_* variables removed — and the number of fds, 0…keep-1,
// the command gets.
func shimEnv(env []string, pid, ppid int) (_ []string, keep int, _ error) {
	nfds := -1 // LISTEN_FDS unset
	keep = -1  // FORKD_SHIM_FDS unset
	watchdog := false
	var pidEnv []string
	pidEnvSet := false
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case shimParentEnv:
			master, err := strconv.Atoi(v)
			if err != nil {
				return nil, 0, fmt.Errorf("exec-shim: %s=%q is not a pid", shimParentEnv, v)
			}
			if master != ppid {
				return nil, 0, fmt.Errorf("exec-shim: parent is pid %d, not master %d: %w", ppid, master, ErrMasterGone)
			}
		case shimPIDEnv:
			pidEnvSet = true
			if v != "" {
				pidEnv = strings.Split(v, ",")
			}
		case shimFDsEnv:
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return nil, 0, fmt.Errorf("exec-shim: %s=%q is not a count", shimFDsEnv, v)
			}
			keep = n
		case "LISTEN_FDS":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return nil, 0, fmt.Errorf("exec-shim: LISTEN_FDS=%q is not a count", v)
			}
			nfds = n
		case "WATCHDOG_USEC":
			watchdog = true
		}
	}
	if !pidEnvSet {
		if nfds >= 0 {
			pidEnv = append(pidEnv, "LISTEN_PID")
		}
		if watchdog {
			pidEnv = append(pidEnv, "WATCHDOG_PID")
		}
	}
	if keep < 0 {
		keep = listenFdsStart + max(nfds, 0)
	}
	out := make([]string, 0, len(env)+len(pidEnv))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "FORKD_SHIM_") || slices.Contains(pidEnv, k) {
			continue
		}
		out = append(out, kv)
	}
	self := strconv.Itoa(pid)
	for _, k := range pidEnv {
		out = append(out, k+"="+self)
	}
	return out, keep, nil
}

// defaultSlice gives the shim, and so the command it execs, the kernel's
// default time slice: the master may have asked for a short one
// (server.master_slice), which is the master's alone. Workers started
// without the shim get the same from forkexec.Attr.DefaultSlice.
func defaultSlice() {
	a, err := unix.SchedGetAttr(0, 0)
	if err != nil || a.Policy != unix.SCHED_NORMAL && a.Policy != unix.SCHED_BATCH {
		return
	}
	a.Runtime, a.Flags = 0, a.Flags&unix.SCHED_FLAG_RESET_ON_FORK
	_ = unix.SchedSetAttr(0, a, 0) // at worst the worker keeps the master's slice
}
