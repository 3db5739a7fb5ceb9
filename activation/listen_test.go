package activation_test

import (
	"bufio"
	"errors"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/activation"
	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/internal/testkit"
)

// listen calls activation.Listen and closes the sockets when the test ends.
func listen(t *testing.T, backlog int, binds ...config.Bind) []activation.Socket {
	t.Helper()
	socks, activated, err := activation.Listen(binds, backlog, "web")
	if err != nil {
		t.Fatalf("Listen(%v): %v", binds, err)
	}
	if activated {
		t.Fatalf("Listen(%v) reports activated sockets; the test process has none", binds)
	}
	if len(socks) != len(binds) {
		t.Fatalf("Listen(%v) returned %d sockets, want %d", binds, len(socks), len(binds))
	}
	t.Cleanup(func() { _ = activation.Close(socks) })
	return socks
}

// tcp and unixBind build binds as the config parser would.
func tcp(addr string) config.Bind {
	return config.Bind{Raw: "tcp://" + addr, Network: "tcp", Address: addr}
}

func unixBind(path string, mode uint32) config.Bind {
	return config.Bind{Raw: "unix:" + path, Network: "unix", Address: path, Mode: mode}
}

// serve accepts one connection on a dup of the socket and writes a line.
// The dup turns the shared socket non-blocking, so check blocking first.
func serve(t *testing.T, s activation.Socket) {
	t.Helper()
	l, err := net.FileListener(s.File)
	if err != nil {
		t.Fatalf("FileListener(%s): %v", s.Addr, err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = c.Write([]byte("hello from " + s.Addr + "\n"))
	}()
}

// roundTrip dials network/address and expects serve's line.
func roundTrip(t *testing.T, network, address, want string) {
	t.Helper()
	c, err := net.DialTimeout(network, address, 10*time.Second)
	if err != nil {
		t.Fatalf("dial %s %s: %v", network, address, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read from %s %s: %v", network, address, err)
	}
	if line != "hello from "+want+"\n" {
		t.Fatalf("read %q from %s %s, want the greeting of %s", line, network, address, want)
	}
}

// fdFlags checks the flags every bound socket must have.
func checkFlags(t *testing.T, s activation.Socket) {
	t.Helper()
	fd := s.File.Fd()
	fdfl, err := unix.FcntlInt(fd, unix.F_GETFD, 0)
	if err != nil {
		t.Fatalf("F_GETFD %s: %v", s.Addr, err)
	}
	if fdfl&unix.FD_CLOEXEC == 0 {
		t.Errorf("%s is not close-on-exec: it would leak into every child, not only workers", s.Addr)
	}
	fl, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
	if err != nil {
		t.Fatalf("F_GETFL %s: %v", s.Addr, err)
	}
	if fl&unix.O_NONBLOCK != 0 {
		t.Errorf("%s is non-blocking, want blocking", s.Addr)
	}
	acc, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil || acc != 1 {
		t.Errorf("%s: SO_ACCEPTCONN = %d, %v; want a listening socket", s.Addr, acc, err)
	}
}

func TestListen_TCP4(t *testing.T) {
	socks := listen(t, 64, tcp("127.0.0.1:0"))
	s := socks[0]
	if s.Name != "web" {
		t.Errorf("Name = %q, want the default name %q", s.Name, "web")
	}
	m := regexp.MustCompile(`^tcp://127\.0\.0\.1:(\d+)$`).FindStringSubmatch(s.Addr)
	if m == nil || m[1] == "0" {
		t.Fatalf("Addr = %q, want tcp://127.0.0.1:<the port the kernel chose>", s.Addr)
	}
	checkFlags(t, s)
	reuse, err := unix.GetsockoptInt(int(s.File.Fd()), unix.SOL_SOCKET, unix.SO_REUSEADDR)
	if err != nil || reuse != 1 {
		t.Errorf("SO_REUSEADDR = %d, %v; want 1", reuse, err)
	}
	serve(t, s)
	roundTrip(t, "tcp", "127.0.0.1:"+m[1], s.Addr)
}

// TestListen_TCPNoDelay: forkd's tcp sockets have TCP_NODELAY, which the
// connections accepted from them inherit, unless the bind says
// nodelay=false.
func TestListen_TCPNoDelay(t *testing.T) {
	for _, tt := range []struct {
		nagle bool
		want  int
	}{{false, 1}, {true, 0}} {
		b := tcp("127.0.0.1:0")
		b.Nagle = tt.nagle
		s := listen(t, 64, b)[0]
		c, err := net.Dial("tcp", strings.TrimPrefix(s.Addr, "tcp://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Accept on the raw (blocking) fd, as a worker in any language
		// does: Go's own Accept would set TCP_NODELAY itself. The
		// connection is queued already.
		nfd, _, err := unix.Accept4(int(s.File.Fd()), unix.SOCK_CLOEXEC)
		if err != nil {
			t.Fatalf("accept: %v", err)
		}
		nd, err := unix.GetsockoptInt(nfd, unix.IPPROTO_TCP, unix.TCP_NODELAY)
		unix.Close(nfd)
		if err != nil {
			t.Fatal(err)
		}
		if nd != tt.want {
			t.Errorf("nodelay=%v: an accepted connection has TCP_NODELAY %d, want %d", !tt.nagle, nd, tt.want)
		}
	}
}

// haveIPv6 skips the test when the loopback has no IPv6.
func haveIPv6(t *testing.T) {
	t.Helper()
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback on this machine (listen [::1]: %v)", err)
	}
	l.Close()
}

func TestListen_TCP6(t *testing.T) {
	haveIPv6(t)
	socks := listen(t, 64, tcp("[::1]:0"))
	s := socks[0]
	m := regexp.MustCompile(`^tcp://\[::1\]:(\d+)$`).FindStringSubmatch(s.Addr)
	if m == nil || m[1] == "0" {
		t.Fatalf("Addr = %q, want tcp://[::1]:<port>", s.Addr)
	}
	checkFlags(t, s)
	serve(t, s)
	roundTrip(t, "tcp6", "[::1]:"+m[1], s.Addr)
}

func TestListen_TCPWildcardIsDualStack(t *testing.T) {
	haveIPv6(t)
	socks := listen(t, 64, tcp(":0"))
	s := socks[0]
	m := regexp.MustCompile(`^tcp://\[::\]:(\d+)$`).FindStringSubmatch(s.Addr)
	if m == nil {
		t.Fatalf("Addr = %q, want tcp://[::]:<port>", s.Addr)
	}
	serve(t, s)
	roundTrip(t, "tcp4", "127.0.0.1:"+m[1], s.Addr) // IPv4 reaches the IPv6 wildcard
}

func TestListen_UnixMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	socks := listen(t, 64, unixBind(path, 0o600))
	s := socks[0]
	if s.Addr != "unix:"+path {
		t.Errorf("Addr = %q, want %q", s.Addr, "unix:"+path)
	}
	checkFlags(t, s)
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatalf("stat socket file: %v", err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket file mode = %v, want a socket with 0600", fi.Mode())
	}
	serve(t, s)
	roundTrip(t, "unix", path, s.Addr)

	if err := activation.Close(socks); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after Close, stat %s = %v; want the socket file forkd created removed", path, err)
	}
	if err := activation.Close(socks); err != nil {
		t.Errorf("second Close: %v; want closing twice to be harmless", err)
	}
}

func TestListen_UnixModeOtherThanUmask(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	listen(t, 64, unixBind(path, 0o660))
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatalf("stat socket file: %v", err)
	}
	if fi.Mode().Perm() != 0o660 {
		t.Errorf("socket file mode = %v, want 0660", fi.Mode().Perm())
	}
}

