package master

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/internal/testkit"
)

// TestMaster_NotifySocketFull: the service manager is stuck — its notify
// socket's queue is full and nobody reads it. forkd still starts and
// serves, says in its log that its messages are lost, and stops on TERM
// instead of hanging in a send to systemd.
func TestMaster_NotifySocketFull(t *testing.T) {
	path := testkit.ListenNotify(t).Path // never read
	fillQueue(t, path)

	f := startForkd(t, setup{instance: "stuck", workers: 2, notify: path})
	f.askUntil("2 workers answering", func(seen map[int]answer) bool { return len(seen) == 2 })
	f.signal(syscall.SIGTERM)
	if code := f.wait(testTimeout); code != 0 {
		t.Fatalf("forkd exited with %d after TERM, want 0\n%s", code, f.log())
	}
	if log := f.log(); !strings.Contains(log, "sd_notify failed") || !strings.Contains(log, "queue stayed full") {
		t.Errorf("forkd's log does not say its messages to systemd were lost:\n%s", log)
	}
}

// fillQueue sends datagrams to the unixgram socket at path, each from a
// fresh non-blocking socket, until the kernel refuses one for a full queue.
func fillQueue(t *testing.T, path string) {
	t.Helper()
	to := &unix.SockaddrUnix{Name: path}
	for n := 0; n < 1_000_000; n++ {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		err = unix.Sendto(fd, []byte("STATUS=filler"), 0, to)
		unix.Close(fd)
		if errors.Is(err, unix.EAGAIN) {
			return
		}
		if err != nil {
			t.Fatalf("fill %s: %v", path, err)
		}
	}
	t.Fatalf("%s never filled up", path)
}

// TestMaster_RefusedReloadTellsSystemd: a reload refused at once (the file
// no longer loads) still sends RELOADING=1 and then READY=1, with the
// failure in STATUS=: systemd's Type=notify-reload waits for both after
// its SIGHUP, and the old generation does serve.
func TestMaster_RefusedReloadTellsSystemd(t *testing.T) {
	manager := testkit.ListenNotify(t)
	f := startForkd(t, setup{instance: "refused", workers: 1, notify: manager.Path})
	manager.Wait("READY=1")
	if err := os.WriteFile(f.cfgPath, []byte("[server]\nworkers = = 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f.signal(syscall.SIGHUP)
	manager.Wait("RELOADING=1")
	ready, _ := manager.Wait("READY=1")
	if _, ok := ready.Field("STATUS"); !ok {
		t.Errorf("READY=1 after the refused reload carries no STATUS=: %q", ready.Text)
	}
}
