package bus

import (
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/forkd/forkd/hooks"
	"github.com/forkd/forkd/internal/testkit"
)

// busStopBound is how soon Run must return once cancelled, whatever the
// bus does: the drain's second and slack for the race detector.
const busStopBound = drainTimeout + 2*time.Second

// silentBus is a unix socket that accepts connections and never reads
// from or writes to them: a bus that does not answer.
type silentBus struct {
	address  string
	accepted chan struct{} // receives once per accepted connection
}

// startSilentBus listens on a socket in a fresh directory until the test
// ends.
func startSilentBus(t *testing.T) *silentBus {
	t.Helper()
	path := filepath.Join(t.TempDir(), "silent")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	s := &silentBus{address: "unix:path=" + path, accepted: make(chan struct{}, 64)}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			select {
			case s.accepted <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return s
}

// runBusUntil runs b and returns a function — also run when the test ends
// — that cancels it and fails the test unless Run returns nil within
// busStopBound.
func runBusUntil(t *testing.T, b *Service) (stop func()) {
	t.Helper()
	return testkit.RunWithin(t, busStopBound, b.Run)
}

// recordAttempts records the results of a Service's connection attempts, the
// latest 256 of them: when the test reads none for a while, the oldest go.
func recordAttempts(b *Service) <-chan error {
	c := make(chan error, 256)
	b.onAttempt = func(err error) {
		for {
			select {
			case c <- err:
				return
			default:
			}
			select {
			case <-c:
			default:
			}
		}
	}
	return c
}

// nextAttempt returns the result of the Service's next connection attempt.
func nextAttempt(t *testing.T, c <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-c:
		return err
	case <-time.After(busTestTimeout):
		t.Fatalf("%s: no connection attempt within %v", what, busTestTimeout)
		return nil
	}
}

// TestService_SilentBus points a Service at a socket that accepts and never
// answers: connecting must time out with the one warning of a missing
// bus, and Run goes on retrying.
func TestService_SilentBus(t *testing.T) {
	silent := startSilentBus(t)
	log := &busTestLog{}
	b := New(Options{Instance: "silent", Address: silent.address, Logger: slog.New(log)})
	b.connectTimeout = 50 * time.Millisecond
	b.backoffMin, b.backoffMax = time.Millisecond, 2*time.Millisecond
	tries := recordAttempts(b)
	b.Emit(hooks.Event{Hook: hooks.OnStarting})
	stop := runBusUntil(t, b)
	for i := 0; i < 3; i++ {
		err := nextAttempt(t, tries, "a bus that never answers")
		if !errors.Is(err, errUnresponsive) {
			t.Fatalf("attempt %d: %v, want errUnresponsive", i, err)
		}
	}
	stop()
	warns := log.at(slog.LevelWarn)
	if len(warns) != 1 || warns[0] != "no D-Bus: hook signals disabled, serving anyway" {
		t.Errorf("warnings %q after 3 attempts timed out, want exactly one \"no D-Bus…\"", warns)
	}
	if got := b.Dropped(); got != 1 {
		t.Errorf("Dropped() = %d after stopping with OnStarting unsent, want 1", got)
	}
}

// TestService_StopWhileConnecting cancels Run while it waits for a bus that
// does not answer, long before the connect timeout: Run returns at once.
func TestService_StopWhileConnecting(t *testing.T) {
	silent := startSilentBus(t)
	b := New(Options{Instance: "silent-stop", Address: silent.address})
	b.connectTimeout = time.Hour
	stop := runBusUntil(t, b)
	select {
	case <-silent.accepted:
	case <-time.After(busTestTimeout):
		t.Fatal("Run did not connect to the socket")
	}
	stop()
}

// bigEvent is an event whose signal is large: a few of them fill the
// socket buffers of a bus that does not read.
func bigEvent(i int) hooks.Event {
	return hooks.Event{Hook: hooks.WorkerAbort, Generation: 1, WorkerID: i, PID: 1000 + i, Reason: strings.Repeat("x", 1<<20)}
}

// TestService_StopWithPausedBus stops a Service whose bus stopped reading while
// it had signals to send: Run returns within the drain's bound, and what
// it could not send is counted and logged.
func TestService_StopWithPausedBus(t *testing.T) {
	d := startBusTestDaemon(t, busTestDir(t))
	client := dialBusTest(t, d.Address)
	log := &busTestLog{}
	b := New(Options{Instance: "paused-stop", Address: d.Address, Logger: slog.New(log)})
	stop := runBusUntil(t, b)
	client.waitOwned(t, b.Name())

	d.Pause()
	// Killed first (cleanups run last in, first out): the write the Service
	// gave up fails, and its goroutine ends.
	t.Cleanup(d.Stop)
	const n = 8
	for i := 0; i < n; i++ {
		b.Emit(bigEvent(i))
	}
	b.Emit(hooks.Event{Hook: hooks.OnExit, Reason: "stopped"})
	stop()
	if got := b.Dropped(); got == 0 || got > n+1 {
		t.Errorf("Dropped() = %d, want 1…%d: %d MiB cannot reach a paused bus", got, n+1, n)
	}
	var found bool
	for _, w := range log.at(slog.LevelWarn) {
		found = found || strings.Contains(w, "not sent")
	}
	if !found {
		t.Errorf("warnings %q: want one saying signals were not sent", log.at(slog.LevelWarn))
	}
}

// TestService_PausedBusReconnects pauses the bus under a connected Service: a
// write that does not complete counts as a lost connection (one
// warning), attempts time out while the bus is paused, and once it
// resumes the Service owns its name again and sends.
func TestService_PausedBusReconnects(t *testing.T) {
	d := startBusTestDaemon(t, busTestDir(t))
	client := dialBusTest(t, d.Address)
	log := &busTestLog{}
	b := New(Options{Instance: "paused", Address: d.Address, Logger: slog.New(log)})
	b.connectTimeout, b.sendTimeout = time.Second, time.Second
	b.backoffMin, b.backoffMax = time.Millisecond, 20*time.Millisecond
	tries := recordAttempts(b)
	runBusUntil(t, b)
	if err := nextAttempt(t, tries, "first connection"); err != nil {
		t.Fatalf("first connection: %v", err)
	}
	client.waitOwned(t, b.Name())

	d.Pause()
	t.Cleanup(d.Stop)
	for i := 0; i < 8; i++ {
		b.Emit(bigEvent(i))
	}
	// The next attempt follows the connection's loss.
	if err := nextAttempt(t, tries, "paused bus"); !errors.Is(err, errUnresponsive) {
		t.Fatalf("attempt on a paused bus: %v, want errUnresponsive", err)
	}
	warns := log.at(slog.LevelWarn)
	if len(warns) != 1 || !strings.HasPrefix(warns[0], "D-Bus connection lost") {
		t.Errorf("warnings %q, want one \"D-Bus connection lost…\"", warns)
	}

	d.Resume()
	for {
		err := nextAttempt(t, tries, "resumed bus")
		if err == nil {
			break
		}
		if errors.Is(err, errNameTaken) {
			t.Fatalf("attempt on the resumed bus: %v; the old connection is this Service's own", err)
		}
	}
	client.subscribe(t)
	b.Emit(hooks.Event{Hook: hooks.WhenReady, Generation: 2, Workers: 1})
	for {
		s := client.nextForkd(t)
		if s.Name == Interface+".WhenReady" {
			break
		}
	}
	for _, w := range log.at(slog.LevelWarn) {
		if strings.Contains(w, "name taken") {
			t.Errorf("warning %q: the name was held by the Service's own lost connection", w)
		}
	}
}
