package workers

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"
)

// Pacing boots. Workers that boot at once share the CPUs, and beyond what
// the CPUs can take every boot only gets slower: on 2 CPUs here, 1,024 Go
// workers started at once each took about 10 ms of CPU to boot instead of
// 4.4 ms alone, and the last was ready 1.7× later than with paced boots.
// So a worker waits for its turn ("held") while too many others boot:
//
//   - max_booting = N: at most N boot at once;
//   - max_booting = 0 (auto): twice as many as there are CPUs always, and
//     more only while the machine's run queue is no longer than twice its
//     CPUs — a worker whose boot waits on I/O (a database, a sleep) leaves
//     the run queue, so such boots still all run at once.
//
// Why twice the CPUs: a boot also waits (exec, page faults, the master's
// turn), so one boot per CPU may leave CPUs idle. From two per CPU up, the
// time to boot 1,024 workers hardly changes; one per CPU was slower with
// the old test-binary worker (1.91 s against 1.72–1.80 s) and is within
// this machine's noise with the standalone one (bench scenario 6 compares).
//
// Held slots start, in the order they were held, as soon as the rule lets
// them: after any event (a worker ready or gone), and, when the run queue
// held them, at the latest after pacePeriod.

// pacePeriod is how soon slots held by the run queue are looked at again
// when no event came in between.
const pacePeriod = time.Millisecond

// heldSlot is a slot whose worker waits for its turn to boot.
type heldSlot struct {
	g  *generation
	id int
}

// booting counts the workers that started and are not ready yet, in the
// current and the pending generation (a worker leaving its slot stops
// booting: it is retired).
func (p *Pool) booting() int {
	n := 0
	for _, g := range []*generation{p.current, p.pending} {
		if g != nil {
			n += g.booting()
		}
	}
	return n
}

// mayBoot reports whether a worker of g may start booting now; byLoad says
// that the run queue, not max_booting, said no.
func (p *Pool) mayBoot(g *generation) (ok, byLoad bool) {
	n := p.booting()
	if max := g.cfg.Server.MaxBooting; max > 0 {
		return n < max, false
	}
	if n < 2*p.opts.cpus {
		return true, false
	}
	running, err := p.opts.runQueue()
	if err != nil {
		return true, false // no pacing where the kernel does not tell
	}
	// The run queue counts this thread, the master's, too.
	return running-1 <= 2*p.opts.cpus, true
}

// hold makes slot id of g wait for its turn to boot; byLoad says the run
// queue held it, so that it gets another look after pacePeriod.
func (p *Pool) hold(g *generation, id int, byLoad bool) {
	if !slices.Contains(p.held, heldSlot{g, id}) {
		p.held = append(p.held, heldSlot{g, id})
	}
	if byLoad && p.paceTimer == nil {
		p.paceTimer = time.AfterFunc(pacePeriod, func() { p.fire(timerEvent{kind: timerPace}) })
	}
}

// unhold starts the held slots that may boot now, in the order they were
// held; settle runs it after every event.
func (p *Pool) unhold() {
	for len(p.held) > 0 {
		h := p.held[0]
		g := h.g
		if p.stopping || (g != p.current && g != p.pending) || h.id >= g.target ||
			g.slots[h.id] != nil || g.respawn[h.id] != nil {
			p.held = p.held[1:] // the slot went away or was filled meanwhile
			continue
		}
		ok, byLoad := p.mayBoot(g)
		if !ok {
			p.hold(g, h.id, byLoad) // held already: only (re)arms the timer
			return
		}
		p.held = p.held[1:]
		p.spawnNow(g, h.id)
	}
	p.held = nil
}

// stopPacing drops the held slots and the pace timer (the pool stops).
func (p *Pool) stopPacing() {
	p.held = nil
	if p.paceTimer != nil {
		p.paceTimer.Stop()
		p.paceTimer = nil
	}
}

// loadavgRunQueue reads the number of runnable threads on the machine from
// /proc/loadavg's fourth field ("running/total").
func loadavgRunQueue() (int, error) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, err
	}
	f := bytes.Fields(b)
	if len(f) < 4 {
		return 0, fmt.Errorf("/proc/loadavg: %q: want at least 4 fields", b)
	}
	running, _, ok := bytes.Cut(f[3], []byte("/"))
	if !ok {
		return 0, fmt.Errorf("/proc/loadavg: field 4 %q: want running/total", f[3])
	}
	n, err := strconv.Atoi(string(running))
	if err != nil {
		return 0, fmt.Errorf("/proc/loadavg: field 4 %q: %w", f[3], err)
	}
	return n, nil
}
