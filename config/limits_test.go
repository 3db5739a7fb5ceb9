package config

import (
	"errors"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]Size{
		"0": 0, "65536": 65536, "512K": 512 << 10, "512M": 512 << 20, "1G": 1 << 30, "2T": 2 << 40,
	} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "M", "512MB", "1.5G", "-1M", "512 M", "9999999999T", "12X"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		}
	}
	if s := Size(512 << 20).String(); s != "512M" {
		t.Errorf("String = %q, want 512M", s)
	}
}

func TestParse_limits(t *testing.T) {
	doc := `[worker]
command = "/bin/sh"
memory_max = "512M"
memory_high = "400M"
pids_max = 64
cpu_weight = 200
max_memory = "300M"

[[singleton]]
name = "s"
command = "/bin/sh"
max_memory = "1G"
`
	cfg, err := Parse("t.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := Limits{MemoryMax: 512 << 20, MemoryHigh: 400 << 20, PidsMax: 64, CPUWeight: 200, MaxMemory: 300 << 20}
	if cfg.Worker.Limits != want {
		t.Errorf("worker limits = %+v, want %+v", cfg.Worker.Limits, want)
	}
	if cfg.Singletons[0].MaxMemory != 1<<30 || cfg.Singletons[0].CgroupSet() {
		t.Errorf("singleton limits = %+v, want max_memory 1G alone", cfg.Singletons[0].Limits)
	}
	if !cfg.CgroupLimits() {
		t.Error("CgroupLimits = false")
	}
	why := errors.New("cgroup: no delegated cgroup v2 subtree: /sys/fs/cgroup is not a cgroup v2 hierarchy")
	checkErrors(t, "t.toml", cfg.RefuseLimits(why), []wantErr{
		{3, 14, "worker.memory_max", "needs a delegated cgroup v2 subtree"},
		{4, 15, "worker.memory_high", "Delegate=yes"},
		{5, 12, "worker.pids_max", "not a cgroup v2 hierarchy"},
		{6, 14, "worker.cpu_weight", "needs a delegated"},
	})

	// max_memory alone needs no cgroup.
	cfg, err = Parse("t.toml", []byte("[worker]\ncommand = \"/bin/sh\"\nmax_memory = \"1G\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CgroupLimits() || cfg.RefuseLimits(why) != nil {
		t.Errorf("max_memory alone: CgroupLimits %v, RefuseLimits %v; want false, nil", cfg.CgroupLimits(), cfg.RefuseLimits(why))
	}
}

func TestParse_badLimits(t *testing.T) {
	doc := `[worker]
command = "/bin/sh"
memory_max = "512 MB"
pids_max = -1
cpu_weight = 20000

[[singleton]]
name = "s"
command = "/bin/sh"
memory_max = "100M"
memory_high = "200M"
max_memory = "100M"
pids_max = "5"
`
	_, err := Parse("t.toml", []byte(doc))
	checkErrors(t, "t.toml", err, []wantErr{
		{3, 14, "worker.memory_max", `invalid size "512 MB"`},
		{4, 12, "worker.pids_max", "must be 0 (no limit) or more, got -1"},
		{5, 14, "worker.cpu_weight", "must be 1 to 10000"},
		{11, 15, "singleton[0].memory_high", "must be below memory_max (100M), got 200M"},
		{12, 14, "singleton[0].max_memory", "OOM killer"},
		{13, 12, "singleton[0].pids_max", "wrong type: want an integer, got a string"},
	})
	if !strings.Contains(err.Error(), `e.g. "512M"`) {
		t.Errorf("error %q does not say how to write a size", err)
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"512M", "1G", "0", "65536", "12X", "9999999999T", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseSize(s)
		if err != nil {
			return
		}
		if v < 0 {
			t.Fatalf("ParseSize(%q) = %d, negative", s, v)
		}
		// What String writes reads back as the same size.
		if back, err := ParseSize(v.String()); err != nil || back != v {
			t.Fatalf("ParseSize(%q) = %d, String %q reads back as %d, %v", s, v, v.String(), back, err)
		}
	})
}
