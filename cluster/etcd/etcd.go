package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"

	"github.com/forkd/forkd/cluster"
	"github.com/forkd/forkd/config"
)

// The types the master's side shares, re-exported for this package's
// users.
type (
	// Status is the connection to etcd (cluster.Status).
	Status = cluster.Status
	// Event is a change of leadership (cluster.Event).
	Event = cluster.Event
	// Claim is a claim's outcome (cluster.Claim).
	Claim = cluster.Claim
)

// ErrUnavailable is cluster.ErrUnavailable: no etcd session now.
var ErrUnavailable = cluster.ErrUnavailable

// States of the connection to etcd (cluster's).
const (
	StateConnecting  = cluster.StateConnecting
	StateConnected   = cluster.StateConnected
	StateUnreachable = cluster.StateUnreachable
)

// Options configure a Cluster.
type Options struct {
	// Config is the instance's config: its [cluster] table and
	// server.name. Required.
	Config *config.Config
	// Member names this forkd in etcd (the holder that ListJobs shows).
	// Default: the host name, "/", server.name.
	Member string
	// Logger receives the cluster's log; nil discards.
	Logger *slog.Logger
	// OnStatus is called on Run's goroutine whenever the connection to
	// etcd changes state; it must not block. May be nil.
	OnStatus func(Status)
	// OnLeadership is called on Run's goroutine for every Event, whoever
	// subscribed to it; it must not block. May be nil.
	OnLeadership func(Event)
	// OnLease is called on Run's goroutine with the session's lease (0:
	// none) whenever it changes or is renewed, and when its last answered
	// renewal was sent; it must not block. May be nil.
	OnLease func(id int64, renewed time.Time)
	// OnReplay is called on Run's goroutine for a Lead of a singleton
	// already held: the Event that acquired it, again. May be nil.
	OnReplay func(Event)
	// Lease is the lease of the master this one replaced by an in-place
	// upgrade (Cluster.Lease before it), 0 for none: the first session
	// takes it over if it is still alive, and with it the leader keys, so
	// the adopted singletons keep their leadership and tokens.
	Lease int64
}

// Cluster is one forkd's membership of a cluster: its etcd session and
// the elections it campaigns in. Create it with New and run it with Run;
// the other methods may be called from any goroutine.
type Cluster struct {
	opts   Options
	log    *slog.Logger
	cli    *clientv3.Client
	name   string
	prefix string
	ttl    time.Duration
	margin time.Duration
	member string

	requests  chan func(*Cluster)
	done      chan struct{}
	connected atomic.Bool
	// lease and renewedAt (Unix nanoseconds) are the current session's,
	// for Lease (0: none).
	lease, renewedAt atomic.Int64
	ready            chan struct{} // closed once a first session exists

	// State below is owned by Run's goroutine.
	stopping   <-chan struct{} // Run's context's Done
	sess       *session
	leads      map[string]*lead
	readyShut  bool
	warned     bool
	retry      <-chan time.Time
	backoff    time.Duration
	maxBackoff time.Duration
}

// session is one etcd session: a lease and its keep-alives.
type session struct {
	s       *concurrency.Session
	ctx     context.Context
	cancel  context.CancelFunc
	renewed time.Time
	alive   chan time.Time
	gone    chan error
	expire  *time.Timer
}

// lead is a job this forkd campaigns for.
type lead struct {
	job     string
	events  chan<- Event
	cancel  context.CancelFunc // the campaign in flight (nil: none)
	leading bool
	e       *concurrency.Election
}

// New returns a Cluster for opts; Run connects it. It fails when the TLS
// files cannot be used or the client cannot be made; an unreachable etcd
// is no error.
func New(opts Options) (*Cluster, error) {
	if opts.Config == nil || !opts.Config.Cluster.Enabled() {
		return nil, errors.New("cluster: no [cluster] endpoints")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	cc := &opts.Config.Cluster
	if opts.Member == "" {
		host, _ := os.Hostname()
		if host == "" {
			host = "localhost"
		}
		opts.Member = host + "/" + opts.Config.Server.Name
	}
	tc, err := cc.TLS()
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	ttl := cc.Lease()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            cc.Endpoints,
		DialTimeout:          min(ttl, 5*time.Second),
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: min(ttl, 5*time.Second),
		TLS:                  tc,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: etcd client for %s: %w", strings.Join(cc.Endpoints, ","), err)
	}
	cli.Lease = sessionLease{cli.Lease}
	return &Cluster{
		opts:       opts,
		log:        opts.Logger,
		cli:        cli,
		name:       opts.Config.ClusterName(),
		prefix:     cc.KeyPrefix(),
		ttl:        ttl,
		margin:     cc.Margin(),
		member:     opts.Member,
		requests:   make(chan func(*Cluster), 1024),
		done:       make(chan struct{}),
		ready:      make(chan struct{}),
		leads:      make(map[string]*lead),
		backoff:    200 * time.Millisecond,
		maxBackoff: min(ttl, 5*time.Second),
	}, nil
}

