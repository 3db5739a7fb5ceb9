package systemd

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/internal/testkit"
)

// listenNotify starts a notify socket as systemd holds it at addr (a path,
// or "@name" for an abstract socket) and points NOTIFY_SOCKET at it for
// the test.
func listenNotify(t *testing.T, addr string) *testkit.Notify {
	t.Helper()
	r := testkit.ListenNotifyAt(t, addr)
	t.Setenv("NOTIFY_SOCKET", addr)
	return r
}

// listenTemp starts a notify socket in t.TempDir().
func listenTemp(t *testing.T) *testkit.Notify {
	t.Helper()
	return listenNotify(t, filepath.Join(t.TempDir(), "notify"))
}

// expectNothing fails the test if a datagram arrives within d.
func expectNothing(t *testing.T, r *testkit.Notify, d time.Duration) {
	t.Helper()
	if m, ok := r.Within(d); ok {
		t.Fatalf("unexpected notify message %q", m.Text)
	}
}

const wait = 5 * time.Second

func TestNotifier_Messages(t *testing.T) {
	r := listenTemp(t)
	n := NewNotifier()
	if !n.Enabled() {
		t.Fatal("Enabled() = false with NOTIFY_SOCKET set")
	}
	tests := []struct {
		name string
		send func() error
		want string
	}{
		{"ready", func() error { return n.Ready("") }, "READY=1"},
		{"ready with status", func() error { return n.Ready("4 workers, generation 1") }, "READY=1\nSTATUS=4 workers, generation 1"},
		{"stopping", n.Stopping, "STOPPING=1"},
		{"status", func() error { return n.Status("reloading: 2 of 4 ready") }, "STATUS=reloading: 2 of 4 ready"},
		{"status is one line", func() error { return n.Status("a\nREADY=1\r\nb") }, "STATUS=a READY=1 b"},
		{"extend timeout", func() error { return n.ExtendTimeout(90*time.Second + 1500*time.Nanosecond) }, "EXTEND_TIMEOUT_USEC=90000001"},
		{"extend timeout negative", func() error { return n.ExtendTimeout(-time.Second) }, "EXTEND_TIMEOUT_USEC=0"},
		{"errno", func() error { return n.Errno(int(unix.EADDRINUSE), "bind 127.0.0.1:8000: address in use") }, "STATUS=bind 127.0.0.1:8000: address in use\nERRNO=98"},
		{"errno without status", func() error { return n.Errno(int(unix.ENOENT), "") }, "ERRNO=2"},
		{"remove fds", func() error { return n.RemoveFDs("web") }, "FDSTOREREMOVE=1\nFDNAME=web"},
		{"raw", func() error { return n.Notify("MAINPID=1234") }, "MAINPID=1234"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.send(); err != nil {
				t.Fatalf("send: %v", err)
			}
			m := r.Next()
			if m.Text != tt.want {
				t.Errorf("message = %q, want %q", m.Text, tt.want)
			}
			if int(m.PID) != os.Getpid() {
				t.Errorf("sender pid = %d, want %d", m.PID, os.Getpid())
			}
		})
	}
}

func TestNotifier_Reloading(t *testing.T) {
	r := listenTemp(t)
	n := NewNotifier()
	before, err := monotonicUsec()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Reloading(); err != nil {
		t.Fatalf("Reloading: %v", err)
	}
	after, err := monotonicUsec()
	if err != nil {
		t.Fatal(err)
	}
	m := r.Next()
	lines := strings.Split(m.Text, "\n")
	if len(lines) != 2 || lines[0] != "RELOADING=1" || !strings.HasPrefix(lines[1], "MONOTONIC_USEC=") {
		t.Fatalf("message = %q, want RELOADING=1 and MONOTONIC_USEC=", m.Text)
	}
	usec, err := strconv.ParseUint(strings.TrimPrefix(lines[1], "MONOTONIC_USEC="), 10, 64)
	if err != nil {
		t.Fatalf("MONOTONIC_USEC: %v", err)
	}
	if usec < before || usec > after {
		t.Errorf("MONOTONIC_USEC=%d, want within [%d, %d] (CLOCK_MONOTONIC around the call)", usec, before, after)
	}
	// The clock systemd compares against is CLOCK_MONOTONIC, not boot time
	// or wall time: cross-check with the kernel's idea of it.
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		t.Fatal(err)
	}
	if boot := uint64(ts.Sec)*1e6 + uint64(ts.Nsec)/1e3; usec > boot {
		t.Errorf("MONOTONIC_USEC=%d is ahead of CLOCK_BOOTTIME %d", usec, boot)
	}
}

