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
// 3…3+LISTEN_FDS-1, and removes FORKD_SHIM_PARENT from the environment. If
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
	if args[0] == spareArg {
		return spare()
	}
	return shimExec(args, os.Environ())
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

// spareArg, in place of a command, makes the shim a warm spare: see Spare.
const spareArg = "-forkd-spare"

// SpareArgv returns the argv of a warm spare: a shim started ahead of need,
// with the sockets already in place, that waits on its standard input for
// the command it is to become (see SpareOrder). A spare turns into a
// worker in the time of one execve — no fork, no Go runtime start — which
// is what makes a crashed worker's replacement immediate.
func SpareArgv(shimPath string) []string {
	return []string{shimPath, ShimArg, spareArg}
}

// SpareOrder encodes what a spare is to become: the working directory
// (""= keep), the command and its argv, and the environment. The master
// writes it to the spare's standard input and closes it.
func SpareOrder(dir, command string, args, env []string) []byte {
	var b []byte
	field := func(s string) { b = append(append(b, s...), 0) }
	field(dir)
	field(strconv.Itoa(len(args) + 1))
	field(command)
	for _, a := range args {
		field(a)
	}
	for _, e := range env {
		field(e)
	}
	return b
}

// parseOrder decodes SpareOrder's output into dir, argv and env.
func parseOrder(b []byte) (dir string, argv, env []string, err error) {
	var fields []string
	for len(b) > 0 {
		i := 0
		for i < len(b) && b[i] != 0 {
			i++
		}
		if i == len(b) {
			return "", nil, nil, errors.New("exec-shim: spare order: unterminated field")
		}
		fields = append(fields, string(b[:i]))
		b = b[i+1:]
	}
	if len(fields) < 3 {
		return "", nil, nil, errors.New("exec-shim: spare order: too short")
	}
	n, err := strconv.Atoi(fields[1])
	if err != nil || n < 1 || 2+n > len(fields) {
		return "", nil, nil, fmt.Errorf("exec-shim: spare order: bad argv count %q", fields[1])
	}
	return fields[0], fields[2 : 2+n], fields[2+n:], nil
}

// spare waits for its order on stdin, puts /dev/null in its place, and
// becomes the worker. An empty order (the master closed the pipe without
// one) means it is not needed: it exits quietly.
func spare() error {
	var order []byte
	buf := make([]byte, 16<<10)
	for {
		n, err := unix.Read(0, buf)
		if n > 0 {
			order = append(order, buf[:n]...)
		}
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("exec-shim: spare: read order: %w", err)
		}
		if n == 0 {
			break
		}
	}
	if len(order) == 0 {
		os.Exit(0)
	}
	dir, argv, env, err := parseOrder(order)
	if err != nil {
		return err
	}
	null, err := unix.Open(os.DevNull, unix.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("exec-shim: spare: %w", err)
	}
	if err := unix.Dup2(null, 0); err != nil {
		return fmt.Errorf("exec-shim: spare: stdin: %w", err)
	}
	unix.Close(null)
	if dir != "" {
		if err := unix.Chdir(dir); err != nil {
			return fmt.Errorf("exec-shim: spare: chdir %s: %w", dir, err)
		}
	}
	return shimExec(argv, env)
}
