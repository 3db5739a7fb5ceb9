package notify

import (
	"context"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// run starts a socket in t's directory and returns it with a sender
// connected to it; the socket stops when t ends.
func run(t *testing.T) (*Socket, *net.UnixConn) {
	t.Helper()
	s, err := Listen(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if _, err := os.Stat(s.Dir()); !os.IsNotExist(err) {
			t.Errorf("the socket's directory outlived Run: %v", err)
		}
	})
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: s.Path(), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return s, c
}

func say(t *testing.T, c *net.UnixConn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
}

// next waits for c's next batch.
func next(t *testing.T, c *Consumer, d time.Duration) Batch {
	t.Helper()
	select {
	case b := <-c.Notes():
		return b
	case <-time.After(d):
		t.Fatalf("no batch within %s", d)
		return Batch{}
	}
}

// TestSocket_Fallback: what a pid nobody watches sends goes to the
// fallback consumer, with its sender and arrival time.
func TestSocket_Fallback(t *testing.T) {
	s, c := run(t)
	before := time.Now()
	say(t, c, "READY=1\nSTATUS=up")
	b := next(t, s.Fallback(), 5*time.Second)
	if len(b.Notes) != 1 {
		t.Fatalf("batch %+v, want one note", b)
	}
	n := b.Notes[0]
	if n.PID != os.Getpid() || !n.Ready || n.Status != "up" || n.At.Before(before.Add(-time.Second)) {
		t.Errorf("note %+v, want READY=1 STATUS=up from pid %d", n, os.Getpid())
	}
}

// TestSocket_Heartbeats: a watched pid's heartbeats stay with the socket,
// which reports the pid once its deadline passes without one; another
// consumer's pid is that consumer's.
func TestSocket_Heartbeats(t *testing.T) {
	s, c := run(t)
	other := s.NewConsumer()
	const timeout = time.Second
	if err := other.Watch(Watch{PID: os.Getpid(), Timeout: timeout, Since: time.Now()}); err != nil {
		t.Fatal(err)
	}
	var last time.Time
	for range 4 {
		last = time.Now()
		say(t, c, "WATCHDOG=1")
		time.Sleep(timeout / 5) // the sender's heartbeat period, not a synchronization
	}
	say(t, c, "STATUS=hanging")
	b := next(t, other, 5*time.Second)
	if len(b.Notes) != 1 || b.Notes[0].Status != "hanging" || len(b.Missed) != 0 {
		t.Fatalf("first batch %+v, want only the status", b)
	}
	b = next(t, other, 5*time.Second)
	if len(b.Missed) != 1 || b.Missed[0] != os.Getpid() {
		t.Fatalf("batch %+v, want the pid's missed deadline", b)
	}
	if took := time.Since(last); took < timeout {
		t.Errorf("missed %s after the last heartbeat, before the %s timeout", took, timeout)
	}
	select {
	case b := <-s.Fallback().Notes():
		t.Errorf("the fallback got the other consumer's pid: %+v", b)
	default:
	}
}

// TestSocket_Forget: Forget returns, with what already waits on Notes,
// everything the pid sent before it.
func TestSocket_Forget(t *testing.T) {
	s, c := run(t)
	fb := s.Fallback()
	for range 50 {
		say(t, c, "STATUS=x")
	}
	say(t, c, "STOPPING=1")
	rest, err := fb.Forget(context.Background(), os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	var all []Note
	for {
		select {
		case b := <-fb.Notes():
			all = append(all, b.Notes...)
			continue
		default:
		}
		break
	}
	all = append(all, rest.Notes...)
	if len(all) != 51 || !all[50].Stopping {
		t.Fatalf("%d notes, last %+v; want 51, the last STOPPING=1", len(all), all[len(all)-1])
	}
}

// TestSocket_Quiet: with every consumer's leave and known heartbeat rates,
// the socket stops watching for messages and drains the queue on its
// timer; heartbeats drained so keep the pid alive, and a status arrives at
// a drain.
func TestSocket_Quiet(t *testing.T) {
	if MaxDgramQlen() < 10 {
		t.Skip("net.unix.max_dgram_qlen below 10: too small a queue to go quiet")
	}
	s, c := run(t)
	fb := s.Fallback()
	if err := fb.Watch(Watch{PID: os.Getpid(), Timeout: 2 * time.Second, Since: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := fb.AllowQuiet(true); err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(250 * time.Millisecond) // 4 heartbeats a second
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		say(t, c, "WATCHDOG=1")
		st, err := s.Stats(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.Quiet >= 1 && st.Drains >= 2 {
			break
		}
		select {
		case b := <-fb.Notes():
			t.Fatalf("a heartbeating pid was reported: %+v", b)
		case <-deadline:
			t.Fatalf("not quiet and drained twice after 10s: %+v", st)
		case <-tick.C:
		}
	}
	say(t, c, "STATUS=news")
	deadline = time.After(5 * time.Second)
	for {
		select {
		case b := <-fb.Notes():
			if len(b.Notes) != 1 || b.Notes[0].Status != "news" || len(b.Missed) != 0 {
				t.Fatalf("batch %+v, want the status", b)
			}
			return
		case <-tick.C:
			say(t, c, "WATCHDOG=1")
		case <-deadline:
			t.Fatal("the status did not arrive within 5s")
		}
	}
}

// TestSocket_Suspend: a suspended socket's fd survives execve, and Resume
// makes it close-on-exec again.
func TestSocket_Suspend(t *testing.T) {
	s, c := run(t)
	fb := s.Fallback()
	say(t, c, "READY=1")
	sus, err := fb.Suspend(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := len(sus.Pending.Notes)
	select {
	case b := <-fb.Notes():
		got += len(b.Notes)
	default:
	}
	if got != 1 {
		t.Errorf("%d notes before the suspension, want 1", got)
	}
	flags, err := unix.FcntlInt(uintptr(sus.FD), unix.F_GETFD, 0)
	if err != nil || flags&unix.FD_CLOEXEC != 0 {
		t.Errorf("suspended fd %d: flags %#x, %v; want inheritable", sus.FD, flags, err)
	}
	if err := fb.Resume(); err != nil {
		t.Fatal(err)
	}
	say(t, c, "STATUS=back")
	if b := next(t, fb, 5*time.Second); len(b.Notes) != 1 || b.Notes[0].Status != "back" {
		t.Errorf("after Resume: %+v", b)
	}
	flags, err = unix.FcntlInt(uintptr(sus.FD), unix.F_GETFD, 0)
	if err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("resumed fd %d: flags %#x, %v; want close-on-exec", sus.FD, flags, err)
	}
}
