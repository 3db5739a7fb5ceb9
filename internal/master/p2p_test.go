package master

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/forkd/forkd/bus"
	"github.com/forkd/forkd/internal/forkctl"
	"github.com/forkd/forkd/internal/testkit"
)

// noBus is a D-Bus address where no bus answers.
const noBus = "unix:path=/nonexistent/forkd-test/bus"

// monitorP2P runs forkctl monitor (over whatever it falls back to) until
// the returned stop is called, its output in the returned buffer, and
// returns once it is subscribed.
func monitorP2P(t *testing.T, args ...string) (out, errOut *testkit.Buffer, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out, errOut = &testkit.Buffer{}, &testkit.Buffer{}
	done := make(chan error, 1)
	go func() { done <- forkctl.Main(ctx, append(args, "monitor"), out, errOut) }()
	errOut.WaitFor(t, "Monitoring the signals of")
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("forkctl monitor: %v (stderr %q)", err, errOut.String())
		}
	}
	t.Cleanup(stop)
	return out, errOut, stop
}

// TestMaster_PeerToPeer runs forkd where no bus daemon can be reached and
// drives it with forkctl over its peer-to-peer socket: status, scale,
// reload, workers, jobs, upgrade and two monitors at once that see the hook
// signals; a monitor that goes away disturbs neither forkd nor the other,
// and one connected across the upgrade follows the successor.
func TestMaster_PeerToPeer(t *testing.T) {
	// No bus anywhere, for forkd and forkctl alike.
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", noBus)
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", noBus)
	t.Setenv("FORKCTL_SOCKET", "")
	n := testkit.ListenNotify(t)
	f := startForkd(t, setup{instance: "p2p", workers: 2, bus: noBus, notify: n.Path})
	n.Wait("READY=1")
	socket := filepath.Join(filepath.Dir(f.cfgPath), bus.SocketName)
	// As a command in forkd's unit would run it: the socket found in
	// $RUNTIME_DIRECTORY.
	t.Setenv("RUNTIME_DIRECTORY", filepath.Dir(socket))
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		var out, errOut bytes.Buffer
		if err := forkctl.Main(ctx, args, &out, &errOut); err != nil {
			t.Fatalf("forkctl %q: %v (stderr %q)", args, err, errOut.String())
		}
		return out.String()
	}

	out := run("status", "p2p")
	for _, want := range []string{"Instance:        p2p (" + socket + ")", "State:           running", "Workers:         2/2 ready"} {
		if !strings.Contains(out, want) {
			t.Errorf("forkctl status: no %q in\n%s", want, out)
		}
	}
	one, oneErr, _ := monitorP2P(t)
	two, _, stopTwo := monitorP2P(t, "--socket", socket)

	if out := run("scale", "3"); out != "p2p: workers set to 3\n" {
		t.Errorf("forkctl scale 3: %q", out)
	}
	for _, m := range []*testkit.Buffer{one, two} {
		m.WaitFor(t, "p2p NworkersChanged generation=1 old=2 new=3")
	}
	if out := run("reload"); out != "p2p: reloaded, generation 2 serving\n" {
		t.Errorf("forkctl reload: %q", out)
	}
	for _, m := range []*testkit.Buffer{one, two} {
		m.WaitFor(t, "p2p OnReload generation=1")
		m.WaitFor(t, "p2p WhenReady generation=2 workers=3")
	}
	if out := run("workers"); strings.Count(out, " ready ") != 3 {
		t.Errorf("forkctl workers after the reload:\n%s", out)
	}

	stopTwo()
	if out := run("scale", "2", "p2p"); out != "p2p: workers set to 2\n" {
		t.Errorf("forkctl scale 2 after a monitor left: %q", out)
	}
	one.WaitFor(t, "p2p NworkersChanged generation=2 old=3 new=2")
	if out := run("--socket", socket, "status"); !strings.Contains(out, "Generation:      2") {
		t.Errorf("forkctl --socket status:\n%s", out)
	}
	if out := run("--user", "status"); !strings.Contains(out, "Instance:        p2p ("+socket+")") {
		t.Errorf("forkctl --user status with no session bus:\n%s", out)
	}
	if out := run("jobs"); !strings.HasPrefix(out, "NAME ") {
		t.Errorf("forkctl jobs:\n%s", out)
	}

	// An upgrade in place closes the connections; the successor serves the
	// socket again once it is up (its READY=1, after the reload's), and
	// the monitor connects to it again.
	if out := run("upgrade"); !strings.Contains(out, "p2p: upgrade under way") {
		t.Errorf("forkctl upgrade: %q", out)
	}
	readies := 0
	n.Until("the reload's READY=1 and the successor's", func(note testkit.Note) bool {
		if note.Has("READY=1") {
			readies++
		}
		return readies == 2
	})
	out = run("status")
	for _, want := range []string{"State:           running", "Generation:      2", "Workers:         2/2 ready"} {
		if !strings.Contains(out, want) {
			t.Errorf("forkctl status after the upgrade: no %q in\n%s", want, out)
		}
	}
	oneErr.WaitFor(t, "connected to "+socket+" again")
	run("scale", "1")
	one.WaitFor(t, "p2p NworkersChanged generation=2 old=2 new=1")
}

