package process_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/activation"
	"github.com/forkd/forkd/internal/process"
	"github.com/forkd/forkd/internal/testkit"
)

// The test binary doubles as the exec-shim (os.Args[1] is
// activation.ShimArg) and as the program the tests start (testkit.RoleEnv names helperRole):
// it reports on fd 3 what it was started with and exits with status
// helperExit.
const (
	helperRole = "process-helper"
	helperExit = 7
)

func init() {
	// The main goroutine keeps the main thread, so that no test goroutine
	// runs there: the parent-death tests end the thread of a goroutine
	// that exits locked to it, which the runtime does for every thread but
	// the main one.
	runtime.LockOSThread()
}

func TestMain(m *testing.M) {
	testkit.Main(m, testkit.Roles{
		activation.ShimArg: func(args []string) int {
			fmt.Fprintln(os.Stderr, activation.Shim(args))
			return 127
		},
		helperRole: func([]string) int { helper(); return 0 },
	})
}

// report is what the helper tells about itself.
type report struct {
	PID, PPID   int
	ListenPID   string
	WatchdogPID string
	Other       string
	Dir         string
	Args        []string
	// Open maps each fd open without close-on-exec (fds that crossed the
	// exec: the helper's runtime opens its own close-on-exec) to its inode.
	Open map[int]uint64
	// ShimEnv lists the FORKD_SHIM_* entries of its environment.
	ShimEnv []string
}

func helper() {
	r := report{PID: os.Getpid(), PPID: os.Getppid(), ListenPID: os.Getenv("LISTEN_PID"),
		WatchdogPID: os.Getenv("WATCHDOG_PID"), Other: os.Getenv("OTHER"), Args: os.Args[1:], Open: map[int]uint64{}}
	r.Dir, _ = os.Getwd()
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "FORKD_SHIM_") {
			r.ShimEnv = append(r.ShimEnv, kv)
		}
	}
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		var st unix.Stat_t
		if err == nil && flags&unix.FD_CLOEXEC == 0 && unix.Fstat(fd, &st) == nil {
			r.Open[fd] = st.Ino
		}
	}
	if err := json.NewEncoder(os.NewFile(3, "report")).Encode(r); err != nil {
		os.Exit(3)
	}
	os.Exit(helperExit)
}

// bothWays runs test with a process started directly and one started
// through the exec-shim (the test binary), each forced.
func bothWays(t *testing.T, test func(t *testing.T, a process.Attr)) {
	shim, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Run("direct", func(t *testing.T) { test(t, process.Attr{}) })
	t.Run("shim", func(t *testing.T) { test(t, process.Attr{Shim: shim, ExecShim: true}) })
}

// stdio returns stdin (/dev/null), stdout and stderr for a process.
func stdio(t *testing.T) []*os.File {
	t.Helper()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { devnull.Close() })
	return []*os.File{devnull, os.Stderr, os.Stderr}
}

func inode(t *testing.T, f *os.File) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// wait waits for p's end, failing the test after a deadline.
func wait(t *testing.T, p *process.Process) process.Exit {
	t.Helper()
	type result struct {
		exit process.Exit
		err  error
	}
	done := make(chan result, 1)
	go func() {
		e, err := p.Wait()
		done <- result{e, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("Wait: %v", r.err)
		}
		return r.exit
	case <-time.After(30 * time.Second):
		_ = unix.Kill(p.PID, unix.SIGKILL)
		t.Fatalf("pid %d did not end within 30s", p.PID)
		return process.Exit{}
	}
}

