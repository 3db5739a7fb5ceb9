package cgroup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Limits are what a cgroup's files hold back; zero leaves a file at the
// kernel's default (no limit, weight 100).
type Limits struct {
	// MemoryMax is memory.max in bytes: past it the kernel reclaims, then
	// OOM-kills inside the cgroup. It also sets memory.swap.max to 0,
	// where the kernel accounts swap: the process is killed at the limit
	// rather than swapped out past it.
	MemoryMax int64
	// MemoryHigh is memory.high in bytes: past it the kernel throttles
	// and reclaims.
	MemoryHigh int64
	// PidsMax is pids.max: fork fails past it.
	PidsMax int
	// CPUWeight is cpu.weight, 1…10000.
	CPUWeight int
}

// setting is one cgroup file a Limits value writes.
type setting struct {
	key, file, controller, value string
}

// settings are the files l writes, in order, with the config key each
// comes from.
func (l Limits) settings() []setting {
	var s []setting
	if l.MemoryHigh > 0 {
		s = append(s, setting{"memory_high", "memory.high", "memory", strconv.FormatInt(l.MemoryHigh, 10)})
	}
	if l.MemoryMax > 0 {
		s = append(s, setting{"memory_max", "memory.max", "memory", strconv.FormatInt(l.MemoryMax, 10)})
	}
	if l.PidsMax > 0 {
		s = append(s, setting{"pids_max", "pids.max", "pids", strconv.Itoa(l.PidsMax)})
	}
	if l.CPUWeight > 0 {
		s = append(s, setting{"cpu_weight", "cpu.weight", "cpu", strconv.Itoa(l.CPUWeight)})
	}
	return s
}

// Group is one child cgroup of a Tree, made by New for one process.
type Group struct {
	// Path is the cgroup's directory.
	Path string
	dir  *os.File
}

// Accounts reports whether the kernel counts the cgroup's memory (its
// memory controller is on: memory.current exists); without, Memory fails
// and a caller measures the process's RSS instead.
func (g *Group) Accounts() bool {
	_, err := os.Stat(filepath.Join(g.Path, "memory.current"))
	return err == nil
}

// New creates the child cgroup name of the root with the limits l and
// returns it open, for a process to be started in it (Group.Dir). A
// cgroup of that name left over and empty is replaced; one still in use
// is an error wrapping os.ErrExist.
func (t *Tree) New(name string, l Limits) (*Group, error) {
	if name == "" || strings.ContainsAny(name, "/\x00") || name == MasterLeaf || strings.HasPrefix(name, ".") {
		return nil, fmt.Errorf("cgroup: %q cannot name a child cgroup", name)
	}
	path := filepath.Join(t.Root, name)
	if err := os.Mkdir(path, 0o755); err != nil {
		if !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("cgroup: create %s: %w", path, err)
		}
		if err := unix.Rmdir(path); err != nil {
			return nil, fmt.Errorf("cgroup: %s: %w and cannot be removed: %w", path, os.ErrExist, err)
		}
		if err := os.Mkdir(path, 0o755); err != nil {
			return nil, fmt.Errorf("cgroup: create %s: %w", path, err)
		}
	}
	for _, s := range l.settings() {
		if err := write(path, s.file, s.value); err != nil {
			_ = unix.Rmdir(path)
			return nil, fmt.Errorf("cgroup: %s: write %s to %s: %w", s.key, s.value, s.file, err)
		}
	}
	if l.MemoryMax > 0 {
		_ = write(path, "memory.swap.max", "0") // absent without swap accounting
	}
	dir, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		_ = unix.Rmdir(path)
		return nil, fmt.Errorf("cgroup: open %s: %w", path, err)
	}
	return &Group{Path: path, dir: dir}, nil
}

// Join returns the cgroup at path (a directory under Mount, such as one
// Of names) without creating it: the one an adopted process already runs
// in.
func Join(path string) (*Group, error) {
	dir, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("cgroup: open %s: %w", path, err)
	}
	return &Group{Path: path, dir: dir}, nil
}

// Dir is the cgroup's directory, open, for clone3's CLONE_INTO_CGROUP
// (process.Attr.Cgroup); it is valid until Close.
func (g *Group) Dir() *os.File { return g.dir }

