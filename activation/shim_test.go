package activation_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/forkd/forkd/activation"
	"github.com/forkd/forkd/internal/testkit"
)

func TestShimArgv(t *testing.T) {
	got := activation.ShimArgv("/usr/bin/forkd", "myapp", []string{"--port", "8000"})
	want := []string{"/usr/bin/forkd", activation.ShimArg, "myapp", "--port", "8000"}
	if strings.Join(got, "\x00") != strings.Join(want, "\x00") {
		t.Errorf("ShimArgv = %q, want %q", got, want)
	}
}

// shimWorker starts a helperListeners worker with two bound sockets and
// the environment entries setup, via argv, and checks what it saw and that
// it accepts on both.
func shimWorker(t *testing.T, argv []string, setup ...string) {
	t.Helper()
	exe := testkit.Executable(t)
	admin := unixBind(filepath.Join(t.TempDir(), "admin.sock"), 0o600)
	admin.Name = "admin"
	socks := listen(t, 64, tcp("127.0.0.1:0"), admin)
	// A third fd beside the sockets, as a master inherits without
	// close-on-exec from whoever started it: it must not reach the worker.
	stray, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer stray.Close()
	files := []*os.File{socks[0].File, socks[1].File, stray}
	env := append(activation.Env(socks),
		"FORKD_SHIM_PARENT="+strconv.Itoa(os.Getpid()),
		"WATCHDOG_USEC=5000000",
		"LISTEN_PID=1", // stale: the shim must replace it
	)
	env = append(env, setup...)
	cmd := helperCmd(t, argv, env, files)
	var rep listenersReport
	startJSON(t, cmd, &rep)

	pid := cmd.Process.Pid
	if rep.Pid != pid {
		t.Errorf("worker pid %d, os/exec started %d: the shim left an extra process", rep.Pid, pid)
	}
	if rep.Ppid != os.Getpid() {
		t.Errorf("worker's parent is %d, want the master %d", rep.Ppid, os.Getpid())
	}
	if rep.ListenPID != strconv.Itoa(pid) || rep.WatchdogPID != strconv.Itoa(pid) {
		t.Errorf("LISTEN_PID=%s WATCHDOG_PID=%s, want both %d", rep.ListenPID, rep.WatchdogPID, pid)
	}
	if len(rep.ShimEnv) > 0 {
		t.Errorf("%q leaked into the worker's environment", rep.ShimEnv)
	}
	if rep.Argv0 != exe {
		t.Errorf("worker argv[0] = %q, want the command as configured %q", rep.Argv0, exe)
	}
	if rep.Listeners != 2 {
		t.Fatalf("worker has %d usable listeners (%q), want 2", rep.Listeners, rep.Addrs)
	}
	if len(rep.Crossed) != 0 {
		t.Errorf("fds %v crossed the exec beside the listeners, want none (the stray fd 5 closed)", rep.Crossed)
	}
	for i, addr := range []struct{ network, address string }{
		{"tcp", strings.TrimPrefix(socks[0].Addr, "tcp://")},
		{"unix", strings.TrimPrefix(socks[1].Addr, "unix:")},
	} {
		c, err := net.DialTimeout(addr.network, addr.address, 10*time.Second)
		if err != nil {
			t.Fatalf("dial %s: %v", addr.address, err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if want := fmt.Sprintf("listener %d pid %d\n", i, pid); err != nil || line != want {
			t.Errorf("from %s read %q, %v; want %q", addr.address, line, err, want)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("worker: %v\nstderr:\n%s", err, cmd.Stderr)
	}
}

func TestShim_ExecsWorker(t *testing.T) {
	exe := testkit.Executable(t)
	shimWorker(t, activation.ShimArgv(exe, exe, []string{helperListeners}))
}

func TestShim_Setup(t *testing.T) {
	// Told by ShimSetup rather than by LISTEN_FDS and WATCHDOG_USEC: the
	// same worker, fds 0…4 (the stray fd 5 closed).
	exe := testkit.Executable(t)
	setup := activation.ShimSetup{Parent: os.Getpid(), PIDEnv: []string{"LISTEN_PID", "WATCHDOG_PID"}, Files: 5}
	shimWorker(t, activation.ShimArgv(exe, exe, []string{helperListeners}), setup.Env()...)
}

func TestShim_Status(t *testing.T) {
	exe := testkit.Executable(t)
	dir := t.TempDir()
	notExec := filepath.Join(dir, "script")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		argv    []string
		parent  int
		errno   error  // what the reported error wraps
		errText string // what it says
	}{
		{"exec'd", []string{exe, helperMarker, filepath.Join(dir, "started")}, os.Getpid(), nil, ""},
		{"missing command", []string{filepath.Join(dir, "nope")}, os.Getpid(), syscall.ENOENT, "nope"},
		{"not executable", []string{notExec}, os.Getpid(), syscall.EACCES, "script"},
		{"master gone", []string{exe, helperMarker, filepath.Join(dir, "started")}, os.Getpid() + 1, nil, activation.ErrMasterGone.Error()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			setup := activation.ShimSetup{Parent: tc.parent, Files: 3, Status: 3}
			cmd := helperCmd(t, activation.ShimArgv(exe, tc.argv[0], tc.argv[1:]), setup.Env(), []*os.File{w})
			err = cmd.Start()
			w.Close()
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			runErr := cmd.Wait()
			got := activation.ShimStatus(b)
			if tc.errText == "" {
				if got != nil || runErr != nil {
					t.Fatalf("status %v, run %v; want the command exec'd and nothing reported\nstderr:\n%s", got, runErr, cmd.Stderr)
				}
				return
			}
			if code := exitCode(t, runErr); code != 127 {
				t.Errorf("shim exit status %d, want 127", code)
			}
			if got == nil || !strings.Contains(got.Error(), tc.errText) || tc.errno != nil && !errors.Is(got, tc.errno) {
				t.Errorf("status %v, want an error saying %q and wrapping %v", got, tc.errText, tc.errno)
			}
		})
	}
}

func TestShim_ClearsCloseOnExec(t *testing.T) {
	// The helper marks fds 3 and 4 close-on-exec, then runs Shim itself:
	// only Shim clearing FD_CLOEXEC lets the worker see them.
	exe := testkit.Executable(t)
	shimWorker(t, []string{exe, helperCloexecShim, exe, helperListeners})
}

// exitCode returns the exit status of a finished command's error.
func exitCode(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("want an exit status, got %v", err)
	}
	return ee.ExitCode()
}

