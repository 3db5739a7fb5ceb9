// Package orphans makes the master reap the processes that become its
// children without being its own: orphans. When forkd is PID 1 (a
// container runtime started it in a new PID namespace) or a subreaper
// ([server] subreaper = true, PR_SET_CHILD_SUBREAPER), every process whose
// parent dies below it — a worker's background command, a daemonizing
// hook — is re-parented to forkd, and stays a zombie until forkd reaps it.
//
// A Reaper does that without taking an exit status from the master's own
// supervision, which waits for each of its children by pid through the
// child's pidfd (package process, and os/exec). Each pass, on every
// SIGCHLD:
//
//  1. lists the zombies among this process's children
//     (/proc/self/task/*/children, then each one's state);
//  2. lists the pids this process holds a pidfd for (/proc/self/fdinfo):
//     its own children, whose waiters hold their pidfd until they have
//     reaped them; a child started with CLONE_PIDFD has its pidfd before
//     it can run, so one listed in step 1 is listed here too;
//  3. reaps, by pid, each zombie of step 1 not in step 2, and logs it at
//     debug level.
//
// It never calls wait4(-1): every wait names its pid.
//
// After an in-place upgrade the new master opens pidfds for the children
// it adopts only once its pool and supervisor run: a Reaper made with
// Adopting treats the processes handed over as its own until it has seen a
// pidfd for them or they are gone.
package orphans

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Needed reports whether this process must reap orphans: it is PID 1 of
// its PID namespace, or subreaper asks it to be a subreaper.
func Needed(subreaper bool) bool {
	return subreaper || os.Getpid() == 1
}

// BecomeSubreaper makes orphaned descendants of this process its children
// (PR_SET_CHILD_SUBREAPER) rather than init's. PID 1 needs no such call.
func BecomeSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("orphans: prctl(PR_SET_CHILD_SUBREAPER): %w", err)
	}
	return nil
}

// Reaper reaps the zombie children of this process that no pidfd of its
// own watches. Its zero value is not usable: make one with New.
type Reaper struct {
	log *slog.Logger
	// maybeOwn are the children an upgrade handed over, kept until seen
	// with a pidfd or gone (see Adopting).
	maybeOwn map[int]bool
	adopting bool
	adopted  []int
}

// Option configures a Reaper.
type Option func(*Reaper)

// Adopting says the master was started by an in-place upgrade that
// handed over the processes pids (its workers, singletons, schedule runs):
// they are treated as its own until a pidfd of theirs shows up or they are
// gone. With pids nil, every child the Reaper finds when it starts is.
func Adopting(pids []int) Option {
	return func(r *Reaper) { r.adopting, r.adopted = true, pids }
}

// New returns a Reaper that logs to log.
func New(log *slog.Logger, opts ...Option) *Reaper {
	r := &Reaper{log: log}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Run reaps orphans at once and then on every SIGCHLD, until ctx is
// cancelled, which is not an error. It fails only when /proc cannot tell
// it this process's children, as when /proc belongs to another PID
// namespace than this process.
func (r *Reaper) Run(ctx context.Context) error {
	if err := procIsOurs(); err != nil {
		return err
	}
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGCHLD)
	defer signal.Stop(c)
	if r.adopting {
		kids := r.adopted
		if kids == nil {
			var err error
			if kids, err = children(); err != nil {
				return err
			}
		}
		r.maybeOwn = map[int]bool{}
		for _, pid := range kids {
			r.maybeOwn[pid] = true
		}
	}
	for {
		if _, err := r.Pass(); err != nil {
			r.log.Warn("reaping orphans", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-c:
		}
	}
}

// Pass reaps, once, every zombie child that is not this process's own, and
// returns how many it reaped. Call it from one goroutine at a time (Run's).
func (r *Reaper) Pass() (int, error) {
	kids, err := children()
	if err != nil {
		return 0, err
	}
	var zombies []int
	present := map[int]bool{}
	for _, pid := range kids {
		present[pid] = true
		if state(pid) == 'Z' {
			zombies = append(zombies, pid)
		}
	}
	for pid := range r.maybeOwn {
		if !present[pid] {
			delete(r.maybeOwn, pid)
		}
	}
	if len(zombies) == 0 {
		return 0, nil
	}
	own, err := pidfdPIDs()
	if err != nil {
		return 0, err
	}
	for pid := range r.maybeOwn {
		if own[pid] {
			delete(r.maybeOwn, pid)
		}
	}
	n := 0
	for _, pid := range zombies {
		if own[pid] || r.maybeOwn[pid] {
			continue
		}
		comm := command(pid)
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if err != nil || got != pid {
			continue // reaped by its owner meanwhile
		}
		n++
		how := fmt.Sprintf("exited with status %d", ws.ExitStatus())
		if ws.Signaled() {
			how = "killed by " + unix.SignalName(ws.Signal())
		}
		r.log.Debug("reaped an orphan", "pid", pid, "command", comm, "how", how)
	}
	return n, nil
}

// procIsOurs checks that /proc shows this process's PID namespace.
func procIsOurs() error {
	self, err := os.Readlink("/proc/self")
	if err != nil {
		return fmt.Errorf("orphans: read /proc/self: %w", err)
	}
	if self != strconv.Itoa(os.Getpid()) {
		return fmt.Errorf("orphans: /proc is another PID namespace's (/proc/self is %s, this process is %d): mount a /proc of forkd's own, or orphans stay zombies",
			self, os.Getpid())
	}
	return nil
}

// children lists the pids of this process's children, zombies included,
// from every thread's /proc/self/task/TID/children (an orphan is
// re-parented to any thread of its new parent).
func children() ([]int, error) {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, fmt.Errorf("orphans: list threads: %w", err)
	}
	var pids []int
	for _, t := range tasks {
		data, err := os.ReadFile(filepath.Join("/proc/self/task", t.Name(), "children"))
		if errors.Is(err, os.ErrNotExist) && len(pids) == 0 && t.Name() == strconv.Itoa(os.Getpid()) {
			return nil, fmt.Errorf("orphans: %w (a kernel without CONFIG_PROC_CHILDREN)", err)
		}
		if err != nil {
			continue // the thread is gone
		}
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids, nil
}

// state is the state letter of /proc/PID/stat ('Z' for a zombie), or 0
// when the process is gone.
func state(pid int) byte {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// "pid (comm) S …": comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 || i+2 >= len(data) {
		return 0
	}
	return data[i+2]
}

// command is the command name of pid, for the log.
func command(pid int) string {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
}

// pidfdPIDs returns the pids of the processes this process holds a pidfd
// for: the "Pid:" line of each fd's /proc/self/fdinfo entry, which only
// pidfds have.
func pidfdPIDs() (map[int]bool, error) {
	fds, err := os.ReadDir("/proc/self/fdinfo")
	if err != nil {
		return nil, fmt.Errorf("orphans: list fds: %w", err)
	}
	pids := map[int]bool{}
	for _, fd := range fds {
		data, err := os.ReadFile(filepath.Join("/proc/self/fdinfo", fd.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "Pid:"); ok {
				if pid, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && pid > 0 {
					pids[pid] = true
				}
				break
			}
		}
	}
	return pids, nil
}
