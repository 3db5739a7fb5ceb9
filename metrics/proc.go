package metrics

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// userHZ is the unit of the CPU times in /proc/PID/stat: USER_HZ, 100 on
// every Linux architecture.
const userHZ = 100

// procUsage is one process's resident memory and CPU time.
type procUsage struct {
	RSSBytes   uint64
	CPUSeconds float64
}

// readUsage reads pid's resident set size and user+system CPU time from
// /proc/PID/stat (proc(5)).
func readUsage(pid int) (procUsage, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procUsage{}, err
	}
	// The command name, in parentheses, may hold spaces: fields count
	// from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procUsage{}, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state): utime is field 14, stime 15, rss 24.
	if len(f) < 22 {
		return procUsage{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	utime, err1 := strconv.ParseUint(string(f[11]), 10, 64)
	stime, err2 := strconv.ParseUint(string(f[12]), 10, 64)
	rss, err3 := strconv.ParseInt(string(f[21]), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return procUsage{}, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	return procUsage{RSSBytes: uint64(max(rss, 0)) * uint64(os.Getpagesize()),
		CPUSeconds: float64(utime+stime) / userHZ}, nil
}
