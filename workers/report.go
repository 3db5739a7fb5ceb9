package workers

import (
	"context"
	"sort"

	"github.com/forkd/forkd/internal/notify"
)

// RequestReport is what one of a worker's sd_notify messages said of its
// requests (the fields of package sdk/reqstats), as Options.Requests
// receives it. Each Has… says whether the message carried the field.
type RequestReport struct {
	Generation uint64
	WorkerID   int
	PID        int
	// Requests is FORKD_REQUESTS: the requests the worker finished since
	// it started.
	Requests    uint64
	HasRequests bool
	// Stats is FORKD_REQUEST_STATS as sent, unparsed ("" when absent).
	Stats string
	// SumUsec is FORKD_REQUEST_SUM_USEC: the total time of the requests
	// Stats counts, in microseconds.
	SumUsec uint64
	HasSum  bool
	// Inflight is FORKD_REQUESTS_INFLIGHT: the requests in progress.
	Inflight    uint64
	HasInflight bool
}

// Snapshot is the arbiter's state and its live workers at one instant,
// as Pool.Snapshot reports it.
type Snapshot struct {
	Status  Status
	Workers []Info
}

// reportRequests records what m says of w's requests (the count in
// progress) and passes it to Options.Requests.
func (p *Pool) reportRequests(w *worker, m notify.Note) {
	if !m.HasRequests && !m.HasInflight && m.Stats == "" && !m.HasSum {
		return
	}
	if m.HasInflight {
		w.inflight, w.hasInflight = m.Inflight, true
	}
	if p.opts.Requests != nil {
		p.opts.Requests(RequestReport{Generation: w.gen.id, WorkerID: w.id, PID: w.pid,
			Requests: m.Requests, HasRequests: m.HasRequests, Stats: m.Stats,
			SumUsec: m.SumUsec, HasSum: m.HasSum, Inflight: m.Inflight, HasInflight: m.HasInflight})
	}
}

// info describes w.
func (w *worker) info() Info {
	in := Info{ID: w.id, PID: w.pid, Generation: w.gen.id, State: w.phase.String(), Started: w.started,
		ReadyAt: w.readyAt, Requests: w.requests, MaxRequests: w.maxRequests, Inflight: -1}
	if w.hasInflight {
		in.Inflight = int64(w.inflight)
	}
	return in
}

// sortInfo orders list by generation, then id, then pid.
func sortInfo(list []Info) {
	sort.Slice(list, func(i, j int) bool {
		if list[i].Generation != list[j].Generation {
			return list[i].Generation < list[j].Generation
		}
		if list[i].ID != list[j].ID {
			return list[i].ID < list[j].ID
		}
		return list[i].PID < list[j].PID
	})
}

// Snapshot returns the pool's Status and its live workers (as
// ListWorkers does, with each one's LastBeat) in one request to the
// arbiter, however many workers there are: what a metrics scrape or a
// status page asks for. The heartbeat times come from the notify socket's
// own goroutine, not the arbiter's.
func (p *Pool) Snapshot(ctx context.Context) (Snapshot, error) {
	s, err := ask(ctx, p, (*Pool).snapshot)
	if err != nil {
		return s, err
	}
	return p.withBeats(ctx, s), nil
}

// snapshot is Snapshot without the heartbeat times, on the arbiter's
// goroutine.
func (p *Pool) snapshot() Snapshot {
	s := Snapshot{Status: p.status(), Workers: make([]Info, 0, len(p.byPID))}
	for _, w := range p.byPID {
		s.Workers = append(s.Workers, w.info())
	}
	sortInfo(s.Workers)
	return s
}

// withBeats returns s with each worker's LastBeat from the notify socket,
// or s as it is when the socket does not answer (suspended or stopped).
func (p *Pool) withBeats(ctx context.Context, s Snapshot) Snapshot {
	beats, err := p.ns.LastBeats(ctx)
	if err != nil {
		return s // no heartbeat times, the rest stands
	}
	for i := range s.Workers {
		if t, ok := beats[s.Workers[i].PID]; ok {
			s.Workers[i].LastBeat = t
		}
	}
	return s
}
