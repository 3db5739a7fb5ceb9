package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/internal/libexec"
)

// ErrUnavailable is returned (wrapped) by Claim, Last and Holder while
// forkd has no etcd session: etcd is unreachable or not reached yet.
var ErrUnavailable = errors.New("cluster: etcd unreachable")

// States of the connection to etcd, as Status.State reports them.
const (
	StateConnecting  = "connecting"  // no session yet, not failed yet
	StateConnected   = "connected"   // a session with a live lease
	StateUnreachable = "unreachable" // the last attempt failed or the lease could not be renewed
)

// Status is the connection to etcd.
type Status struct {
	// State is StateConnecting, StateConnected or StateUnreachable.
	State string `json:"state"`
	// Err says why etcd is unreachable ("" otherwise).
	Err string `json:"err,omitempty"`
}

// String says s in a few words, for STATUS= and the D-Bus Cluster
// property: "etcd connected", "etcd unreachable: …".
func (s Status) String() string {
	if s.Err != "" {
		return "etcd " + s.State + ": " + s.Err
	}
	return "etcd " + s.State
}

// Event is a change of leadership of a singleton.
type Event struct {
	// Job is the singleton's name.
	Job string `json:"job"`
	// Acquired says this forkd now holds the job; otherwise it lost it.
	Acquired bool `json:"acquired,omitempty"`
	// Token is the fencing token of an acquired leadership: the etcd
	// revision that created this forkd's leader key, larger than any
	// earlier holder's.
	Token int64 `json:"token,omitempty"`
	// Reason says why the leadership was lost: "lease not renewed",
	// "lease expired", "resigned", "stopped", "forkd-cluster exited".
	Reason string `json:"reason,omitempty"`
	// KillBy, for a lost leadership, is when the holder's process must be
	// gone (KILL at the latest): half a stop_margin before the lease can
	// expire. Zero when the lease is not at risk (resigned, stopped).
	KillBy time.Time `json:"kill_by,omitzero"`
}

// Claim is the outcome of a schedule's claim of a period.
type Claim struct {
	// Won says this forkd claimed the period and runs it.
	Won bool `json:"won,omitempty"`
	// Holder is the member that claimed the period (or a later one).
	Holder string `json:"holder,omitempty"`
	// Token is the revision of the claim: larger for every later claim.
	Token int64 `json:"token,omitempty"`
}

// Executable is the file name of the sidecar that talks to etcd.
const Executable = "forkd-cluster"

// LibDir is where the packages install forkd's helper executables.
const LibDir = libexec.LibDir

// FindExecutable returns the path of forkd-cluster: beside the running
// executable (bin/forkd-cluster in a build tree), else in LibDir. The
// error names both places.
func FindExecutable() (string, error) {
	p, err := libexec.Find(Executable)
	if err != nil {
		return "", fmt.Errorf(`cluster: jobs with scope = "cluster" need the %s executable: %w`, Executable, err)
	}
	return p, nil
}

// Agent is a running forkd-cluster that an in-place upgrade hands over:
// its pid and the master's end of its socket, kept open across execve.
type Agent struct {
	PID int `json:"pid"`
	FD  int `json:"fd"`
}

// Options configure a Cluster.
type Options struct {
	// Config is the instance's config: its [cluster] table and
	// server.name. Required.
	Config *config.Config
	// Member names this forkd in etcd (the holder that ListJobs shows).
	// Default: the host name, "/", server.name.
	Member string
	// Logger receives the cluster's log, the sidecar's included; nil
	// discards.
	Logger *slog.Logger
	// OnStatus is called on Run's goroutine whenever the connection to
	// etcd changes state; it must not block. May be nil.
	OnStatus func(Status)
	// OnLeadership is called on Run's goroutine for every Event, whoever
	// subscribed to it; it must not block. May be nil.
	OnLeadership func(Event)
	// Lease is an etcd lease handed over by an upgrade from a master that
	// held its session itself (0: none): the sidecar takes it over if
	// etcd still has it.
	Lease int64
	// Adopt is the sidecar an in-place upgrade handed over (nil: start
	// one).
	Adopt *Agent
	// Path is forkd-cluster's path; "" finds it (FindExecutable).
	Path string
}

