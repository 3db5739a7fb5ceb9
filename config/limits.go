package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/forkd/forkd/cgroup"
)

// Limits are the cgroup v2 settings of a [worker] or a [[singleton]]:
// each of its processes runs in a cgroup of its own with these limits
// (package cgroup). All but MaxMemory need forkd to run with a delegated
// cgroup v2 subtree (systemd's Delegate=yes); zero leaves a setting
// unset.
type Limits struct {
	// MemoryMax is memory.max: past it the kernel OOM-kills in the
	// process's cgroup, and forkd reports the exit with reason "oom". It
	// sets memory.swap.max to 0 too: the process is not swapped out
	// past it.
	MemoryMax Size `toml:"memory_max"`
	// MemoryHigh is memory.high: past it the kernel throttles the
	// process and reclaims its memory. Below MemoryMax when both are set.
	MemoryHigh Size `toml:"memory_high"`
	// PidsMax is pids.max: the processes and threads the process and its
	// children may have together. 0 for no limit.
	PidsMax int `toml:"pids_max"`
	// CPUWeight is cpu.weight, the process's share of the CPU against
	// its siblings: 1…10000, 100 being the kernel's default. 0 leaves the
	// default.
	CPUWeight int `toml:"cpu_weight"`
	// MaxMemory recycles a worker whose memory passes it (its cgroup's
	// memory.current, or its resident set size without delegation): its
	// successor is started first, then it gets TERM, with reason
	// "memory"; a singleton is restarted. Below MemoryMax when both are
	// set. Works without delegation.
	MaxMemory Size `toml:"max_memory"`
}

// CgroupSet reports whether l sets any limit that needs a cgroup (all but
// MaxMemory).
func (l Limits) CgroupSet() bool {
	return l.MemoryMax > 0 || l.MemoryHigh > 0 || l.PidsMax > 0 || l.CPUWeight > 0
}

// Cgroup returns the limits that go into the process's cgroup files.
func (l Limits) Cgroup() cgroup.Limits {
	return cgroup.Limits{MemoryMax: int64(l.MemoryMax), MemoryHigh: int64(l.MemoryHigh), PidsMax: l.PidsMax, CPUWeight: l.CPUWeight}
}

// MaxCPUWeight is the largest cpu.weight.
const MaxCPUWeight = 10000

// Size is a number of bytes, written as a string: "512M", "1G", "65536";
// K, M, G and T are powers of 1024, as in systemd's MemoryMax=.
type Size int64

// UnmarshalText parses a size: digits, then optionally one of K, M, G, T.
func (s *Size) UnmarshalText(text []byte) error {
	v, err := ParseSize(string(text))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// MarshalText writes s in bytes, which UnmarshalText reads back.
func (s Size) MarshalText() ([]byte, error) { return []byte(strconv.FormatInt(int64(s), 10)), nil }

// String writes s with the largest unit that divides it ("512M").
func (s Size) String() string {
	v := int64(s)
	for _, u := range []string{"", "K", "M", "G"} {
		if v%1024 != 0 || v == 0 {
			return strconv.FormatInt(v, 10) + u
		}
		v /= 1024
	}
	return strconv.FormatInt(v, 10) + "T"
}

// ParseSize parses a size as Size.UnmarshalText does.
func ParseSize(text string) (Size, error) {
	bad := func() (Size, error) {
		return 0, fmt.Errorf(`invalid size %q (write bytes, or a whole number of K, M, G or T, each 1024 times the one before, e.g. "512M")`, text)
	}
	digits, shift := text, 0
	if i := len(text) - 1; i > 0 {
		if u := strings.IndexByte("KMGT", text[i]); u >= 0 {
			digits, shift = text[:i], 10*(u+1)
		}
	}
	if digits == "" || strings.TrimLeft(digits, "0123456789") != "" {
		return bad()
	}
	v, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || v > (1<<62)>>shift {
		return bad()
	}
	return Size(v << shift), nil
}

// validateLimits checks the Limits of the table at base.
func (d *document) validateLimits(base string, l *Limits) {
	key := func(k string) string { return keyJoin(base, k) }
	if l.PidsMax < 0 {
		d.fail(key("pids_max"), "must be 0 (no limit) or more, got %d", l.PidsMax)
	}
	if l.CPUWeight < 0 || l.CPUWeight > MaxCPUWeight {
		d.fail(key("cpu_weight"), "must be 1 to %d (the kernel's default is 100), got %d", MaxCPUWeight, l.CPUWeight)
	}
	if l.MemoryMax > 0 && l.MemoryHigh >= l.MemoryMax {
		d.fail(key("memory_high"), "must be below memory_max (%v), got %v: the kernel throttles at memory_high, then kills at memory_max", l.MemoryMax, l.MemoryHigh)
	}
	if l.MemoryMax > 0 && l.MaxMemory >= l.MemoryMax {
		d.fail(key("max_memory"), "must be below memory_max (%v), got %v: otherwise the OOM killer acts before the process is recycled", l.MemoryMax, l.MaxMemory)
	}
	for _, k := range []string{"memory_max", "memory_high", "pids_max", "cpu_weight"} {
		if d.present(key(k)) {
			line, col := d.at(key(k))
			d.cgroupKeys = append(d.cgroupKeys, &Error{File: d.file, Line: line, Col: col, Key: key(k)})
		}
	}
}

// RefuseLimits returns, when c sets a limit that needs a cgroup (see
// Limits), an error for each such key at its place in the file, saying
// that it needs a delegated cgroup v2 subtree and why there is none
// (why); nil when c sets none. forkd --check and forkd's start call it
// when package cgroup finds no delegation.
func (c *Config) RefuseLimits(why error) error {
	var errs []error
	for _, k := range c.cgroupKeys {
		e := *k
		e.Msg = "needs a delegated cgroup v2 subtree, which forkd does not have here: " + why.Error() +
			"; remove the key, or run forkd under systemd with Delegate=yes (forkd@.service has it) on a system booted with cgroup v2"
		errs = append(errs, &e)
	}
	return errors.Join(errs...)
}

// CgroupLimits reports whether c sets a limit that needs a cgroup, on
// its worker or a singleton.
func (c *Config) CgroupLimits() bool { return len(c.cgroupKeys) > 0 }
