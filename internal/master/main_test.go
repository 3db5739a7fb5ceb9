package master

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	sdactivation "github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/forkd/forkd/activation"
	"github.com/forkd/forkd/cluster"
	"github.com/forkd/forkd/cluster/etcd"
	"github.com/forkd/forkd/internal/forkctl"
	"github.com/forkd/forkd/internal/testkit"
	"github.com/forkd/forkd/metrics"
	"github.com/forkd/forkd/metrics/exporter"
	"github.com/forkd/forkd/sdk"
)

// testTimeout bounds every wait in these tests.
const testTimeout = 20 * time.Second

func init() {
	// As cmd/forkd does: the arbiter runs on the main goroutine, pinned to
	// the main thread, the parent thread of every worker.
	runtime.LockOSThread()
}

// TestMain lets the test binary play forkd's parts besides running the
// tests: the exec-shim (its first argument activation.ShimArg), forkd
// itself (role "forkd", the arguments as forkd's) and a worker (role
// "worker MODE", set in the config's [worker.env] over the "forkd" the
// workers inherit).
func TestMain(m *testing.M) {
	roles := testkit.Roles{
		activation.ShimArg: func(args []string) int {
			err := activation.Shim(args)
			fmt.Fprintln(os.Stderr, "exec-shim:", err)
			return 127
		},
		"forkd": func([]string) int { return runForkd() },
		"forkctl": func(args []string) int {
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if err := forkctl.Main(ctx, args, os.Stdout, os.Stderr); err != nil {
				fmt.Fprintln(os.Stderr, "forkctl:", err)
				return 1
			}
			return 0
		},
		"job": func(args []string) int {
			if len(args) != 1 {
				fmt.Fprintln(os.Stderr, "test job: want a mode, got", args)
				return 2
			}
			return runTestJob(args[0])
		},
		"worker": func(args []string) int {
			if len(args) != 1 {
				fmt.Fprintln(os.Stderr, "test worker: want a mode, got", args)
				return 2
			}
			return runTestWorker(args[0])
		},
		cluster.Executable: func([]string) int { return etcd.Main() },
		metrics.Executable: func([]string) int { return exporter.Main() },
	}
	if _, role := roles[firstArg()]; !role && os.Getenv(testkit.RoleEnv) == "" {
		for _, name := range []string{cluster.Executable, metrics.Executable} {
			if err := writeSidecarShim(name); err != nil {
				fmt.Fprintf(os.Stderr, "cannot put %s beside the test binary: %v\n", name, err)
				os.Exit(2)
			}
		}
	}
	testkit.Main(m, roles)
}

func firstArg() string {
	if len(os.Args) > 1 {
		return os.Args[1]
	}
	return ""
}

// writeSidecarShim puts the sidecar name (forkd-cluster, forkd-metrics)
// beside the test binary, where forkd looks for it: a script that runs
// the test binary in role name.
func writeSidecarShim(name string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	path := filepath.Join(filepath.Dir(exe), name)
	tmp := path + ".tmp"
	script := fmt.Sprintf("#!/bin/sh\n%s=%s exec %q \"$@\"\n", testkit.RoleEnv, name, exe)
	if err := os.WriteFile(tmp, []byte(script), 0o755); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// runForkd is cmd/forkd's main: Run, and the error mapped to an exit
// status (2 for usage, 1 for any other error).
func runForkd() int {
	err := Run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, ErrUsage):
		fmt.Fprintln(os.Stderr, "forkd:", err)
		return 2
	default:
		fmt.Fprintln(os.Stderr, "forkd:", err)
		return 1
	}
}

// runTestWorker is a worker written against the plain systemd protocols
// with go-systemd. Modes:
//
//	serve  answers every connection with "pid=<pid> gen=<generation>
//	       id=<worker id>", sends READY=1 and heartbeats, exits 0 on TERM
//	exit1  exits 1 at once
//	sdk    a worker using the Go worker SDK (HTTP, request stats)
//	garbled  as serve, after sending a malformed FORKD_REQUEST_STATS
func runTestWorker(mode string) int {
	switch mode {
	case "exit1":
		return 1
	case "sdk":
		// A worker written with the Go worker SDK: HTTP, request stats
		// every 100ms.
		id, gen := os.Getenv("FORKD_WORKER_ID"), os.Getenv("FORKD_GENERATION")
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "pid=%d gen=%s id=%s\n", os.Getpid(), gen, id)
		})
		s := &sdk.Server{Handler: h, ReportEvery: 100 * time.Millisecond}
		if err := s.Run(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, "sdk worker:", err)
			return 1
		}
		return 0
	}
	if mode == "garbled" {
		// A request report no parser accepts, before READY=1: forkd has
		// read it once the worker counts as ready.
		_, _ = daemon.SdNotify(false, "FORKD_REQUEST_STATS=3;1000;x,y")
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT)
	listeners, err := sdactivation.Listeners()
	if err != nil || len(listeners) == 0 {
		fmt.Fprintln(os.Stderr, "test worker: no listeners:", err)
		return 3
	}
	line := fmt.Sprintf("pid=%d gen=%s id=%s\n", os.Getpid(), os.Getenv("FORKD_GENERATION"), os.Getenv("FORKD_WORKER_ID"))
	for _, l := range listeners {
		if l == nil {
			continue
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				_, _ = c.Write([]byte(line))
				c.Close()
			}
		}()
	}
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		fmt.Fprintln(os.Stderr, "test worker: notify:", err)
	}
	var beat <-chan time.Time
	if d, err := daemon.SdWatchdogEnabled(false); err == nil && d > 0 {
		beat = time.NewTicker(d / 4).C
	}
	for {
		select {
		case <-beat:
			_, _ = daemon.SdNotify(false, daemon.SdNotifyWatchdog)
		case <-sigs:
			return 0
		}
	}
}