func TestShim_MasterGone(t *testing.T) {
	exe := testkit.Executable(t)
	for _, tc := range []struct {
		name   string
		parent int
		starts bool
	}{
		{"parent is the master", os.Getpid(), true},
		{"master gone", os.Getpid() + 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			marker := filepath.Join(t.TempDir(), "started")
			cmd := helperCmd(t, activation.ShimArgv(exe, exe, []string{helperMarker, marker}),
				[]string{"FORKD_SHIM_PARENT=" + strconv.Itoa(tc.parent)}, nil)
			err := cmd.Run()
			_, statErr := os.Stat(marker)
			if tc.starts {
				if err != nil || statErr != nil {
					t.Fatalf("worker run = %v, marker %v; want it started\nstderr:\n%s", err, statErr, cmd.Stderr)
				}
				return
			}
			if code := exitCode(t, err); code != 127 {
				t.Errorf("shim exit status %d, want 127", code)
			}
			if !strings.Contains(fmt.Sprint(cmd.Stderr), activation.ErrMasterGone.Error()) {
				t.Errorf("shim stderr %q does not say %q", cmd.Stderr, activation.ErrMasterGone)
			}
			if statErr == nil {
				t.Error("the worker command ran although the master was gone")
			}
		})
	}
}

func TestShim_CommandNotFound(t *testing.T) {
	exe := testkit.Executable(t)
	cmd := helperCmd(t, activation.ShimArgv(exe, "forkd-test-no-such-command", nil), nil, nil)
	err := cmd.Run()
	if code := exitCode(t, err); code != 127 {
		t.Errorf("shim exit status %d, want 127", code)
	}
	if s := fmt.Sprint(cmd.Stderr); !strings.Contains(s, "forkd-test-no-such-command") || !strings.Contains(s, exec.ErrNotFound.Error()) {
		t.Errorf("shim stderr %q, want it to name the command and say it was not found", s)
	}
}

func TestShim_MissingFD(t *testing.T) {
	// LISTEN_FDS=1 but no fd 3: the shim refuses instead of handing the
	// worker a closed (or unrelated, later reused) fd.
	exe := testkit.Executable(t)
	marker := filepath.Join(t.TempDir(), "started")
	cmd := helperCmd(t, activation.ShimArgv(exe, exe, []string{helperMarker, marker}), []string{"LISTEN_FDS=1"}, nil)
	err := cmd.Run()
	if code := exitCode(t, err); code != 127 {
		t.Errorf("shim exit status %d, want 127", code)
	}
	if s := fmt.Sprint(cmd.Stderr); !strings.Contains(s, "fd 3") {
		t.Errorf("shim stderr %q, want it to name fd 3", s)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the worker command ran without its fd")
	}
}

// BenchmarkShim compares starting a program directly with starting it
// through the exec shim (here the test binary, whose start-up is heavier
// than forkd's).
func BenchmarkShim(b *testing.B) {
	truePath, err := exec.LookPath("true")
	if err != nil {
		b.Skip("no true(1) to start")
	}
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		argv []string
	}{
		{"direct", []string{truePath}},
		{"shim", activation.ShimArgv(exe, truePath, nil)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				cmd := exec.Command(bc.argv[0], bc.argv[1:]...)
				cmd.Env = []string{"FORKD_SHIM_PARENT=" + strconv.Itoa(os.Getpid())}
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("%v: %v: %s", bc.argv, err, out)
				}
			}
		})
	}
}
