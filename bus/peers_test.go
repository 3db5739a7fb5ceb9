package bus

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/forkd/forkd/hooks"
	"github.com/forkd/forkd/workers"
)

// peerTestClient is a peer-to-peer client of a Service's socket, with a
// signal channel large enough to keep signals in order.
type peerTestClient struct {
	*dbus.Conn
	signals chan *dbus.Signal
}

// dialPeerTest connects to the socket at path as forkctl does: no Hello.
func dialPeerTest(t *testing.T, path string) *peerTestClient {
	t.Helper()
	conn, err := dbus.Dial(SocketAddress(path))
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	if err := conn.Auth(nil); err != nil {
		conn.Close()
		t.Fatalf("authenticate to %s: %v", path, err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &peerTestClient{Conn: conn, signals: make(chan *dbus.Signal, 1024)}
	conn.Signal(c.signals)
	// What monitor does on a bus: answered, not an error.
	if err := conn.AddMatchSignal(dbus.WithMatchInterface(Interface)); err != nil {
		t.Fatalf("AddMatch on the peer connection: %v", err)
	}
	return c
}

// next returns the next signal named name (others are skipped).
func (c *peerTestClient) next(t *testing.T, name string) *dbus.Signal {
	t.Helper()
	deadline := time.After(busTestTimeout)
	for {
		select {
		case s, ok := <-c.signals:
			if !ok {
				t.Fatalf("connection closed while waiting for %s", name)
			}
			if s.Name == name {
				return s
			}
		case <-deadline:
			t.Fatalf("no %s signal within %v", name, busTestTimeout)
		}
	}
}

func (c *peerTestClient) object() dbus.BusObject { return c.Object("", ObjectPath) }

// TestService_Peers serves a Service with no bus on its socket only: two
// peers at once call its methods, read its properties and both receive
// every signal and PropertiesChanged; a peer that goes away, cleanly or in
// the middle of its handshake, disturbs neither the Service nor the other
// peer; the socket is gone once Run returns.
func TestService_Peers(t *testing.T) {
	socket := filepath.Join(busTestDir(t), "forkd", "peers", SocketName)
	ctl := newBusTestController()
	ctl.status = workers.Status{State: "running", Generation: 1, Workers: 2, ReadyWorkers: 2}
	b := New(Options{Instance: "peers", Address: "none", Socket: socket, Controller: ctl})
	if fi, err := os.Stat(socket); err != nil || fi.Mode()&0o777 != 0o666 {
		t.Fatalf("socket after New: %v, %v; want mode 0666", fi, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(cancel) // on failure; Run's return is checked below

	one, two := dialPeerTest(t, socket), dialPeerTest(t, socket)
	var all map[string]dbus.Variant
	if err := one.object().Call("org.freedesktop.DBus.Properties.GetAll", 0, Interface).Store(&all); err != nil {
		t.Fatalf("GetAll: %v", err)
	}
	if all["Instance"].Value() != "peers" || all["State"].Value() != "running" {
		t.Errorf("GetAll: %v", all)
	}
	if err := two.object().Call(Interface+".SetWorkers", 0, uint32(5)).Err; err != nil {
		t.Errorf("SetWorkers over the socket: %v", err)
	}
	if _, set := ctl.calls(); len(set) != 1 || set[0] != 5 {
		t.Errorf("controller got SetWorkers %v, want [5]", set)
	}
	if err := one.BusObject().Call("org.freedesktop.DBus.RemoveMatch", 0, "type='signal'").Err; err != nil {
		t.Errorf("RemoveMatch: %v", err)
	}

	b.Emit(hooks.Event{Hook: hooks.OnStarting, Generation: 1})
	for i, c := range []*peerTestClient{one, two} {
		s := c.next(t, Interface+".OnStarting")
		if len(s.Body) != 2 || s.Body[0] != "peers" || s.Body[1] != uint64(1) {
			t.Errorf("peer %d: OnStarting %v", i+1, s.Body)
		}
	}

	// One peer goes away cleanly, another in the middle of its handshake.
	one.Close()
	half, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := half.Write([]byte("\x00AUTH EXTERNAL")); err != nil {
		t.Fatal(err)
	}
	half.Close()

	b.UpdateStatus(workers.Status{State: "reloading", Generation: 2, Workers: 2, ReadyWorkers: 2})
	s := two.next(t, "org.freedesktop.DBus.Properties.PropertiesChanged")
	changed, _ := s.Body[1].(map[string]dbus.Variant)
	if changed["State"].Value() != "reloading" || changed["Generation"].Value() != uint64(2) {
		t.Errorf("PropertiesChanged %v", s.Body)
	}
	b.Emit(hooks.Event{Hook: hooks.WhenReady, Generation: 2, Workers: 2})
	two.next(t, Interface+".WhenReady")
	three := dialPeerTest(t, socket)
	var state dbus.Variant
	if err := three.object().Call("org.freedesktop.DBus.Properties.Get", 0, Interface, "State").Store(&state); err != nil ||
		state.Value() != "reloading" {
		t.Errorf("a new peer after the others left reads State %v, %v", state, err)
	}

	// on_exit, emitted just before Run is cancelled, still reaches the peers.
	b.Emit(hooks.Event{Hook: hooks.OnExit, Generation: 2, Reason: "stopped"})
	cancel()
	two.next(t, Interface+".OnExit")
	select {
	case <-done:
	case <-time.After(busTestTimeout):
		t.Fatal("Run did not return")
	}
	if _, err := os.Lstat(socket); !os.IsNotExist(err) {
		t.Errorf("socket left behind after Run: %v", err)
	}
	if _, err := os.Lstat(filepath.Dir(socket)); !os.IsNotExist(err) {
		t.Errorf("the directory Run created for the socket is left behind: %v", err)
	}
	if _, err := os.Lstat(filepath.Dir(filepath.Dir(socket))); err != nil {
		t.Errorf("the directory above it was removed too: %v", err)
	}
}

// TestService_PeerSocketInUse checks that a socket left by a process that
// is gone is replaced, and that one a live process serves is left alone.
func TestService_PeerSocketInUse(t *testing.T) {
	dir := busTestDir(t)
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close() // the file stays, nobody listens
	b := New(Options{Instance: "stale", Address: "none", Socket: stale})
	runBusTest(t, b)
	dialPeerTest(t, stale)

	other := New(Options{Instance: "stale", Address: "none", Socket: stale, Logger: slog.New(&busTestLog{})})
	runBusTest(t, other)
	// The first Service still serves it.
	c := dialPeerTest(t, stale)
	var name dbus.Variant
	if err := c.object().Call("org.freedesktop.DBus.Properties.Get", 0, Interface, "Instance").Store(&name); err != nil {
		t.Fatalf("the first Service no longer answers: %v", err)
	}
	if other.peers.listenErr == nil {
		t.Error("a second Service took over a socket in use")
	}

	notSocket := filepath.Join(dir, "file")
	if err := os.WriteFile(notSocket, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if p := newPeers(New(Options{Address: "none"}), notSocket); p.listenErr == nil || p.madeDir {
		p.l.Close()
		t.Error("a regular file was replaced by the socket")
	}
}

func TestSocketPath(t *testing.T) {
	t.Setenv("RUNTIME_DIRECTORY", "/run/forkd/web:/run/other")
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/1000")
	if p, err := SocketPath("web"); err != nil || p != "/run/forkd/web/bus.sock" {
		t.Errorf("under systemd: %q, %v", p, err)
	}
	if got := SocketPatterns(""); len(got) != 3 || got[0] != "/run/forkd/web/bus.sock" ||
		got[1] != "/run/forkd/*/bus.sock" || got[2] != "/run/user/1000/forkd/*/bus.sock" {
		t.Errorf("SocketPatterns(\"\") = %q", got)
	}
	if got := SocketPatterns("a*b"); got[1] != `/run/forkd/a\*b/bus.sock` {
		t.Errorf("SocketPatterns(\"a*b\") = %q: the name is not a pattern", got)
	}
	t.Setenv("RUNTIME_DIRECTORY", "")
	want := "/run/user/1000/forkd/web/bus.sock"
	if os.Geteuid() == 0 {
		want = "/run/forkd/web/bus.sock"
	}
	if p, err := SocketPath("web"); err != nil || p != want {
		t.Errorf("without systemd: %q, %v; want %q", p, err, want)
	}
	if p, err := SocketPath(".."); err == nil {
		t.Errorf(`SocketPath("..") = %q`, p)
	}
	if got := SocketAddress("/tmp/a b,c=d/bus.sock"); got != "unix:path=/tmp/a%20b%2cc%3dd/bus.sock" {
		t.Errorf("SocketAddress: %q", got)
	}
}
