package master

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/forkd/forkd/internal/testkit"
	"github.com/forkd/forkd/workers"
)

// orphanConfig is a config whose workers each leave an orphan behind
// before they serve: a shell that starts `sleep 0.2` in the background,
// writes its pid to dir/orphans and exits, so that the sleep is
// re-parented to forkd (PID 1 or a subreaper) and exits 0.2 s later.
func orphanConfig(t *testing.T, dir, addr, extra string) string {
	t.Helper()
	exe := testkit.Executable(t)
	script := fmt.Sprintf(`sh -c 'sleep 0.2 & echo $! >>%s/orphans'; exec "$0"`, dir)
	cfg := fmt.Sprintf(`[server]
name = "orphans"
workers = 2
bind = ["tcp://%s"]
graceful_timeout = "5s"
kill_timeout = "2s"
%s
[worker]
command = "/bin/sh"
args = ["-c", %q, %q]

[worker.env]
%s = "worker serve"
GOTRACEBACK = "none"
`, addr, extra, script, exe, testkit.RoleEnv)
	p := filepath.Join(dir, "orphans.toml")
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// zombieChildren lists the zombies among the children of pid, as the
// /proc at procRoot sees them.
func zombieChildren(t *testing.T, procRoot string, pid int) []string {
	t.Helper()
	stats, err := filepath.Glob(filepath.Join(procRoot, "[0-9]*", "stat"))
	if err != nil {
		t.Fatal(err)
	}
	var zombies []string
	for _, p := range stats {
		data, err := os.ReadFile(p)
		if err != nil {
			continue // gone
		}
		i := bytes.LastIndexByte(data, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(data[i+1:])) // state ppid …
		if len(f) > 1 && f[0] == "Z" && f[1] == strconv.Itoa(pid) {
			zombies = append(zombies, strings.TrimSpace(string(data)))
		}
	}
	return zombies
}

// checkOrphansReaped waits until forkd logged reaping every orphan its
// workers wrote to dir/orphans, then checks, in the /proc at procRoot
// where forkd is pid forkdPID, that the orphans are gone and forkd has no
// zombie child.
func checkOrphansReaped(t *testing.T, log *testkit.Buffer, dir, procRoot string, forkdPID int) {
	t.Helper()
	// Each worker wrote its orphan's pid before it served: both did once
	// the generation is ready.
	log.WaitFor(t, "msg=ready ")
	data, err := os.ReadFile(filepath.Join(dir, "orphans"))
	pids := strings.Fields(string(data))
	if err != nil || len(pids) != 2 {
		t.Fatalf("the workers wrote orphans %q (%v), want 2", pids, err)
	}
	for _, pid := range pids {
		line := log.WaitFor(t, `msg="reaped an orphan" pid=`+pid+" ")
		if !strings.Contains(line, "command=sleep") || !strings.Contains(line, "level=DEBUG") {
			t.Errorf("reaped orphan %s: %q, want a debug line naming sleep", pid, line)
		}
		if _, err := os.Stat(filepath.Join(procRoot, pid)); err == nil {
			t.Errorf("orphan %s still in %s after forkd said it reaped it", pid, procRoot)
		}
	}
	if z := zombieChildren(t, procRoot, forkdPID); len(z) > 0 {
		t.Errorf("forkd has zombie children:\n%s", strings.Join(z, "\n"))
	}
}

// TestPID1_ReapsOrphans starts forkd as PID 1 of a new PID namespace, as
// a container runtime would (unshare --pid --fork --mount-proc), with
// workers that each leave a background command behind: forkd reaps the
// orphans (logged at debug level), leaves no zombie, and stops cleanly on
// SIGTERM, as under systemd.
func TestPID1_ReapsOrphans(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root: a new PID namespace (unshare --pid) needs root")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("no unshare (util-linux)")
	}
	if out, err := exec.Command(unshare, "--pid", "--fork", "--mount-proc", "true").CombinedOutput(); err != nil {
		t.Skipf("unshare --pid --fork --mount-proc: %v %s", err, out)
	}
	dir := t.TempDir()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	cfg := orphanConfig(t, dir, addr, "")
	var log testkit.Buffer
	cmd := exec.Command(unshare, "--pid", "--fork", "--mount-proc", "--kill-child",
		testkit.Executable(t), "--config", cfg, "--bus", "none", "--log-level", "debug")
	cmd.Env = append(forkdEnv(), "RUNTIME_DIRECTORY="+dir)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	done := make(chan struct{}) // closed once cmd was waited for
	go func() { waitErr = cmd.Wait(); close(done) }()
	forkd := 0 // forkd's pid in this test's namespace, once known
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			// The namespace's PID 1 ignores the SIGKILL --kill-child
			// has sent it from inside; from here it is killed, and the
			// namespace goes with it.
			if forkd > 0 {
				_ = syscall.Kill(forkd, syscall.SIGKILL)
			}
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("forkd's log:\n%s", log.String())
		}
	})

	// forkd is unshare's child; its /proc is the namespace's.
	log.WaitFor(t, "msg=listening")
	kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
	if err != nil || len(strings.Fields(string(kids))) != 1 {
		t.Fatalf("unshare's children: %q (%v), want forkd alone", kids, err)
	}
	forkd, _ = strconv.Atoi(strings.Fields(string(kids))[0])
	procRoot := fmt.Sprintf("/proc/%d/root/proc", forkd)
	if self, err := os.Readlink(filepath.Join(procRoot, "1", "exe")); err != nil || self != testkit.Executable(t) {
		t.Fatalf("PID 1 of the namespace runs %q (%v), want forkd (the test binary)", self, err)
	}
	if !strings.Contains(log.WaitFor(t, "reaping orphans"), "pid1=true") {
		t.Errorf("forkd as PID 1 does not say it reaps orphans as PID 1")
	}
	checkOrphansReaped(t, &log, dir, procRoot, 1)

	// The workers still serve: their exit statuses are forkd's own.
	if _, err := askAddr(addr); err != nil {
		t.Errorf("after the orphans were reaped: %v", err)
	}
	if err := syscall.Kill(forkd, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
		if waitErr != nil {
			t.Errorf("forkd as PID 1 after SIGTERM: %v, want exit 0", waitErr)
		}
	case <-time.After(testTimeout):
		t.Fatalf("forkd as PID 1 did not stop within %v of SIGTERM", testTimeout)
	}
	text := log.String()
	if strings.Contains(text, "level=ERROR") || strings.Contains(text, "crashed") {
		t.Errorf("forkd's stop was not clean:\n%s", text)
	}
}