// TestStart_Contract: the program is the started process, sees its own pid
// in LISTEN_PID and WATCHDOG_PID, has its Files as fds 0… and no other fd
// (none of those the caller holds without close-on-exec), runs in Dir with
// its Args, and its exit status is reported.
func TestStart_Contract(t *testing.T) {
	bothWays(t, func(t *testing.T, a process.Attr) {
		self, _ := os.Executable()
		reportR, reportW, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer reportR.Close()
		extraR, extraW, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer extraR.Close()
		defer extraW.Close()
		// An fd without close-on-exec, as a master inherits from whoever
		// started it: it must not reach the program.
		stray, err := unix.FcntlInt(extraR.Fd(), unix.F_DUPFD, 100)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(stray)

		a.Path = self
		a.Args = []string{"-test.run=^$", "one two"}
		a.Env = []string{testkit.RoleEnv + "=" + helperRole, "GORACE=atexit_sleep_ms=0", "LISTEN_PID=1", "OTHER=x=y"}
		a.PIDEnv = []string{"LISTEN_PID", "WATCHDOG_PID"}
		a.Dir = t.TempDir()
		a.Files = append(stdio(t), reportW, extraW)
		want := map[int]uint64{}
		for i, f := range a.Files {
			want[i] = inode(t, f)
		}
		p, err := process.Start(&a)
		reportW.Close()
		if err != nil {
			t.Fatal(err)
		}
		var r report
		if err := json.NewDecoder(reportR).Decode(&r); err != nil {
			t.Errorf("read the program's report: %v", err)
		}
		e := wait(t, p)
		if e.ExecErr != nil || e.Code() != helperExit || e.Signal() != 0 || e.String() != "exited with status 7" {
			t.Errorf("Exit %+v (%q, code %d), want an exit with status %d", e, e, e.Code(), helperExit)
		}
		if r.PID != p.PID || r.PPID != os.Getpid() {
			t.Errorf("program pid %d, parent %d; want %d started by %d (no process in between)", r.PID, r.PPID, p.PID, os.Getpid())
		}
		if own := strconv.Itoa(p.PID); r.ListenPID != own || r.WatchdogPID != own {
			t.Errorf("LISTEN_PID=%q WATCHDOG_PID=%q, want the program's own pid %s", r.ListenPID, r.WatchdogPID, own)
		}
		if r.Other != "x=y" || len(r.ShimEnv) > 0 {
			t.Errorf("OTHER=%q and %q in the environment, want OTHER=x=y and nothing of the shim's", r.Other, r.ShimEnv)
		}
		if dir, _ := filepath.EvalSymlinks(a.Dir); r.Dir != dir {
			t.Errorf("working directory %q, want %q", r.Dir, dir)
		}
		if !slices.Equal(r.Args, a.Args) {
			t.Errorf("args %q, want %q", r.Args, a.Args)
		}
		if fmt.Sprint(r.Open) != fmt.Sprint(want) {
			t.Errorf("open fds (fd:inode) %v, want exactly the Files %v", r.Open, want)
		}
	})
}

// TestStart_ExecFailure: a program that is missing or not executable is
// reported by Start or by Wait, with what the system said.
func TestStart_ExecFailure(t *testing.T) {
	bothWays(t, func(t *testing.T, a process.Attr) {
		dir := t.TempDir()
		script := filepath.Join(dir, "script")
		if err := os.WriteFile(script, []byte("#!/bin/sh\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name, path string
			errno      syscall.Errno
		}{
			{"missing", filepath.Join(dir, "nope"), syscall.ENOENT},
			{"not executable", script, syscall.EACCES},
		} {
			t.Run(tc.name, func(t *testing.T) {
				a.Path, a.Files = tc.path, stdio(t)
				a.Env = []string{"GORACE=atexit_sleep_ms=0"} // the exec-shim's, under -race
				p, err := process.Start(&a)
				if err == nil {
					e := wait(t, p)
					if e.Code() != 127 {
						t.Errorf("Exit %+v, want status 127", e)
					}
					if err = e.ExecErr; !strings.HasPrefix(e.String(), "could not start: ") {
						t.Errorf("Exit says %q, want it to say it could not start", e)
					}
				}
				if !errors.Is(err, tc.errno) || !strings.Contains(err.Error(), filepath.Base(tc.path)) {
					t.Errorf("error %v, want one naming %s and wrapping %v", err, tc.path, tc.errno)
				}
			})
		}
	})
}

// TestStart_Pdeathsig: the program gets SIGKILL when the thread that
// started it exits (here a goroutine locked to its thread, which returns
// without unlocking it), and Wait reports that.
func TestStart_Pdeathsig(t *testing.T) {
	bothWays(t, func(t *testing.T, a process.Attr) {
		a.Path, a.Args, a.Files = "/bin/sleep", []string{"60"}, stdio(t)
		type started struct {
			p   *process.Process
			err error
		}
		ch := make(chan started)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
			p, err := process.Start(&a)
			ch <- started{p, err}
		}()
		s := <-ch
		if s.err != nil {
			t.Fatal(s.err)
		}
		if e := wait(t, s.p); e.Signal() != syscall.SIGKILL || e.String() != "killed by SIGKILL" {
			t.Errorf("Exit %+v (%q), want killed by SIGKILL", e, e)
		}
	})
}

