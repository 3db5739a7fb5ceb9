package bus

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/forkd/forkd/internal/testkit"
	"github.com/forkd/forkd/workers"
)

// busTestTimeout bounds every wait in the bus tests.
const busTestTimeout = 10 * time.Second

// busTestDir returns a fresh directory that every user may enter (the
// unprivileged helper reaches the bus socket and the test binary there).
func busTestDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "forkd-bus-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// startBusTestDaemon starts a private dbus-daemon with the shipped policy
// listening on dir/bus (see testkit.StartBus), skipping the test when
// dbus-daemon is not installed. Starting another on the same dir gives a
// bus at the same address: a bus that went away and came back.
func startBusTestDaemon(t *testing.T, dir string) *testkit.Bus {
	t.Helper()
	return testkit.StartBus(t, testkit.BusDir(dir))
}

// busTestClient is a client connection to a test bus with a signal
// channel large enough to keep signals in order.
type busTestClient struct {
	*dbus.Conn
	signals chan *dbus.Signal
}

func dialBusTest(t *testing.T, address string) *busTestClient {
	t.Helper()
	conn, err := dbus.Connect(address)
	if err != nil {
		t.Fatalf("connect to test bus: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &busTestClient{Conn: conn, signals: make(chan *dbus.Signal, 1024)}
	conn.Signal(c.signals)
	return c
}

// subscribe matches every signal of the forkd interface.
func (c *busTestClient) subscribe(t *testing.T) {
	t.Helper()
	if err := c.AddMatchSignal(dbus.WithMatchInterface(Interface)); err != nil {
		t.Fatalf("add match: %v", err)
	}
}

// waitOwned returns once name has an owner on the bus.
func (c *busTestClient) waitOwned(t *testing.T, name string) {
	t.Helper()
	match := []dbus.MatchOption{
		dbus.WithMatchSender("org.freedesktop.DBus"),
		dbus.WithMatchInterface("org.freedesktop.DBus"),
		dbus.WithMatchMember("NameOwnerChanged"),
		dbus.WithMatchArg(0, name),
	}
	if err := c.AddMatchSignal(match...); err != nil {
		t.Fatalf("add match: %v", err)
	}
	defer c.RemoveMatchSignal(match...)
	var has bool
	if err := c.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, name).Store(&has); err != nil {
		t.Fatalf("NameHasOwner: %v", err)
	}
	deadline := time.After(busTestTimeout)
	for !has {
		select {
		case s := <-c.signals:
			if s.Name == "org.freedesktop.DBus.NameOwnerChanged" && len(s.Body) == 3 && s.Body[0] == name && s.Body[2] != "" {
				has = true
			}
		case <-deadline:
			t.Fatalf("%s was not owned within %v", name, busTestTimeout)
		}
	}
}

// next returns the next signal named name (other signals are skipped).
func (c *busTestClient) next(t *testing.T, name string) *dbus.Signal {
	t.Helper()
	deadline := time.After(busTestTimeout)
	for {
		select {
		case s := <-c.signals:
			if s.Name == name {
				return s
			}
		case <-deadline:
			t.Fatalf("no %s signal within %v", name, busTestTimeout)
		}
	}
}

// nextForkd returns the next signal of the forkd interface.
func (c *busTestClient) nextForkd(t *testing.T) *dbus.Signal {
	t.Helper()
	deadline := time.After(busTestTimeout)
	for {
		select {
		case s := <-c.signals:
			if strings.HasPrefix(s.Name, Interface+".") {
				return s
			}
		case <-deadline:
			t.Fatalf("no forkd signal within %v", busTestTimeout)
		}
	}
}

func (c *busTestClient) object(instance string) dbus.BusObject {
	return c.Object(Name(instance), ObjectPath)
}

// busTestController is the arbiter's stand-in: it records calls and
// returns what the test configured.
type busTestController struct {
	mu         sync.Mutex
	status     workers.Status
	statusErr  error
	workers    []workers.Info
	setErr     error
	setCalls   []int
	reloads    int
	reloadIn   chan struct{} // receives when Reload is entered
	reloadDone chan error    // Reload returns what arrives here
	listeners  []workers.Listener
}

func (c *busTestController) Listeners(context.Context) ([]workers.Listener, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.listeners, nil
}

func newBusTestController() *busTestController {
	return &busTestController{reloadIn: make(chan struct{}, 16), reloadDone: make(chan error, 16)}
}

func (c *busTestController) Reload(ctx context.Context) error {
	c.mu.Lock()
	c.reloads++
	c.mu.Unlock()
	c.reloadIn <- struct{}{}
	select {
	case err := <-c.reloadDone:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *busTestController) SetWorkers(_ context.Context, n int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.setErr != nil {
		return c.setErr
	}
	c.setCalls = append(c.setCalls, n)
	return nil
}

func (c *busTestController) ListWorkers(context.Context) ([]workers.Info, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]workers.Info(nil), c.workers...), nil
}

func (c *busTestController) Status(context.Context) (workers.Status, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status, c.statusErr
}

func (c *busTestController) calls() (reloads int, set []int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reloads, append([]int(nil), c.setCalls...)
}

// runBusTest runs b until the test ends and checks that Run returned nil.
func runBusTest(t *testing.T, b *Service) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v after cancel, want nil", err)
			}
		case <-time.After(busTestTimeout):
			t.Errorf("Run did not return within %v of cancel", busTestTimeout)
		}
	})
}

// busTestLog records log records.
type busTestLog struct {
	mu      sync.Mutex
	records []slog.Record
}

func (l *busTestLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *busTestLog) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r.Clone())
	return nil
}
func (l *busTestLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *busTestLog) WithGroup(string) slog.Handler      { return l }

// at returns the messages logged at level.
func (l *busTestLog) at(level slog.Level) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var msgs []string
	for _, r := range l.records {
		if r.Level == level {
			msgs = append(msgs, r.Message)
		}
	}
	return msgs
}

// dbusErrorName returns the D-Bus error name of err, or "" when err is not
// a D-Bus error.
func dbusErrorName(err error) string {
	var de dbus.Error
	if errors.As(err, &de) {
		return de.Name
	}
	var dep *dbus.Error
	if errors.As(err, &dep) {
		return dep.Name
	}
	return ""
}