// leaveStale leaves a socket file nothing listens on at path.
func leaveStale(t *testing.T, path string) {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatalf("listen %s: %v", path, err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if _, err := net.Dial("unix", path); err == nil {
		t.Fatalf("stale socket %s still accepts connections", path)
	}
}

func TestListen_UnixStaleSocketReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	leaveStale(t, path)
	// bind(2) on an existing path fails: a socket that answers proves the
	// stale file was replaced.
	socks := listen(t, 64, unixBind(path, 0))
	serve(t, socks[0])
	roundTrip(t, "unix", path, socks[0].Addr)
}

func TestListen_UnixLiveSocketIsAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	live, err := net.Listen("unix", path)
	if err != nil {
		t.Fatalf("listen %s: %v", path, err)
	}
	defer live.Close()
	socks, _, err := activation.Listen([]config.Bind{unixBind(path, 0)}, 64, "web")
	if err == nil {
		activation.Close(socks)
		t.Fatalf("Listen on a path a server listens on succeeded")
	}
	if !errors.Is(err, activation.ErrInUse) || !strings.HasPrefix(err.Error(), "bind unix:"+path+": ") {
		t.Errorf("error = %q, want one naming unix:%s and wrapping ErrInUse", err, path)
	}
	// The live server is untouched.
	accepted := make(chan error, 1)
	go func() {
		c, err := live.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("the live server's socket no longer accepts: %v", err)
	}
	c.Close()
	select {
	case err := <-accepted:
		if err != nil {
			t.Fatalf("live server accept: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("live server did not accept within 10s")
	}
}

func TestListen_UnixRegularFileIsAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := activation.Listen([]config.Bind{unixBind(path, 0)}, 64, "web")
	if !errors.Is(err, activation.ErrNotSocket) || !strings.HasPrefix(err.Error(), "bind unix:"+path+": ") {
		t.Errorf("error = %v, want one naming unix:%s and wrapping ErrNotSocket", err, path)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "precious" {
		t.Errorf("the file at the path = %q, %v; want it left alone", b, err)
	}
}

func TestListen_TCPInUse(t *testing.T) {
	busy, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()
	_, _, err = activation.Listen([]config.Bind{tcp(addr)}, 64, "web")
	want := "bind tcp://" + addr + ": address already in use"
	if err == nil || err.Error() != want {
		t.Fatalf("error = %v, want %q", err, want)
	}
	if !errors.Is(err, unix.EADDRINUSE) {
		t.Errorf("error %v does not wrap EADDRINUSE", err)
	}
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count open fds: %v", err)
	}
	return len(ents)
}