// Member returns the name this forkd holds jobs under.
func (c *Cluster) Member() string { return c.member }

// Connected reports whether forkd has an etcd session now.
func (c *Cluster) Connected() bool { return c.connected.Load() }

// Ready is closed once forkd has had an etcd session.
func (c *Cluster) Ready() <-chan struct{} { return c.ready }

// key returns the etcd key of a job of kind ("singleton", "schedule").
func (c *Cluster) key(kind, job string) string {
	return c.prefix + "/" + c.name + "/" + kind + "/" + job
}

// Run keeps an etcd session and campaigns for the jobs Lead asked for
// until ctx is done; then it gives up its leaderships (their processes
// must be gone by then: the master stops the supervisor first), revokes
// its lease so that another forkd takes over at once, and returns nil.
// etcd being unreachable is no error: Run keeps trying.
func (c *Cluster) Run(ctx context.Context) error {
	defer close(c.done)
	defer c.cli.Close()
	c.stopping = ctx.Done()
	c.setStatus(Status{State: StateConnecting})
	c.connect(ctx)
	for {
		var alive <-chan time.Time
		var gone <-chan error
		var expire <-chan time.Time
		if c.sess != nil {
			alive, gone, expire = c.sess.alive, c.sess.gone, c.sess.expire.C
		}
		select {
		case <-ctx.Done():
			c.shutdown()
			return nil
		case <-c.retry:
			c.retry = nil
			c.connect(ctx)
		case t := <-alive:
			c.renewed(t)
		case err := <-gone:
			c.lose(err.Error(), c.sess.renewed.Add(c.ttl-c.margin/2))
		case <-expire:
			c.lose("lease not renewed", c.sess.renewed.Add(c.ttl-c.margin/2))
		case req := <-c.requests:
			req(c)
		}
	}
}

// tell runs fn on Run's goroutine, in the order of the calls.
func (c *Cluster) tell(fn func(c *Cluster)) {
	select {
	case c.requests <- fn:
	case <-c.done:
	}
}

// setStatus records and reports the connection's state.
func (c *Cluster) setStatus(s Status) {
	c.connected.Store(s.State == StateConnected)
	if c.opts.OnStatus != nil {
		c.opts.OnStatus(s)
	}
}

// connect makes a session: a lease of lease_ttl kept alive, then the
// campaigns. On failure it says so once and tries again after a backoff.
func (c *Cluster) connect(ctx context.Context) {
	gctx, cancel := context.WithTimeout(ctx, c.ttl)
	asked := time.Now()
	grant, err := c.resume(gctx)
	if grant == nil && err == nil {
		grant, err = c.cli.Grant(gctx, int64(c.ttl/time.Second))
	}
	cancel()
	var s *session
	if err == nil {
		s, err = c.newSession(ctx, grant, asked)
	}
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		c.unreachable(err)
		c.retry = time.After(c.backoff)
		c.backoff = min(c.backoff*2, c.maxBackoff)
		return
	}
	c.sess, c.backoff = s, 200*time.Millisecond
	if c.warned {
		c.log.Info("etcd reachable again: cluster jobs resume", "cluster", c.name, "lease", fmt.Sprintf("%x", grant.ID))
	} else {
		c.log.Info("etcd connected", "cluster", c.name, "member", c.member, "lease", fmt.Sprintf("%x", grant.ID),
			"lease_ttl", c.ttl)
	}
	c.warned = false
	c.setStatus(Status{State: StateConnected})
	if !c.readyShut {
		c.readyShut = true
		close(c.ready)
	}
	for _, l := range c.leads {
		c.campaign(l)
	}
}

