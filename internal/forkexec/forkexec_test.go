//go:build linux

package forkexec

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/internal/testkit"
)

// helperRole makes the test binary the child (testkit.RoleEnv): it reports
// what it was started with on fd 3 and exits.
const helperRole = "report"

// report is what the helper child tells about itself.
type report struct {
	PID         int
	PPID        int
	ListenPID   string
	WatchdogPID string
	Other       string // OTHER, which must pass through unchanged
	Dir         string
	SigIgn      string // from /proc/self/status, hex
	SigBlk      string
	Inodes      map[int]uint64 // fd → inode, fds 0…7
	Cloexec     map[int]bool
	// Crossed lists the fds from 8 up that are open without close-on-exec:
	// fds that crossed the exec (the child's runtime opens its own with it).
	Crossed []int
	Args    []string
	// Cgroup is the helper's cgroup v2 (the 0:: line of
	// /proc/self/cgroup).
	Cgroup string
}

func init() {
	// The main goroutine keeps the main thread, so that no test goroutine
	// runs there: the parent-death tests end the thread of a goroutine
	// that exits locked to it, which the runtime does for every thread but
	// the main one.
	runtime.LockOSThread()
}

func TestMain(m *testing.M) {
	testkit.Main(m, testkit.Roles{helperRole: func([]string) int { return helper() }})
}

func helper() int {
	r := report{
		PID: os.Getpid(), PPID: os.Getppid(),
		ListenPID: os.Getenv("LISTEN_PID"), WatchdogPID: os.Getenv("WATCHDOG_PID"),
		Other:  os.Getenv("OTHER"),
		Inodes: map[int]uint64{}, Cloexec: map[int]bool{},
		Args: os.Args[1:],
	}
	r.Dir, _ = os.Getwd()
	if b, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if p, ok := strings.CutPrefix(line, "0::"); ok {
				r.Cgroup = p
			}
		}
	}
	if status, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(status), "\n") {
			k, v, _ := strings.Cut(line, ":")
			switch k {
			case "SigIgn":
				r.SigIgn = strings.TrimSpace(v)
			case "SigBlk":
				r.SigBlk = strings.TrimSpace(v)
			}
		}
	}
	// The Go runtime's own fds are opened after ours with O_CLOEXEC; only
	// fds 0…7 are looked at.
	for fd := 0; fd < 8; fd++ {
		var st unix.Stat_t
		if unix.Fstat(fd, &st) != nil {
			continue
		}
		r.Inodes[fd] = st.Ino
		flags, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		r.Cloexec[fd] = flags&unix.FD_CLOEXEC != 0
	}
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		for _, e := range ents {
			fd, err := strconv.Atoi(e.Name())
			if err != nil || fd < 8 {
				continue
			}
			if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil && flags&unix.FD_CLOEXEC == 0 {
				r.Crossed = append(r.Crossed, fd)
			}
		}
	}
	out := os.NewFile(3, "report")
	if err := json.NewEncoder(out).Encode(r); err != nil {
		return 3
	}
	return 0
}

func helperAttr(t *testing.T) *Attr {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return &Attr{
		Path:   self,
		Args:   []string{self, "-test.run=^$", "one", "two"},
		Env:    []string{testkit.RoleEnv + "=" + helperRole, "GORACE=atexit_sleep_ms=0", "LISTEN_PID=1", "OTHER=x=y", "PATH=" + os.Getenv("PATH")},
		PIDEnv: []string{"LISTEN_PID", "WATCHDOG_PID"},
	}
}

// bothPaths runs test once for each way Start clones a child: the one
// this architecture uses (on amd64 a child sharing the caller's memory)
// and a child with a copy of the caller's memory, the way of every other
// architecture. Each of the tests sets copyVM in the Attrs it starts.
func bothPaths(t *testing.T, test func(t *testing.T, copyVM bool)) {
	t.Run("native", func(t *testing.T) { test(t, false) })
	t.Run("copy", func(t *testing.T) { test(t, true) })
}

