package workers

import (
	"fmt"
	"time"

	"github.com/forkd/forkd/config"
)

// Autoscaling ([server.autoscale]) follows the kernel's accept queue of
// the listening sockets: connections the kernel accepted that no worker
// took yet.
//
//   - While the current generation has workers, a timer samples the queues
//     every samplePeriod (up_after/4, between 10 ms and 100 ms); it runs
//     only while autoscaling is configured. When the longest queue stayed
//     above queue for up_after (on average over that time, never empty),
//     workers are added: one per connection waiting beyond queue, up to
//     max — once the workers added last are all ready, so that boots
//     (which max_booting paces) are not stacked on boots.
//   - When every queue stayed empty for down_after, the worker in the
//     highest slot, the last one added, is stopped gracefully; then
//     another after down_after again, down to min. Whether capacity was
//     idle shows in what follows: when workers must be added within the
//     window after a worker was stopped, the stopped one was needed, and
//     the next scale-down waits twice as long (up to 16 × down_after); a
//     window without that returns to down_after.
//   - With min = 0 and no worker, nothing samples: the listening sockets
//     are watched for readability (epoll, see demand.go), and the first
//     connection queued starts one worker, after which the timer takes
//     over. The master does not wake meanwhile.
//
// Every change is a scale with reason "autoscale" (nworkers_changed);
// TTIN, TTOU and SetWorkers move the count within min…max, and the scaler
// goes on from there. WINCH stops every worker as it does without
// autoscaling; with min above 0 the scaler then waits for TTIN or
// SetWorkers.

// reasonAutoscale is the nworkers_changed reason of the scaler's changes.
const reasonAutoscale = "autoscale"

// autoscaler is the scaler's state, owned by the arbiter's goroutine.
type autoscaler struct {
	// sample is the pending sample's timer (nil: none); seq tells its
	// event from those of timers stopped since.
	sample *time.Timer
	seq    uint64
	// above is since when the longest queue stayed above queue, empty
	// since when every queue stayed empty (zero: not so at the last
	// sample).
	above, empty time.Time
	// sum and samples add up the samples since above, for their mean.
	sum, samples int
	// demand waits for the first connection while there is no worker
	// (min = 0).
	demand *demand
	// lastDown is when the scaler last stopped a worker (zero: not since
	// it last added one); downFactor multiplies down_after, 1…maxDownFactor.
	lastDown   time.Time
	downFactor time.Duration
}

// maxDownFactor bounds the backoff of scaling down: down_after times it.
const maxDownFactor = 16

// samplePeriod is how often the accept queues are read for a.
func samplePeriod(a config.Autoscale) time.Duration {
	return min(max(a.UpAfter.Duration/4, 10*time.Millisecond), 100*time.Millisecond)
}

// autoscaling returns the current generation's [server.autoscale], and
// whether it applies now (configured, the pool not stopping).
func (p *Pool) autoscaling() (config.Autoscale, bool) {
	if p.current == nil || p.stopping {
		return config.Autoscale{}, false
	}
	a := p.current.cfg.Server.Autoscale
	return a, a.On
}

// settleAutoscale runs after every event: it keeps the sample timer
// running while the current generation has workers, and the demand watch
// while it has none under min = 0, and neither otherwise.
func (p *Pool) settleAutoscale() {
	a, on := p.autoscaling()
	g := p.current
	wantDemand := on && a.Min == 0 && g.target == 0 && g.announced && p.pending == nil
	wantSample := on && g.target > 0
	if !wantSample && p.auto.sample != nil {
		p.stopSampling()
	}
	if !wantDemand && p.auto.demand != nil {
		p.auto.demand.stop()
		p.auto.demand = nil
	}
	if wantSample && p.auto.sample == nil {
		p.armSample(samplePeriod(a))
	}
	if wantDemand && p.auto.demand == nil {
		d, err := watchDemand(p.opts.Sockets, func() { go p.fire(timerEvent{kind: timerDemand}) })
		if err != nil {
			// Without the watch, one worker serves rather than none.
			p.log.Error("autoscale: cannot wait for connections; keeping one worker", "err", err)
			if err := p.scale(1, reasonAutoscale); err != nil {
				p.log.Warn("autoscale", "err", err)
			}
			return
		}
		p.auto.demand = d
	}
}

// armSample reads the accept queues after d, on the timer's goroutine, and
// hands the longest to the arbiter.
func (p *Pool) armSample(d time.Duration) {
	p.auto.seq++
	seq := p.auto.seq
	p.auto.sample = time.AfterFunc(d, func() {
		p.fire(timerEvent{kind: timerAutoscale, seq: seq, queue: p.longestQueue()})
	})
}

// stopSampling stops the sample timer and forgets the windows.
func (p *Pool) stopSampling() {
	p.auto.sample.Stop()
	p.auto.sample = nil
	p.auto.seq++
	p.auto.above, p.auto.empty = time.Time{}, time.Time{}
}

// stopAutoscale stops the timer and the demand watch (Run returns).
func (p *Pool) stopAutoscale() {
	if p.auto.sample != nil {
		p.stopSampling()
	}
	if p.auto.demand != nil {
		p.auto.demand.stop()
		p.auto.demand = nil
	}
}

