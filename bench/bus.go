package bench

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/forkd/forkd/bus"
)

// ErrNoBusDaemon is returned by StartBusDaemon when dbus-daemon is not
// installed.
var ErrNoBusDaemon = errors.New("bench: dbus-daemon not installed (apt-get install dbus-daemon)")

// busConfig is a private bus that lets everyone own any name, call any
// method and see every signal: the benchmarks measure latency, not policy.
const busConfig = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path=%s</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
`

// BusDaemon is a private dbus-daemon on a unix socket of its own.
type BusDaemon struct {
	// Address is the bus's address, for forkd --bus and dbus.Connect.
	Address string
	proc    *Process
	dir     string
}

// StartBusDaemon starts dbus-daemon on a socket in a new temporary
// directory, with a policy that allows everything, and returns once it
// has printed its address. It returns an error wrapping ErrNoBusDaemon
// when dbus-daemon is not installed.
func StartBusDaemon() (*BusDaemon, error) {
	bin, err := exec.LookPath("dbus-daemon")
	if err != nil {
		return nil, ErrNoBusDaemon
	}
	dir, err := os.MkdirTemp("", "forkd-bench-bus-")
	if err != nil {
		return nil, fmt.Errorf("make the bus's directory: %w", err)
	}
	conf := filepath.Join(dir, "bus.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(busConfig, filepath.Join(dir, "bus"))), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("write the bus's config: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start dbus-daemon: %w", err)
	}
	defer r.Close()
	// fd 3 of dbus-daemon is w: it prints its address there.
	p, err := Start([]string{bin, "--config-file=" + conf, "--print-address=3", "--nofork", "--nopidfile"},
		os.Environ(), "", w)
	w.Close()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	d := &BusDaemon{proc: p, dir: dir}
	addr := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(r).ReadString('\n')
		addr <- strings.TrimSpace(line)
	}()
	select {
	case a := <-addr:
		if a == "" {
			d.Close()
			return nil, fmt.Errorf("start dbus-daemon: no address printed: %v\n%s", p.Err(), p.Output())
		}
		d.Address = a
	case <-time.After(10 * time.Second):
		d.Close()
		return nil, fmt.Errorf("start dbus-daemon: no address within 10s\n%s", p.Output())
	}
	return d, nil
}

// Close stops the daemon and removes its directory.
func (d *BusDaemon) Close() error {
	err := d.proc.Stop(5 * time.Second)
	os.RemoveAll(d.dir)
	return err
}

// Signal is a D-Bus signal a SignalLog received.
type Signal struct {
	// At is when the subscriber's goroutine took it from the connection.
	At time.Time
	// Name is the member ("PostFork").
	Name string
	// Body is its arguments.
	Body []any
}

// PID returns the signal's "pid" argument (the fourth, for the worker
// hooks: instance, generation, worker_id, pid …) and whether it has one.
func (s Signal) PID() (int, bool) {
	if len(s.Body) < 4 {
		return 0, false
	}
	pid, ok := s.Body[3].(uint32)
	return int(pid), ok
}

// SignalLog is a bus connection subscribed to every signal of forkd's
// interface (bus.Interface), recording each with its arrival time.
type SignalLog struct {
	conn *dbus.Conn
	ch   chan *dbus.Signal
	done chan struct{}

	mu      sync.Mutex
	sigs    []Signal
	changed chan struct{} // closed and replaced on every signal
}

// WatchSignals connects to the bus at address and subscribes to forkd's
// signals.
func WatchSignals(address string) (*SignalLog, error) {
	conn, err := dbus.Connect(address)
	if err != nil {
		return nil, fmt.Errorf("connect to the bus at %s: %w", address, err)
	}
	if err := conn.AddMatchSignal(dbus.WithMatchInterface(bus.Interface)); err != nil {
		conn.Close()
		return nil, fmt.Errorf("subscribe to %s signals: %w", bus.Interface, err)
	}
	l := &SignalLog{conn: conn, ch: make(chan *dbus.Signal, 4096), done: make(chan struct{}),
		changed: make(chan struct{})}
	conn.Signal(l.ch)
	go l.read()
	return l, nil
}

// read records signals until the connection closes.
func (l *SignalLog) read() {
	defer close(l.done)
	for s := range l.ch {
		at := time.Now()
		if s.Path != bus.ObjectPath {
			continue
		}
		name := strings.TrimPrefix(s.Name, bus.Interface+".")
		l.mu.Lock()
		l.sigs = append(l.sigs, Signal{At: at, Name: name, Body: s.Body})
		close(l.changed)
		l.changed = make(chan struct{})
		l.mu.Unlock()
	}
}

// Conn returns the connection, for method calls.
func (l *SignalLog) Conn() *dbus.Conn { return l.conn }

// Signals returns a copy of the signals received so far, oldest first.
func (l *SignalLog) Signals() []Signal {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Signal(nil), l.sigs...)
}

// Wait blocks until done, called with every signal so far once at first
// and again on each arrival, reports true, or until timeout; it returns the
// signals done accepted, or an error wrapping ErrTimeout with what.
func (l *SignalLog) Wait(timeout time.Duration, what string, done func([]Signal) bool) ([]Signal, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		sigs := append([]Signal(nil), l.sigs...)
		changed := l.changed
		l.mu.Unlock()
		if done(sigs) {
			return sigs, nil
		}
		select {
		case <-changed:
		case <-deadline.C:
			return sigs, fmt.Errorf("wait %v for %s on the bus: %w", timeout, what, ErrTimeout)
		}
	}
}

// Close closes the connection.
func (l *SignalLog) Close() error {
	err := l.conn.Close()
	<-l.done
	return err
}
