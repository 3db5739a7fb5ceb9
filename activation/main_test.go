package activation_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	sdactivation "github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/activation"
	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/internal/testkit"
)

// The test binary doubles as the processes the tests need, chosen by
// os.Args[1]: the exec shim itself and the workers it execs.
const (
	helperListeners   = "helper-listeners"    // worker: go-systemd's Listeners, then accept on each
	helperCloexecShim = "helper-cloexec-shim" // marks fds 3… close-on-exec, then runs the shim in-process
	helperListen      = "helper-listen"       // master: activation.Listen, then Close
	helperMarker      = "helper-marker"       // creates the file os.Args[2]
)

func TestMain(m *testing.M) {
	testkit.Main(m, testkit.Roles{
		activation.ShimArg: shimMain,
		helperCloexecShim: func(args []string) int {
			n, _ := strconv.Atoi(os.Getenv("LISTEN_FDS"))
			for fd := 3; fd < 3+n; fd++ {
				unix.CloseOnExec(fd)
			}
			return shimMain(args)
		},
		helperListeners: func([]string) int { return runListeners() },
		helperListen:    func([]string) int { return runListen() },
		helperMarker: func(args []string) int {
			if err := os.WriteFile(args[0], []byte("started\n"), 0o600); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			return 0
		},
	})
}

// shimMain is what forkd's main does with ShimArg.
func shimMain(args []string) int {
	err := activation.Shim(args)
	fmt.Fprintln(os.Stderr, err)
	return 127
}

// listenersReport is what a helperListeners worker saw.
type listenersReport struct {
	Pid, Ppid   int
	Argv0       string
	ListenPID   string
	WatchdogPID string
	ShimEnv     []string // FORKD_SHIM_* entries left
	Listeners   int      // usable ones
	Addrs       []string
	// Crossed lists the fds above the listeners open without
	// close-on-exec: fds that crossed the exec beside them.
	Crossed []int
}

func runListeners() int {
	rep := listenersReport{
		Pid:         os.Getpid(),
		Ppid:        os.Getppid(),
		Argv0:       os.Args[0],
		ListenPID:   os.Getenv("LISTEN_PID"),
		WatchdogPID: os.Getenv("WATCHDOG_PID"),
	}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "FORKD_SHIM_") {
			rep.ShimEnv = append(rep.ShimEnv, kv)
		}
	}
	ls, err := sdactivation.Listeners()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var usable []net.Listener
	for _, l := range ls {
		if l != nil {
			usable = append(usable, l)
			rep.Addrs = append(rep.Addrs, l.Addr().String())
		}
	}
	rep.Listeners = len(usable)
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		for _, e := range ents {
			fd, err := strconv.Atoi(e.Name())
			if err != nil || fd < 3+len(ls) {
				continue
			}
			if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil && flags&unix.FD_CLOEXEC == 0 {
				rep.Crossed = append(rep.Crossed, fd)
			}
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
		return 1
	}
	for i, l := range usable {
		c, err := l.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Fprintf(c, "listener %d pid %d\n", i, os.Getpid())
		c.Close()
	}
	return 0
}

// listenReport is what a helperListen master got from activation.Listen.
type listenReport struct {
	Err        string
	Activated  bool
	Names      []string
	Addrs      []string
	Cloexec    []bool
	EnvLeft    []string // LISTEN_* still in the environment
	CloseErr   string
	PathsAfter map[string]bool // unix socket path → exists after Close
}

func runListen() int {
	var binds []config.Bind
	if b := os.Getenv("FORKD_TEST_BIND"); b != "" {
		network, address, _ := strings.Cut(b, " ")
		binds = append(binds, config.Bind{Raw: b, Network: network, Address: address})
	}
	var rep listenReport
	socks, activated, err := activation.Listen(binds, 16, "dflt")
	if err != nil {
		rep.Err = err.Error()
	}
	rep.Activated = activated
	for _, s := range socks {
		rep.Names = append(rep.Names, s.Name)
		rep.Addrs = append(rep.Addrs, s.Addr)
		flags, err := unix.FcntlInt(s.File.Fd(), unix.F_GETFD, 0)
		rep.Cloexec = append(rep.Cloexec, err == nil && flags&unix.FD_CLOEXEC != 0)
	}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "LISTEN_") {
			rep.EnvLeft = append(rep.EnvLeft, kv)
		}
	}
	if err := activation.Close(socks); err != nil {
		rep.CloseErr = err.Error()
	}
	rep.PathsAfter = map[string]bool{}
	for _, a := range rep.Addrs {
		if p, ok := strings.CutPrefix(a, "unix:"); ok {
			_, err := os.Lstat(p)
			rep.PathsAfter[p] = err == nil
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
		return 1
	}
	return 0
}

// helperCmd returns a command running argv (argv[0] is the path) with the
// test's environment plus env and files as fds 3…, killed when the test
// ends or after a minute.
func helperCmd(t *testing.T, argv []string, env []string, files []*os.File) *exec.Cmd {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, argv[0])
	cmd.Args = argv
	cmd.Env = append(testkit.CleanEnv(), env...)
	cmd.ExtraFiles = files
	cmd.Stderr = &testkit.Buffer{}
	return cmd
}

// runJSON runs cmd to completion and decodes its stdout into v.
func runJSON(t *testing.T, cmd *exec.Cmd, v any) {
	t.Helper()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %v\nstderr:\n%s", cmd.Args, err, cmd.Stderr)
	}
	if err := json.Unmarshal(out, v); err != nil {
		t.Fatalf("%v: decode report %q: %v\nstderr:\n%s", cmd.Args, out, err, cmd.Stderr)
	}
}

// startJSON starts cmd and returns its first stdout line decoded into v,
// failing the test if it does not arrive within the deadline.
func startJSON(t *testing.T, cmd *exec.Cmd, v any) {
	t.Helper()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("stdout pipe: %v", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", cmd.Args, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line := make(chan []byte, 1)
	go func() {
		b, _ := bufio.NewReader(stdout).ReadBytes('\n')
		line <- b
	}()
	select {
	case b := <-line:
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%v: decode report %q: %v\nstderr:\n%s", cmd.Args, b, err, cmd.Stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%v: no report within 30s\nstderr:\n%s", cmd.Args, cmd.Stderr)
	}
}
