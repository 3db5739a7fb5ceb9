package forkctl

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/forkd/forkd/bus"
	"github.com/forkd/forkd/internal/testkit"
	"github.com/forkd/forkd/workers"
)

// testTimeout bounds every wait in these tests.
const testTimeout = 10 * time.Second

// startDaemon starts a private dbus-daemon with the shipped forkd policy
// (see testkit.StartBus) and returns its address; it skips the test when
// dbus-daemon is missing.
func startDaemon(t *testing.T) string {
	t.Helper()
	return testkit.StartBus(t).Address
}

// testController stands in for the arbiter behind a real bus.Service.
type testController struct {
	mu        sync.Mutex
	status    workers.Status
	workers   []workers.Info
	reloadErr error
	reloads   int
	set       []int
	listeners []workers.Listener
}

func (c *testController) Listeners(context.Context) ([]workers.Listener, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.listeners, nil
}

func (c *testController) Reload(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reloads++
	if c.reloadErr == nil {
		c.status.Generation++
	}
	return c.reloadErr
}

func (c *testController) SetWorkers(_ context.Context, n int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.set = append(c.set, n)
	return nil
}

func (c *testController) ListWorkers(context.Context) ([]workers.Info, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]workers.Info(nil), c.workers...), nil
}

func (c *testController) Status(context.Context) (workers.Status, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status, nil
}

// startBus runs a bus.Service for instance on address until the test ends
// and returns once it owns its name.
func startBus(t *testing.T, address, instance string, ctl bus.Controller) *bus.Service {
	t.Helper()
	b := bus.New(bus.Options{Instance: instance, Address: address, Controller: ctl})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(testTimeout):
			t.Errorf("bus %s did not stop", instance)
		}
	})
	waitOwned(t, address, b.Name())
	return b
}

// waitOwned returns once name has an owner on the bus at address.
func waitOwned(t *testing.T, address, name string) {
	t.Helper()
	conn, err := dbus.Connect(address)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	signals := make(chan *dbus.Signal, 64)
	conn.Signal(signals)
	if err := conn.AddMatchSignal(dbus.WithMatchMember("NameOwnerChanged"), dbus.WithMatchArg(0, name)); err != nil {
		t.Fatal(err)
	}
	var has bool
	if err := conn.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, name).Store(&has); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(testTimeout)
	for !has {
		select {
		case s := <-signals:
			has = len(s.Body) == 3 && s.Body[0] == name && s.Body[2] != ""
		case <-deadline:
			t.Fatalf("%s not owned within %v", name, testTimeout)
		}
	}
}
