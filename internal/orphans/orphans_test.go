package orphans

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/internal/process"
	"github.com/forkd/forkd/internal/testkit"
)

// TestMain makes the test process a subreaper, as forkd makes itself with
// [server] subreaper = true: the orphans its tests leave are its children.
func TestMain(m *testing.M) {
	if err := BecomeSubreaper(); err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// orphan starts a shell that starts `sh -c 'read x <&3; exit 5'` in the
// background and exits, and returns the background shell's pid: an orphan
// of this process, blocked until release is called, then exiting with
// status 5.
func orphan(t *testing.T) (pid int, release func()) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", "-c", `sh -c 'read x <&3; exit 5' </dev/null >/dev/null 2>&1 & echo $!`)
	cmd.ExtraFiles = []*os.File{r}
	out, err := cmd.Output()
	r.Close()
	if err != nil {
		w.Close()
		t.Fatalf("start an orphan: %v", err)
	}
	if pid, err = strconv.Atoi(strings.TrimSpace(string(out))); err != nil {
		w.Close()
		t.Fatalf("the orphan's pid: %q: %v", out, err)
	}
	return pid, func() { w.Close() }
}

// TestReaper_ReapsOrphansKeepsOwn runs a Reaper while the test starts
// children of its own (os/exec, and package process as the master starts
// workers) and leaves orphans: every orphan is reaped and logged at debug
// level, and every own child's exit status reaches its own waiter.
func TestReaper_ReapsOrphansKeepsOwn(t *testing.T) {
	var logs testkit.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- New(log).Run(ctx) }()
	defer func() {
		cancel()
		if err := <-ran; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	const rounds = 30
	var wg sync.WaitGroup
	errs := make(chan error, 2*rounds)
	wg.Add(2)
	go func() {
		defer wg.Done()
		for range rounds {
			err := exec.Command("/bin/sh", "-c", "exit 3").Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 3 {
				errs <- errors.New("os/exec child: " + errString(err) + ", want exit status 3")
			}
		}
	}()
	go func() {
		defer wg.Done()
		for range rounds {
			p, err := process.Start(&process.Attr{Path: "/bin/sh", Args: []string{"-c", "exit 4"}, Files: stdio})
			if err != nil {
				errs <- err
				continue
			}
			exit, err := p.Wait()
			if err != nil || exit.Code() != 4 {
				errs <- errors.New("process child: " + exit.String() + " " + errString(err) + ", want exit status 4")
			}
		}
	}()
	var orphans []int
	for range 5 {
		pid, release := orphan(t)
		orphans = append(orphans, pid)
		release()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, pid := range orphans {
		line := logs.WaitFor(t, `msg="reaped an orphan" pid=`+strconv.Itoa(pid)+" ")
		if !strings.Contains(line, "level=DEBUG") || !strings.Contains(line, `how="exited with status 5"`) {
			t.Errorf("orphan %d: %q", pid, line)
		}
	}
}

// TestReaper_Pass_LeavesOwnZombie: a child of this process that has
// exited but not been waited for by its owner, who holds its pidfd, is
// not reaped by a pass.
func TestReaper_Pass_LeavesOwnZombie(t *testing.T) {
	p, err := process.Start(&process.Attr{Path: "/bin/sh", Args: []string{"-c", "exit 6"}, Files: stdio})
	if err != nil {
		t.Fatal(err)
	}
	r := New(slog.New(slog.DiscardHandler))
	waitExited(t, p.PID)
	if state(p.PID) != 'Z' {
		t.Fatalf("child %d: state %q, want a zombie", p.PID, state(p.PID))
	}
	if n, err := r.Pass(); err != nil || n != 0 {
		t.Errorf("Pass with only an own zombie: reaped %d (%v), want 0", n, err)
	}
	exit, err := p.Wait()
	if err != nil || exit.Code() != 6 {
		t.Errorf("own child: %s %v, want exit status 6", exit, err)
	}
}

// TestReaper_Adopting: a Reaper treats the processes an upgrade handed
// over as its own until a pidfd of theirs shows up.
func TestReaper_Adopting(t *testing.T) {
	cmd := exec.Command("/bin/sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	kids, err := children()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(kids, cmd.Process.Pid) {
		t.Fatalf("children() = %v, want %d among them", kids, cmd.Process.Pid)
	}
	r := New(slog.New(slog.DiscardHandler), Adopting([]int{cmd.Process.Pid}))
	r.maybeOwn = map[int]bool{cmd.Process.Pid: true} // as Run starts
	// os/exec holds its pidfd: the first pass with a zombie resolves it.
	_ = cmd.Process.Kill()
	waitExited(t, cmd.Process.Pid)
	if _, err := r.Pass(); err != nil {
		t.Fatal(err)
	}
	if r.maybeOwn[cmd.Process.Pid] {
		t.Errorf("pid %d still maybe-own after a pass saw its pidfd", cmd.Process.Pid)
	}
	if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("own child: %v, want killed", err)
	}
}

// waitExited waits until the child pid has exited (its pidfd, opened here
// and closed again, is readable), failing the test after a deadline.
func waitExited(t *testing.T, pid int) {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open %d: %v", pid, err)
	}
	defer unix.Close(fd)
	for {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(testkit.Deadline.Milliseconds()))
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			t.Fatalf("poll pidfd of %d: %v", pid, err)
		case n == 0:
			t.Fatalf("child %d still running after %v", pid, testkit.Deadline)
		}
		return
	}
}

// stdio are the files process.Start hands its children as 0, 1 and 2.
var stdio = []*os.File{os.Stdin, os.Stdout, os.Stderr}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}