// resume takes over Options.Lease, once: it returns the lease if etcd
// still has it, nil (and no error) if there is none to take or it expired.
func (c *Cluster) resume(ctx context.Context) (*clientv3.LeaseGrantResponse, error) {
	id := clientv3.LeaseID(c.opts.Lease)
	if id == clientv3.NoLease {
		return nil, nil
	}
	resp, err := c.cli.KeepAliveOnce(ctx, id)
	switch {
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		c.opts.Lease = 0
		c.log.Info("the lease handed over by the upgrade expired: campaigning afresh", "lease", fmt.Sprintf("%x", id))
		return nil, nil
	case err != nil:
		return nil, err
	}
	c.opts.Lease = 0
	c.log.Info("took over the lease handed over by the upgrade", "lease", fmt.Sprintf("%x", id))
	return &clientv3.LeaseGrantResponse{ID: id, TTL: resp.TTL}, nil
}

// Lease returns the current session's lease (0: none) and when its last
// answered renewal was sent: what an in-place upgrade hands over.
func (c *Cluster) Lease() (id int64, renewed time.Time) {
	id = c.lease.Load()
	if id == 0 {
		return 0, time.Time{}
	}
	return id, time.Unix(0, c.renewedAt.Load())
}

// leaseChanged reports the lease to OnLease.
func (c *Cluster) leaseChanged() {
	if c.opts.OnLease != nil {
		id, renewed := c.Lease()
		c.opts.OnLease(id, renewed)
	}
}

// newSession keeps grant's lease, asked for at asked, alive and makes
// the session of it.
func (c *Cluster) newSession(ctx context.Context, grant *clientv3.LeaseGrantResponse, asked time.Time) (*session, error) {
	sctx, cancel := context.WithCancel(ctx)
	cs, err := concurrency.NewSession(c.cli, concurrency.WithLease(grant.ID), concurrency.WithContext(sctx))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("etcd session: %w", err)
	}
	s := &session{s: cs, ctx: sctx, cancel: cancel, alive: make(chan time.Time), gone: make(chan error),
		renewed: asked, expire: time.NewTimer(time.Until(asked.Add(c.ttl - c.margin)))}
	go c.keepAlive(sctx, grant.ID, s.alive, s.gone)
	c.lease.Store(int64(grant.ID))
	c.renewedAt.Store(asked.UnixNano())
	c.leaseChanged()
	return s, nil
}

// unreachable says once per outage that etcd cannot be reached.
func (c *Cluster) unreachable(err error) {
	msg := errText(err)
	if !c.warned {
		c.log.Warn("etcd unreachable: cluster jobs wait until it is back; the workers serve",
			"endpoints", strings.Join(c.opts.Config.Cluster.Endpoints, ","), "err", msg)
		c.warned = true
	} else {
		c.log.Debug("etcd still unreachable", "err", msg)
	}
	c.setStatus(Status{State: StateUnreachable, Err: msg})
}

// errText shortens what gRPC says about an unreachable etcd.
func errText(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return "no answer in time"
	}
	return err.Error()
}

// renewed records a keep-alive sent at t and answered: the lease holds
// until t + lease_ttl at least.
func (c *Cluster) renewed(t time.Time) {
	s := c.sess
	if !t.After(s.renewed) {
		return
	}
	s.renewed = t
	c.renewedAt.Store(t.UnixNano())
	c.leaseChanged()
	if !s.expire.Stop() {
		select {
		case <-s.expire.C:
		default:
		}
	}
	s.expire.Reset(time.Until(t.Add(c.ttl - c.margin)))
}

// lose gives up the session: its lease could not be renewed in time.
// Every leadership is lost, its process to be gone by killBy, and a new
// session is tried at once.
func (c *Cluster) lose(reason string, killBy time.Time) {
	s := c.sess
	c.sess = nil
	c.lease.Store(0)
	c.leaseChanged()
	s.expire.Stop()
	s.cancel()
	for _, l := range c.leads {
		c.abandon(l, reason, killBy)
	}
	c.unreachable(errors.New(reason))
	c.retry = time.After(0)
}

// abandon ends l's campaign, and its leadership with reason.
func (c *Cluster) abandon(l *lead, reason string, killBy time.Time) {
	if l.cancel != nil {
		l.cancel()
		l.cancel = nil
	}
	if l.leading {
		l.leading, l.e = false, nil
		c.publish(l, Event{Job: l.job, Reason: reason, KillBy: killBy})
	}
}

