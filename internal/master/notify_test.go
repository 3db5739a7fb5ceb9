package master

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMaster_NotifySocketFull: the service manager is stuck — its notify
// socket's queue is full and nobody reads it. forkd still starts and
// serves, says in its log that its messages are lost, and stops on TERM
// instead of hanging in a send to systemd.
func TestMaster_NotifySocketFull(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	stuck, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
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
	path := filepath.Join(t.TempDir(), "notify")
	manager, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer manager.Close()
	f := startForkd(t, setup{instance: "refused", workers: 1, notify: path})
	until(t, manager, "READY=1 at start", func(m string) bool { return strings.Contains(m, "READY=1") })
	if err := os.WriteFile(f.cfgPath, []byte("[server]\nworkers = = 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f.signal(syscall.SIGHUP)
	until(t, manager, "RELOADING=1 after HUP", func(m string) bool { return strings.Contains(m, "RELOADING=1") })
	ready := until(t, manager, "READY=1 after the refused reload", func(m string) bool { return strings.Contains(m, "READY=1") })
	if !strings.Contains(ready, "STATUS=") {
		t.Errorf("READY=1 after the refused reload carries no STATUS=: %q", ready)
	}
}

// until reads datagrams from the manager's socket until ok accepts one,
// which it returns; it fails t after testTimeout.
func until(t *testing.T, manager *net.UnixConn, what string, ok func(string) bool) string {
	t.Helper()
	if err := manager.SetReadDeadline(time.Now().Add(testTimeout)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for {
		n, err := manager.Read(buf)
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if m := string(buf[:n]); ok(m) {
			return m
		}
	}
}