// TestProcess_Signal: Signal reaches the process; after its end it is no
// error.
func TestProcess_Signal(t *testing.T) {
	bothWays(t, func(t *testing.T, a process.Attr) {
		a.Path, a.Args, a.Files = "/bin/sleep", []string{"60"}, stdio(t)
		p, err := process.Start(&a)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if e := wait(t, p); e.Signal() != syscall.SIGTERM || e.Code() != -1 {
			t.Errorf("Exit %+v, want killed by SIGTERM", e)
		}
		if err := p.Signal(syscall.SIGTERM); err != nil {
			t.Errorf("Signal after Wait: %v, want nil", err)
		}
	})
}

// TestAdopt: a child this process started otherwise is watched and reaped
// like one Start started.
func TestAdopt(t *testing.T) {
	devnull := stdio(t)[0]
	pid, err := syscall.ForkExec("/bin/sh", []string{"sh", "-c", "exit 5"},
		&syscall.ProcAttr{Files: []uintptr{devnull.Fd(), 2, 2}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := process.Adopt(pid)
	if err != nil {
		t.Fatal(err)
	}
	if e := wait(t, p); e.Code() != 5 || e.ExecErr != nil {
		t.Errorf("Exit %+v, want status 5", e)
	}
	if _, err := process.Adopt(0); err == nil {
		t.Error("Adopt(0) succeeded")
	}
}

func TestStart_BadAttr(t *testing.T) {
	files := stdio(t)
	for _, a := range []process.Attr{
		{Path: "sleep", Files: files},
		{Path: "/bin/sleep", Files: files[:2]},
		{Path: "/bin/sleep", Files: []*os.File{files[0], nil, files[2]}},
		{Path: "/bin/sleep", Files: files, Shim: "forkd"},
		{Path: "/bin/sleep", Files: files, ExecShim: true},
	} {
		if p, err := process.Start(&a); err == nil {
			_ = p.Signal(syscall.SIGKILL)
			_, _ = p.Wait()
			t.Errorf("Start(%+v) succeeded", a)
		}
	}
}

// TestStart_Cgroup: with Attr.Cgroup the process runs in that cgroup,
// started directly (clone3 CLONE_INTO_CGROUP) or through the exec-shim
// (which moves itself there before it execs). Needs a writable cgroup v2
// hierarchy.
func TestStart_Cgroup(t *testing.T) {
	bothWays(t, func(t *testing.T, a process.Attr) {
		dir := testkit.Cgroup(t)
		cg, err := os.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer cg.Close()
		out := filepath.Join(t.TempDir(), "cgroup")
		a.Path, a.Args, a.Files, a.Cgroup = "/bin/sh", []string{"-c", "cat /proc/self/cgroup > " + out}, stdio(t), cg
		p, err := process.Start(&a)
		if err != nil {
			t.Fatal(err)
		}
		if e := wait(t, p); e.Code() != 0 {
			t.Fatalf("sh exited %+v", e)
		}
		b, err := os.ReadFile(out)
		if err != nil || !strings.HasSuffix(strings.TrimSpace(string(b)), "/"+filepath.Base(dir)) {
			t.Errorf("the process's /proc/self/cgroup = %q (%v), want it in %s", b, err, dir)
		}
	})
}