// Cluster is one forkd's membership of a cluster, served by a
// forkd-cluster sidecar that holds the etcd session and the elections.
// Create it with New and run it with Run; the other methods may be called
// from any goroutine, before Run too.
type Cluster struct {
	opts     Options
	log      *slog.Logger
	ttl      time.Duration
	margin   time.Duration
	requests chan func(*Cluster)
	done     chan struct{}
	ready    chan struct{} // closed once a first session exists

	running          atomic.Bool // Run was called
	connected        atomic.Bool
	lease, renewedAt atomic.Int64
	nextID           atomic.Int64

	// State below is owned by Run's goroutine.
	conn      *os.File
	fd        int // conn's descriptor (conn.Fd would make it blocking)
	sc        *sidecar
	enc       *json.Encoder
	proc      *os.Process
	detached  bool
	readyShut bool
	// startFailed says the failure to start the sidecar was logged.
	startFailed bool
	subs        map[string]chan<- Event
	leading     map[string]bool
	pending     map[string][]Event // events for singletons not yet led again after an upgrade
	procs       map[string]int     // the running cluster singletons' pids, by job
	asks        map[int64]chan<- Message
	onDetach    chan<- struct{}
	stopping    <-chan struct{}
}

// HasJobs reports whether cfg has a singleton or schedule with scope =
// "cluster": what forkd-cluster is started for.
func HasJobs(cfg *config.Config) bool {
	for _, s := range cfg.Singletons {
		if s.Scope == config.ScopeCluster {
			return true
		}
	}
	for _, s := range cfg.Schedules {
		if s.Scope == config.ScopeCluster {
			return true
		}
	}
	return false
}

// New returns a Cluster for opts; Run starts (or adopts) its sidecar,
// finding forkd-cluster then (a missing one is logged, and looked for
// again at each retry).
func New(opts Options) (*Cluster, error) {
	if opts.Config == nil || !opts.Config.Cluster.Enabled() {
		return nil, errors.New("cluster: no [cluster] endpoints")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Member == "" {
		host, _ := os.Hostname()
		if host == "" {
			host = "localhost"
		}
		opts.Member = host + "/" + opts.Config.Server.Name
	}
	c := &Cluster{
		opts:     opts,
		log:      opts.Logger,
		ttl:      opts.Config.Cluster.Lease(),
		margin:   opts.Config.Cluster.Margin(),
		requests: make(chan func(*Cluster), 1024),
		done:     make(chan struct{}),
		ready:    make(chan struct{}),
		subs:     make(map[string]chan<- Event),
		leading:  make(map[string]bool),
		pending:  make(map[string][]Event),
		procs:    make(map[string]int),
		asks:     make(map[int64]chan<- Message),
	}
	c.nextID.Store(time.Now().UnixNano()) // unlike any ID of the master before an upgrade
	return c, nil
}

// Member returns the name this forkd holds jobs under.
func (c *Cluster) Member() string { return c.opts.Member }

// Connected reports whether forkd has an etcd session now.
func (c *Cluster) Connected() bool { return c.connected.Load() }

// Ready is closed once forkd has had an etcd session.
func (c *Cluster) Ready() <-chan struct{} { return c.ready }

// Lease returns the current session's lease (0: none) and when its last
// answered renewal was sent.
func (c *Cluster) Lease() (id int64, renewed time.Time) {
	id = c.lease.Load()
	if id == 0 {
		return 0, time.Time{}
	}
	return id, time.Unix(0, c.renewedAt.Load())
}

// tell runs fn on Run's goroutine, in the order of the calls.
func (c *Cluster) tell(fn func(c *Cluster)) {
	select {
	case c.requests <- fn:
	case <-c.done:
	}
}

// sidecar is one forkd-cluster process and what it says.
type sidecar struct {
	msgs   chan Message
	exited <-chan error
	gone   chan struct{} // closed once Run no longer reads msgs
}

// Run starts forkd-cluster (or adopts the one handed over) and serves
// the methods through it until ctx is done; then it closes the socket,
// upon which the sidecar gives up its leaderships and revokes its lease,
// and waits for the sidecar to exit. A sidecar that dies meanwhile loses
// the leaderships (at the lease's deadline) and is started again.
func (c *Cluster) Run(ctx context.Context) error {
	defer close(c.done)
	c.running.Store(true)
	c.stopping = ctx.Done()
	c.setStatus(Status{State: StateConnecting})
	sc, err := c.start()
	backoff := 200 * time.Millisecond
	var retry <-chan time.Time
	if err != nil {
		c.failed(err)
		retry = time.After(backoff)
	}
	for {
		var msgs <-chan Message
		var exited <-chan error
		if sc != nil {
			msgs, exited = sc.msgs, sc.exited
		}
		select {
		case <-ctx.Done():
			c.stop(sc)
			return nil
		case <-retry:
			retry = nil
			if sc, err = c.start(); err != nil {
				c.failed(err)
				backoff = min(backoff*2, 5*time.Second)
				retry = time.After(backoff)
			} else {
				backoff = 200 * time.Millisecond
			}
		case m := <-msgs:
			c.handle(m)
		case err := <-exited:
			c.died(err)
			sc = nil
			retry = time.After(backoff)
		case fn := <-c.requests:
			fn(c)
		}
	}
}

// start starts (or, the first time, adopts) forkd-cluster and says hello
// (or attach).
func (c *Cluster) start() (*sidecar, error) {
	var first Request
	if a := c.opts.Adopt; a != nil {
		c.opts.Adopt = nil
		syscall.CloseOnExec(a.FD)
		c.conn, c.fd = os.NewFile(uintptr(a.FD), "forkd-cluster"), a.FD
		p, err := os.FindProcess(a.PID)
		if err != nil {
			c.conn.Close()
			return nil, fmt.Errorf("cluster: adopt forkd-cluster (pid %d): %w", a.PID, err)
		}
		c.proc = p
		first = Request{Op: OpAttach}
		c.log.Info("adopted forkd-cluster handed over by the upgrade: its etcd session and leaderships carry on",
			"pid", a.PID)
	} else {
		path := c.opts.Path
		if path == "" {
			var err error
			if path, err = FindExecutable(); err != nil {
				return nil, err
			}
		}
		proc, conn, fd, err := libexec.Start(path)
		if err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
		c.conn, c.fd, c.proc = conn, fd, proc
		cc := c.opts.Config
		first = Request{Op: OpHello, Hello: &Hello{Cluster: cc.Cluster, ServerName: cc.Server.Name,
			Member: c.opts.Member, Lease: c.opts.Lease, Debug: c.log.Enabled(context.Background(), slog.LevelDebug)}}
		c.opts.Lease = 0
	}
	c.enc = json.NewEncoder(c.conn)
	c.detached, c.startFailed = false, false
	sc := &sidecar{msgs: make(chan Message), exited: libexec.Exited(c.proc), gone: make(chan struct{})}
	c.sc = sc
	go read(c.conn, sc.msgs, sc.gone)
	c.send(first)
	for job := range c.subs {
		c.send(Request{Op: OpLead, Job: job})
	}
	for job, pid := range c.procs {
		c.send(Request{Op: OpRunning, Job: job, PID: pid})
	}
	return sc, nil
}

// read decodes the sidecar's lines onto msgs until the socket ends or
// done is closed.
func read(conn *os.File, msgs chan<- Message, done <-chan struct{}) {
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var m Message
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		select {
		case msgs <- m:
		case <-done:
			return
		}
		if m.Kind == KindDetached {
			return // nothing more until the next attach, on the successor's reader
		}
	}
}