func pipe(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

func inode(t *testing.T, f *os.File) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestStart_EnvFilesSignals(t *testing.T) {
	// A signal the parent ignores and one it catches must both be SIG_DFL
	// in the child, and none blocked.
	signal.Ignore(syscall.SIGHUP)
	defer signal.Reset(syscall.SIGHUP)
	caught := make(chan os.Signal, 1)
	signal.Notify(caught, syscall.SIGUSR2)
	defer signal.Stop(caught)
	bothPaths(t, testEnvFilesSignals)
}

func testEnvFilesSignals(t *testing.T, copyVM bool) {
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	reportR, reportW := pipe(t)
	_, extraW := pipe(t)
	a := helperAttr(t)
	a.copyVM = copyVM
	a.Dir = t.TempDir()
	a.Files = []int{int(devnull.Fd()), int(os.Stderr.Fd()), int(os.Stderr.Fd()), int(reportW.Fd()), -1, int(extraW.Fd())}
	want := map[int]uint64{0: inode(t, devnull), 3: inode(t, reportW), 5: inode(t, extraW)}
	r, status := run(t, a, reportR, reportW)
	if status != 0 {
		t.Fatalf("helper exited %d", status)
	}
	self := strconv.Itoa(r.PID)
	if r.ListenPID != self || r.WatchdogPID != self {
		t.Errorf("LISTEN_PID=%q WATCHDOG_PID=%q, want the child's pid %s (the stale LISTEN_PID=1 replaced)", r.ListenPID, r.WatchdogPID, self)
	}
	if r.Other != "x=y" {
		t.Errorf("OTHER=%q, want x=y", r.Other)
	}
	if r.PPID != os.Getpid() {
		t.Errorf("ppid %d, want %d", r.PPID, os.Getpid())
	}
	if want, _ := filepath.EvalSymlinks(a.Dir); r.Dir != want {
		t.Errorf("cwd %q, want %q", r.Dir, want)
	}
	if strings.Trim(r.SigIgn, "0") != "" || strings.Trim(r.SigBlk, "0") != "" {
		t.Errorf("SigIgn %s SigBlk %s, want none ignored or blocked", r.SigIgn, r.SigBlk)
	}
	if got := strings.Join(r.Args, " "); got != "-test.run=^$ one two" {
		t.Errorf("args %q", got)
	}
	for fd, ino := range want {
		if r.Inodes[fd] != ino {
			t.Errorf("fd %d: inode %d, want %d", fd, r.Inodes[fd], ino)
		}
		if r.Cloexec[fd] {
			t.Errorf("fd %d is close-on-exec", fd)
		}
	}
	// What the child's own runtime opens is close-on-exec; an fd that
	// crossed the exec is not.
	for _, fd := range []int{4, 6, 7} {
		if _, open := r.Inodes[fd]; open && !r.Cloexec[fd] {
			t.Errorf("fd %d crossed the exec, want it closed (Files[4] = -1; 6, 7 not passed)", fd)
		}
	}
}

// TestStart_InheritedFDs: an fd the parent holds without close-on-exec —
// one it inherited, say — does not reach the child: a worker gets fds 0…n-1
// of Files and nothing else, as from systemd.
func TestStart_InheritedFDs(t *testing.T) { bothPaths(t, testInheritedFDs) }

func testInheritedFDs(t *testing.T, copyVM bool) {
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	// F_DUPFD: no close-on-exec, and from 100 up, where the helper looks.
	inherited, err := unix.FcntlInt(devnull.Fd(), unix.F_DUPFD, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(inherited)
	reportR, reportW := pipe(t)
	a := helperAttr(t)
	a.copyVM = copyVM
	a.Files = []int{int(devnull.Fd()), int(os.Stderr.Fd()), int(os.Stderr.Fd()), int(reportW.Fd())}
	r, status := run(t, a, reportR, reportW)
	if status != 0 {
		t.Fatalf("helper exited %d", status)
	}
	if len(r.Crossed) != 0 {
		t.Errorf("fds %v crossed the exec (the parent's %d among them?), want only 0…3", r.Crossed, inherited)
	}
}

// run starts the helper with a and returns its report and exit status,
// closing the parent's copy of the report pipe's write
// end after Start so that the read sees EOF when the child exits.
func run(t *testing.T, a *Attr, reportR, reportW *os.File) (report, int) {
	t.Helper()
	proc, err := Start(a)
	reportW.Close()
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer syscall.Close(proc.PIDFD)
	if err := proc.Exec(); err != nil {
		t.Fatalf("Exec: %v", err)
	}
	pid := proc.PID
	b, err := io.ReadAll(reportR)
	if err != nil {
		t.Fatalf("read report: %v", err)
	}
	var r report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("helper's report %q: %v", b, err)
	}
	if r.PID != pid {
		t.Errorf("helper's pid %d, Start returned %d", r.PID, pid)
	}
	return r, exitStatus(t, pid)
}

// exitStatus waits for the child pid and returns its exit status.
func exitStatus(t *testing.T, pid int) int {
	t.Helper()
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			t.Fatalf("wait4 %d: %v", pid, err)
		}
		break
	}
	if !ws.Exited() {
		t.Fatalf("pid %d: %v, want an exit", pid, ws)
	}
	return ws.ExitStatus()
}