func TestNotifier_AbstractSocket(t *testing.T) {
	addr := "@forkd-test-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	r := listenNotify(t, addr)
	n := NewNotifier()
	if err := n.Ready("abstract"); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	if m := r.Next(); m.Text != "READY=1\nSTATUS=abstract" {
		t.Errorf("message = %q", m.Text)
	}
	// A path socket of the same name must not have been created.
	if _, err := os.Stat(addr); !os.IsNotExist(err) {
		t.Errorf("stat %s: %v, want not exist", addr, err)
	}
}

func TestNotifier_Disabled(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	os.Unsetenv("NOTIFY_SOCKET")
	t.Setenv("WATCHDOG_USEC", "1000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	n := NewNotifier()
	if n.Enabled() {
		t.Fatal("Enabled() = true without NOTIFY_SOCKET")
	}
	if d := n.WatchdogInterval(); d != 0 {
		t.Errorf("WatchdogInterval() = %v, want 0 when disabled", d)
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	calls := map[string]func() error{
		"Ready":         func() error { return n.Ready("x") },
		"Reloading":     n.Reloading,
		"Stopping":      n.Stopping,
		"Status":        func() error { return n.Status("x") },
		"ExtendTimeout": func() error { return n.ExtendTimeout(time.Second) },
		"Errno":         func() error { return n.Errno(1, "x") },
		"StoreFDs":      func() error { return n.StoreFDs("x", f) },
		"RemoveFDs":     func() error { return n.RemoveFDs("x") },
		"Notify":        func() error { return n.Notify("READY=1") },
	}
	for name, call := range calls {
		if err := call(); err != nil {
			t.Errorf("%s without NOTIFY_SOCKET: %v, want nil", name, err)
		}
	}
	var zero *Notifier
	if err := zero.Ready(""); err != nil || zero.Enabled() {
		t.Errorf("nil Notifier: Ready = %v, Enabled = %v", err, zero.Enabled())
	}
}

func TestNotifier_ReadsEnvironmentOnce(t *testing.T) {
	r := listenTemp(t)
	n := NewNotifier()
	// Changing or clearing the environment afterwards (forkd prepares its
	// workers' environment) must not redirect or silence the Notifier.
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "elsewhere"))
	if err := n.Stopping(); err != nil {
		t.Fatalf("Stopping: %v", err)
	}
	if m := r.Next(); m.Text != "STOPPING=1" {
		t.Errorf("message = %q, want STOPPING=1", m.Text)
	}
}

func TestNotifier_SendError(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "nobody-listens"))
	n := NewNotifier()
	err := n.Ready("x")
	if err == nil {
		t.Fatal("Ready to a missing socket: nil error")
	}
	if !strings.Contains(err.Error(), "READY=1") || !errors.Is(err, unix.ENOENT) {
		t.Errorf("error = %v, want it to name the message and wrap ENOENT", err)
	}
}

// TestNotifier_QueueFull: a notify socket nobody reads fills up; a send
// then fails with EAGAIN after the send timeout instead of blocking its
// sender, and works again once there is room.
func TestNotifier_QueueFull(t *testing.T) {
	r := listenTemp(t)
	n := NewNotifier()
	if n.sendTimeout != SendTimeout {
		t.Fatalf("send timeout %v, want SendTimeout %v", n.sendTimeout, SendTimeout)
	}
	n.sendTimeout = 20 * time.Millisecond
	// The kernel queues net.unix.max_dgram_qlen datagrams for a receiver
	// before senders wait (10 by the kernel's default, 512 where systemd
	// set it at boot).
	limit := 100_000
	if b, err := os.ReadFile("/proc/sys/net/unix/max_dgram_qlen"); err == nil {
		if q, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			limit = q + 10
		}
	}
	var err error
	sent := 0
	for ; sent < limit; sent++ {
		if err = n.Status("filling " + strconv.Itoa(sent)); err != nil {
			break
		}
	}
	if err == nil {
		t.Fatalf("%d messages to a socket nobody reads all went out; want EAGAIN once its queue is full", sent)
	}
	if !errors.Is(err, unix.EAGAIN) || !strings.Contains(err.Error(), "queue stayed full") ||
		!strings.Contains(err.Error(), "STATUS=filling") {
		t.Fatalf("error = %v, want EAGAIN, the full queue and the message named", err)
	}
	if m := r.Next(); m.Text != "STATUS=filling 0" {
		t.Fatalf("first queued message %q, want STATUS=filling 0", m.Text)
	}
	if err := n.Status("room again"); err != nil {
		t.Fatalf("send after the receiver read one: %v", err)
	}
}