func TestListen_ErrorClosesWhatWasBound(t *testing.T) {
	busy, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	path := filepath.Join(dir, "first.sock")
	binds := []config.Bind{tcp("127.0.0.1:0"), unixBind(path, 0), tcp(busy.Addr().String())}

	before := openFDs(t)
	socks, _, err := activation.Listen(binds, 64, "web")
	if err == nil || socks != nil {
		activation.Close(socks)
		t.Fatalf("Listen = %v, %v; want an error and no sockets", socks, err)
	}
	if after := openFDs(t); after != before {
		t.Errorf("open fds %d before a failed Listen, %d after; want the bound sockets closed", before, after)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stat %s = %v; want the socket file it created removed", path, err)
	}
}

func TestListen_Backlog(t *testing.T) {
	ss, err := exec.LookPath("ss")
	if err != nil {
		t.Skip("ss (iproute2) not installed: cannot read a listen backlog back")
	}
	for _, backlog := range []int{37, 511} {
		socks := listen(t, backlog, tcp("127.0.0.1:0"))
		_, port, _ := net.SplitHostPort(strings.TrimPrefix(socks[0].Addr, "tcp://"))
		out, err := exec.Command(ss, "-Hltn", "sport = :"+port).Output()
		if err != nil {
			t.Fatalf("ss: %v", err)
		}
		// State Recv-Q Send-Q Local Peer; for a listener Send-Q is the backlog.
		f := strings.Fields(string(out))
		if len(f) < 3 {
			t.Fatalf("ss output %q: no listener on port %s", out, port)
		}
		if got, _ := strconv.Atoi(f[2]); got != backlog {
			t.Errorf("listen backlog = %s, want %d (ss: %q)", f[2], backlog, out)
		}
	}
}

func TestListen_Names(t *testing.T) {
	admin := unixBind(filepath.Join(t.TempDir(), "admin.sock"), 0)
	admin.Name = "admin"
	socks := listen(t, 64, tcp("127.0.0.1:0"), admin)
	if socks[0].Name != "web" || socks[1].Name != "admin" {
		t.Errorf("names = %q, %q; want the default %q, then the bind's %q", socks[0].Name, socks[1].Name, "web", "admin")
	}
}

func TestListen_UnsupportedNetwork(t *testing.T) {
	b := config.Bind{Raw: "udp://127.0.0.1:0", Network: "udp", Address: "127.0.0.1:0"}
	_, _, err := activation.Listen([]config.Bind{b}, 64, "web")
	if !errors.Is(err, activation.ErrNetwork) || !strings.Contains(err.Error(), b.Raw) {
		t.Errorf("error = %v, want one naming %s and wrapping ErrNetwork", err, b.Raw)
	}
}

func TestListen_WrongListenPIDIgnored(t *testing.T) {
	t.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()+1))
	t.Setenv("LISTEN_FDS", "1")
	t.Setenv("LISTEN_FDNAMES", "stolen")
	socks := listen(t, 64, tcp("127.0.0.1:0"))
	if socks[0].Name != "web" || !strings.HasPrefix(socks[0].Addr, "tcp://127.0.0.1:") {
		t.Errorf("got %q at %s, want the configured bind", socks[0].Name, socks[0].Addr)
	}
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if v, ok := os.LookupEnv(k); ok {
			t.Errorf("%s=%s still set after Listen; it would leak to workers", k, v)
		}
	}
}