// TestSubreaper_ReapsOrphans: with [server] subreaper = true, forkd run as
// any process reaps its workers' orphans and keeps its workers' statuses,
// also those of the workers it adopted in an in-place upgrade.
func TestSubreaper_ReapsOrphans(t *testing.T) {
	dir := t.TempDir()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	cfg := orphanConfig(t, dir, addr, "subreaper = true\n")
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString("\n[[singleton]]\nname = \"keeper\"\ncommand = \"/bin/sleep\"\nargs = [\"1000\"]\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	var log testkit.Buffer
	cmd := exec.Command(testkit.Executable(t), "--config", cfg, "--bus", "none", "--log-level", "debug")
	cmd.Env = append(forkdEnv(), "RUNTIME_DIRECTORY="+dir)
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	done := make(chan struct{}) // closed once cmd was waited for
	go func() { waitErr = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("forkd's log:\n%s", log.String())
		}
	})
	if !strings.Contains(log.WaitFor(t, "reaping orphans"), "subreaper=true") {
		t.Errorf("forkd does not say it reaps orphans as a subreaper")
	}
	checkOrphansReaped(t, &log, dir, "/proc", cmd.Process.Pid)
	if _, err := askAddr(addr); err != nil {
		t.Errorf("after the orphans were reaped: %v", err)
	}

	// After an in-place upgrade the new master's reaper leaves the
	// adopted workers to the pool: a worker killed then is a worker exit,
	// not an orphan.
	if err := cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	log.WaitFor(t, "upgraded: adopted workers")
	a, err := askAddr(addr)
	if err != nil {
		t.Fatalf("after the upgrade: %v", err)
	}
	if err := syscall.Kill(a.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	log.WaitFor(t, fmt.Sprintf(`msg="worker killed by SIGKILL" worker_id=%d pid=%d `, a.id, a.pid))
	if strings.Contains(log.String(), fmt.Sprintf(`msg="reaped an orphan" pid=%d `, a.pid)) {
		t.Errorf("the reaper took adopted worker %d's exit from the pool", a.pid)
	}
	// So is the singleton, which the supervisor adopted.
	started := log.WaitFor(t, `msg="singleton started" singleton=keeper pid=`)
	keeper, err := strconv.Atoi(strings.Fields(strings.SplitN(started, "pid=", 2)[1])[0])
	if err != nil {
		t.Fatalf("singleton pid in %q: %v", started, err)
	}
	if err := syscall.Kill(keeper, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	log.WaitFor(t, fmt.Sprintf(`msg="singleton exited" singleton=keeper pid=%d `, keeper))
	if strings.Contains(log.String(), fmt.Sprintf(`msg="reaped an orphan" pid=%d `, keeper)) {
		t.Errorf("the reaper took adopted singleton %d's exit from the supervisor", keeper)
	}

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
		if waitErr != nil {
			t.Errorf("forkd after SIGINT: %v, want exit 0", waitErr)
		}
	case <-time.After(testTimeout):
		t.Fatalf("forkd did not stop within %v of SIGINT", testTimeout)
	}
	if text := log.String(); strings.Contains(text, "level=ERROR") {
		t.Errorf("forkd's stop was not clean:\n%s", text)
	}
}

// askAddr connects to addr and returns the answering test worker.
func askAddr(addr string) (answer, error) { return (&forkd{addr: addr}).ask() }

// TestHandedOver reads the pids of an upgrade's handover: the workers,
// the singletons and the schedules' runs in flight; nil when the jobs'
// part is not what the supervisor writes.
func TestHandedOver(t *testing.T) {
	h := &workers.Handover{
		Workers: []workers.HandoverWorker{{ID: 0, PID: 10}, {ID: 1, PID: 11}},
		Jobs: json.RawMessage(`{"singletons":[{"name":"keeper","pid":12}],` +
			`"schedules":[{"name":"tick","run":{"id":"r1","pid":13}},{"name":"idle"}]}`),
	}
	if got := handedOver(h); !slices.Equal(got, []int{10, 11, 12, 13}) {
		t.Errorf("handedOver: %v, want [10 11 12 13]", got)
	}
	h.Jobs = json.RawMessage(`[1, 2]`)
	if got := handedOver(h); got != nil {
		t.Errorf("handedOver with unreadable jobs: %v, want nil", got)
	}
	h.Jobs = nil
	if got := handedOver(h); !slices.Equal(got, []int{10, 11}) {
		t.Errorf("handedOver without jobs: %v, want [10 11]", got)
	}
}
