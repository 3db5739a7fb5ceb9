package cgroup

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/forkd/forkd/internal/testkit"
)

func TestOpen_NoDelegation(t *testing.T) {
	// A test binary shares its cgroup with the go command that started
	// it, so it is never a delegated one: Open must refuse, and say why.
	tree, err := Open()
	if err == nil {
		t.Skipf("this test runs alone in a delegated cgroup (%s): nothing to refuse", tree.Root)
	}
	if !errors.Is(err, ErrNoDelegation) {
		t.Errorf("Open: %v, want an error wrapping ErrNoDelegation", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "cgroup v2") && !strings.Contains(msg, "Delegate=yes") {
		t.Errorf("Open: %q does not say what is needed (cgroup v2, Delegate=yes)", msg)
	}
}

func TestOf(t *testing.T) {
	p, err := Of(os.Getpid())
	if err != nil {
		t.Skipf("no cgroup v2 entry for this process: %v", err)
	}
	if !strings.HasPrefix(p, "/") {
		t.Errorf("Of = %q, want a path from the hierarchy's root", p)
	}
	if _, err := Of(-1); err == nil {
		t.Error("Of(-1) did not fail")
	}
}

func TestRSS(t *testing.T) {
	m := RSS(os.Getpid())
	v, err := m.Memory()
	if err != nil || v < 1<<20 {
		t.Errorf("RSS of this process = %d, %v; want more than 1 MiB", v, err)
	}
	if c, err := m.CPU(); err != nil || c < 0 {
		t.Errorf("CPU of this process = %v, %v", c, err)
	}
	if mem, c, err := m.Usage(); err != nil || mem < 1<<20 || c < 0 {
		t.Errorf("Usage of this process = %d, %v, %v; want more than 1 MiB", mem, c, err)
	}
	if _, _, err := RSS(-1).Usage(); err == nil {
		t.Error("Usage of pid -1 did not fail")
	}
	if m.EventsFile() != "" {
		t.Error("RSS has an events file")
	}
}

// runWatcher runs a Watcher until the test ends.
func runWatcher(t *testing.T) *Watcher {
	w := NewWatcher(10 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watcher.Run: %v", err)
		}
	})
	return w
}

func TestWatcher_Crossing(t *testing.T) {
	w := runWatcher(t)
	crossed := make(chan int64, 2)
	w.Watch("self", RSS(os.Getpid()), 1<<20, func(v int64) { crossed <- v })
	select {
	case v := <-crossed:
		if v < 1<<20 {
			t.Errorf("crossed at %d bytes, below the threshold", v)
		}
	case <-time.After(testkit.Deadline):
		t.Fatal("the watch did not fire for a process past its threshold")
	}
	// Once only; and an unwatched key is forgotten.
	w.Unwatch("self")
	w.Unwatch("never watched")
	select {
	case v := <-crossed:
		t.Errorf("crossed again at %d", v)
	default:
	}
}

// startIn starts sleep in the cgroup at dir.
func startIn(t *testing.T, dir string) *exec.Cmd {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("sleep", "600")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(f.Fd())}
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot start a process in a cgroup (clone3 CLONE_INTO_CGROUP): %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

func TestTree_NewAndRemove(t *testing.T) {
	tree, err := TreeAt(testkit.Cgroup(t))
	if err != nil {
		t.Fatal(err)
	}
	w := runWatcher(t)

	g, err := tree.New("worker-0", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	cmd := startIn(t, g.Path)
	if p, err := Of(cmd.Process.Pid); err != nil || filepath.Base(p) != "worker-0" {
		t.Errorf("sleep runs in %q (%v), want worker-0", p, err)
	}
	// A name in use is refused.
	if _, err := tree.New("worker-0", Limits{}); !errors.Is(err, os.ErrExist) {
		t.Errorf("New of a cgroup in use: %v, want os.ErrExist", err)
	}
	if _, err := tree.New("master", Limits{}); err == nil {
		t.Error("New(master) did not fail")
	}

	// Remove kills what is left and removes the cgroup once it is empty.
	removed := make(chan struct{})
	_ = g.Close()
	w.Remove(g.Path, func() { close(removed) })
	select {
	case <-removed:
	case <-time.After(testkit.Deadline):
		t.Fatal("the cgroup was not removed")
	}
	if _, err := os.Stat(g.Path); !os.IsNotExist(err) {
		t.Errorf("%s still there: %v", g.Path, err)
	}
	if err := cmd.Wait(); err == nil {
		t.Error("sleep exited 0, want killed by cgroup.kill")
	}
}

func TestTree_Limits(t *testing.T) {
	tree, err := TreeAt(testkit.Cgroup(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := tree.Enable(); err != nil {
		t.Fatal(err)
	}
	l := Limits{MemoryMax: 64 << 20, MemoryHigh: 48 << 20, PidsMax: 16, CPUWeight: 50}
	if missing := tree.Missing(l); len(missing) > 0 {
		t.Skipf("%s lacks the controllers of %v (a hybrid system's cgroup v2 has none)", tree.Root, missing)
	}
	g, err := tree.New("limited", l)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { g.Close(); os.Remove(g.Path) }()
	for file, want := range map[string]string{"memory.max": "67108864", "memory.high": "50331648", "pids.max": "16", "cpu.weight": "50"} {
		if b, err := os.ReadFile(filepath.Join(g.Path, file)); err != nil || strings.TrimSpace(string(b)) != want {
			t.Errorf("%s = %q, %v; want %s", file, b, err, want)
		}
	}
	if _, err := g.Events(); err != nil {
		t.Errorf("Events: %v", err)
	}
	if _, err := g.Memory(); err != nil {
		t.Errorf("Memory: %v", err)
	}
}

// TestTree_Setup: a process alone in its cgroup (as forkd is in its
// unit's) moves itself into the leaf master and enables the controllers
// for the leaves beside it.
func TestTree_Setup(t *testing.T) {
	dir := testkit.Cgroup(t)
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := testkit.Command(t, "setup", dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(f.Fd())}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("setup in %s: %v (%s)", dir, err, out)
	}
	if got := strings.TrimSpace(string(out)); !strings.HasSuffix(got, "/"+filepath.Base(dir)+"/"+MasterLeaf) {
		t.Errorf("after Setup the process ran in %q, want %s/%s", got, dir, MasterLeaf)
	}
	tree, err := TreeAt(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range Controllers {
		if tree.Has(c) && !strings.Contains(string(b), c) {
			t.Errorf("cgroup.subtree_control = %q, want %s enabled", b, c)
		}
	}
}
