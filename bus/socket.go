package bus

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// SocketName is the file name of an instance's peer-to-peer D-Bus socket
// in its runtime directory.
const SocketName = "bus.sock"

// SocketPath returns where forkd serves instance's peer-to-peer D-Bus
// socket: SocketName in the runtime directory —
// $RUNTIME_DIRECTORY (the first, when systemd sets several; the unit's
// RuntimeDirectory=forkd/%i) when set, else /run/forkd/INSTANCE/ for
// root, else $XDG_RUNTIME_DIR/forkd/INSTANCE/. It returns an error when
// none applies (not root and XDG_RUNTIME_DIR unset, or an instance named
// "." or "..").
func SocketPath(instance string) (string, error) {
	if dirs := os.Getenv("RUNTIME_DIRECTORY"); dirs != "" {
		dir, _, _ := strings.Cut(dirs, ":")
		return filepath.Join(dir, SocketName), nil
	}
	if instance == "." || instance == ".." {
		return "", fmt.Errorf("bus: no runtime directory for the peer-to-peer socket: the instance name %q "+
			"names no directory of its own: set --control-socket", instance)
	}
	if path := instanceSocket(instance); path != "" {
		return path, nil
	}
	return "", errors.New("bus: no runtime directory for the peer-to-peer socket " +
		"(not root and XDG_RUNTIME_DIR is unset): set XDG_RUNTIME_DIR or --control-socket")
}

// instanceSocket returns SocketName in /run/forkd/INSTANCE/ for root, in
// $XDG_RUNTIME_DIR/forkd/INSTANCE/ otherwise, "" when neither applies.
func instanceSocket(instance string) string {
	if os.Geteuid() == 0 {
		return filepath.Join("/run/forkd", instance, SocketName)
	}
	if xdg := os.Getenv("XDG_RUNTIME_DIR"); xdg != "" {
		return filepath.Join(xdg, "forkd", instance, SocketName)
	}
	return ""
}

// SocketPatterns returns where a client looks for the peer-to-peer sockets
// of the instances it can see, as filepath.Glob patterns, most specific
// first: instance's socket (every instance's when instance is "") under
// /run/forkd/, under $XDG_RUNTIME_DIR/forkd/ when set, and
// $RUNTIME_DIRECTORY's when set (a command run by the instance's unit).
func SocketPatterns(instance string) []string {
	name := instance
	if name == "" {
		name = "*"
	} else {
		name = globEscape(name)
	}
	var out []string
	if dirs := os.Getenv("RUNTIME_DIRECTORY"); dirs != "" {
		dir, _, _ := strings.Cut(dirs, ":")
		out = append(out, filepath.Join(globEscape(dir), SocketName))
	}
	out = append(out, filepath.Join("/run/forkd", name, SocketName))
	if xdg := os.Getenv("XDG_RUNTIME_DIR"); xdg != "" {
		out = append(out, filepath.Join(globEscape(xdg), "forkd", name, SocketName))
	}
	return out
}

func globEscape(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`, `[`, `\[`)
	return r.Replace(s)
}

// SocketAddress returns the D-Bus address of the peer-to-peer socket at
// path, for dbus.Dial.
func SocketAddress(path string) string {
	return "unix:path=" + escapeAddressValue(path)
}

// escapeAddressValue escapes a D-Bus address value: bytes other than
// [-0-9A-Za-z_/.\*] become %XX.
func escapeAddressValue(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z',
			strings.IndexByte("-_/.\\*", c) >= 0:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02x", c)
		}
	}
	return b.String()
}

// listenSocket creates the socket at path, mode 0666 (the policy is
// enforced per method, from each peer's uid), creating its directory
// (0755) when missing. A socket left behind by a process that is gone is
// replaced; one that a live process serves is not: that is an error, as
// is a file there that is not a socket.
//
// madeDir says it created the socket's own directory, which the caller
// removes with the socket.
func listenSocket(path string) (l *net.UnixListener, madeDir bool, err error) {
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		madeDir = true
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, false, fmt.Errorf("create the socket's directory: %w", err)
	}
	l, err = listenFresh(path)
	if err != nil && madeDir {
		os.Remove(dir)
	}
	return l, madeDir && err == nil, err
}

// listenFresh creates the socket at path, in an existing directory, as
// listenSocket says.
func listenFresh(path string) (*net.UnixListener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		c, err := net.Dial("unix", path)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("%s is served by another process (another forkd with this instance name?)", path)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("check %s: %w", path, err)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove the stale socket: %w", err)
		}
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o666); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return l, nil
}

// peerUID returns the uid of the process at the other end of c
// (SO_PEERCRED: as it was when it connected).
func peerUID(c *net.UnixConn) (uint32, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var (
		cred *syscall.Ucred
		gerr error
	)
	if err := raw.Control(func(fd uintptr) {
		cred, gerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if gerr != nil {
		return 0, fmt.Errorf("SO_PEERCRED: %w", gerr)
	}
	return cred.Uid, nil
}

// privilegedUIDs returns the users who may call every method over the
// peer-to-peer socket, as the D-Bus policy io.github.forkd.conf lets them
// on the system bus: root, the user "forkd" when it exists, and the user
// forkd runs as.
func privilegedUIDs() map[uint32]bool {
	uids := map[uint32]bool{0: true, uint32(os.Geteuid()): true}
	if u, err := user.Lookup("forkd"); err == nil {
		if id, err := strconv.ParseUint(u.Uid, 10, 32); err == nil {
			uids[uint32(id)] = true
		}
	}
	return uids
}