func TestStart_Errors(t *testing.T) { bothPaths(t, testErrors) }

func testErrors(t *testing.T, copyVM bool) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "script")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		a    Attr
		op   string
		err  error
	}{
		{"missing program", Attr{Path: filepath.Join(dir, "nope"), Args: []string{"nope"}}, "exec", syscall.ENOENT},
		{"not executable", Attr{Path: notExec, Args: []string{"script"}}, "exec", syscall.EACCES},
		{"missing dir", Attr{Path: "/bin/true", Args: []string{"true"}, Dir: filepath.Join(dir, "gone")}, "chdir", syscall.ENOENT},
		{"bad fd", Attr{Path: "/bin/true", Args: []string{"true"}, Files: []int{0, 1, 2, 999}}, "", syscall.EBADF},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.a.copyVM = copyVM
			proc, err := Start(&c.a)
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			err = proc.Exec()
			if !errors.Is(err, c.err) {
				t.Fatalf("Exec: %v, want %v", err, c.err)
			}
			if status := exitStatus(t, proc.PID); status != 127 {
				t.Errorf("the failed child exited %d, want 127", status)
			}
			syscall.Close(proc.PIDFD)
			var pe *os.PathError
			if c.op != "" && (!errors.As(err, &pe) || pe.Op != c.op) {
				t.Errorf("Start: %v, want an *os.PathError for %s", err, c.op)
			}
		})
	}
}

// TestStart_DefaultSlice: a caller thread that asked for a short time
// slice and a higher nice value starts children that inherit both, and,
// with DefaultSlice, children that keep its nice value but take the
// kernel's default slice.
func TestStart_DefaultSlice(t *testing.T) { bothPaths(t, testDefaultSlice) }

func testDefaultSlice(t *testing.T, copyVM bool) {
	type result struct {
		orig, plain, reset *unix.SchedAttr
		skip               string
		err                error
	}
	ch := make(chan result, 1)
	go func() {
		// The test changes this thread's scheduling: the thread ends with
		// the goroutine, never unlocked.
		runtime.LockOSThread()
		var r result
		defer func() { ch <- r }()
		orig, err := unix.SchedGetAttr(0, 0)
		switch {
		case err != nil:
			r.err = err
			return
		case orig.Policy != unix.SCHED_NORMAL && orig.Policy != unix.SCHED_BATCH:
			r.skip = "the test runs with a real-time policy: slices do not apply"
			return
		case orig.Runtime == 0:
			r.skip = "sched_getattr reports no time slice: a kernel before Linux 6.12"
			return
		}
		r.orig = orig
		asked := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: orig.Policy, Nice: min(orig.Nice+3, 19),
			Runtime: uint64(3 * time.Millisecond)}
		if r.err = unix.SchedSetAttr(0, &asked, 0); r.err != nil {
			return
		}
		if r.plain, r.err = sleeperSched(copyVM, false); r.err != nil {
			return
		}
		r.reset, r.err = sleeperSched(copyVM, true)
	}()
	r := <-ch
	switch {
	case r.err != nil:
		t.Fatal(r.err)
	case r.skip != "":
		t.Skip(r.skip)
	}
	want := min(r.orig.Nice+3, 19)
	if r.plain.Nice != want || r.reset.Nice != want {
		t.Errorf("children run at nice %d and %d (DefaultSlice), want the caller's %d", r.plain.Nice, r.reset.Nice, want)
	}
	if got := time.Duration(r.plain.Runtime); got != 3*time.Millisecond {
		t.Errorf("without DefaultSlice the child's slice is %v, want the caller's 3ms", got)
	}
	if got, def := time.Duration(r.reset.Runtime), time.Duration(r.orig.Runtime); got != def {
		t.Errorf("with DefaultSlice the child's slice is %v, want the kernel's default %v", got, def)
	}
}

// sleeperSched starts sleep(1) and returns its scheduling.
func sleeperSched(copyVM, defaultSlice bool) (*unix.SchedAttr, error) {
	proc, err := Start(&Attr{Path: "/bin/sleep", Args: []string{"sleep", "30"}, DefaultSlice: defaultSlice, copyVM: copyVM})
	if err != nil {
		return nil, err
	}
	defer func() {
		_ = unix.Kill(proc.PID, unix.SIGKILL)
		var ws unix.WaitStatus
		_, _ = unix.Wait4(proc.PID, &ws, 0, nil)
		syscall.Close(proc.PIDFD)
	}()
	if err := proc.Exec(); err != nil {
		return nil, err
	}
	return unix.SchedGetAttr(proc.PID, 0)
}

