package testkit

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Exited returns a channel that is closed when process pid exits (a
// zombie counts: it runs no more), as its pidfd tells. The pidfd is opened
// now, so a pid reused later is not mistaken for it; a pid with no process
// gives a closed channel. The watch ends when the test does.
func Exited(t testing.TB, pid int) <-chan struct{} {
	t.Helper()
	exited := make(chan struct{})
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if errors.Is(err, unix.ESRCH) {
		close(exited)
		return exited
	}
	if err != nil {
		t.Fatalf("testkit: pidfd_open(%d): %v", pid, err)
	}
	// A non-blocking fd is handed to the runtime's poller, so waiting for
	// it to become readable takes no thread and Close ends the wait.
	f := os.NewFile(uintptr(fd), "pidfd")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		t.Fatalf("testkit: pidfd of %d: %v", pid, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := rc.Read(func(fd uintptr) bool {
			n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
			return err == nil && n > 0
		})
		if err == nil {
			close(exited)
		}
	}()
	t.Cleanup(func() {
		f.Close()
		<-done
	})
	return exited
}

// WaitExit waits until process pid has exited, failing the test after d.
func WaitExit(t testing.TB, pid int, d time.Duration) {
	t.Helper()
	timeout := time.NewTimer(d)
	defer timeout.Stop()
	select {
	case <-Exited(t, pid):
	case <-timeout.C:
		t.Fatalf("process %d still runs after %v", pid, d)
	}
}

// ProcState describes process pid for a failing test's log: its command
// line, state, what it waits in (wchan), its signal masks and its
// threads' count, as /proc tells.
func ProcState(pid int) string {
	dir := "/proc/" + strconv.Itoa(pid)
	cmdline, _ := os.ReadFile(dir + "/cmdline")
	wchan, _ := os.ReadFile(dir + "/wchan")
	var b strings.Builder
	fmt.Fprintf(&b, "cmdline %q wchan %q", strings.ReplaceAll(strings.TrimRight(string(cmdline), "\x00"), "\x00", " "), wchan)
	status, _ := os.ReadFile(dir + "/status")
	for _, line := range strings.Split(string(status), "\n") {
		for _, k := range []string{"State:", "Threads:", "SigPnd:", "ShdPnd:", "SigBlk:", "SigIgn:", "SigCgt:"} {
			if strings.HasPrefix(line, k) {
				b.WriteString("; " + strings.Join(strings.Fields(line), " "))
			}
		}
	}
	return b.String()
}