// publish hands ev to l's subscriber and to OnLeadership.
func (c *Cluster) publish(l *lead, ev Event) {
	if ev.Acquired {
		c.log.Info("leadership acquired", "job", ev.Job, "token", ev.Token)
	} else {
		c.log.Warn("leadership lost", "job", ev.Job, "reason", ev.Reason)
	}
	if c.opts.OnLeadership != nil {
		c.opts.OnLeadership(ev)
	}
	if l.events != nil {
		select {
		case l.events <- ev:
		case <-c.stopping: // the subscriber may have stopped reading
		}
	}
}

// campaign campaigns for l in the current session.
func (c *Cluster) campaign(l *lead) {
	s := c.sess
	if s == nil || l.cancel != nil || l.leading {
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	l.cancel = cancel
	e := concurrency.NewElection(s.s, c.key("singleton", l.job))
	go func() {
		err := e.Campaign(ctx, c.member)
		c.tell(func(c *Cluster) { c.campaigned(l, s, e, err) })
	}()
}

// campaigned takes the end of a campaign of l in session s.
func (c *Cluster) campaigned(l *lead, s *session, e *concurrency.Election, err error) {
	current := c.leads[l.job] == l && c.sess == s
	if !current {
		if err == nil && c.sess == s {
			go resign(e, c.ttl) // Resign came while it campaigned
		}
		return
	}
	l.cancel = nil
	if err != nil {
		c.log.Debug("campaign failed; trying again", "job", l.job, "err", err)
		time.AfterFunc(c.backoff, func() {
			c.tell(func(c *Cluster) {
				if c.leads[l.job] == l && c.sess == s {
					c.campaign(l)
				}
			})
		})
		return
	}
	l.leading, l.e = true, e
	c.publish(l, Event{Job: l.job, Acquired: true, Token: e.Rev()})
}

// resign gives up e's leadership, within timeout.
func resign(e *concurrency.Election, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_ = e.Resign(ctx)
}

// shutdown gives up every leadership and revokes the lease.
func (c *Cluster) shutdown() {
	for _, l := range c.leads {
		c.abandonQuietly(l)
	}
	if c.sess == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), min(c.ttl, 2*time.Second))
	defer cancel()
	if _, err := c.cli.Revoke(ctx, c.sess.s.Lease()); err != nil {
		c.log.Warn("etcd lease not revoked: the others take over once it expires", "err", errText(err),
			"lease_ttl", c.ttl)
	}
	c.sess.expire.Stop()
	c.sess.cancel()
	c.sess = nil
}

// abandonQuietly ends l at shutdown: its subscriber has stopped.
func (c *Cluster) abandonQuietly(l *lead) {
	if l.cancel != nil {
		l.cancel()
		l.cancel = nil
	}
	if l.leading && c.opts.OnLeadership != nil {
		c.opts.OnLeadership(Event{Job: l.job, Reason: "stopped"})
	}
	l.leading = false
}

// Lead campaigns for the singleton job, now and whenever a new session
// is made, until Resign; events (nil: none) gets an Event each time this
// forkd wins or loses it. A Lead of a job already led changes nothing but
// calls OnReplay if this forkd holds it. events must be read promptly and must not be closed before Run
// returns.
func (c *Cluster) Lead(job string, events chan<- Event) {
	c.tell(func(c *Cluster) {
		if l, ok := c.leads[job]; ok {
			if l.leading && c.opts.OnReplay != nil {
				c.log.Info("leadership acquired", "job", job, "token", l.e.Rev())
				c.opts.OnReplay(Event{Job: job, Acquired: true, Token: l.e.Rev()})
			}
			return
		}
		l := &lead{job: job, events: events}
		c.leads[job] = l
		c.campaign(l)
	})
}

// Resign stops campaigning for job and gives up its leadership if held:
// the caller's process for it must have exited. No Event follows for
// its subscriber; OnLeadership gets one with reason "resigned".
func (c *Cluster) Resign(job string) {
	c.tell(func(c *Cluster) {
		l, ok := c.leads[job]
		if !ok {
			return
		}
		delete(c.leads, job)
		if l.cancel != nil {
			l.cancel()
			l.cancel = nil
		}
		if l.leading {
			go resign(l.e, c.ttl)
			c.log.Info("leadership resigned", "job", job)
			if c.opts.OnLeadership != nil {
				c.opts.OnLeadership(Event{Job: job, Reason: "resigned"})
			}
		}
	})
}
