package workers

import (
	"context"
	"sync"
	"time"

	"github.com/forkd/forkd/cgroup"
)

// UsageInterval is how often at most the pool reads its workers' memory
// and CPU for ListWorkers, and so how old the Memory and CPU that
// ListWorkers reports may be.
const UsageInterval = time.Second

// usageKey tells one worker process from another, a later one that got
// the same pid included.
type usageKey struct {
	pid     int
	started int64 // Started, in ns since the epoch
}

func keyOf(in Info) usageKey { return usageKey{in.PID, in.Started.UnixNano()} }

// use is what one worker uses: Info's Memory and CPU.
type use struct {
	memory uint64
	cpu    time.Duration
}

// measure reads what m's worker uses from its cgroup (its RSS and CPU
// time from /proc without one); what it cannot read is 0. It reads files
// only: it runs off the arbiter's goroutine.
func measure(m cgroup.Meter) use {
	var u use
	if r, ok := m.(interface {
		Usage() (int64, time.Duration, error)
	}); ok {
		if mem, cpu, err := r.Usage(); err == nil {
			u.memory, u.cpu = uint64(max(mem, 0)), cpu
		}
		return u
	}
	if v, err := m.Memory(); err == nil && v > 0 {
		u.memory = uint64(v)
	}
	if c, ok := m.(interface{ CPU() (time.Duration, error) }); ok {
		if v, err := c.CPU(); err == nil {
			u.cpu = v
		}
	}
	return u
}

// reading is one read of the workers' usage.
type reading struct {
	at    time.Time     // when it began
	done  chan struct{} // closed once byKey is filled in
	byKey map[usageKey]use
}

// usageCache holds the latest reading of the workers' usage. Whichever
// caller of fill finds it older than interval (or none) takes the next one,
// on its own goroutine; callers meanwhile wait for that reading and share
// it, and callers within interval of its start share it too. There is no
// goroutine of its own: nobody asking, nothing is read. Its methods may be
// called from any goroutine.
type usageCache struct {
	interval time.Duration
	now      func() time.Time

	mu      sync.Mutex
	latest  *reading // the latest done; nil before the first
	pending *reading // the one under way; nil for none
	reads   int      // readings begun (readings)
}

// newUsageCache returns a cache whose readings serve for interval, timed
// by now (nil: time.Now).
func newUsageCache(interval time.Duration, now func() time.Time) *usageCache {
	if now == nil {
		now = time.Now
	}
	return &usageCache{interval: interval, now: now}
}

// fill sets the Memory and CPU of each worker of list, meters[i] being
// what measures list[i], from a reading begun less than the interval ago:
// the latest, or the one under way, or else a new one that fill takes of
// meters. A worker the reading has not seen (it started since) is
// measured on its own, for this call only.
// fill returns ctx's error if ctx is done before the reading it waits for,
// leaving list as it was.
func (c *usageCache) fill(ctx context.Context, list []Info, meters []cgroup.Meter) error {
	c.mu.Lock()
	now := c.now()
	r, mine := c.latest, false
	if r == nil || now.Sub(r.at) >= c.interval {
		if c.pending == nil {
			c.pending = &reading{at: now, done: make(chan struct{})}
			c.reads++
			mine = true
		}
		r = c.pending
	}
	c.mu.Unlock()
	if mine {
		r.byKey = make(map[usageKey]use, len(list))
		for i, m := range meters {
			r.byKey[keyOf(list[i])] = measure(m)
		}
		c.mu.Lock()
		c.latest, c.pending = r, nil
		c.mu.Unlock()
		close(r.done)
	}
	select {
	case <-r.done:
	default:
		select {
		case <-r.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for i := range list {
		u, ok := r.byKey[keyOf(list[i])]
		if !ok {
			u = measure(meters[i])
		}
		list[i].Memory, list[i].CPU = u.memory, u.cpu
	}
	return nil
}

// readings returns how many readings were begun.
func (c *usageCache) readings() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reads
}