// TestMaster_PeerToPeerOwnUnit: with no instance named, forkctl run with
// $RUNTIME_DIRECTORY set — a command of forkd's own unit, such as its
// ExecReload= — talks to that unit's instance, though another answers too;
// without it, it asks which.
func TestMaster_PeerToPeerOwnUnit(t *testing.T) {
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", noBus)
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", noBus)
	t.Setenv("FORKCTL_SOCKET", "")
	sockets := map[string]string{}
	for _, name := range []string{"own", "other"} {
		n := testkit.ListenNotify(t)
		f := startForkd(t, setup{instance: name, workers: 1, bus: noBus, notify: n.Path})
		n.Wait("READY=1")
		sockets[name] = filepath.Join(filepath.Dir(f.cfgPath), bus.SocketName)
	}
	// Both where forkctl looks for a user's instances.
	xdg := t.TempDir()
	for name, socket := range sockets {
		if err := os.MkdirAll(filepath.Join(xdg, "forkd", name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(socket, filepath.Join(xdg, "forkd", name, bus.SocketName)); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("XDG_RUNTIME_DIR", xdg)
	scale := func() (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		var out, errOut bytes.Buffer
		err := forkctl.Main(ctx, []string{"scale", "2"}, &out, &errOut)
		return out.String(), err
	}

	t.Setenv("RUNTIME_DIRECTORY", "")
	if out, err := scale(); !errors.Is(err, forkctl.ErrSeveralInstances) {
		t.Errorf("forkctl scale 2 with two instances and no RUNTIME_DIRECTORY: %v, want %v\n%s", err, forkctl.ErrSeveralInstances, out)
	}
	t.Setenv("RUNTIME_DIRECTORY", filepath.Dir(sockets["own"]))
	if out, err := scale(); err != nil || out != "own: workers set to 2\n" {
		t.Errorf("forkctl scale 2 in own's unit: %q, %v; want own scaled", out, err)
	}
}

// TestMaster_PeerToPeerNotFound checks what forkctl says when neither the
// bus nor a socket answers: both, and where it looked.
func TestMaster_PeerToPeerNotFound(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", noBus)
	t.Setenv("RUNTIME_DIRECTORY", dir)
	t.Setenv("FORKCTL_SOCKET", "")
	var out, errOut bytes.Buffer
	err := forkctl.Main(context.Background(), []string{"status", "nowhere"}, &out, &errOut)
	if err == nil {
		t.Fatalf("forkctl status with no bus and no socket succeeded: %q", out.String())
	}
	for _, want := range []string{"connect to the system bus", "/nonexistent/forkd-test/bus",
		"no forkd peer-to-peer socket answered", filepath.Join(dir, bus.SocketName), "/run/forkd/nowhere/bus.sock"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}