func TestStart_BadAttr(t *testing.T) {
	for _, a := range []Attr{
		{Path: "/bin/true\x00", Args: []string{"true"}},
		{Path: "/bin/true", Args: []string{"true"}, PIDEnv: []string{"A=B"}},
		{Path: "/bin/true", Args: []string{"true"}, PIDEnv: []string{""}},
	} {
		if _, err := Start(&a); err == nil || !strings.HasPrefix(err.Error(), "forkexec: ") {
			t.Errorf("Start(%+v): %v, want a forkexec error", a, err)
		}
	}
}

// TestStart_Concurrent starts children from many goroutines while the
// garbage collector runs, as a stress of the fork path under -race.
func TestStart_Concurrent(t *testing.T) { bothPaths(t, testConcurrent) }

func testConcurrent(t *testing.T, copyVM bool) {
	stop := make(chan struct{})
	gcDone := make(chan struct{})
	go func() {
		defer close(gcDone)
		for {
			select {
			case <-stop:
				return
			default:
				runtime.GC()
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				a := &Attr{Path: "/bin/sh", Args: []string{"sh", "-c", `test "$LISTEN_PID" = "$$"`},
					Env: []string{"X=" + strings.Repeat("y", i)}, PIDEnv: []string{"LISTEN_PID"}, copyVM: copyVM}
				proc, err := Start(a)
				if err == nil {
					err = proc.Exec()
				}
				if err != nil {
					errs <- err
					return
				}
				pid, pidfd := proc.PID, proc.PIDFD
				var ws unix.WaitStatus
				if _, err := unix.Wait4(pid, &ws, 0, nil); err != nil {
					errs <- err
				} else if ws.ExitStatus() != 0 {
					errs <- fmt.Errorf("pid %d: LISTEN_PID is not its pid (exit %d)", pid, ws.ExitStatus())
				}
				syscall.Close(pidfd)
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-gcDone
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestStart_Pdeathsig checks that the child gets Pdeathsig when the thread
// that started it exits: a goroutine locked to its thread starts the child
// and returns without unlocking, which ends the thread.
func TestStart_Pdeathsig(t *testing.T) { bothPaths(t, testPdeathsig) }

func testPdeathsig(t *testing.T, copyVM bool) {
	type started struct {
		pid, pidfd int
		err        error
	}
	ch := make(chan started)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		proc, err := Start(&Attr{Path: "/bin/sleep", Args: []string{"sleep", "60"}, Pdeathsig: syscall.SIGKILL, copyVM: copyVM})
		if err == nil {
			err = proc.Exec()
		}
		if err != nil {
			ch <- started{err: err}
			return
		}
		ch <- started{proc.PID, proc.PIDFD, nil}
	}()
	s := <-ch
	if s.err != nil {
		t.Fatal(s.err)
	}
	defer syscall.Close(s.pidfd)
	done := make(chan unix.WaitStatus)
	go func() {
		var ws unix.WaitStatus
		_, _ = unix.Wait4(s.pid, &ws, 0, nil)
		done <- ws
	}()
	select {
	case ws := <-done:
		if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Errorf("child ended with %v, want SIGKILL", ws)
		}
	case <-time.After(10 * time.Second):
		_ = unix.Kill(s.pid, unix.SIGKILL)
		t.Fatal("the child outlived the thread that started it")
	}
}

func TestStart_Cgroup(t *testing.T) { bothPaths(t, testCgroup) }

// testCgroup starts the helper with UseCgroup and checks that it ran in
// that cgroup: its /proc/self/cgroup, read by the helper, names it.
func testCgroup(t *testing.T, copyVM bool) {
	dir := testkit.Cgroup(t)
	cg, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	reportR, reportW := pipe(t)
	a := helperAttr(t)
	a.copyVM = copyVM
	a.Files = []int{0, 1, 2, int(reportW.Fd())}
	a.UseCgroup, a.CgroupFD = true, int(cg.Fd())
	r, code := run(t, a, reportR, reportW)
	if code != 0 {
		t.Fatalf("helper exited %d", code)
	}
	if !strings.HasSuffix(dir, r.Cgroup) || r.Cgroup == "" || r.Cgroup == "/" {
		t.Errorf("helper ran in cgroup %q, want %s", r.Cgroup, dir)
	}
}
