package master

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/forkd/forkd/bus"
	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/hooks"
	"github.com/forkd/forkd/internal/testkit"
)

// hookLines collects what exec hook commands write to a fifo, one line per
// command run, in the order they wrote.
type hookLines struct {
	t     *testing.T
	fifo  string
	lines chan string
}

// newHookLines makes the fifo and reads it until the test ends. The test
// holds it open for reading and writing, so a command's open never waits
// and the reader never sees the end of the file.
func newHookLines(t *testing.T) *hookLines {
	t.Helper()
	h := &hookLines{t: t, fifo: filepath.Join(t.TempDir(), "hooks.fifo"), lines: make(chan string, 256)}
	if err := syscall.Mkfifo(h.fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := os.OpenFile(h.fifo, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
	}()
	return h
}

// config returns [[hooks.NAME]] tables, one per hook in hs, whose command
// writes "tag hook generation" to the fifo.
func (h *hookLines) config(tag string, hs ...hooks.Hook) string {
	script := fmt.Sprintf(`echo "%s $FORKD_HOOK $FORKD_GENERATION" > "$0"`, tag)
	var b strings.Builder
	for _, hk := range hs {
		fmt.Fprintf(&b, "\n[[hooks.%s]]\nexec = [\"/bin/sh\", \"-c\", %q, %q]\n", hk, script, h.fifo)
	}
	return b.String()
}

// next returns the next line a command wrote, failing the test after
// testTimeout.
func (h *hookLines) next(what string) string {
	h.t.Helper()
	select {
	case line := <-h.lines:
		return line
	case <-time.After(testTimeout):
		h.t.Fatalf("no hook command wrote %s within %v", what, testTimeout)
		return ""
	}
}

// want checks that the next lines the commands write are lines, in order.
func (h *hookLines) want(lines ...string) {
	h.t.Helper()
	for _, want := range lines {
		if got := h.next(fmt.Sprintf("%q", want)); got != want {
			h.t.Fatalf("a hook command wrote %q, want %q", got, want)
		}
	}
}

// TestMaster_ExecHooksReload: a reload brings the [[hooks]] of the new
// config — added, changed and removed commands — as soon as the file is
// accepted (the new generation's pre_fork and its when_ready run the new
// commands), keeps them when it succeeds, and restores the old ones when it
// is rolled back or rejected.
func TestMaster_ExecHooksReload(t *testing.T) {
	h := newHookLines(t)
	f := newForkd(t, setup{instance: "hookreload", workers: 2})
	f.writeConfig("serve", h.config("v1", hooks.OnReload, hooks.WhenReady, hooks.NworkersChanged))
	f.start()
	h.want("v1 when_ready 1")

	// v2 adds pre_fork and child_exit, changes when_ready and on_reload,
	// and drops nworkers_changed. on_reload runs before the file is read.
	f.writeConfig("serve", h.config("v2", hooks.OnReload, hooks.PreFork, hooks.WhenReady, hooks.ChildExit))
	f.signal(syscall.SIGHUP)
	h.want("v1 on_reload 1", "v2 pre_fork 2", "v2 pre_fork 2", "v2 when_ready 2",
		"v2 child_exit 1", "v2 child_exit 1")
	// v1's nworkers_changed would come first, before the worker's exit.
	f.signal(syscall.SIGTTOU)
	h.want("v2 child_exit 2")

	// v3's generation crashes: its worker's exit runs v3's child_exit, and
	// the rollback brings back v2's commands.
	f.writeConfig("exit1", h.config("v3", hooks.OnReload, hooks.ChildExit, hooks.NworkersChanged,
		hooks.PostWorkerInit))
	f.signal(syscall.SIGHUP)
	h.want("v2 on_reload 2", "v3 child_exit 3")
	// The rollback was done when the worker's exit was handled, before the
	// arbiter takes this signal.
	f.signal(syscall.SIGTTIN)
	h.want("v2 pre_fork 2")

	// An invalid file keeps v2's commands too.
	f.writeConfig("serve", "bogus_key = 1\n"+h.config("v4", hooks.OnReload, hooks.ChildExit))
	f.signal(syscall.SIGHUP)
	h.want("v2 on_reload 2") // the file is read, and rejected, right after
	f.signal(syscall.SIGTTOU)
	h.want("v2 child_exit 2")
	if log := f.log(); !strings.Contains(log, "reload rejected") {
		t.Errorf("forkd did not log the rejected reload:\n%s", log)
	}
}

// TestMaster_ExecHooksUpgradeRefused: an upgrade reads the config file
// too, only to check that the new master can start with it; that changes
// no exec hook, whether the upgrade goes ahead or, as here, pre_exec
// refuses it.
func TestMaster_ExecHooksUpgradeRefused(t *testing.T) {
	h := newHookLines(t)
	f := newForkd(t, setup{instance: "hookupgrade", workers: 2})
	refuse := func(tag string) string {
		return fmt.Sprintf("\n[[hooks.pre_exec]]\nexec = [\"/bin/sh\", \"-c\", %q, %q]\non_failure = \"abort\"\n",
			fmt.Sprintf(`echo "%s pre_exec" > "$0"; exit 1`, tag), h.fifo)
	}
	f.writeConfig("serve", refuse("v1")+h.config("v1", hooks.WhenReady, hooks.ChildExit))
	f.start()
	h.want("v1 when_ready 1")

	f.writeConfig("serve", refuse("v2")+h.config("v2", hooks.WhenReady, hooks.ChildExit))
	f.signal(syscall.SIGUSR2)
	h.want("v1 pre_exec")
	f.signal(syscall.SIGTTOU)
	h.want("v1 child_exit 1")
	if log := f.log(); !strings.Contains(log, "upgrade aborted by pre_exec hook") {
		t.Errorf("forkd did not log the refused upgrade:\n%s", log)
	}
}

// TestMaster_ExecHooksStop: on TERM the child_exit and worker_exit commands
// of every worker run, each bounded by its timeout, before on_exit; then
// forkd exits.
func TestMaster_ExecHooksStop(t *testing.T) {
	h := newHookLines(t)
	f := newForkd(t, setup{instance: "hookstop", workers: 2})
	// The exit hooks hang until their timeout kills them: without a drain,
	// on_exit would come while they are still queued.
	slow := `echo "$FORKD_HOOK $FORKD_PID" > "$0"; exec sleep 100`
	var extra strings.Builder
	for _, hk := range []hooks.Hook{hooks.ChildExit, hooks.WorkerExit} {
		fmt.Fprintf(&extra, "\n[[hooks.%s]]\nexec = [\"/bin/sh\", \"-c\", %q, %q]\ntimeout = \"500ms\"\n", hk, slow, h.fifo)
	}
	extra.WriteString(h.config("done", hooks.WhenReady, hooks.OnExit))
	f.writeConfig("serve", extra.String())
	f.start()
	h.want("done when_ready 1")

	f.signal(syscall.SIGTERM)
	seen := map[string][]string{} // pid → its hooks, in order
	for range 4 {
		line := h.next("an exit hook's line")
		hook, pid, ok := strings.Cut(line, " ")
		if !ok || (hook != string(hooks.ChildExit) && hook != string(hooks.WorkerExit)) {
			t.Fatalf("a hook command wrote %q; want child_exit and worker_exit of each worker before anything else", line)
		}
		seen[pid] = append(seen[pid], hook)
	}
	if len(seen) != 2 {
		t.Fatalf("exit hooks ran for %v; want 2 workers", seen)
	}
	for pid, hs := range seen {
		if len(hs) != 2 || hs[0] != "child_exit" || hs[1] != "worker_exit" {
			t.Errorf("worker %s: hooks %v ran, want child_exit then worker_exit", pid, hs)
		}
	}
	h.want("done on_exit 1")
	if code := f.wait(testTimeout); code != 0 {
		t.Fatalf("forkd exited with %d, want 0", code)
	}
	if n := strings.Count(f.log(), "timed out after 500ms"); n != 4 {
		t.Errorf("forkd logged %d exit hook commands that timed out after 500ms, want 4:\n%s", n, f.log())
	}
}

// TestSinks_ExecDrops: the exec hook events that did not fit in the queue
// are logged — the first of the spell with its hook — and counted again
// when forkd exits, after the drain ran the ones that fit.
func TestSinks_ExecDrops(t *testing.T) {
	gate := filepath.Join(t.TempDir(), "gate")
	if err := syscall.Mkfifo(gate, 0o600); err != nil {
		t.Fatal(err)
	}
	f := newForkd(t, setup{instance: "drops", workers: 1})
	f.writeConfig("serve", fmt.Sprintf("\n[[hooks.post_fork]]\nexec = [\"/bin/sh\", \"-c\", \"cat \\\"$0\\\" > /dev/null\", %q]\n"+
		"\n[[hooks.child_exit]]\nexec = [\"/bin/echo\", \"ran\"]\n", gate))
	cfg, err := config.Load(f.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var out testkit.Buffer
	s, err := newSinks(options{bus: "none"}, cfg, slog.New(slog.NewTextHandler(&out, nil)))
	if err != nil {
		t.Fatal(err)
	}
	g := newGroup(context.Background())
	s.start(g)
	t.Cleanup(func() {
		g.cancel()
		_ = g.Wait()
	})

	// post_fork's command holds up the queue until the gate closes; the
	// child_exit events fill it.
	s.Emit(hooks.Event{Hook: hooks.PostFork, WorkerID: 0, PID: 1})
	opened := make(chan *os.File, 1)
	go func() {
		w, _ := os.OpenFile(gate, os.O_WRONLY, 0) // returns once cat opened it
		opened <- w
	}()
	var w *os.File
	select {
	case w = <-opened:
	case <-time.After(testTimeout):
		t.Fatalf("post_fork's command did not start within %v", testTimeout)
	}
	const queue, extra = 128, 2
	for i := range queue + extra {
		s.Emit(hooks.Event{Hook: hooks.ChildExit, WorkerID: i, PID: 100 + i})
	}
	w.Close()
	s.drainExec(time.Minute)

	log := out.String()
	if n := strings.Count(log, "msg=ran"); n != queue {
		t.Errorf("%d child_exit commands ran before drainExec returned, want the %d that were queued", n, queue)
	}
	first := `exec hook event dropped (queue full, or shut down)`
	if strings.Count(log, first) != 1 || !strings.Contains(log, "hook=child_exit dropped=1\n") {
		t.Errorf("want one warning for the spell, naming hook=child_exit and dropped=1; log:\n%s", log)
	}
	if want := `msg="exec hook events were dropped (queue full): their commands did not run" dropped=2`; !strings.Contains(log, want) {
		t.Errorf("the drain did not log the count %q; log:\n%s", want, log)
	}
}

// TestMaster_UpgradeRefusedIsAnError: forkctl upgrade (D-Bus Upgrade)
// fails when pre_exec refuses the upgrade, and the master keeps serving.
func TestMaster_UpgradeRefusedIsAnError(t *testing.T) {
	d := testkit.StartBus(t)
	c := dialBus(t, d.Address)
	const inst = "refuseupgrade"
	f := newForkd(t, setup{instance: inst, workers: 1, bus: d.Address})
	f.writeConfig("serve", "\n[[hooks.pre_exec]]\nexec = [\"/bin/false\"]\non_failure = \"abort\"\n")
	f.start()
	c.waitOwned(bus.Name(inst), testTimeout)
	before := f.askUntil("a worker answering", func(seen map[int]answer) bool { return len(seen) == 1 })
	out, err := runForkctl(t, d.Address, "upgrade", inst)
	if err == nil {
		t.Fatalf("forkctl upgrade = nil (%q), want the pre_exec refusal", out)
	}
	if !strings.Contains(err.Error(), "pre_exec") {
		t.Errorf("forkctl upgrade: %v, want it to name pre_exec", err)
	}
	after := f.askUntil("the same worker answering", func(seen map[int]answer) bool { return len(seen) == 1 })
	for pid := range after {
		if _, ok := before[pid]; !ok {
			t.Errorf("worker %d answers after the refused upgrade, want the one from before (%v)", pid, before)
		}
	}
}

// TestMaster_HookCommandDiesWithMaster: a hook command still running when
// the master is SIGKILLed — it had no chance to stop it — is killed too,
// as the workers are.
func TestMaster_HookCommandDiesWithMaster(t *testing.T) {
	h := newHookLines(t)
	f := newForkd(t, setup{instance: "hookorphan", workers: 1})
	f.writeConfig("serve", fmt.Sprintf("\n[[hooks.when_ready]]\nexec = [\"/bin/sh\", \"-c\", %q, %q]\ntimeout = \"1m\"\n",
		`echo "$$" > "$0"; exec sleep 60`, h.fifo))
	f.start()
	line := h.next("the hook command's pid")
	pid, err := strconv.Atoi(line)
	if err != nil {
		t.Fatalf("the hook command wrote %q, want its pid", line)
	}
	exited := testkit.Exited(t, pid)
	defer syscall.Kill(pid, syscall.SIGKILL) // when the test fails
	f.signal(syscall.SIGKILL)
	select {
	case <-exited:
	case <-time.After(testTimeout):
		t.Errorf("hook command %d still runs %v after the master was killed", pid, testTimeout)
	}
}
