package sdk

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/forkd/forkd/internal/testkit"
)

func TestIdentity(t *testing.T) {
	for _, tc := range []struct {
		id, gen, instance string
		wantID            int
		wantGen           uint64
	}{
		{"3", "7", "myapp", 3, 7},
		{"0", "1", "a@b", 0, 1},
		{"", "", "", -1, 0},
		{"-2", "-1", "", -1, 0},
		{"x", "1.5", "", -1, 0},
		{"4096", "18446744073709551615", "", 4096, 1<<64 - 1},
	} {
		t.Setenv("FORKD_WORKER_ID", tc.id)
		t.Setenv("FORKD_GENERATION", tc.gen)
		t.Setenv("FORKD_INSTANCE", tc.instance)
		if got := ID(); got != tc.wantID {
			t.Errorf("FORKD_WORKER_ID=%q: ID() = %d, want %d", tc.id, got, tc.wantID)
		}
		if got := Generation(); got != tc.wantGen {
			t.Errorf("FORKD_GENERATION=%q: Generation() = %d, want %d", tc.gen, got, tc.wantGen)
		}
		if got := Instance(); got != tc.instance {
			t.Errorf("FORKD_INSTANCE=%q: Instance() = %q", tc.instance, got)
		}
	}
}

// listenNotify starts a notify socket and points NOTIFY_SOCKET at it.
func listenNotify(t *testing.T) *testkit.Notify {
	t.Helper()
	n := testkit.ListenNotify(t)
	t.Setenv("NOTIFY_SOCKET", n.Path)
	return n
}

func TestNotify(t *testing.T) {
	conn := listenNotify(t)
	for _, tc := range []struct {
		send func() error
		want string
	}{
		{Ready, "READY=1"},
		{func() error { return Status("warming caches: 40%") }, "STATUS=warming caches: 40%"},
		{Stopping, "STOPPING=1"},
	} {
		if err := tc.send(); err != nil {
			t.Fatalf("sending %s: %v", tc.want, err)
		}
		if got := conn.Next().Text; got != tc.want {
			t.Errorf("notify socket got %q, want %q", got, tc.want)
		}
	}
}

func TestStatus_Multiline(t *testing.T) {
	conn := listenNotify(t)
	if err := Status("ok\nREADY=1"); err == nil {
		t.Fatal("Status with a newline = nil, want an error")
	}
	// Nothing was sent: the next datagram is the one sent after.
	if err := Status("fine"); err != nil {
		t.Fatal(err)
	}
	if got := conn.Next().Text; got != "STATUS=fine" {
		t.Errorf("notify socket got %q, want STATUS=fine", got)
	}
}

func TestNotify_NoSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	for name, send := range map[string]func() error{
		"Ready": Ready, "Stopping": Stopping, "Status": func() error { return Status("x") },
	} {
		if err := send(); err != nil {
			t.Errorf("%s without NOTIFY_SOCKET = %v, want nil", name, err)
		}
	}
}

func TestNotify_Unreachable(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "nobody-listens"))
	err := Ready()
	if err == nil || !strings.Contains(err.Error(), "READY=1") {
		t.Errorf("Ready to a missing socket = %v, want an error naming READY=1", err)
	}
}

func TestListeners_None(t *testing.T) {
	for _, env := range []map[string]string{
		{"LISTEN_FDS": "", "LISTEN_PID": ""},
		{"LISTEN_FDS": "1", "LISTEN_PID": "1"}, // another process's sockets
	} {
		for k, v := range env {
			t.Setenv(k, v)
		}
		if _, err := Listeners(); !errors.Is(err, ErrNoListeners) {
			t.Errorf("Listeners with %v = %v, want ErrNoListeners", env, err)
		}
	}
}

func TestServer_RunWithoutSockets(t *testing.T) {
	t.Setenv("LISTEN_FDS", "")
	t.Setenv("LISTEN_PID", "")
	if err := (&Server{}).Run(t.Context()); !errors.Is(err, ErrNoListeners) {
		t.Errorf("Run without sockets = %v, want ErrNoListeners", err)
	}
	if err := Serve(nil); !errors.Is(err, ErrNoListeners) {
		t.Errorf("Serve without sockets = %v, want ErrNoListeners", err)
	}
}

func TestServer_BadBounds(t *testing.T) {
	conn := listenNotify(t)
	t.Setenv("LISTEN_FDS", "")
	srv := &Server{Bounds: []time.Duration{time.Second, time.Millisecond}}
	err := srv.Run(t.Context())
	if err == nil || !strings.Contains(err.Error(), "Server.Bounds") {
		t.Errorf("Run with decreasing bounds = %v, want an error naming Server.Bounds", err)
	}
	// It failed before serving: no READY=1.
	if err := Status("after"); err != nil {
		t.Fatal(err)
	}
	if got := conn.Next().Text; got != "STATUS=after" {
		t.Errorf("a failed Run sent %q", got)
	}
}
