package bench

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/forkd/forkd/bench/benchworker"
)

// ErrTimeout is returned by Inbox.Wait when the deadline passes first.
var ErrTimeout = errors.New("bench: timed out")

// Message is one datagram an Inbox received.
type Message struct {
	// At is when the Inbox read it.
	At time.Time
	// Data is its payload.
	Data string
}

// Event is a probe datagram, "KIND PID UNIX-NANOS", parsed.
type Event struct {
	// Kind is one of benchworker's KindStart, KindReady, KindHang and
	// KindStop.
	Kind string
	// PID is the sender's pid.
	PID int
	// At is the sender's timestamp.
	At time.Time
}

// Inbox is a unixgram socket that records every datagram it receives with
// its arrival time: the probe socket workers report to, or the
// NOTIFY_SOCKET a master sends READY=1 to.
type Inbox struct {
	conn *net.UnixConn
	path string
	done chan struct{}

	mu      sync.Mutex
	msgs    []Message
	changed chan struct{} // closed and replaced on every message
}

// ListenInbox binds a unixgram socket at path (which must not exist) and
// starts recording what arrives there until Close.
func ListenInbox(path string) (*Inbox, error) {
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("listen on inbox %s: %w", path, err)
	}
	// Room for a thousand workers' start and ready datagrams at once.
	conn.SetReadBuffer(4 << 20)
	in := &Inbox{conn: conn, path: path, done: make(chan struct{}), changed: make(chan struct{})}
	go in.read()
	return in, nil
}

// Path returns the socket's path.
func (in *Inbox) Path() string { return in.path }

// read records datagrams until the socket is closed.
func (in *Inbox) read() {
	defer close(in.done)
	buf := make([]byte, 4096)
	for {
		n, err := in.conn.Read(buf)
		if err != nil {
			return
		}
		at := time.Now()
		in.mu.Lock()
		in.msgs = append(in.msgs, Message{At: at, Data: string(buf[:n])})
		close(in.changed)
		in.changed = make(chan struct{})
		in.mu.Unlock()
	}
}

// Messages returns a copy of everything received so far, oldest first.
func (in *Inbox) Messages() []Message {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]Message(nil), in.msgs...)
}

// Events returns the probe events received so far, oldest first; datagrams
// that are not probe events are left out.
func (in *Inbox) Events() []Event {
	return ParseEvents(in.Messages())
}

// Wait blocks until done, called with everything received so far each time
// a datagram arrives (and once at first), reports true, or until timeout. It
// returns the messages done accepted, or an error wrapping ErrTimeout with
// what.
func (in *Inbox) Wait(timeout time.Duration, what string, done func([]Message) bool) ([]Message, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		in.mu.Lock()
		msgs := append([]Message(nil), in.msgs...)
		changed := in.changed
		in.mu.Unlock()
		if done(msgs) {
			return msgs, nil
		}
		select {
		case <-changed:
		case <-deadline.C:
			return msgs, fmt.Errorf("wait %v for %s on %s: %w", timeout, what, in.path, ErrTimeout)
		}
	}
}

// WaitEvents is Wait for probe events.
func (in *Inbox) WaitEvents(timeout time.Duration, what string, done func([]Event) bool) ([]Event, error) {
	msgs, err := in.Wait(timeout, what, func(m []Message) bool { return done(ParseEvents(m)) })
	return ParseEvents(msgs), err
}

// Close stops recording and removes the socket file.
func (in *Inbox) Close() error {
	err := in.conn.Close()
	<-in.done
	os.Remove(in.path)
	return err
}

// ParseEvents returns the probe events among msgs, in order.
func ParseEvents(msgs []Message) []Event {
	var evs []Event
	for _, m := range msgs {
		if ev, ok := ParseEvent(m.Data); ok {
			evs = append(evs, ev)
		}
	}
	return evs
}

// ParseEvent parses "KIND PID UNIX-NANOS" and reports whether data was one.
func ParseEvent(data string) (Event, bool) {
	f := strings.Fields(data)
	if len(f) != 3 {
		return Event{}, false
	}
	switch f[0] {
	case benchworker.KindStart, benchworker.KindReady, benchworker.KindHang, benchworker.KindStop:
	default:
		return Event{}, false
	}
	pid, err1 := strconv.Atoi(f[1])
	ns, err2 := strconv.ParseInt(f[2], 10, 64)
	if err1 != nil || err2 != nil || pid <= 0 {
		return Event{}, false
	}
	return Event{Kind: f[0], PID: pid, At: time.Unix(0, ns)}, true
}

// FirstReady returns when the first sd_notify datagram with a READY=1 line
// arrived, and whether one did.
func FirstReady(msgs []Message) (time.Time, bool) {
	for _, m := range msgs {
		for _, line := range strings.Split(m.Data, "\n") {
			if line == "READY=1" {
				return m.At, true
			}
		}
	}
	return time.Time{}, false
}
