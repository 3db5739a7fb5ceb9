package workers

import (
	"fmt"
	"math/rand/v2"
	"syscall"
	"time"
)

// Recycling replaces a worker that reached max_requests or max_lifetime
// with no dip in capacity: its successor is started in the same slot while
// it keeps serving, and it is asked to stop (TERM) only once the successor
// is ready. A successor that fails is retried as any failed worker is,
// and the predecessor serves on meanwhile.

// armRecycling sets w's recycling thresholds when it becomes ready.
func (p *Pool) armRecycling(w *worker) {
	p.watchMemory(w)
	s := w.gen.cfg.Server
	if s.MaxRequests > 0 {
		w.maxRequests = uint64(s.MaxRequests)
		if s.MaxRequestsJitter > 0 {
			w.maxRequests += uint64(rand.IntN(s.MaxRequestsJitter + 1))
		}
		if w.requests >= w.maxRequests {
			p.recycle(w, fmt.Sprintf("max_requests (%d)", w.maxRequests))
			return
		}
	}
	if s.MaxLifetime.Duration > 0 {
		d := s.MaxLifetime.Duration
		if j := s.MaxLifetimeJitter.Duration; j > 0 {
			d += rand.N(j + 1)
		}
		w.lifetime = time.AfterFunc(d, func() { p.fire(timerEvent{kind: timerRecycle, w: w}) })
	}
}

// countRequests records a worker's FORKD_REQUESTS and recycles it at its
// threshold.
func (p *Pool) countRequests(w *worker, n uint64) {
	w.requests = n
	if w.maxRequests > 0 && n >= w.maxRequests {
		p.recycle(w, fmt.Sprintf("max_requests (%d)", w.maxRequests))
	}
}

// recycle starts w's successor; w serves until the successor is ready.
func (p *Pool) recycle(w *worker, why string) { p.recycleFor(w, "recycled: "+why, why) }

// recycleFor recycles w as recycle does, with reason as its exit's
// reason and why in the log.
func (p *Pool) recycleFor(w *worker, reason, why string) {
	g := w.gen
	if p.stopping || !w.inSlot || w.phase != phaseReady || g.predecessor[w.id] != nil ||
		(g != p.current && g != p.pending) {
		return
	}
	p.stopLifetime(w)
	g.slots[w.id] = nil
	w.inSlot = false
	g.predecessor[w.id] = w
	w.reason = reason
	p.log.Info("recycling worker", "worker_id", w.id, "pid", w.pid, "generation", g.id, "reason", why)
	p.spawn(g, w.id)
}

// handOver stops the recycled predecessor of the slot w just became ready
// in.
func (p *Pool) handOver(w *worker) {
	g := w.gen
	pred := g.predecessor[w.id]
	if pred == nil {
		return
	}
	g.predecessor[w.id] = nil
	p.retire(pred, syscall.SIGTERM, g.cfg.Server.GracefulTimeout.Duration, pred.reason)
}

// forget drops w from its generation's predecessor list (it exited).
func (g *generation) forget(w *worker) {
	if w.id >= 0 && w.id < len(g.predecessor) && g.predecessor[w.id] == w {
		g.predecessor[w.id] = nil
	}
}

// stopLifetime cancels w's max_lifetime timer.
func (p *Pool) stopLifetime(w *worker) {
	if w.lifetime != nil {
		w.lifetime.Stop()
		w.lifetime = nil
	}
}