// autoscaleSample acts on a sample of the accept queues: longest is the
// longest of them.
func (p *Pool) autoscaleSample(t timerEvent) {
	if t.seq != p.auto.seq || p.auto.sample == nil {
		return // a timer stopped since
	}
	p.auto.sample = nil // settle arms the next one
	a, on := p.autoscaling()
	g := p.current
	if !on || p.pending != nil || g.target < a.Min {
		p.auto.above, p.auto.empty = time.Time{}, time.Time{}
		return
	}
	now := p.now()
	if p.auto.downFactor == 0 {
		p.auto.downFactor = 1
	}
	downAfter := a.DownAfter.Duration * p.auto.downFactor
	if !p.auto.lastDown.IsZero() && now.Sub(p.auto.lastDown) >= downAfter {
		p.auto.lastDown, p.auto.downFactor = time.Time{}, 1
		downAfter = a.DownAfter.Duration
	}
	if t.queue > 0 {
		p.auto.empty = time.Time{}
		p.growBy(a, t.queue, now)
		return
	}
	p.auto.above = time.Time{}
	switch {
	case t.queue == 0:
		if p.auto.empty.IsZero() {
			p.auto.empty = now
		}
		if now.Sub(p.auto.empty) < downAfter || g.target <= a.Min || p.booting() > 0 {
			return
		}
		p.log.Info("autoscale: accept queues stayed empty; stopping a worker", "for", now.Sub(p.auto.empty).Round(time.Millisecond), "workers", g.target-1)
		p.auto.empty, p.auto.lastDown = now, now
		p.autoscaleTo(g.target - 1)
	}
}

// growBy takes a sample of the longest queue, q > 0, into the window that
// decides on adding workers: the window opens at a sample above queue and
// closes up_after later, when the mean of its samples decides; a sample
// of 0 (the workers caught up) drops it, and so does a boot in progress
// (the window then measures the pool the boots make).
func (p *Pool) growBy(a config.Autoscale, q int, now time.Time) {
	g := p.current
	if g.target >= a.Max || p.booting() > 0 || len(p.held) > 0 {
		p.auto.above = time.Time{}
		return
	}
	if p.auto.above.IsZero() {
		if q <= a.Queue {
			return
		}
		p.auto.above, p.auto.sum, p.auto.samples = now, 0, 0
	}
	p.auto.sum += q
	p.auto.samples++
	if now.Sub(p.auto.above) < a.UpAfter.Duration {
		return
	}
	mean := (p.auto.sum + p.auto.samples/2) / p.auto.samples
	p.auto.above = time.Time{}
	if mean <= a.Queue {
		return
	}
	// As many workers as connections wait beyond queue: each takes one
	// off the queue (a synchronous worker serves one at a time).
	n := min(g.target+mean-a.Queue, a.Max)
	p.log.Info("autoscale: accept queue stayed long; adding workers", "queue", mean, "for", a.UpAfter.Duration, "workers", n)
	if !p.auto.lastDown.IsZero() {
		p.auto.lastDown, p.auto.downFactor = time.Time{}, min(2*p.auto.downFactor, maxDownFactor)
	}
	p.autoscaleTo(n)
}

// autoscaleDemand starts the first worker: a connection waits and there
// was none (min = 0).
func (p *Pool) autoscaleDemand() {
	if p.auto.demand != nil {
		p.auto.demand.stop()
		p.auto.demand = nil
	}
	if _, on := p.autoscaling(); !on || p.pending != nil || p.current.target > 0 {
		return
	}
	p.log.Info("autoscale: a connection waits; starting a worker")
	p.autoscaleTo(1)
}

// autoscaleTo scales the current generation to n for the scaler.
func (p *Pool) autoscaleTo(n int) {
	if err := p.scale(n, reasonAutoscale); err != nil {
		p.log.Warn("autoscale", "workers", n, "err", err)
	}
}

// autoscaleBounds checks a worker count asked for by why (TTIN, TTOU,
// SetWorkers) against [server.autoscale]'s min and max; WINCH and the
// scaler itself are not bound.
func (p *Pool) autoscaleBounds(n int, why string) error {
	a, on := p.autoscaling()
	if !on || why == reasonAutoscale || why == "SIGWINCH" || n >= a.Min && n <= a.Max {
		return nil
	}
	return fmt.Errorf("%w: %d is not within autoscale's min…max, %d…%d", ErrOutOfRange, n, a.Min, a.Max)
}

// autoscaleClamp returns n moved into cfg's autoscale min…max, if it has
// one.
func autoscaleClamp(cfg *config.Config, n int) int {
	if a := cfg.Server.Autoscale; a.On {
		return min(max(n, a.Min), a.Max)
	}
	return n
}

// announceEmpty makes g ready at once when it starts with no worker
// (autoscaling with min = 0): there is nothing to wait for.
func (p *Pool) announceEmpty(g *generation) {
	if g == p.current && g.target == 0 && !g.announced {
		p.generationProgress(g)
	}
}
