package workers

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/forkd/forkd/cgroup"
	"github.com/forkd/forkd/hooks"
	"github.com/forkd/forkd/internal/testkit"
)

// TestPool_RecycleMaxMemory: a worker whose memory passes max_memory is
// recycled as for max_requests, its successor ready before it is asked to
// stop, and its exit says reason "memory". Without a cgroup the pool
// measures the worker's resident memory, which works anywhere; with one,
// its memory.current (its RSS again where the cgroup has no memory
// controller).
func TestPool_RecycleMaxMemory(t *testing.T) {
	withAndWithoutCgroup(t, testRecycleMaxMemory)
}

// withAndWithoutCgroup runs test as subtest "rss" with no cgroup tree,
// then as "cgroup" with a tree in a new delegated cgroup (skipped without
// a writable cgroup v2 hierarchy).
func withAndWithoutCgroup(t *testing.T, test func(*testing.T, *cgroup.Tree)) {
	t.Run("rss", func(t *testing.T) { test(t, nil) })
	t.Run("cgroup", func(t *testing.T) {
		tree, err := cgroup.TreeAt(testkit.Cgroup(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := tree.Enable(); err != nil {
			t.Skipf("cannot enable controllers in %s: %v", tree.Root, err)
		}
		test(t, tree)
	})
}

func testRecycleMaxMemory(t *testing.T, tree *cgroup.Tree) {
	cfg := testConfig(testkit.Executable(t), "grow", 1)
	cfg.Worker.MaxMemory = 32 << 20 // the worker grows by 64 MiB once ready
	h := start(t, cfg, func(o *Options) { o.Cgroups = tree })
	old := h.waitReady(1)[0]
	var succ hooks.Event
	for {
		e := h.rec.wait(t, 10*time.Second, "the successor of the worker past max_memory", func(e hooks.Event) bool {
			return e.Hook == hooks.PostWorkerInit || e.Hook == hooks.ChildExit
		})
		if e.Hook == hooks.ChildExit {
			t.Fatalf("worker %d exited before its successor was ready: %+v", e.PID, e)
		}
		if e.PID != old {
			succ = e
			break
		}
	}
	x := h.rec.wait(t, 10*time.Second, "the exit of the worker past max_memory", func(e hooks.Event) bool {
		return e.Hook == hooks.ChildExit && e.PID == old
	})
	if x.Reason != ReasonMemory || x.ExitCode != 0 {
		t.Errorf("exit %+v, want reason %q, code 0 (TERM after successor %d was ready)", x, ReasonMemory, succ.PID)
	}
}

// TestPool_CgroupPerWorker: with a delegated subtree each worker starts in
// a cgroup of its own, with the configured limits, removed once the worker
// has exited. Needs a writable cgroup v2 hierarchy (skips without).
func TestPool_CgroupPerWorker(t *testing.T) {
	dir := testkit.Cgroup(t)
	tree, err := cgroup.TreeAt(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := tree.Enable(); err != nil {
		t.Skipf("cannot enable controllers in %s: %v", dir, err)
	}
	cfg := testConfig(testkit.Executable(t), "serve", 2)
	if tree.Has("pids") {
		cfg.Worker.PidsMax = 64
	}
	h := start(t, cfg, func(o *Options) { o.Cgroups = tree })
	pids := h.waitReady(2)
	var groups []string
	for _, pid := range pids {
		cg, err := cgroup.Of(pid)
		if err != nil {
			t.Fatal(err)
		}
		// dir is under wherever cgroup2 is mounted (/sys/fs/cgroup/unified
		// on a hybrid system), cg relative to that mount.
		path := filepath.Join(dir, filepath.Base(cg))
		if !strings.HasPrefix(filepath.Base(cg), "worker-") || !strings.HasSuffix(dir, filepath.Dir(cg)) {
			t.Errorf("worker %d runs in %s, want a worker-… cgroup of its own under %s", pid, cg, dir)
		}
		groups = append(groups, path)
		if cfg.Worker.PidsMax > 0 {
			if b, err := os.ReadFile(filepath.Join(path, "pids.max")); err != nil || strings.TrimSpace(string(b)) != "64" {
				t.Errorf("%s/pids.max = %q, %v; want 64", path, b, err)
			}
		}
	}
	h.stop()
	for _, g := range groups {
		if _, err := os.Stat(g); !os.IsNotExist(err) {
			t.Errorf("cgroup %s still there after its worker exited (%v)", g, err)
		}
	}
}

// TestPool_OOMReason: a worker the OOM killer kills at memory_max exits
// with reason "oom" in child_exit and worker_exit. Needs a writable cgroup
// v2 hierarchy with the memory controller (skips without).
func TestPool_OOMReason(t *testing.T) {
	dir := testkit.Cgroup(t)
	tree, err := cgroup.TreeAt(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := tree.Enable(); err != nil {
		t.Skipf("cannot enable controllers in %s: %v", dir, err)
	}
	if !tree.Has("memory") {
		t.Skipf("%s has no memory controller to delegate (a hybrid system's cgroup v2 has none)", dir)
	}
	cfg := testConfig(testkit.Executable(t), "grow", 1) // grows by 64 MiB once ready
	cfg.Worker.MemoryMax = 32 << 20
	h := start(t, cfg, func(o *Options) { o.Cgroups = tree })
	for _, hook := range []hooks.Hook{hooks.ChildExit, hooks.WorkerExit} {
		e := h.rec.wait(t, 10*time.Second, string(hook)+" of the worker past memory_max", func(e hooks.Event) bool {
			return e.Hook == hook
		})
		if e.Reason != ReasonOOM || e.Signal != int(syscall.SIGKILL) {
			t.Errorf("%s %+v, want reason %q and SIGKILL", hook, e, ReasonOOM)
		}
	}
}