// setup describes a forkd instance under test.
type setup struct {
	instance string
	workers  int
	mode     string // the worker role's mode; "serve" when empty
	bus      string // --bus; "none" when empty
	notify   string // NOTIFY_SOCKET for forkd; none when empty
}

// forkd is forkd running as a subprocess: the test binary in role
// "forkd".
type forkd struct {
	t        *testing.T
	setup    setup
	cfgPath  string
	logPath  string
	port     int
	addr     string // 127.0.0.1:port
	cfgLines int    // lines in the config file as written by writeConfig
	cmd      *exec.Cmd
	done     chan struct{} // closed once cmd was waited for
}

// freePort returns a TCP port on 127.0.0.1 that is free now, below the
// ephemeral range so that no outgoing connection takes it meanwhile.
func freePort(t *testing.T) int {
	t.Helper()
	for range 200 {
		p := 20000 + rand.IntN(12000)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		l.Close()
		return p
	}
	t.Fatal("no free port in 20000…31999")
	return 0
}

// newForkd prepares (but does not start) forkd for s, with its config in
// a fresh directory and a free port.
func newForkd(t *testing.T, s setup) *forkd {
	t.Helper()
	if s.mode == "" {
		s.mode = "serve"
	}
	if s.bus == "" {
		s.bus = "none"
	}
	dir := t.TempDir()
	f := &forkd{
		t:       t,
		setup:   s,
		cfgPath: filepath.Join(dir, s.instance+".toml"),
		logPath: filepath.Join(dir, "forkd.log"),
		port:    freePort(t),
	}
	f.addr = "127.0.0.1:" + strconv.Itoa(f.port)
	f.writeConfig(s.mode, "")
	return f
}

// startForkd starts forkd for s and stops it when the test ends.
func startForkd(t *testing.T, s setup) *forkd {
	t.Helper()
	f := newForkd(t, s)
	f.start()
	return f
}

