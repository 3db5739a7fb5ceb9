package testkit_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/forkd/forkd/internal/testkit"
)

const testTimeout = 10 * time.Second

func connect(t *testing.T, address string) *dbus.Conn {
	t.Helper()
	conn, err := dbus.Connect(address)
	if err != nil {
		t.Fatalf("connect to %s: %v", address, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// busID returns the daemon's unique id (org.freedesktop.DBus.GetId).
func busID(t *testing.T, conn *dbus.Conn) string {
	t.Helper()
	var id string
	if err := conn.BusObject().Call("org.freedesktop.DBus.GetId", 0).Store(&id); err != nil {
		t.Fatalf("GetId: %v", err)
	}
	return id
}

func TestPolicyPath(t *testing.T) {
	p, err := testkit.PolicyPath()
	if err != nil {
		t.Fatal(err)
	}
	// Tests run in their package's directory: the shipped file is ../../systemd/.
	want, err := filepath.Abs("../../systemd/io.github.forkd.conf")
	if err != nil {
		t.Fatal(err)
	}
	if p != want {
		t.Errorf("PolicyPath() = %s, want %s", p, want)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `own_prefix="io.github.forkd"`) {
		t.Errorf("%s does not look like forkd's policy", p)
	}
}

// TestStartBus checks the bus answers at Address and enforces the shipped
// policy over the system bus's baseline: forkd's names may be owned,
// others may not.
func TestStartBus(t *testing.T) {
	d := testkit.StartBus(t)
	if want := "unix:path=" + filepath.Join(d.Dir, "bus"); d.Address != want {
		t.Errorf("Address = %q, want %q", d.Address, want)
	}
	if fi, err := os.Stat(d.Dir); err != nil {
		t.Error(err)
	} else if fi.Mode().Perm() != 0o755 {
		t.Errorf("Dir %s has mode %v, want 0755 (enterable by every user)", d.Dir, fi.Mode().Perm())
	}
	conn := connect(t, d.Address)
	if busID(t, conn) == "" {
		t.Error("the bus has no id")
	}

	reply, err := conn.RequestName("io.github.forkd.testkit", dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Errorf("owning io.github.forkd.testkit: reply %v, err %v; want primary owner", reply, err)
	}
	_, err = conn.RequestName("org.example.NotForkd", dbus.NameFlagDoNotQueue)
	var de dbus.Error
	if !asDBusError(err, &de) || de.Name != "org.freedesktop.DBus.Error.AccessDenied" {
		t.Errorf("owning org.example.NotForkd: %v; want AccessDenied (the baseline policy)", err)
	}
}

func asDBusError(err error, de *dbus.Error) bool {
	switch e := err.(type) {
	case dbus.Error:
		*de = e
		return true
	case *dbus.Error:
		*de = *e
		return true
	}
	return false
}

// TestBus_Restart kills the bus under a client and starts a new one at the
// same address.
func TestBus_Restart(t *testing.T) {
	d := testkit.StartBus(t)
	address := d.Address
	conn := connect(t, address)
	oldID := busID(t, conn)

	d.Restart()
	select {
	case <-conn.Context().Done():
	case <-time.After(testTimeout):
		t.Fatal("the client's connection survived Restart")
	}
	if d.Address != address {
		t.Errorf("Address changed from %s to %s", address, d.Address)
	}
	conn2 := connect(t, d.Address)
	if id := busID(t, conn2); id == oldID {
		t.Errorf("bus id %s unchanged: Restart did not start a new daemon", id)
	}
}

// TestBus_Stop checks Stop is idempotent and the bus is gone after it.
func TestBus_Stop(t *testing.T) {
	d := testkit.StartBus(t)
	d.Stop()
	d.Stop()
	if conn, err := dbus.Connect(d.Address); err == nil {
		conn.Close()
		t.Fatal("connected to a stopped bus")
	}
}

// TestBusDir puts the socket in a given directory; a second daemon there
// replaces the first's leftover socket.
func TestBusDir(t *testing.T) {
	dir := t.TempDir()
	d := testkit.StartBus(t, testkit.BusDir(dir))
	if d.Dir != dir || d.Address != "unix:path="+filepath.Join(dir, "bus") {
		t.Fatalf("Dir %s, Address %s; want the socket in %s", d.Dir, d.Address, dir)
	}
	busID(t, connect(t, d.Address))
	d.Stop() // leaves dir/bus behind (SIGKILL)
	d2 := testkit.StartBus(t, testkit.BusDir(dir))
	busID(t, connect(t, d2.Address))
	if b, err := os.ReadFile(filepath.Join(dir, "bus.conf")); err != nil || !strings.Contains(string(b), "io.github.forkd.conf") {
		t.Errorf("bus.conf in %s: %v; want it to include the shipped policy", dir, err)
	}
}

// TestBus_Pause checks that a paused bus answers nothing, that Resume makes
// it answer again, and that Stop kills a paused daemon.
func TestBus_Pause(t *testing.T) {
	d := testkit.StartBus(t)
	conn := connect(t, d.Address)
	id := busID(t, conn)

	d.Pause()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	call := conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.GetId", 0)
	if !errors.Is(call.Err, context.DeadlineExceeded) {
		t.Fatalf("GetId on a paused bus: %v, want no answer (context.DeadlineExceeded)", call.Err)
	}
	d.Resume()
	if got := busID(t, conn); got != id {
		t.Errorf("after Resume the bus id is %s, want %s", got, id)
	}

	d.Pause()
	stopped := make(chan struct{})
	go func() { d.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(testTimeout):
		t.Fatal("Stop did not kill a paused daemon")
	}
}