// send writes r to the sidecar; a failure shows as its exit.
func (c *Cluster) send(r Request) {
	if c.enc == nil || c.detached {
		return
	}
	_ = c.enc.Encode(r)
}

// failed says, once until a start succeeds, that the sidecar could not
// be started.
func (c *Cluster) failed(err error) {
	if c.startFailed {
		c.log.Debug("forkd-cluster still not started", "err", err)
	} else {
		c.log.Error(`cluster jobs (scope = "cluster") wait: forkd-cluster not started`, "err", err)
		c.startFailed = true
	}
	c.setStatus(Status{State: StateUnreachable, Err: err.Error()})
}

// died takes the sidecar's exit: its leaderships are lost, their
// processes to be gone before its lease can expire.
func (c *Cluster) died(err error) {
	c.log.Error("forkd-cluster exited: cluster jobs stop until it is started again", "err", err)
	_, renewed := c.Lease()
	killBy := renewed.Add(c.ttl - c.margin/2)
	c.conn.Close()
	close(c.sc.gone)
	c.conn, c.enc, c.proc, c.sc = nil, nil, nil, nil
	c.lease.Store(0)
	for job := range c.leading {
		c.publish(Event{Job: job, Reason: "forkd-cluster exited", KillBy: killBy}, false)
	}
	c.failAsks()
	c.setStatus(Status{State: StateUnreachable, Err: "forkd-cluster exited: " + err.Error()})
}

// failAsks answers every request in flight with ErrUnavailable.
func (c *Cluster) failAsks() {
	for id, ch := range c.asks {
		ch <- Message{Kind: KindReply, ID: id, Unavailable: true}
		delete(c.asks, id)
	}
}