// writeConfig (re)writes the config file: the test binary as worker in
// mode, and extra appended to [server].
func (f *forkd) writeConfig(mode, extra string) {
	f.t.Helper()
	exe := testkit.Executable(f.t)
	var b strings.Builder
	fmt.Fprintf(&b, "[server]\nname = %q\nworkers = %d\nbind = [\"tcp://%s\"]\n", f.setup.instance, f.setup.workers, f.addr)
	b.WriteString("timeout = \"10s\"\ngraceful_timeout = \"5s\"\nboot_timeout = \"10s\"\nkill_timeout = \"2s\"\n")
	f.cfgLines = strings.Count(b.String(), "\n")
	b.WriteString(extra)
	fmt.Fprintf(&b, "\n[worker]\ncommand = %q\n\n[worker.env]\n%s = %q\nGOTRACEBACK = \"none\"\n", exe, testkit.RoleEnv, "worker "+mode)
	if err := os.WriteFile(f.cfgPath, []byte(b.String()), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// forkdEnv is the environment forkd runs in: the test's, without what
// would make forkd or its workers believe systemd started them
// (testkit.CleanEnv), in role "forkd".
func forkdEnv() []string {
	return append(testkit.CleanEnv(), testkit.RoleEnv+"=forkd")
}

// start runs forkd --config … --bus … in its own process group, its output
// (and its workers') going to a log file, printed if the test fails.
func (f *forkd) start() {
	f.t.Helper()
	exe := testkit.Executable(f.t)
	logFile, err := os.Create(f.logPath)
	if err != nil {
		f.t.Fatal(err)
	}
	defer logFile.Close()
	f.cmd = exec.Command(exe, "--config", f.cfgPath, "--bus", f.setup.bus, "--log-level", "debug")
	// The notify socket's directory goes in the test's own directory,
	// which goes with the test even when forkd is killed and cannot
	// remove it.
	f.cmd.Env = append(forkdEnv(), "RUNTIME_DIRECTORY="+filepath.Dir(f.cfgPath))
	if f.setup.notify != "" {
		f.cmd.Env = append(f.cmd.Env, "NOTIFY_SOCKET="+f.setup.notify)
	}
	f.cmd.Stdout, f.cmd.Stderr = logFile, logFile
	f.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := f.cmd.Start(); err != nil {
		f.t.Fatalf("start forkd: %v", err)
	}
	f.done = make(chan struct{})
	go func() {
		_ = f.cmd.Wait()
		close(f.done)
	}()
	f.t.Cleanup(func() {
		if f.t.Failed() && !f.exited() {
			f.t.Logf("forkd (pid %d) when the test failed: %s", f.pid(), testkit.ProcState(f.pid()))
		}
		f.stop()
		if f.t.Failed() {
			f.t.Logf("forkd ended: %v", f.cmd.ProcessState)
			if b, err := os.ReadFile(f.logPath); err == nil {
				f.t.Logf("forkd log:\n%s", b)
			}
		}
	})
}

// pid is forkd's process id.
func (f *forkd) pid() int { return f.cmd.Process.Pid }

// signal sends sig to forkd.
func (f *forkd) signal(sig syscall.Signal) {
	f.t.Helper()
	if err := syscall.Kill(f.pid(), sig); err != nil {
		f.t.Fatalf("send %v to forkd: %v", sig, err)
	}
}

// exited reports whether forkd has exited.
func (f *forkd) exited() bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}

// wait waits for forkd to exit and returns its exit status, failing the
// test after d.
func (f *forkd) wait(d time.Duration) int {
	f.t.Helper()
	select {
	case <-f.done:
		return f.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		f.t.Fatalf("forkd did not exit within %v", d)
		return -1
	}
}

// stop stops forkd gracefully (TERM), then kills its process group after
// the deadline.
func (f *forkd) stop() {
	if f.exited() {
		_ = syscall.Kill(-f.pid(), syscall.SIGKILL) // a worker left behind, if any
		return
	}
	_ = syscall.Kill(f.pid(), syscall.SIGTERM)
	select {
	case <-f.done:
	case <-time.After(testTimeout):
		f.t.Errorf("forkd did not stop within %v of SIGTERM; killing it", testTimeout)
		_ = syscall.Kill(-f.pid(), syscall.SIGKILL)
		<-f.done
	}
}

// log returns what forkd logged so far.
func (f *forkd) log() string {
	b, _ := os.ReadFile(f.logPath)
	return string(b)
}

// answer is a worker's reply to a connection.
type answer struct {
	pid int
	gen uint64
	id  int
}

func (a answer) String() string { return fmt.Sprintf("pid=%d gen=%d id=%d", a.pid, a.gen, a.id) }

// ask connects to forkd's port and returns the answering worker.
func (f *forkd) ask() (answer, error) {
	c, err := net.DialTimeout("tcp", f.addr, 2*time.Second)
	if err != nil {
		return answer{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return answer{}, fmt.Errorf("read from worker: %w", err)
	}
	var a answer
	if _, err := fmt.Sscanf(line, "pid=%d gen=%d id=%d\n", &a.pid, &a.gen, &a.id); err != nil {
		return answer{}, fmt.Errorf("worker answered %q: %w", line, err)
	}
	return a, nil
}

// askUntil connects over and over until done(answers so far, by pid)
// holds, and returns the answers; it fails the test after testTimeout.
func (f *forkd) askUntil(what string, done func(map[int]answer) bool) map[int]answer {
	f.t.Helper()
	seen := map[int]answer{}
	deadline := time.Now().Add(testTimeout)
	var lastErr error
	for {
		a, err := f.ask()
		if err == nil {
			seen[a.pid] = a
		} else {
			lastErr = err
		}
		if done(seen) {
			return seen
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("waiting for %s: gave up after %v; answers %v, last error %v", what, testTimeout, seen, lastErr)
		}
		if f.exited() {
			f.t.Fatalf("waiting for %s: forkd exited", what)
		}
	}
}

// askAll waits until every pid in want answered, each with the generation
// and worker id want says, and returns what answered.
func (f *forkd) askAll(want map[int]answer) map[int]answer {
	f.t.Helper()
	return f.askUntil(fmt.Sprintf("answers from %v", want), func(seen map[int]answer) bool {
		for pid, w := range want {
			if a, ok := seen[pid]; !ok || a != w {
				return false
			}
		}
		return true
	})
}

// checkOnly fails the test when a worker outside want answers the next
// n connections.
func (f *forkd) checkOnly(n int, want map[int]answer) {
	f.t.Helper()
	for range n {
		a, err := f.ask()
		if err != nil {
			f.t.Fatalf("connect: %v", err)
		}
		if w, ok := want[a.pid]; !ok || w != a {
			f.t.Fatalf("%v answered; want only %v", a, want)
		}
	}
}

// runCommand runs the test binary as forkd with args and returns its exit
// status and output; forkd must exit within testTimeout.
func runCommand(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, testkit.Executable(t), args...)
	cmd.Env = forkdEnv()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run forkd %q: %v", args, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("forkd %q did not exit within %v", args, testTimeout)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errOut.String()
}