func TestClose_LeavesAReplacedPathAlone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	socks := listen(t, 64, unixBind(path, 0))
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("someone else's"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := activation.Close(socks); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "someone else's" {
		t.Errorf("after Close the file at %s = %q, %v; want it left alone", path, b, err)
	}
}

// passTwo returns a TCP and a unix listener's files (dups) for passing to
// a child, and their addresses as Socket.Addr spells them.
func passTwo(t *testing.T) (files []*os.File, addrs []string) {
	t.Helper()
	tl, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tl.Close() })
	path := filepath.Join(t.TempDir(), "passed.sock")
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ul.Close() })
	tf, err := tl.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tf.Close() })
	uf, err := ul.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uf.Close() })
	return []*os.File{tf, uf}, []string{"tcp://" + tl.Addr().String(), "unix:" + path}
}

func TestListen_Activated(t *testing.T) {
	exe := testkit.Executable(t)
	files, addrs := passTwo(t)
	// The configured bind is the passed TCP address: binding it would fail.
	cmd := helperCmd(t, activation.ShimArgv(exe, exe, []string{helperListen}), []string{
		"LISTEN_FDS=2",
		"LISTEN_FDNAMES=web:",
		"FORKD_TEST_BIND=tcp " + strings.TrimPrefix(addrs[0], "tcp://"),
	}, files)
	var rep listenReport
	runJSON(t, cmd, &rep)
	if rep.Err != "" || !rep.Activated {
		t.Fatalf("Listen in a socket-activated process = activated %v, error %q; want the passed sockets", rep.Activated, rep.Err)
	}
	if strings.Join(rep.Names, ",") != "web,dflt" {
		t.Errorf("names = %q, want [web dflt] (LISTEN_FDNAMES, then the default for an empty entry)", rep.Names)
	}
	if strings.Join(rep.Addrs, ",") != strings.Join(addrs, ",") {
		t.Errorf("addrs = %q, want %q", rep.Addrs, addrs)
	}
	for i, c := range rep.Cloexec {
		if !c {
			t.Errorf("passed fd %d is not close-on-exec", 3+i)
		}
	}
	if len(rep.EnvLeft) != 0 {
		t.Errorf("environment still has %q after Listen", rep.EnvLeft)
	}
	if rep.CloseErr != "" {
		t.Errorf("Close: %s", rep.CloseErr)
	}
	path := strings.TrimPrefix(addrs[1], "unix:")
	if !rep.PathsAfter[path] {
		t.Errorf("Close removed %s, a socket systemd passed (paths after Close: %v)", path, rep.PathsAfter)
	}
}

func TestListen_ActivatedForAnotherPID(t *testing.T) {
	exe := testkit.Executable(t)
	files, addrs := passTwo(t)
	// Not through the shim: LISTEN_PID is ours, not the child's.
	cmd := helperCmd(t, []string{exe, helperListen}, []string{
		"LISTEN_PID=" + strconv.Itoa(os.Getpid()),
		"LISTEN_FDS=2",
		"LISTEN_FDNAMES=web:admin",
		"FORKD_TEST_BIND=tcp 127.0.0.1:0",
	}, files)
	var rep listenReport
	runJSON(t, cmd, &rep)
	if rep.Err != "" || rep.Activated {
		t.Fatalf("Listen = activated %v, error %q; want the configured bind, not fds meant for another process", rep.Activated, rep.Err)
	}
	if len(rep.Addrs) != 1 || rep.Addrs[0] == addrs[0] || !strings.HasPrefix(rep.Addrs[0], "tcp://127.0.0.1:") || rep.Names[0] != "dflt" {
		t.Errorf("sockets %q %q, want one freshly bound tcp://127.0.0.1 socket named dflt", rep.Names, rep.Addrs)
	}
	if len(rep.EnvLeft) != 0 {
		t.Errorf("environment still has %q after Listen", rep.EnvLeft)
	}
}

func TestEnv(t *testing.T) {
	if env := activation.Env(nil); env != nil {
		t.Errorf("Env(nil) = %q, want nothing", env)
	}
	socks := []activation.Socket{{Name: "web"}, {Name: "admin"}, {Name: "web"}}
	got := strings.Join(activation.Env(socks), " ")
	if want := "LISTEN_FDS=3 LISTEN_FDNAMES=web:admin:web"; got != want {
		t.Errorf("Env = %q, want %q", got, want)
	}
}
