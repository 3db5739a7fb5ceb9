package testkit

import (
	"errors"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Note is one datagram received on a Notify socket.
type Note struct {
	At   time.Time // when it was read off the socket
	Text string
	PID  int32 // the sender's, from its credentials (SO_PASSCRED)
	FDs  []int // passed with it (SCM_RIGHTS); closed when the test ends
}

// Has reports whether the message has the line want.
func (n Note) Has(want string) bool {
	return slices.Contains(strings.Split(n.Text, "\n"), want)
}

// Field returns the value of the message's line "key=…" and whether it
// has one.
func (n Note) Field(key string) (string, bool) {
	for _, line := range strings.Split(n.Text, "\n") {
		if v, ok := strings.CutPrefix(line, key+"="); ok {
			return v, true
		}
	}
	return "", false
}

// flushMarker is the datagram Flush sends itself.
const flushMarker = "TESTKIT_FLUSH=1"

// Notify is a NOTIFY_SOCKET as systemd holds it: a unixgram socket with
// SO_PASSCRED, so that each datagram carries its sender's pid. Nothing is
// read from it until the first call that takes a note (Next, Within, Wait,
// Until, Flush): until then the kernel queues what is sent, and a sender
// sees the queue fill up. From then on a goroutine reads every datagram as
// it arrives, stamps it and keeps it, in order and without bound, for the
// test to take. The socket closes when the test ends.
type Notify struct {
	// Path is the socket's address: a path, or "@name" for an abstract
	// socket. It is what NOTIFY_SOCKET is set to.
	Path string

	t    testing.TB
	conn *net.UnixConn

	reading sync.Once // starts the reader, or marks it never started
	start   func()
	mu      sync.Mutex
	queue   []Note
	fds     []int         // every fd received, to close at the end
	arrived chan struct{} // closed and replaced when a note is queued
	closed  bool          // the reader has stopped
}

// ListenNotify starts a Notify socket named "notify" in t.TempDir().
func ListenNotify(t testing.TB) *Notify {
	t.Helper()
	return ListenNotifyAt(t, filepath.Join(t.TempDir(), "notify"))
}

// ListenNotifyAt starts a Notify socket at addr: a path, or "@name" for an
// abstract socket.
func ListenNotifyAt(t testing.TB, addr string) *Notify {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatalf("testkit: listen on notify socket %s: %v", addr, err)
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		t.Fatalf("testkit: notify socket %s: %v", addr, err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	}); err != nil || serr != nil {
		conn.Close()
		t.Fatalf("testkit: SO_PASSCRED on %s: %v %v", addr, err, serr)
	}
	n := &Notify{Path: addr, t: t, conn: conn, arrived: make(chan struct{})}
	readerDone := make(chan struct{})
	t.Cleanup(func() {
		conn.Close()
		n.reading.Do(func() { close(readerDone) }) // never started
		<-readerDone
		n.mu.Lock()
		defer n.mu.Unlock()
		for _, fd := range n.fds {
			unix.Close(fd)
		}
	})
	n.start = func() { go n.read(readerDone) }
	return n
}

// read moves datagrams from the socket to the queue until it closes.
func (n *Notify) read(done chan<- struct{}) {
	defer close(done)
	defer func() {
		n.mu.Lock()
		n.closed = true
		close(n.arrived)
		n.arrived = make(chan struct{})
		n.mu.Unlock()
	}()
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(253*4)+unix.CmsgSpace(unix.SizeofUcred))
	for {
		k, oobn, _, _, err := n.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		note := Note{At: time.Now(), Text: string(buf[:k])}
		cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			n.t.Errorf("testkit: control messages of %q: %v", note.Text, err)
		}
		for _, c := range cmsgs {
			if c.Header.Level != unix.SOL_SOCKET {
				continue
			}
			switch c.Header.Type {
			case unix.SCM_CREDENTIALS:
				if cred, err := unix.ParseUnixCredentials(&c); err == nil {
					note.PID = cred.Pid
				}
			case unix.SCM_RIGHTS:
				if fds, err := unix.ParseUnixRights(&c); err == nil {
					note.FDs = append(note.FDs, fds...)
				}
			}
		}
		n.mu.Lock()
		n.fds = append(n.fds, note.FDs...)
		n.queue = append(n.queue, note)
		close(n.arrived)
		n.arrived = make(chan struct{})
		n.mu.Unlock()
	}
}

// Within returns the next note, or false when none arrived within d (0:
// only one already received).
func (n *Notify) Within(d time.Duration) (Note, bool) {
	n.t.Helper()
	n.reading.Do(n.start)
	timeout := time.NewTimer(d)
	defer timeout.Stop()
	for {
		n.mu.Lock()
		if len(n.queue) > 0 {
			note := n.queue[0]
			n.queue = n.queue[1:]
			n.mu.Unlock()
			return note, true
		}
		arrived, closed := n.arrived, n.closed
		n.mu.Unlock()
		if closed {
			return Note{}, false
		}
		select {
		case <-arrived:
		case <-timeout.C:
			return Note{}, false
		}
	}
}

// Next returns the next note, failing the test after Deadline.
func (n *Notify) Next() Note {
	n.t.Helper()
	note, ok := n.Within(Deadline)
	if !ok {
		n.t.Fatalf("testkit: no datagram on %s within %v", n.Path, Deadline)
	}
	return note
}

// Until takes notes until ok accepts one, and returns it with those taken
// before it; it fails the test, naming what, after Deadline.
func (n *Notify) Until(what string, ok func(Note) bool) (Note, []Note) {
	n.t.Helper()
	deadline := time.Now().Add(Deadline)
	var before []Note
	for {
		note, got := n.Within(time.Until(deadline))
		if !got {
			n.t.Fatalf("testkit: no %s on %s within %v; before it: %q", what, n.Path, Deadline, texts(before))
		}
		if ok(note) {
			return note, before
		}
		before = append(before, note)
	}
}

// Wait takes notes until one has the line want, and returns it with those
// taken before it; it fails the test after Deadline.
func (n *Notify) Wait(want string) (Note, []Note) {
	n.t.Helper()
	return n.Until(want, func(note Note) bool { return note.Has(want) })
}

// Flush returns every note received and not yet taken, up to now: it
// sends the socket a datagram of its own, which queues behind every
// datagram already sent, and takes notes up to it. Once a sender has
// exited, Flush returns all it sent that the test had not taken.
func (n *Notify) Flush() []Note {
	n.t.Helper()
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.Path, Net: "unixgram"})
	if err != nil {
		n.t.Fatalf("testkit: dial %s: %v", n.Path, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(flushMarker)); err != nil && !errors.Is(err, net.ErrClosed) {
		n.t.Fatalf("testkit: write %s: %v", n.Path, err)
	}
	_, before := n.Until("the flush marker", func(note Note) bool { return note.Text == flushMarker })
	return before
}

// texts lists the notes' texts, for messages.
func texts(notes []Note) []string {
	var s []string
	for _, n := range notes {
		s = append(s, n.Text)
	}
	return s
}