// Close closes the cgroup's directory; the cgroup stays (see
// Watcher.Remove).
func (g *Group) Close() error { return g.dir.Close() }

// Memory returns memory.current: the bytes the cgroup's processes use,
// page cache included.
func (g *Group) Memory() (int64, error) {
	b, err := os.ReadFile(filepath.Join(g.Path, "memory.current"))
	if err != nil {
		return 0, fmt.Errorf("cgroup: %w", err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("cgroup: %s/memory.current: %w", g.Path, err)
	}
	return v, nil
}

// CPU returns the CPU time the cgroup's processes used (cpu.stat
// usage_usec), those that ended included.
func (g *Group) CPU() (time.Duration, error) {
	kv, err := readKeyed(filepath.Join(g.Path, "cpu.stat"))
	if err != nil {
		return 0, err
	}
	return time.Duration(kv["usage_usec"]) * time.Microsecond, nil
}

// Events are the counters of memory.events.
type Events struct {
	// High counts the times the cgroup was throttled past memory.high.
	High int64
	// Max counts the times it reached memory.max.
	Max int64
	// OOM counts the times it was out of memory at memory.max.
	OOM int64
	// OOMKill counts the processes the OOM killer killed in it.
	OOMKill int64
}

// Events reads memory.events.
func (g *Group) Events() (Events, error) {
	kv, err := readKeyed(filepath.Join(g.Path, "memory.events"))
	if err != nil {
		return Events{}, err
	}
	return Events{High: kv["high"], Max: kv["max"], OOM: kv["oom"], OOMKill: kv["oom_kill"]}, nil
}

// EventsFile is the file whose changes the kernel reports (inotify
// IN_MODIFY) on memory events.
func (g *Group) EventsFile() string { return filepath.Join(g.Path, "memory.events") }

// readKeyed reads a flat-keyed cgroup file ("key value" lines).
func readKeyed(name string) (map[string]int64, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	kv := make(map[string]int64)
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			continue
		}
		kv[k] = n
	}
	return kv, nil
}

// populated reports whether the cgroup at path has processes in it or
// below it (cgroup.events populated).
func populated(path string) (bool, error) {
	kv, err := readKeyed(filepath.Join(path, "cgroup.events"))
	if err != nil {
		return false, err
	}
	return kv["populated"] != 0, nil
}

// RSS measures a process's resident memory from /proc, where there is no
// cgroup to ask: what max_memory falls back to.
type RSS int

// Memory returns the resident set size of process pid, in bytes.
func (pid RSS) Memory() (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/statm")
	if err != nil {
		return 0, fmt.Errorf("cgroup: rss of %d: %w", int(pid), err)
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, fmt.Errorf("cgroup: rss of %d: short statm %q", int(pid), b)
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("cgroup: rss of %d: %w", int(pid), err)
	}
	return pages * int64(os.Getpagesize()), nil
}

// EventsFile is "": the kernel tells nothing of a process's RSS.
func (RSS) EventsFile() string { return "" }

// CPU returns the CPU time process pid used (utime+stime of
// /proc/PID/stat).
func (pid RSS) CPU() (time.Duration, error) {
	_, cpu, err := pid.Usage()
	return cpu, err
}

// Usage returns what Memory and CPU do, the resident set size of process
// pid in bytes and the CPU time it used, from one read of /proc/PID/stat.
func (pid RSS) Usage() (memory int64, cpu time.Duration, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/stat")
	if err != nil {
		return 0, 0, fmt.Errorf("cgroup: usage of %d: %w", int(pid), err)
	}
	// The command name, in parentheses, may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("cgroup: usage of %d: no command in stat", int(pid))
	}
	f := strings.Fields(string(b[i+1:]))
	// After the name: state(0) … utime(11) stime(12) … rss(21), in pages.
	if len(f) < 22 {
		return 0, 0, fmt.Errorf("cgroup: usage of %d: short stat", int(pid))
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	pages, err3 := strconv.ParseInt(f[21], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return 0, 0, fmt.Errorf("cgroup: usage of %d: %w", int(pid), err)
	}
	const hz = 100 // USER_HZ, the unit of utime and stime on Linux
	return pages * int64(os.Getpagesize()), time.Duration(u+s) * time.Second / hz, nil
}
