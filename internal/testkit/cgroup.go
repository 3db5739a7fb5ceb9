package testkit

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// CgroupEnv names the environment variable that gives Cgroup the cgroup
// v2 directory to create its cgroups in, one prepared for them: no process
// of its own, its controllers enabled for its children (a test binary's
// own cgroup holds the test process, so it can pass no controller on).
const CgroupEnv = "FORKD_TEST_CGROUP"

// Cgroup returns the directory of a new, empty cgroup v2 that the test may
// start processes in: a child of $FORKD_TEST_CGROUP, else of the test
// process's own cgroup in a writable cgroup v2 hierarchy (a hybrid
// system's /sys/fs/cgroup/unified counts, though it has no controllers).
// It kills what is left in it and removes it when the test ends. It skips
// the test, saying why, where there is no such hierarchy or the test may
// not write it (not root, no delegation).
func Cgroup(t testing.TB) string {
	t.Helper()
	name := "forkd-test-" + strconv.Itoa(os.Getpid()) + "-" + strings.NewReplacer("/", "-", " ", "_").Replace(t.Name())
	parent := os.Getenv(CgroupEnv)
	if parent == "" {
		mount := cgroup2Mount()
		if mount == "" {
			t.Skip("testkit: no cgroup v2 hierarchy mounted (needs a writable cgroup2 mount, as under systemd with cgroup v2)")
		}
		self := ""
		if b, err := os.ReadFile("/proc/self/cgroup"); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if p, ok := strings.CutPrefix(line, "0::"); ok {
					self = p
				}
			}
		}
		parent = filepath.Join(mount, self)
	}
	dir := filepath.Join(parent, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("testkit: cannot create a cgroup v2 to test in (needs root and a writable cgroup2 hierarchy, e.g. systemd's Delegate=yes): %v", err)
	}
	t.Cleanup(func() { removeCgroup(t, dir) })
	return dir
}

// removeCgroup kills what runs in the cgroup at dir and below it, and
// removes it with the cgroups below it, deepest first.
func removeCgroup(t testing.TB, dir string) {
	t.Helper()
	_ = os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
	// cgroup.kill is asynchronous: wait for the kernel to empty it.
	WaitEmpty(t, dir)
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() {
			removeCgroup(t, filepath.Join(dir, e.Name()))
		}
	}
	if err := unix.Rmdir(dir); err != nil && err != unix.ENOENT {
		t.Errorf("testkit: remove cgroup %s: %v", dir, err)
	}
}

// WaitEmpty waits until the cgroup at dir has no process left
// (cgroup.events: populated 0), failing the test at Deadline.
func WaitEmpty(t testing.TB, dir string) {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		t.Fatalf("testkit: inotify: %v", err)
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, filepath.Join(dir, "cgroup.events"), unix.IN_MODIFY); err != nil {
		return // gone
	}
	buf := make([]byte, 4096)
	for {
		b, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
		if err != nil || strings.Contains(string(b), "populated 0") {
			return
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(Deadline.Milliseconds()))
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			t.Fatalf("testkit: cgroup %s still populated after %v", dir, Deadline)
		}
		_, _ = unix.Read(fd, buf)
	}
}

// cgroup2Mount returns where a cgroup2 hierarchy is mounted, "" for none.
func cgroup2Mount() string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// … mount-point … - fstype source options
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok || !strings.HasPrefix(post, "cgroup2 ") {
			continue
		}
		if fields := strings.Fields(pre); len(fields) >= 5 {
			return fields[4]
		}
	}
	return ""
}
