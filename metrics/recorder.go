package metrics

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/forkd/forkd/hooks"
	"github.com/forkd/forkd/listenq"
	"github.com/forkd/forkd/metrics/status"
	"github.com/forkd/forkd/sdk/reqstats"
	"github.com/forkd/forkd/workers"
)

// ErrClosed is returned by Recorder.Page once Run has returned.
var ErrClosed = errors.New("metrics: recorder stopped")

// Pool is what a Recorder asks the arbiter, once per page: workers.Pool's
// Snapshot.
type Pool interface {
	Snapshot(ctx context.Context) (workers.Snapshot, error)
}

// Listener is a listening socket whose accept queue a Recorder reports.
type Listener struct {
	// Name is its LISTEN_FDNAMES name, Addr its address for people.
	Name, Addr string
	// File is the socket; the Recorder only reads its queue (sock_diag).
	File *os.File
}

// Options configure a Recorder.
type Options struct {
	// Instance is the instance's name, Version the master's version.
	Instance, Version string
	// Listeners are the sockets the workers accept on.
	Listeners []Listener
	// Dropped returns how many hook events the D-Bus sink dropped; nil:
	// none.
	Dropped func() uint64
	// Upgraded says this master took over from an in-place upgrade
	// (forkd_upgrades_total{result="ok"} starts at 1).
	Upgraded bool
	// Logger receives the recorder's debug log; nil discards.
	Logger *slog.Logger
}

// inboxSize bounds the events and reports waiting for the recorder; past
// it they are counted as lost, never waited for.
const inboxSize = 4096

// Recorder keeps what forkd's metrics and status page report beyond the
// arbiter's own state: event counters fed from the hook stream and the
// reload outcomes, the workers' request reports (latency histograms, per
// worker over the last minute), and it assembles a status.Page on demand
// from one Pool.Snapshot, /proc and the listeners' accept queues.
//
// Emit, Requests, Reloaded and UpgradeRefused never block: they queue for
// the recorder's goroutine (Run), which alone holds the state. Page may
// be called from any goroutine while Run runs.
type Recorder struct {
	opts    Options
	log     *slog.Logger
	started time.Time
	pool    atomic.Pointer[poolBox]
	holdMu  sync.Mutex // serializes Hold and Release
	held    atomic.Pointer[held]
	inbox   chan input
	asks    chan func(*state)
	done    chan struct{}
	lost    atomic.Uint64
}

type poolBox struct{ Pool }

// held is the pool's last Snapshot before an upgrade (Hold).
type held struct {
	set  chan struct{}    // closed by Hold
	snap workers.Snapshot // written before set is closed
}

// input is one queued event, report or outcome.
type input struct {
	at      time.Time
	event   *hooks.Event
	report  *workers.RequestReport
	reload  *status.Reload
	upgrade string
}

// New returns a recorder for opts; Run runs it.
func New(opts Options) *Recorder {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Recorder{opts: opts, log: log, started: time.Now(), inbox: make(chan input, inboxSize),
		asks: make(chan func(*state)), done: make(chan struct{})}
	r.held.Store(&held{set: make(chan struct{})})
	return r
}

// Hold makes Page answer with snap instead of asking the pool — the asks
// already waiting for the pool included — until Release: an upgrade is
// about to hand the pool over, and it answers nothing more
// (workers.Options.Upgrading). It does not block.
func (r *Recorder) Hold(snap workers.Snapshot) {
	r.holdMu.Lock()
	defer r.holdMu.Unlock()
	h := r.held.Load()
	select {
	case <-h.set:
		h = &held{set: make(chan struct{})}
		r.held.Store(h)
	default:
	}
	h.snap = snap
	close(h.set)
}

// Release ends Hold: the upgrade did not happen, the pool answers again.
func (r *Recorder) Release() {
	r.holdMu.Lock()
	defer r.holdMu.Unlock()
	r.held.Store(&held{set: make(chan struct{})})
}