// handle takes one message of the sidecar.
func (c *Cluster) handle(m Message) {
	switch m.Kind {
	case KindReply:
		if ch, ok := c.asks[m.ID]; ok {
			delete(c.asks, m.ID)
			ch <- m
		}
	case KindStatus:
		if m.Status != nil {
			c.setStatus(*m.Status)
		}
	case KindLease:
		c.lease.Store(m.Lease)
		c.renewedAt.Store(m.Renewed.UnixNano())
	case KindEvent:
		if m.Event != nil {
			c.publish(*m.Event, m.Replay)
		}
	case KindLog:
		args := make([]any, 0, len(m.Attrs))
		for _, a := range m.Attrs {
			args = append(args, a)
		}
		c.log.Log(context.Background(), slog.Level(m.Level), m.Msg, args...)
	case KindDetached:
		if c.onDetach != nil {
			close(c.onDetach)
			c.onDetach = nil
		}
	}
}

// setStatus records and reports the connection's state.
func (c *Cluster) setStatus(s Status) {
	c.connected.Store(s.State == StateConnected)
	if s.State == StateConnected && !c.readyShut {
		c.readyShut = true
		close(c.ready)
	}
	if c.opts.OnStatus != nil {
		c.opts.OnStatus(s)
	}
}

// publish hands ev to OnLeadership (unless it replays a leadership
// already signalled) and to its singleton's subscriber.
func (c *Cluster) publish(ev Event, replay bool) {
	if ev.Acquired {
		c.leading[ev.Job] = true
	} else {
		delete(c.leading, ev.Job)
	}
	if c.opts.OnLeadership != nil && !replay {
		c.opts.OnLeadership(ev)
	}
	if ev.Reason == "resigned" || ev.Reason == "stopped" {
		return
	}
	ch, ok := c.subs[ev.Job]
	if !ok {
		if len(c.pending[ev.Job]) < 16 {
			c.pending[ev.Job] = append(c.pending[ev.Job], ev)
		}
		return
	}
	select {
	case ch <- ev:
	case <-c.stopping: // the subscriber may have stopped reading
	}
}

// stop closes the socket and waits for the sidecar to revoke its lease
// and exit: the master is stopping.
func (c *Cluster) stop(sc *sidecar) {
	for job := range c.leading {
		if c.opts.OnLeadership != nil {
			c.opts.OnLeadership(Event{Job: job, Reason: "stopped"})
		}
	}
	c.leading = map[string]bool{}
	c.failAsks()
	if sc == nil {
		return
	}
	c.send(Request{Op: OpStop})
	c.conn.Close()
	close(sc.gone)
	select {
	case <-sc.exited:
	case <-time.After(c.ttl + 2*time.Second):
		c.log.Warn("forkd-cluster did not exit: killing it")
		_ = c.proc.Kill()
		<-sc.exited
	}
}

// Lead campaigns for the singleton job, now and whenever a new session
// is made, until Resign; events gets an Event each time this forkd wins or
// loses it. events must be read promptly and must not be closed before Run
// returns.
func (c *Cluster) Lead(job string, events chan<- Event) {
	c.tell(func(c *Cluster) {
		if _, ok := c.subs[job]; ok {
			return
		}
		c.subs[job] = events
		for _, ev := range c.pending[job] {
			c.publish(ev, true)
		}
		delete(c.pending, job)
		c.send(Request{Op: OpLead, Job: job})
	})
}

// Resign stops campaigning for job and gives up its leadership if held:
// the caller's process for it must have exited. No Event follows for
// its subscriber; OnLeadership gets one with reason "resigned".
func (c *Cluster) Resign(job string) {
	c.tell(func(c *Cluster) {
		if _, ok := c.subs[job]; !ok {
			return
		}
		delete(c.subs, job)
		c.send(Request{Op: OpResign, Job: job})
	})
}

// Running tells the sidecar that pid is job's process, or with pid 0
// that it has exited. Should this forkd die, the sidecar revokes its
// lease only once the processes it was told of are gone (lease_ttl at
// most), not merely sent their parent-death KILL.
func (c *Cluster) Running(job string, pid int) {
	c.tell(func(c *Cluster) {
		if pid == 0 {
			delete(c.procs, job)
		} else {
			c.procs[job] = pid
		}
		c.send(Request{Op: OpRunning, Job: job, PID: pid})
	})
}

