package bus

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/forkd/forkd/hooks"
)

// TestService_NameTakenDropsSignals runs a second Service for an instance whose
// name another Service owns: what it emits meanwhile is dropped and counted,
// not sent once it takes the name over — then only new events are.
func TestService_NameTakenDropsSignals(t *testing.T) {
	d := startBusTestDaemon(t, busTestDir(t))
	client := dialBusTest(t, d.Address)
	client.subscribe(t)
	first := New(Options{Instance: "taken", Address: d.Address})
	ctx1, stop1 := context.WithCancel(context.Background())
	done1 := make(chan error, 1)
	go func() { done1 <- first.Run(ctx1) }()
	defer stop1()
	client.waitOwned(t, first.Name())

	second := New(Options{Instance: "taken", Address: d.Address})
	second.backoffMin, second.backoffMax = time.Millisecond, 5*time.Millisecond
	tries := recordAttempts(second)
	// Emitted before the second Service learns that the name is taken …
	second.Emit(hooks.Event{Hook: hooks.OnStarting, Generation: 0})
	second.Emit(hooks.Event{Hook: hooks.PreFork, Generation: 1, WorkerID: 0})
	runBusUntil(t, second)
	if err := nextAttempt(t, tries, "second Service"); !errors.Is(err, errNameTaken) {
		t.Fatalf("second Service: %v, want errNameTaken", err)
	}
	// … and after.
	second.Emit(hooks.Event{Hook: hooks.PostFork, Generation: 1, WorkerID: 0, PID: 42})
	second.EmitRequestStats(RequestStats{Generation: 1, WorkerID: 0, PID: 42, Requests: 1})
	second.Emit(hooks.Event{Hook: hooks.WhenReady, Generation: 1, Workers: 1})
	if got := second.Dropped(); got != 5 {
		t.Errorf("Dropped() = %d while the name is taken, want the 5 signals emitted", got)
	}

	stop1()
	<-done1
	for {
		err := nextAttempt(t, tries, "second Service after the first stopped")
		if err == nil {
			break
		}
		if !errors.Is(err, errNameTaken) {
			t.Fatalf("second Service: %v, want errNameTaken until it owns the name", err)
		}
	}
	second.Emit(hooks.Event{Hook: hooks.NworkersChanged, Generation: 1, OldWorkers: 1, Workers: 2})
	s := client.nextForkd(t)
	want := []any{"taken", uint64(1), uint32(1), uint32(2)}
	if s.Name != Interface+".NworkersChanged" || !reflect.DeepEqual(s.Body, want) {
		t.Errorf("first signal after taking the name: %s %v, want NworkersChanged %v (nothing from before)", s.Name, s.Body, want)
	}
	if got := second.Dropped(); got != 5 {
		t.Errorf("Dropped() = %d after taking the name, want still 5", got)
	}
}

// TestService_ReconnectDeliversQueued checks the other side of the name rule:
// signals emitted while the bus is away from a Service that owned its name
// wait in the queue and are sent, in order, once the bus is back.
func TestService_ReconnectDeliversQueued(t *testing.T) {
	dir := busTestDir(t)
	d := startBusTestDaemon(t, dir)
	client := dialBusTest(t, d.Address)
	b := New(Options{Instance: "queued", Address: d.Address})
	b.backoffMin, b.backoffMax = time.Millisecond, 5*time.Millisecond
	connected := make(chan struct{})
	proceed := make(chan struct{})
	failed := make(chan error, 256)
	b.onAttempt = func(err error) {
		if err != nil {
			select {
			case failed <- err:
			default:
			}
			return
		}
		select {
		case connected <- struct{}{}:
		case <-time.After(busTestTimeout):
			return
		}
		select {
		case <-proceed:
		case <-time.After(busTestTimeout):
		}
	}
	runBusUntil(t, b)
	<-connected
	proceed <- struct{}{}
	client.waitOwned(t, b.Name())

	d.Stop()
	// Once an attempt failed, the Service knows the bus is away: what it
	// emits now waits for it (a signal sent on the broken connection
	// before the Service noticed would be lost, and counted).
	select {
	case <-failed:
	case <-time.After(busTestTimeout):
		t.Fatal("the Service did not notice the bus went away")
	}
	b.Emit(hooks.Event{Hook: hooks.ChildExit, Generation: 1, WorkerID: 0, PID: 7, ExitCode: 1, Reason: "crashed"})
	b.Emit(hooks.Event{Hook: hooks.WorkerExit, Generation: 1, WorkerID: 0, PID: 7, ExitCode: 1, Reason: "crashed"})
	d2 := startBusTestDaemon(t, dir)
	select {
	case <-connected: // held there until the client listens
	case <-time.After(busTestTimeout):
		t.Fatal("the Service did not reconnect")
	}
	client2 := dialBusTest(t, d2.Address)
	client2.subscribe(t)
	proceed <- struct{}{}
	b.Emit(hooks.Event{Hook: hooks.WhenReady, Generation: 2, Workers: 1})
	for _, want := range []string{"ChildExit", "WorkerExit", "WhenReady"} {
		if s := client2.nextForkd(t); s.Name != Interface+"."+want {
			t.Fatalf("after reconnecting got %s %v, want %s", s.Name, s.Body, want)
		}
	}
	if got := b.Dropped(); got != 0 {
		t.Errorf("Dropped() = %d, want 0: the bus came back", got)
	}
}