// snapshot asks p for its Snapshot, or answers with the held one once
// there is one (Hold), even while the ask waits.
func (r *Recorder) snapshot(ctx context.Context, p Pool) (workers.Snapshot, error) {
	h := r.held.Load()
	select {
	case <-h.set:
		return h.snap, nil
	default:
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		snap workers.Snapshot
		err  error
	}
	got := make(chan result, 1)
	go func() {
		s, err := p.Snapshot(ctx)
		got <- result{s, err}
	}()
	select {
	case res := <-got:
		return res.snap, res.err
	case <-h.set:
		return h.snap, nil
	}
}

// SetPool gives the recorder the arbiter to ask for its pages; until then
// a page shows the instance starting, without workers. Any goroutine may
// call it.
func (r *Recorder) SetPool(p Pool) { r.pool.Store(&poolBox{p}) }

func (r *Recorder) queue(in input) {
	select {
	case r.inbox <- in:
	default:
		r.lost.Add(1)
	}
}

// Emit is a hooks.Sink: it counts worker starts and exits by reason, the
// old master's upgrade (pre_exec) and the schedules' finished runs.
func (r *Recorder) Emit(e hooks.Event) {
	switch e.Hook {
	case hooks.PostFork, hooks.ChildExit, hooks.NworkersChanged, hooks.PreExec, hooks.ScheduleFinished:
		r.queue(input{at: time.Now(), event: &e})
	}
}

// Requests is workers.Options.Requests: a worker's request report.
func (r *Recorder) Requests(rep workers.RequestReport) {
	r.queue(input{at: time.Now(), report: &rep})
}

// Reloaded is (part of) workers.Options.Reloaded: how a reload ended.
func (r *Recorder) Reloaded(err error) {
	rl := &status.Reload{Result: reloadResult(err), At: time.Now()}
	if err != nil {
		rl.Error = err.Error()
	}
	r.queue(input{at: rl.At, reload: rl})
}

// UpgradeRefused counts an upgrade the master refused.
func (r *Recorder) UpgradeRefused() { r.queue(input{at: time.Now(), upgrade: "refused"}) }

// Run keeps the recorder's state until ctx is cancelled (not an error).
func (r *Recorder) Run(ctx context.Context) error {
	defer close(r.done)
	s := newState()
	if r.opts.Upgraded {
		s.upgrades["ok"]++
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case in := <-r.inbox:
			s.take(r, in)
		case f := <-r.asks:
			// What was queued before the question counts in its answer.
			for drained := false; !drained; {
				select {
				case in := <-r.inbox:
					s.take(r, in)
				default:
					drained = true
				}
			}
			f(s)
		}
	}
}