// ask sends r and waits for its reply, within the request timeout or
// ctx. Without an etcd session it returns ErrUnavailable at once.
func (c *Cluster) ask(ctx context.Context, r Request) (Message, error) {
	if !c.connected.Load() {
		return Message{}, ErrUnavailable
	}
	ctx, cancel := context.WithTimeout(ctx, min(c.ttl/2, 3*time.Second)+time.Second)
	defer cancel()
	r.ID = c.nextID.Add(1)
	reply := make(chan Message, 1)
	c.tell(func(c *Cluster) {
		if c.enc == nil || c.detached {
			reply <- Message{Kind: KindReply, ID: r.ID, Unavailable: true}
			return
		}
		c.asks[r.ID] = reply
		c.send(r)
	})
	select {
	case m := <-reply:
		switch {
		case m.Unavailable:
			return m, ErrUnavailable
		case m.Err != "":
			return m, errors.New(m.Err)
		}
		return m, nil
	case <-ctx.Done():
		c.tell(func(c *Cluster) { delete(c.asks, r.ID) })
		return Message{}, fmt.Errorf("cluster: %s %s: forkd-cluster: %w", r.Op, r.Job, ctx.Err())
	case <-c.done:
		return Message{}, ErrUnavailable
	}
}

// Claim claims the period at of the schedule job for this forkd, with one
// etcd transaction (two the first time a schedule runs anywhere): it wins
// when the schedule's key holds an earlier period, or none. A period, or
// any earlier one, that another forkd claimed first is lost, and Holder
// says who. While there is no session it returns ErrUnavailable at once.
func (c *Cluster) Claim(ctx context.Context, job string, at time.Time) (Claim, error) {
	m, err := c.ask(ctx, Request{Op: OpClaim, Job: job, At: at})
	if err != nil || m.Claim == nil {
		return Claim{}, err
	}
	return *m.Claim, nil
}

// Last returns the last period of the schedule job claimed by any forkd
// of the cluster (the zero Time if none), and who claimed it.
func (c *Cluster) Last(ctx context.Context, job string) (time.Time, string, error) {
	m, err := c.ask(ctx, Request{Op: OpLast, Job: job})
	return m.At, m.Holder, err
}

// Holder returns the member that holds the singleton job ("" if none
// does).
func (c *Cluster) Holder(ctx context.Context, job string) (string, error) {
	m, err := c.ask(ctx, Request{Op: OpHolder, Job: job})
	return m.Holder, err
}

// Handover prepares the sidecar for an in-place upgrade: it stops talking
// to it (the sidecar queues what it says until the successor attaches)
// and keeps its socket open across execve. It returns nil when there is
// no sidecar to hand over. Resume undoes it if the upgrade fails.
func (c *Cluster) Handover(ctx context.Context) (*Agent, error) {
	if !c.running.Load() {
		return nil, nil // no cluster jobs: no sidecar started
	}
	detached := make(chan struct{})
	var a *Agent
	c.tell(func(c *Cluster) {
		if c.enc == nil {
			close(detached)
			return
		}
		a = &Agent{PID: c.proc.Pid, FD: c.fd}
		c.onDetach = detached
		c.send(Request{Op: OpDetach})
		c.detached = true
		c.failAsks()
	})
	select {
	case <-detached:
	case <-ctx.Done():
		return nil, fmt.Errorf("cluster: forkd-cluster did not detach: %w", ctx.Err())
	case <-c.done:
		return nil, nil
	}
	if a == nil {
		return nil, nil
	}
	if _, err := unix.FcntlInt(uintptr(a.FD), unix.F_SETFD, 0); err != nil {
		return nil, fmt.Errorf("cluster: keep forkd-cluster's socket across the upgrade: %w", err)
	}
	return a, nil
}

// Resume talks to the sidecar again after Handover: the upgrade did not
// happen.
func (c *Cluster) Resume() {
	c.tell(func(c *Cluster) {
		if !c.detached || c.conn == nil {
			return
		}
		syscall.CloseOnExec(c.fd)
		c.detached = false
		go read(c.conn, c.sc.msgs, c.sc.gone)
		c.send(Request{Op: OpAttach})
		for job := range c.subs {
			c.send(Request{Op: OpLead, Job: job})
		}
	})
}

// Release ends a sidecar handed over by an upgrade that this master does
// not adopt (its config has no [cluster] any more): it kills it without
// revoking its lease, which lapses after lease_ttl as when the old
// master's session was not taken over, so that the adopted singletons
// are gone before another forkd can win; and it reaps it.
func Release(a *Agent, log *slog.Logger) {
	syscall.CloseOnExec(a.FD)
	p, err := os.FindProcess(a.PID)
	if err == nil {
		log.Info("forkd-cluster handed over by the upgrade ends, its lease left to lapse: the config has no [cluster] now",
			"pid", a.PID)
		_ = p.Kill()
		go func() { _, _ = p.Wait() }()
	}
	syscall.Close(a.FD)
}
