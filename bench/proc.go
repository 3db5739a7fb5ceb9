package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ContextSwitches returns the sum of voluntary_ctxt_switches and
// nonvoluntary_ctxt_switches over every thread of process pid
// (/proc/PID/task/*/status): how often it was woken up or preempted.
func ContextSwitches(pid int) (uint64, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if err != nil || len(tasks) == 0 {
		return 0, fmt.Errorf("read threads of process %d: none in /proc", pid)
	}
	var sum uint64
	for _, path := range tasks {
		fields, err := statusFields(path, "voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")
		if err != nil {
			// A thread that exited meanwhile switches no more.
			continue
		}
		sum += fields[0] + fields[1]
	}
	return sum, nil
}

// Memory is a process's memory use in bytes.
type Memory struct {
	// RSS is VmRSS from /proc/PID/status: resident pages, shared ones
	// counted in full.
	RSS uint64
	// PSS is Pss from /proc/PID/smaps_rollup: resident pages, each shared
	// one divided by the number of processes mapping it.
	PSS uint64
}

// MemoryOf returns process pid's VmRSS and Pss.
func MemoryOf(pid int) (Memory, error) {
	rss, err := statusFields(fmt.Sprintf("/proc/%d/status", pid), "VmRSS")
	if err != nil {
		return Memory{}, err
	}
	pss, err := statusFields(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss")
	if err != nil {
		return Memory{}, err
	}
	return Memory{RSS: rss[0] << 10, PSS: pss[0] << 10}, nil
}

// MemAvailable returns the system's MemAvailable (/proc/meminfo) in bytes.
func MemAvailable() (uint64, error) {
	v, err := statusFields("/proc/meminfo", "MemAvailable")
	if err != nil {
		return 0, err
	}
	return v[0] << 10, nil
}

// statusFields reads the "Key: N [kB]" lines of a /proc file and returns
// the numbers of keys, in order; a missing key is an error.
func statusFields(path string, keys ...string) ([]uint64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	out := make([]uint64, len(keys))
	found := make([]bool, len(keys))
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		for i, want := range keys {
			if k != want || found[i] {
				continue
			}
			f := strings.Fields(v)
			if len(f) == 0 {
				return nil, fmt.Errorf("read %s: %s has no value", path, k)
			}
			n, err := strconv.ParseUint(f[0], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("read %s: %s: %w", path, k, err)
			}
			out[i], found[i] = n, true
		}
	}
	for i, ok := range found {
		if !ok {
			return nil, fmt.Errorf("read %s: no %s line", path, keys[i])
		}
	}
	return out, nil
}

// ProcID names one process incarnation: a pid and its start time (field 22
// of /proc/PID/stat), so that a reused pid is not mistaken for it.
type ProcID struct {
	// PID is the process id.
	PID int
	// StartTime is when the process started, in clock ticks after boot.
	StartTime uint64
}

// procStartTime returns field 22 (starttime) of /proc/PID/stat.
func procStartTime(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// comm (field 2) may hold spaces and parentheses: split after the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	// f[0] is field 3 (state); starttime is field 22.
	if len(f) < 20 {
		return 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f)+2)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// Alive reports whether the process p names still exists (a zombie counts).
func (p ProcID) Alive() bool {
	st, err := procStartTime(p.PID)
	return err == nil && st == p.StartTime
}

// Descendants returns every process below pid (children, their children…)
// as listed in /proc/PID/task/*/children, each with its start time.
func Descendants(pid int) []ProcID {
	var out []ProcID
	queue := []int{pid}
	seen := map[int]bool{pid: true}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", p))
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			for _, s := range strings.Fields(string(data)) {
				c, err := strconv.Atoi(s)
				if err != nil || seen[c] {
					continue
				}
				seen[c] = true
				st, err := procStartTime(c)
				if err != nil {
					continue
				}
				out = append(out, ProcID{PID: c, StartTime: st})
				queue = append(queue, c)
			}
		}
	}
	return out
}
