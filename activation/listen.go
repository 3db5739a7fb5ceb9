package activation

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"

	sdactivation "github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/config"
)

// Errors Listen wraps when a unix socket path cannot be taken over.
var (
	// ErrInUse: a server accepts connections on the unix socket path.
	ErrInUse = errors.New("activation: socket in use by a running server")
	// ErrNotSocket: the unix socket path exists and is not a socket.
	ErrNotSocket = errors.New("activation: path exists and is not a socket")
	// ErrNetwork: a bind's network is neither "tcp" nor "unix".
	ErrNetwork = errors.New("activation: unsupported network")
)

// Listen returns the listening sockets workers will share, and reports
// whether systemd passed them (activated).
//
// When LISTEN_PID is this process's pid and LISTEN_FDS > 0, the sockets are
// fds 3…3+LISTEN_FDS-1, named by LISTEN_FDNAMES (defaultName where an entry
// is missing or empty), marked close-on-exec; binds is ignored. The
// LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES variables are removed from the
// environment in every case, so they never leak to workers.
//
// Otherwise every entry of binds is bound in order: TCP (IPv4, IPv6, or
// both for an empty or "::" host) with SO_REUSEADDR, unix sockets with their
// Mode applied. backlog is the listen(2) backlog (the kernel caps it at
// net.core.somaxconn; backlog <= 0 means that cap). A bind's Name defaults
// to defaultName. A unix socket file left behind by a dead server (connect
// is refused) is removed and bound again; one a server still accepts on is
// an error wrapping ErrInUse, and a path that is not a socket is an error
// wrapping ErrNotSocket and is left in place. Errors name the address, as
// in "bind tcp://127.0.0.1:8000: address already in use"; on error the
// sockets already bound are closed and nothing is returned.
func Listen(binds []config.Bind, backlog int, defaultName string) (socks []Socket, activated bool, err error) {
	names := os.Getenv("LISTEN_FDNAMES") // Files unsets it
	if files := sdactivation.Files(true); len(files) > 0 {
		// Files marks the fds close-on-exec.
		return passed(files, names, defaultName), true, nil
	}
	if backlog <= 0 {
		backlog = unix.SOMAXCONN // the kernel caps this at net.core.somaxconn
	}
	socks = make([]Socket, 0, len(binds))
	for _, b := range binds {
		s, err := bind(b, backlog)
		if err != nil {
			_ = Close(socks)
			return nil, false, err
		}
		if s.Name == "" {
			s.Name = defaultName
		}
		socks = append(socks, s)
	}
	return socks, false, nil
}

// passed turns the files systemd passed into Sockets.
func passed(files []*os.File, names, defaultName string) []Socket {
	socks := make([]Socket, len(files))
	for i, f := range files {
		name, rest, _ := strings.Cut(names, ":")
		names = rest
		if name == "" {
			name = defaultName
		}
		socks[i] = Socket{Name: name, Addr: describe(int(f.Fd())), File: f}
	}
	return socks
}

// bind creates, binds and listens on one configured address.
func bind(b config.Bind, backlog int) (Socket, error) {
	var (
		s   Socket
		err error
	)
	switch b.Network {
	case "tcp":
		s, err = bindTCP(b.Address, backlog, !b.Nagle)
		if err != nil {
			return Socket{}, fmt.Errorf("bind tcp://%s: %w", b.Address, err)
		}
	case "unix":
		s, err = bindUnix(b.Address, b.Mode, backlog)
		if err != nil {
			return Socket{}, fmt.Errorf("bind unix:%s: %w", b.Address, err)
		}
	default:
		return Socket{}, fmt.Errorf("bind %s: %w %q (use tcp://host:port or unix:/path)", b.Raw, ErrNetwork, b.Network)
	}
	s.Name = b.Name
	return s, nil
}

