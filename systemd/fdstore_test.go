package systemd

import (
	"bufio"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

func TestNotifier_StoreFDs(t *testing.T) {
	r := listenTemp(t)
	n := NewNotifier()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	unixPath := t.TempDir() + "/web.sock"
	uln, err := net.Listen("unix", unixPath)
	if err != nil {
		t.Fatal(err)
	}
	defer uln.Close()
	uf, err := uln.(*net.UnixListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer uf.Close()

	if err := n.StoreFDs("web", f, uf); err != nil {
		t.Fatalf("StoreFDs: %v", err)
	}
	m := r.Next()
	if m.Text != "FDSTORE=1\nFDNAME=web" {
		t.Errorf("message = %q, want FDSTORE=1 and FDNAME=web", m.Text)
	}
	if len(m.FDs) != 2 {
		t.Fatalf("received %d fds, want 2", len(m.FDs))
	}

	// The received descriptors are the listening sockets: accept on them.
	for i, addr := range []net.Addr{ln.Addr(), uln.Addr()} {
		got, err := net.FileListener(os.NewFile(uintptr(m.FDs[i]), "stored"))
		if err != nil {
			t.Fatalf("fd %d: FileListener: %v", i, err)
		}
		defer got.Close()
		if got.Addr().String() != addr.String() {
			t.Errorf("fd %d listens on %v, want %v", i, got.Addr(), addr)
		}
		// Only the received descriptor accepts, so the connection is its.
		accepted := make(chan error, 1)
		go func() {
			c, err := got.Accept()
			if err == nil {
				_, err = c.Write([]byte("hello from the stored fd\n"))
				c.Close()
			}
			accepted <- err
		}()
		c, err := net.DialTimeout(addr.Network(), addr.String(), wait)
		if err != nil {
			t.Fatalf("dial %v: %v", addr, err)
		}
		c.SetDeadline(time.Now().Add(wait))
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil || line != "hello from the stored fd\n" {
			t.Fatalf("read from %v: %q, %v", addr, line, err)
		}
		select {
		case err := <-accepted:
			if err != nil {
				t.Fatalf("accept on stored fd %d: %v", i, err)
			}
		case <-time.After(wait):
			t.Fatalf("accept on stored fd %d: no connection within %v", i, wait)
		}
	}

	// The caller's files stay open and non-blocking mode untouched: the
	// original listener still works.
	go func() {
		if c, err := net.DialTimeout("tcp", ln.Addr().String(), wait); err == nil {
			c.Close()
		}
	}()
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(wait))
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("original listener after StoreFDs: %v", err)
	}
	c.Close()
}

func TestNotifier_StoreFDsInvalid(t *testing.T) {
	r := listenTemp(t)
	n := NewNotifier()
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, name := range []string{"", "a:b", "tab\there", "caf\u00e9", strings.Repeat("x", 256)} {
		if err := n.StoreFDs(name, f); !errors.Is(err, ErrFDName) {
			t.Errorf("StoreFDs(%q) = %v, want ErrFDName", name, err)
		}
		if err := n.RemoveFDs(name); !errors.Is(err, ErrFDName) {
			t.Errorf("RemoveFDs(%q) = %v, want ErrFDName", name, err)
		}
	}
	if err := n.StoreFDs("web"); !errors.Is(err, ErrNoFiles) {
		t.Errorf("StoreFDs with no files = %v, want ErrNoFiles", err)
	}
	closed, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	if err := n.StoreFDs("web", f, closed); err == nil {
		t.Error("StoreFDs with a closed file: nil error")
	}
	if err := n.StoreFDs("web", f, nil); err == nil {
		t.Error("StoreFDs with a nil file: nil error")
	}
	// Nothing reached systemd for any of these.
	expectNothing(t, r, 100*time.Millisecond)

	if err := n.StoreFDs(strings.Repeat("x", 255), f); err != nil {
		t.Errorf("StoreFDs with a 255-byte name: %v", err)
	}
	if m := r.Next(); len(m.FDs) != 1 {
		t.Errorf("255-byte name: received %d fds, want 1", len(m.FDs))
	}
}
