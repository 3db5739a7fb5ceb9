package workers

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/config"
)

// slicer holds the master's time slice (server.master_slice).
//
// Since Linux 6.12 a thread may ask the scheduler for a shorter time slice
// than its default (sched_setattr's sched_runtime). Its share of the CPU
// stays the same; what changes is that, once it wakes, it may preempt a
// thread that is in the middle of a longer slice. The master sleeps nearly
// all the time, and when it wakes it has something to do at once: a worker
// died and needs a successor, a worker is ready, a signal came. With every
// CPU taken by busy workers, each of those waits otherwise lasts until a
// worker's slice ends (about 1.5 ms on 2 CPUs), and a spawn waits twice:
// its child must run to exec, then the master must run again (scenario 2b
// of docs/BENCHMARKS.md times it).
//
// The slice is set on every thread of the process, and threads the Go
// runtime starts later inherit it. Workers must not, and do not: package
// process starts every process with the kernel's default slice. Kernels
// before 6.12 take the request and ignore it.
type slicer struct {
	read bool           // orig has been read
	fair bool           // orig is SCHED_OTHER or SCHED_BATCH: slices apply
	orig unix.SchedAttr // the calling thread's scheduling, as first read
	// set is the slice asked for (0: the kernel's default), once applied
	// is true. The first apply asks even for 0: a master that USR2
	// re-executed inherits its predecessor's slice, whatever its own
	// config says.
	set     time.Duration
	applied bool
}

// apply asks for slice d (0: the kernel's default) on every thread of the
// process.
func (s *slicer) apply(d time.Duration) error {
	if !s.read {
		s.read = true
		a, err := unix.SchedGetAttr(0, 0)
		if err != nil {
			if d == 0 {
				return nil // the default was asked for, and nothing can change it
			}
			return fmt.Errorf("master_slice: sched_getattr: %w", err)
		}
		s.orig = *a
		s.fair = a.Policy == unix.SCHED_NORMAL || a.Policy == unix.SCHED_BATCH
	}
	if !s.fair || s.applied && d == s.set {
		return nil
	}
	attr := unix.SchedAttr{Policy: s.orig.Policy, Nice: s.orig.Nice, Runtime: uint64(d),
		Flags: s.orig.Flags & unix.SCHED_FLAG_RESET_ON_FORK}
	if err := setThreads(&attr); err != nil {
		return fmt.Errorf("master_slice %v: %w", d, err)
	}
	s.set, s.applied = d, true
	return nil
}

// setThreads sets attr on every thread of the process. A thread started
// meanwhile by one not yet set inherits the old scheduling, and the listing
// read before does not hold it; so the listing is read again until it
// holds no thread that was not set: from then on every thread has attr,
// and so does every thread they start.
func setThreads(attr *unix.SchedAttr) error {
	set := map[int]bool{}
	for {
		tids, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		fresh := false
		for _, t := range tids {
			tid, err := strconv.Atoi(t.Name())
			if err != nil || set[tid] {
				continue
			}
			fresh = true
			if err := unix.SchedSetAttr(tid, attr, 0); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("sched_setattr of thread %d: %w", tid, err)
			}
			set[tid] = true
		}
		if !fresh {
			return nil
		}
	}
}

// applySlice asks for cfg's master_slice; a failure only costs the master
// its quick wake-ups, so it is logged and the pool goes on.
func (p *Pool) applySlice(cfg *config.Config) {
	if err := p.slice.apply(cfg.Server.MasterSlice.Duration); err != nil {
		p.log.Warn("could not set the master's time slice; it keeps the kernel's default", "err", err)
	}
}
