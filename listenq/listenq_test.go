package listenq_test

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/forkd/forkd/listenq"
	"golang.org/x/sys/unix"
)

// listener binds network/address with the given backlog and returns the
// listening socket as a file; nothing accepts on it.
func listener(t *testing.T, domain, typ int, sa unix.Sockaddr, backlog int) *os.File {
	t.Helper()
	fd, err := unix.Socket(domain, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Skipf("socket(%d, %d): %v", domain, typ, err)
	}
	f := os.NewFile(uintptr(fd), "listener")
	t.Cleanup(func() { f.Close() })
	if err := unix.Bind(fd, sa); err != nil {
		t.Skipf("bind %v: %v", sa, err)
	}
	if err := unix.Listen(fd, backlog); err != nil {
		t.Fatalf("listen: %v", err)
	}
	return f
}

func addr(t *testing.T, f *os.File) (network, address string) {
	t.Helper()
	sa, err := unix.Getsockname(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return "tcp4", (&net.TCPAddr{IP: sa.Addr[:], Port: sa.Port}).String()
	case *unix.SockaddrInet6:
		return "tcp6", (&net.TCPAddr{IP: sa.Addr[:], Port: sa.Port}).String()
	case *unix.SockaddrUnix:
		return "unix", sa.Name
	}
	t.Fatalf("unexpected address %T", sa)
	return "", ""
}

func TestRead_QueueGrowsWithUnacceptedConnections(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		f    func(t *testing.T) *os.File
	}{
		{"tcp4", func(t *testing.T) *os.File {
			return listener(t, unix.AF_INET, unix.SOCK_STREAM, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}, 7)
		}},
		{"tcp6", func(t *testing.T) *os.File {
			return listener(t, unix.AF_INET6, unix.SOCK_STREAM, &unix.SockaddrInet6{Addr: [16]byte{15: 1}}, 7)
		}},
		{"unix", func(t *testing.T) *os.File {
			return listener(t, unix.AF_UNIX, unix.SOCK_STREAM, &unix.SockaddrUnix{Name: filepath.Join(dir, "s")}, 7)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := c.f(t)
			q, err := listenq.Read(f)
			if err != nil {
				t.Fatal(err)
			}
			if q != (listenq.Queue{Len: 0, Backlog: 7}) {
				t.Fatalf("fresh listener: got %+v, want Len 0 Backlog 7", q)
			}
			network, address := addr(t, f)
			for i := 1; i <= 3; i++ {
				c, err := net.Dial(network, address)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				// A loopback connect returns once the kernel has queued the
				// connection on the listener.
				q, err := listenq.Read(f)
				if err != nil {
					t.Fatal(err)
				}
				if q.Len != uint32(i) || q.Backlog != 7 {
					t.Fatalf("after %d connections: got %+v, want Len %d Backlog 7", i, q, i)
				}
			}
		})
	}
}

func TestRead_SharedAddressCountsItsOwnSocket(t *testing.T) {
	// Two listeners on one port (SO_REUSEPORT): each reports its own queue.
	mk := func(port int) *os.File {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		f := os.NewFile(uintptr(fd), "listener")
		t.Cleanup(func() { f.Close() })
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			t.Fatal(err)
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port}); err != nil {
			t.Fatal(err)
		}
		if err := unix.Listen(fd, 5+port%2); err != nil {
			t.Fatal(err)
		}
		return f
	}
	a := mk(0)
	sa, _ := unix.Getsockname(int(a.Fd()))
	port := sa.(*unix.SockaddrInet4).Port
	b := mk(port)
	qa, err := listenq.Read(a)
	if err != nil {
		t.Fatal(err)
	}
	qb, err := listenq.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	if qa.Backlog != 5 || qb.Backlog != uint32(5+port%2) {
		t.Fatalf("got %+v and %+v, want backlogs 5 and %d", qa, qb, 5+port%2)
	}
}

func TestRead_NotListening(t *testing.T) {
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	uf, err := udp.(*net.UDPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	defer uf.Close()

	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unbound := os.NewFile(uintptr(fd), "unbound")
	defer unbound.Close()

	for name, f := range map[string]*os.File{"udp": uf, "unlistened tcp": unbound} {
		if _, err := listenq.Read(f); !errors.Is(err, listenq.ErrNotListening) {
			t.Errorf("%s: got %v, want ErrNotListening", name, err)
		}
	}
}

func TestRead_GoListener(t *testing.T) {
	// net.Listen makes an MPTCP listener where the kernel has MPTCP enabled.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := 1; i <= 2; i++ {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		q, err := listenq.Read(f)
		if err != nil {
			t.Fatal(err)
		}
		if q.Len != uint32(i) || q.Backlog == 0 {
			t.Fatalf("after %d connections: got %+v", i, q)
		}
	}
}