// bindTCP listens on a host:port. An empty host or "::" listens on both
// IPv6 and IPv4 where the machine has IPv6, as Go's net.Listen does. With
// nodelay the socket has TCP_NODELAY, which Linux copies to every
// connection accepted from it: workers that never set it themselves (an
// inherited fd wrapped as a unix socket, as uvicorn's --fd does) do not
// meet Nagle's algorithm and delayed ACKs.
func bindTCP(address string, backlog int, nodelay bool) (Socket, error) {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return Socket{}, err
	}
	ta, err := net.ResolveTCPAddr("tcp", address)
	if err != nil {
		return Socket{}, err
	}
	var (
		family    = unix.AF_INET6
		sa        unix.Sockaddr
		dualStack bool
	)
	switch ip4 := ta.IP.To4(); {
	case ta.IP == nil || (host == "" || host == "::") && ta.IP.IsUnspecified():
		dualStack = true
		sa = &unix.SockaddrInet6{Port: ta.Port}
	case ip4 != nil:
		family = unix.AF_INET
		sa4 := &unix.SockaddrInet4{Port: ta.Port}
		copy(sa4.Addr[:], ip4)
		sa = sa4
	default:
		sa6 := &unix.SockaddrInet6{Port: ta.Port}
		copy(sa6.Addr[:], ta.IP.To16())
		if ta.Zone != "" {
			id, err := zoneID(ta.Zone)
			if err != nil {
				return Socket{}, err
			}
			sa6.ZoneId = id
		}
		sa = sa6
	}
	fd, err := socket(family)
	if dualStack && errors.Is(err, unix.EAFNOSUPPORT) {
		// No IPv6 on this machine: the wildcard is IPv4's.
		family, sa, dualStack = unix.AF_INET, &unix.SockaddrInet4{Port: ta.Port}, false
		fd, err = socket(family)
	}
	if err != nil {
		return Socket{}, err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		unix.Close(fd)
		return Socket{}, fmt.Errorf("set SO_REUSEADDR: %w", err)
	}
	if nodelay {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
			unix.Close(fd)
			return Socket{}, fmt.Errorf("set TCP_NODELAY: %w", err)
		}
	}
	if dualStack {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
			unix.Close(fd)
			return Socket{}, fmt.Errorf("clear IPV6_V6ONLY: %w", err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return Socket{}, err
	}
	if err := unix.Listen(fd, backlog); err != nil {
		unix.Close(fd)
		return Socket{}, fmt.Errorf("listen: %w", err)
	}
	addr := describe(fd)
	return Socket{Addr: addr, File: os.NewFile(uintptr(fd), addr)}, nil
}

// zoneID is the interface index an IPv6 zone ("eth0" or "2") names.
func zoneID(zone string) (uint32, error) {
	if n, err := strconv.ParseUint(zone, 10, 32); err == nil {
		return uint32(n), nil
	}
	ifi, err := net.InterfaceByName(zone)
	if err != nil {
		return 0, fmt.Errorf("zone %q: %w", zone, err)
	}
	return uint32(ifi.Index), nil
}

// bindUnix listens on a unix socket path ("@name" for the abstract
// namespace), taking over a stale socket file and applying mode (0 = leave
// what the umask gave).
func bindUnix(path string, mode uint32, backlog int) (Socket, error) {
	abstract := strings.HasPrefix(path, "@")
	fd, err := socket(unix.AF_UNIX)
	if err != nil {
		return Socket{}, err
	}
	sa := &unix.SockaddrUnix{Name: path}
	err = unix.Bind(fd, sa)
	if errors.Is(err, unix.EADDRINUSE) && !abstract {
		if err = removeStale(path); err == nil {
			err = unix.Bind(fd, sa)
		}
	}
	if err != nil {
		unix.Close(fd)
		return Socket{}, err
	}
	var bound *boundPath
	if !abstract {
		if mode != 0 {
			// Before listen: no connection is accepted under the umask's mode.
			err = os.Chmod(path, fs.FileMode(mode&0o7777))
		}
		var fi fs.FileInfo
		if err == nil {
			fi, err = os.Lstat(path)
		}
		if err != nil {
			unix.Close(fd)
			_ = os.Remove(path)
			return Socket{}, err
		}
		bound = &boundPath{path: path, info: fi}
	}
	if err := unix.Listen(fd, backlog); err != nil {
		unix.Close(fd)
		if bound != nil {
			_ = bound.remove()
		}
		return Socket{}, fmt.Errorf("listen: %w", err)
	}
	addr := "unix:" + path
	return Socket{Addr: addr, File: os.NewFile(uintptr(fd), addr), bound: bound}, nil
}

// removeStale removes the socket file at path if no server accepts
// connections on it.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // gone meanwhile: bind again
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%w (%s, left in place; remove it or choose another path)", ErrNotSocket, kind(fi.Mode()))
	}
	// Non-blocking, so a live server with a full backlog does not block us.
	probe, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("probe existing socket: %w", err)
	}
	defer unix.Close(probe)
	switch err := unix.Connect(probe, &unix.SockaddrUnix{Name: path}); {
	case err == nil, errors.Is(err, unix.EAGAIN):
		return fmt.Errorf("%w (stop it or choose another path)", ErrInUse)
	case errors.Is(err, unix.ECONNREFUSED):
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove stale socket: %w", err)
		}
		return nil
	default:
		return fmt.Errorf("probe existing socket: %w", err)
	}
}

// kind names a file type for an error message.
func kind(m fs.FileMode) string {
	switch m.Type() {
	case 0:
		return "a regular file"
	case fs.ModeDir:
		return "a directory"
	case fs.ModeSymlink:
		return "a symbolic link"
	case fs.ModeNamedPipe:
		return "a named pipe"
	}
	return "file type " + m.Type().String()
}

// socket opens a blocking, close-on-exec stream socket.
func socket(family int) (int, error) {
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	return fd, nil
}
