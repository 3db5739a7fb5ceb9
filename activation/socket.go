package activation

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Socket is one listening socket handed to workers.
type Socket struct {
	// Name is the socket's LISTEN_FDNAMES entry.
	Name string
	// Addr describes the socket for people: "tcp://127.0.0.1:8000",
	// "tcp://[::1]:8000", "unix:/run/myapp.sock", or for a socket systemd
	// passed, what getsockname(2) reports ("fd:3" for a non-socket).
	Addr string
	// File is the listening socket, in blocking mode and close-on-exec:
	// workers inherit it explicitly (as an extra file); the master never
	// accepts on it.
	File *os.File

	// bound is the unix socket file forkd created (nil for TCP sockets,
	// abstract sockets and sockets systemd passed); Close removes it if
	// it is still the same file.
	bound *boundPath
}

// boundPath is a unix socket file forkd created by binding.
type boundPath struct {
	path string
	info fs.FileInfo
}

// Close closes every socket's file and removes the unix socket files Listen
// created itself — only while the path still names the file it created, and
// never a socket systemd passed. Closing sockets already closed is not an
// error. It returns every failure, joined.
func Close(socks []Socket) error {
	var errs []error
	for i := range socks {
		s := &socks[i]
		if s.File != nil {
			if err := s.File.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
				errs = append(errs, fmt.Errorf("close %s: %w", s.Addr, err))
			}
		}
		if s.bound != nil {
			if err := s.bound.remove(); err != nil {
				errs = append(errs, fmt.Errorf("close %s: %w", s.Addr, err))
			}
			s.bound = nil
		}
	}
	return errors.Join(errs...)
}

// remove deletes the socket file if the path still names it.
func (b *boundPath) remove() error {
	fi, err := os.Lstat(b.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove socket file: %w", err)
	}
	// An inode number can be reused at once: the mtime tells files apart too.
	if !os.SameFile(fi, b.info) || !fi.ModTime().Equal(b.info.ModTime()) {
		return nil // someone else's file now
	}
	if err := os.Remove(b.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove socket file: %w", err)
	}
	return nil
}

// Env returns the environment entries that describe socks to a worker that
// receives their files as fds 3…: "LISTEN_FDS=n" and "LISTEN_FDNAMES=a:b:…",
// or nil when there are no sockets. LISTEN_PID is not among them: the exec
// shim sets it (see Shim).
func Env(socks []Socket) []string {
	if len(socks) == 0 {
		return nil
	}
	var names strings.Builder
	for i, s := range socks {
		if i > 0 {
			names.WriteByte(':')
		}
		names.WriteString(s.Name)
	}
	return []string{
		"LISTEN_FDS=" + strconv.Itoa(len(socks)),
		"LISTEN_FDNAMES=" + names.String(),
	}
}

// describe names the socket at fd the way Socket.Addr does, from what
// getsockname(2) and SO_TYPE report.
func describe(fd int) string {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return "fd:" + strconv.Itoa(fd)
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		typ = unix.SOCK_STREAM
	}
	inet := func(ip netip.Addr, port int) string {
		scheme := "tcp://"
		if typ == unix.SOCK_DGRAM {
			scheme = "udp://"
		}
		return scheme + net.JoinHostPort(ip.String(), strconv.Itoa(port))
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return inet(netip.AddrFrom4(a.Addr), a.Port)
	case *unix.SockaddrInet6:
		ip := netip.AddrFrom16(a.Addr)
		if a.ZoneId != 0 {
			ip = ip.WithZone(strconv.FormatUint(uint64(a.ZoneId), 10))
		}
		return inet(ip, a.Port)
	case *unix.SockaddrUnix:
		switch typ {
		case unix.SOCK_DGRAM:
			return "unixgram:" + a.Name
		case unix.SOCK_SEQPACKET:
			return "unixpacket:" + a.Name
		}
		return "unix:" + a.Name
	}
	return "fd:" + strconv.Itoa(fd)
}