// ask runs f on Run's goroutine.
func (r *Recorder) ask(ctx context.Context, f func(*state)) error {
	done := make(chan struct{})
	select {
	case r.asks <- func(s *state) { f(s); close(done) }:
	case <-r.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	<-done
	return nil
}

// workerStats is what the recorder knows of one worker process.
type workerStats struct {
	window window
}

// slotKey names a worker slot of a generation.
type slotKey struct {
	gen  uint64
	slot int
}

// state is the recorder's, owned by Run's goroutine.
type state struct {
	starts, exits, reloads, upgrades map[string]uint64
	lastReload                       *status.Reload
	// reqCounts are the requests in Bounds' buckets, reqSum their seconds.
	reqCounts []uint64
	reqSum    float64
	malformed uint64
	byPID     map[int]*workerStats
	// live is each slot's latest worker and whether it still runs;
	// scaled are slots a scale-up added that have no worker yet; firstGen
	// is the first generation a worker started in.
	live     map[slotKey]slotWorker
	scaled   map[slotKey]bool
	firstGen uint64
	// lastGen is the newest generation a worker started in.
	lastGen uint64
	jobRuns map[string]map[string]uint64
	jobOK   map[string]time.Time
}

type slotWorker struct {
	pid   int
	alive bool
}

func newState() *state {
	return &state{starts: map[string]uint64{}, exits: map[string]uint64{}, reloads: map[string]uint64{},
		upgrades: map[string]uint64{}, reqCounts: make([]uint64, len(Bounds)+1), byPID: map[int]*workerStats{},
		live: map[slotKey]slotWorker{}, scaled: map[slotKey]bool{}, jobRuns: map[string]map[string]uint64{},
		jobOK: map[string]time.Time{}}
}

// take applies one input.
func (s *state) take(r *Recorder, in input) {
	switch {
	case in.event != nil:
		s.event(*in.event)
	case in.report != nil:
		s.report(r, in.at, *in.report)
	case in.reload != nil:
		s.reloads[in.reload.Result]++
		s.lastReload = in.reload
	case in.upgrade != "":
		s.upgrades[in.upgrade]++
	}
}

// event applies a hook event.
func (s *state) event(e hooks.Event) {
	key := slotKey{e.Generation, e.WorkerID}
	switch e.Hook {
	case hooks.PostFork:
		if s.firstGen == 0 {
			s.firstGen = e.Generation
		}
		if e.Generation > s.lastGen {
			s.lastGen = e.Generation
			s.forgetOld()
		}
		prev, known := s.live[key]
		var why string
		switch {
		case known && prev.alive:
			why = StartRecycle
		case known:
			why = StartReplace
		case s.scaled[key]:
			why = StartScale
		case e.Generation > s.firstGen:
			why = StartReload
		default:
			why = StartInitial
		}
		delete(s.scaled, key)
		s.starts[why]++
		s.live[key] = slotWorker{pid: e.PID, alive: true}
		s.byPID[e.PID] = &workerStats{}
	case hooks.ChildExit:
		s.exits[exitReason(e.Reason)]++
		if w, ok := s.live[key]; ok && w.pid == e.PID {
			w.alive = false
			s.live[key] = w
		}
		delete(s.byPID, e.PID)
	case hooks.NworkersChanged:
		if e.Reason == "reload" {
			return // a new generation's size, not a scale-up
		}
		for id := e.OldWorkers; id < e.Workers; id++ {
			s.scaled[slotKey{e.Generation, id}] = true
		}
	case hooks.PreExec:
		s.upgrades["started"]++
	case hooks.ScheduleFinished:
		runs := s.jobRuns[e.Job]
		if runs == nil {
			runs = map[string]uint64{}
			s.jobRuns[e.Job] = runs
		}
		runs[e.Result]++
		if e.Result == "ok" {
			s.jobOK[e.Job] = e.Time
		}
	}
}

// forgetOld drops what is kept of the slots of generations older than the
// one before the newest: no worker starts in them any more.
func (s *state) forgetOld() {
	for k, w := range s.live {
		if k.gen+1 < s.lastGen && !w.alive {
			delete(s.live, k)
		}
	}
	for k := range s.scaled {
		if k.gen+1 < s.lastGen {
			delete(s.scaled, k)
		}
	}
}

// report applies a worker's request report: a malformed
// FORKD_REQUEST_STATS is counted and ignored.
func (s *state) report(r *Recorder, at time.Time, rep workers.RequestReport) {
	if rep.Stats == "" {
		return
	}
	st, err := reqstats.Parse(rep.Stats)
	if err != nil {
		s.malformed++
		r.log.Debug("malformed request stats ignored", "worker_id", rep.WorkerID, "pid", rep.PID, "err", err)
		return
	}
	counts := rebucket(st.Bounds, st.Counts)
	for i, c := range counts {
		s.reqCounts[i] += c
	}
	if rep.HasSum {
		s.reqSum += float64(rep.SumUsec) / 1e6
	} else {
		s.reqSum += estimateSum(counts)
	}
	w := s.byPID[rep.PID]
	if w == nil {
		w = &workerStats{}
		s.byPID[rep.PID] = w // an adopted worker, started by the master before
	}
	w.window.add(at, counts)
}

// fill copies the counters and the request histogram into p, and each
// worker's latency quantiles into p.WorkerList.
func (s *state) fill(p *status.Page, now time.Time) {
	p.Counters.Starts = maps.Clone(s.starts)
	p.Counters.Exits = maps.Clone(s.exits)
	p.Counters.Reloads = maps.Clone(s.reloads)
	p.Counters.Upgrades = maps.Clone(s.upgrades)
	p.Counters.MalformedReports = s.malformed
	p.LastReload = s.lastReload
	p.Requests = status.Histogram{Bounds: Bounds, Counts: append([]uint64(nil), s.reqCounts...), Sum: s.reqSum}
	for _, c := range s.reqCounts {
		p.Requests.Count += c
	}
	names := make([]string, 0, len(s.jobRuns))
	for name := range s.jobRuns {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		p.Counters.Jobs = append(p.Counters.Jobs, status.Job{Name: name, Runs: maps.Clone(s.jobRuns[name]),
			LastSuccess: s.jobOK[name]})
	}
	live := make(map[int]bool, len(p.WorkerList))
	for _, w := range p.WorkerList {
		live[w.PID] = true
	}
	for pid, ws := range s.byPID {
		// A process whose exit was not seen (an event lost) goes once
		// its last minute of reports has.
		if ws.window.trim(now); !live[pid] && len(ws.window.periods) == 0 {
			delete(s.byPID, pid)
		}
	}
	for i := range p.WorkerList {
		w := &p.WorkerList[i]
		ws := s.byPID[w.PID]
		if ws == nil {
			continue
		}
		if q, ok := ws.window.quantile(now, 0.5); ok {
			w.P50 = &q
		}
		if q, ok := ws.window.quantile(now, 0.99); ok {
			w.P99 = &q
		}
	}
}

// Page assembles the instance's status: one Pool.Snapshot (a single
// request to the arbiter, however many workers), the recorder's own
// state, each worker's /proc/PID/stat and each listener's accept queue.
func (r *Recorder) Page(ctx context.Context) (status.Page, error) {
	now := time.Now()
	p := status.Page{Instance: r.opts.Instance, Version: r.opts.Version, State: workers.StateStarting,
		Started: r.started, Uptime: now.Sub(r.started).Seconds(), Listeners: []status.Listener{},
		WorkerList: []status.Worker{}}
	if box := r.pool.Load(); box != nil {
		snap, err := r.snapshot(ctx, box.Pool)
		if err != nil {
			return p, err
		}
		st := snap.Status
		p.State, p.Generation, p.Workers, p.ReadyWorkers, p.Reloads = st.State, st.Generation, st.Workers,
			st.ReadyWorkers, st.Reloads
		for _, in := range snap.Workers {
			p.WorkerList = append(p.WorkerList, worker(in, now))
		}
	}
	for _, l := range r.opts.Listeners {
		sl := status.Listener{Name: l.Name, Address: l.Addr}
		if q, err := listenq.Read(l.File); err != nil {
			sl.Error = err.Error()
		} else {
			sl.Queue, sl.Backlog = q.Len, q.Backlog
		}
		p.Listeners = append(p.Listeners, sl)
	}
	if err := r.ask(ctx, func(s *state) { s.fill(&p, now) }); err != nil {
		return p, err
	}
	p.Counters.LostEvents = r.lost.Load()
	if r.opts.Dropped != nil {
		p.Counters.HookSignalsDropped = r.opts.Dropped()
	}
	return p, nil
}

// worker describes in for a page at now.
func worker(in workers.Info, now time.Time) status.Worker {
	w := status.Worker{Slot: in.ID, PID: in.PID, Generation: in.Generation, State: in.State,
		Age: now.Sub(in.Started).Seconds(), Requests: in.Requests, Inflight: in.Inflight, HeartbeatAge: -1,
		LastBeat: in.LastBeat}
	if in.State == "ready" && in.Inflight >= 0 {
		w.State = "idle"
		if in.Inflight > 0 {
			w.State = "busy"
		}
	}
	if !in.LastBeat.IsZero() {
		w.HeartbeatAge = max(now.Sub(in.LastBeat).Seconds(), 0)
	}
	if u, err := readUsage(in.PID); err == nil {
		w.RSS, w.CPU = u.RSSBytes, u.CPUSeconds
	}
	return w
}
