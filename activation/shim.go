package activation

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"

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
// command gets them as its argv.
//
// Before execve(2) it sets LISTEN_PID to its own pid when LISTEN_FDS is set
// and WATCHDOG_PID when WATCHDOG_USEC is set, clears FD_CLOEXEC on fds
// 3…3+LISTEN_FDS-1 (every fd above them closes at exec), and removes
// FORKD_SHIM_PARENT from the environment. If
// FORKD_SHIM_PARENT is set and is not the parent's pid, the master has died
// and Shim returns an error wrapping ErrMasterGone without starting the
// command. A command without a slash is looked up in PATH.
//
// Shim returns only on failure; the caller reports the error and exits
// with status 127.
func Shim(args []string) error {
	if len(args) == 0 || args[0] == "" {
		return errors.New("exec-shim: no command")
	}
	return shimExec(args, os.Environ())
}

// ShimParentEnv is the environment entry that tells a shim its master's
// pid: a shim whose parent is no longer that pid does not start the command.
func ShimParentEnv(master int) string {
	return "FORKD_SHIM_PARENT=" + strconv.Itoa(master)
}

// shimExec execs args with env, adjusted as Shim documents.
func shimExec(args, environ []string) error {
	env, nfds, err := shimEnv(environ, os.Getpid(), os.Getppid())
	if err != nil {
		return err
	}
	for fd := listenFdsStart; fd < listenFdsStart+nfds; fd++ {
		// FD_CLOEXEC is the only fd flag: clearing all of them keeps fd open.
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			return fmt.Errorf("exec-shim: keep fd %d (of LISTEN_FDS=%d) open across exec: %w", fd, nfds, err)
		}
	}
	// Every fd above them closes at exec, also those the master inherited
	// without close-on-exec: the worker gets the sockets and nothing else,
	// as from systemd. Kernels before 5.11 lack CLOSE_RANGE_CLOEXEC.
	_ = unix.CloseRange(uint(listenFdsStart+max(nfds, 0)), ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
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

// shimEnv checks FORKD_SHIM_PARENT against ppid and returns the worker's
// environment — env with LISTEN_PID and WATCHDOG_PID set to pid where they
// apply and FORKD_SHIM_PARENT removed — and the LISTEN_FDS count.
func shimEnv(env []string, pid, ppid int) (_ []string, nfds int, _ error) {
	nfds = -1 // LISTEN_FDS unset
	watchdog := false
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "FORKD_SHIM_PARENT":
			master, err := strconv.Atoi(v)
			if err != nil {
				return nil, 0, fmt.Errorf("exec-shim: FORKD_SHIM_PARENT=%q is not a pid", v)
			}
			if master != ppid {
				return nil, 0, fmt.Errorf("exec-shim: parent is pid %d, not master %d: %w", ppid, master, ErrMasterGone)
			}
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
	out := make([]string, 0, len(env)+2)
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if k == "FORKD_SHIM_PARENT" || k == "LISTEN_PID" && nfds >= 0 || k == "WATCHDOG_PID" && watchdog {
			continue
		}
		out = append(out, kv)
	}
	self := strconv.Itoa(pid)
	if nfds >= 0 {
		out = append(out, "LISTEN_PID="+self)
	}
	if watchdog {
		out = append(out, "WATCHDOG_PID="+self)
	}
	return out, max(nfds, 0), nil
}

// defaultSlice gives the shim, and so the command it execs, the kernel's
// default time slice: the master may have asked for a short one
// (server.master_slice), which is the master's alone. Workers started
// without the shim get the same from forkexec.Attr.Sched.
func defaultSlice() {
	a, err := unix.SchedGetAttr(0, 0)
	if err != nil || a.Policy != unix.SCHED_NORMAL && a.Policy != unix.SCHED_BATCH {
		return
	}
	a.Runtime, a.Flags = 0, a.Flags&unix.SCHED_FLAG_RESET_ON_FORK
	_ = unix.SchedSetAttr(0, a, 0) // at worst the worker keeps the master's slice
}
