package bus

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/forkd/forkd/hooks"
	"github.com/forkd/forkd/internal/actor"
	"github.com/forkd/forkd/workers"
)

// Options configures a Service.
type Options struct {
	// Instance is the instance name; it names the bus name and fills
	// events whose Instance is empty.
	Instance string
	// Controller serves the methods and the properties until the first
	// UpdateStatus. Nil: methods fail with ErrorFailed.
	Controller Controller
	// Logger receives the bus's few log lines. Nil: slog.Default().
	Logger *slog.Logger
	// Address is the bus to connect to: "" for the system bus (honouring
	// DBUS_SYSTEM_BUS_ADDRESS), "session" for the session bus, "none" for
	// no bus (the Socket only), otherwise a D-Bus address such as
	// "unix:path=/run/dbus/system_bus_socket".
	Address string
	// Socket is the path of the peer-to-peer D-Bus socket on which the
	// object is served too, whether a bus is reachable or not (see
	// SocketPath); "" for none. New creates it (and its directory), so
	// that it exists once New returns; Run serves it and removes it when
	// it returns.
	Socket string
	// Queue is how many signals wait for the bus before Emit drops them.
	// Default 1024.
	Queue int
	// RequestSignals is how many PreRequest/PostRequest signals may be sent
	// per second. Default 0: they are never sent (RequestStats carries
	// aggregates instead). Events over the rate are skipped, not counted as
	// dropped.
	RequestSignals float64
}

// Service publishes hooks as D-Bus signals and serves the Manager1 methods and
// properties on the system bus (or the bus Options.Address names).
//
// Emit and UpdateStatus never block: signals wait in a bounded queue that
// Run drains, and what does not fit is dropped and counted (Dropped, the
// DroppedSignals property). While the bus is away — missing, not answering
// within a few seconds, or gone after the Service owned its name — Run keeps
// reconnecting with backoff; signals emitted meanwhile wait in the queue and
// are sent once it is back, and when the queue is full they are dropped.
// While another process owns the name, signals are dropped as they are
// emitted: once the Service takes the name over, only later events are sent.
// The arbiter goes on either way, and Run returns within about a second of
// being cancelled, dropping what it could not send by then.
//
// With Options.Socket, the object is served on a peer-to-peer socket too,
// bus or no bus: every connected peer gets every signal and
// PropertiesChanged emitted after its first call returned; a peer that
// falls peerBacklog signals behind is disconnected.
//
// A Service is a hooks.Sink. The unit that runs forkd needs the D-Bus policy
// io.github.forkd.conf installed for the service user to own its name.
type Service struct {
	instance   string
	name       string
	controller Controller
	log        *slog.Logger
	address    string
	noBus      bool
	// peers serves the peer-to-peer socket; nil without one.
	peers *peers

	queue   chan queuedSignal
	dropped atomic.Uint64
	// nameTaken is set from an attempt that found the name owned by another
	// process until one owns it: Emit drops signals meanwhile.
	nameTaken atomic.Bool
	// lastConn is the unique name of the Service's latest connection, and
	// abandoned says an attempt since gave up waiting for the bus, which
	// may still grant it the name before it reads the close (Run's
	// goroutine only).
	lastConn  string
	abandoned bool

	// requestEvery is the minimum gap between request signals (0: never);
	// lastRequest is when the last one went through (UnixNano).
	requestEvery time.Duration
	lastRequest  atomic.Int64

	// cluster is the latest UpdateCluster ("" when there is no cluster).
	cluster atomic.Pointer[string]

	// status is the latest UpdateStatus (nil: none yet), read by the
	// method calls, the properties and Run.
	status atomic.Pointer[workers.Status]

	statusChanged chan struct{} // capacity 1: UpdateStatus happened
	droppedMore   chan struct{} // capacity 1: a signal was dropped
	// flushes takes Flush's requests to Run's goroutine while it is
	// connected, which connected says.
	flushes   chan chan struct{}
	connected atomic.Bool

	// Reconnection backoff; tests shorten it.
	backoffMin, backoffMax time.Duration
	// defaultConnectTimeout and defaultSendTimeout; tests shorten them.
	connectTimeout, sendTimeout time.Duration
	// droppedEvery limits DroppedSignals PropertiesChanged signals.
	droppedEvery time.Duration
	// onAttempt, when set (tests), is called after every connection attempt
	// with its result.
	onAttempt func(error)
}

var _ hooks.Sink = (*Service)(nil)

// queuedSignal is one queued signal: its member name and body.
type queuedSignal struct {
	member string
	body   []any
}

// New returns a Service for opts; Run connects it.
func New(opts Options) *Service {
	n := opts.Queue
	if n <= 0 {
		n = 1024
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	b := &Service{
		instance:       opts.Instance,
		name:           Name(opts.Instance),
		controller:     opts.Controller,
		log:            logger,
		address:        opts.Address,
		noBus:          opts.Address == "none",
		queue:          make(chan queuedSignal, n),
		statusChanged:  make(chan struct{}, 1),
		droppedMore:    make(chan struct{}, 1),
		flushes:        make(chan chan struct{}),
		backoffMin:     100 * time.Millisecond,
		backoffMax:     10 * time.Second,
		connectTimeout: defaultConnectTimeout,
		sendTimeout:    defaultSendTimeout,
		droppedEvery:   time.Second,
	}
	if opts.Socket != "" {
		b.peers = newPeers(b, opts.Socket)
	}
	if opts.RequestSignals > 0 {
		b.requestEvery = time.Duration(float64(time.Second) / opts.RequestSignals)
	}
	return b
}

// Name returns the well-known name the bus owns: Name(instance).
func (b *Service) Name() string { return b.name }

// Dropped returns how many signals were dropped: emitted while the queue
// was full (the bus slow, or away for long) or while another process owned
// the name, lost with a connection that broke or stopped taking them while
// they were sent, or still queued when Run returned.
func (b *Service) Dropped() uint64 { return b.dropped.Load() }

// Flush returns once the signals emitted before it are written to the bus
// and to the peers connected now — handed to their sockets, which deliver
// them even if this process exits or re-executes itself next — or once
// ctx ends, whichever comes first. Without a bus connection it does not
// wait for the bus.
func (b *Service) Flush(ctx context.Context) {
	if b.peers != nil {
		b.peers.flush(ctx)
	}
	if !b.noBus && b.connected.Load() {
		actor.Barrier(ctx, b.flushes, nil)
	}
}

// Emit queues e's signal; it never blocks. Events with an invalid Hook are
// ignored, as are PreRequest/PostRequest unless Options.RequestSignals
// allows them.
func (b *Service) Emit(e hooks.Event) {
	if !e.Hook.Valid() {
		return
	}
	if (e.Hook == hooks.PreRequest || e.Hook == hooks.PostRequest) && !b.allowRequestSignal(e.Time) {
		return
	}
	if e.Instance == "" {
		e.Instance = b.instance
	}
	b.enqueue(queuedSignal{member: e.Hook.Signal(), body: signalBody(e)})
}

// RequestStats aggregates one worker's requests over a period.
type RequestStats struct {
	// Instance is the instance name ("" = the Service's).
	Instance string
	// Generation is the worker's generation.
	Generation uint64
	// WorkerID is the worker's slot.
	WorkerID int
	// PID is the worker's process id.
	PID int
	// Requests is how many requests finished in the period.
	Requests uint64
	// Bounds are the latency buckets' upper bounds, ascending.
	Bounds []time.Duration
	// Counts has len(Bounds)+1 buckets: Counts[i] requests took at most
	// Bounds[i] (and more than Bounds[i-1]); the last counts the slower rest.
	Counts []uint64
}

// EmitRequestStats queues a RequestStats signal; it never blocks.
func (b *Service) EmitRequestStats(s RequestStats) {
	if s.Instance == "" {
		s.Instance = b.instance
	}
	bounds := make([]uint64, len(s.Bounds))
	for i, d := range s.Bounds {
		bounds[i] = uint64(max(d.Microseconds(), 0))
	}
	counts := append([]uint64{}, s.Counts...)
	b.enqueue(queuedSignal{member: "RequestStats", body: []any{
		s.Instance, s.Generation, int32(s.WorkerID), toUint32(s.PID), s.Requests, bounds, counts,
	}})
}

// enqueue queues s for Run, or drops it when the queue is full or another
// process owns the name; the peers of the peer-to-peer socket get it
// either way.
func (b *Service) enqueue(s queuedSignal) {
	if b.peers != nil {
		b.peers.enqueue(s)
	}
	if b.noBus {
		return
	}
	if b.nameTaken.Load() {
		b.drop()
		return
	}
	select {
	case b.queue <- s:
	default:
		b.drop()
	}
}

// dropQueued drops every signal waiting in the queue and returns how many
// it dropped.
func (b *Service) dropQueued() int {
	n := 0
	for {
		select {
		case <-b.queue:
			b.drop()
			n++
		default:
			return n
		}
	}
}

func (b *Service) drop() {
	b.dropped.Add(1)
	select {
	case b.droppedMore <- struct{}{}:
	default:
	}
}

// allowRequestSignal reports whether a request signal at t fits the rate.
func (b *Service) allowRequestSignal(t time.Time) bool {
	if b.requestEvery <= 0 {
		return false
	}
	if t.IsZero() {
		t = time.Now()
	}
	now := t.UnixNano()
	for {
		last := b.lastRequest.Load()
		if last != 0 && now-last < int64(b.requestEvery) {
			return false
		}
		if b.lastRequest.CompareAndSwap(last, now) {
			return true
		}
	}
}

// UpdateStatus records the arbiter's state for the properties; it never
// blocks. Run sends PropertiesChanged for what changed, after the signals
// emitted before the update.
func (b *Service) UpdateStatus(s workers.Status) {
	b.status.Store(&s)
	if b.peers != nil {
		b.peers.updated()
	}
	select {
	case b.statusChanged <- struct{}{}:
	default:
	}
}

// currentStatus returns the latest UpdateStatus, or asks the controller
// when there was none yet.
func (b *Service) currentStatus(ctx context.Context) (workers.Status, error) {
	if s := b.status.Load(); s != nil {
		return *s, nil
	}
	if b.controller == nil {
		return workers.Status{}, nil
	}
	s, err := b.controller.Status(ctx)
	if err != nil {
		return workers.Status{}, fmt.Errorf("get status: %w", err)
	}
	return s, nil
}

// properties returns every property's current value; on a failure to get
// the status it returns the error and the properties it has.
func (b *Service) properties(ctx context.Context) (map[string]dbus.Variant, error) {
	props, err := b.changing(ctx)
	if err != nil {
		return props, err
	}
	props["Listeners"] = dbus.MakeVariant(b.listeners(ctx))
	return props, nil
}

// changing returns the current value of every property but Listeners,
// which PropertiesChanged never announces. On a failure to get the status
// it returns the error and the properties it has.
func (b *Service) changing(ctx context.Context) (map[string]dbus.Variant, error) {
	s, err := b.currentStatus(ctx)
	if err != nil {
		return b.announced(nil), err
	}
	return b.announced(&s), nil
}

// announced returns the value of every property PropertiesChanged
// announces, the status ones from s (none when s is nil): the snapshot
// that changes are found against. Run's loops take s from the latest
// UpdateStatus, never from the Controller, whose pool may be waiting for
// them (an upgrade's Flush); the first update then announces the status.
// Listeners is left out: announcing it would read every listening
// socket's accept queue from the kernel at every status update, several
// times a worker while a generation boots.
func (b *Service) announced(s *workers.Status) map[string]dbus.Variant {
	props := map[string]dbus.Variant{
		"Instance":       dbus.MakeVariant(b.instance),
		"DroppedSignals": dbus.MakeVariant(b.Dropped()),
		"Cluster":        dbus.MakeVariant(""),
	}
	if c := b.cluster.Load(); c != nil {
		props["Cluster"] = dbus.MakeVariant(*c)
	}
	if s != nil {
		props["State"] = dbus.MakeVariant(s.State)
		props["Generation"] = dbus.MakeVariant(s.Generation)
		props["Workers"] = dbus.MakeVariant(toUint32(s.Workers))
		props["ReadyWorkers"] = dbus.MakeVariant(toUint32(s.ReadyWorkers))
	}
	return props
}

// listeners returns the Listeners property: the controller's listening
// sockets and their accept queues as the kernel reports them now, those it
// could not read with a queue and backlog of 0.
func (b *Service) listeners(ctx context.Context) []ListenerEntry {
	out := []ListenerEntry{}
	r, ok := b.controller.(ListenerReader)
	if !ok {
		return out
	}
	list, err := r.Listeners(ctx)
	if err != nil {
		b.log.Debug("D-Bus Listeners property", "err", err)
	}
	for _, l := range list {
		out = append(out, ListenerEntry{Name: l.Name, Address: l.Addr, Queue: l.Queue, Backlog: l.Backlog})
	}
	return out
}

// toUint32 converts a count or pid to D-Bus's u; negatives become 0.
func toUint32(n int) uint32 {
	if n < 0 {
		return 0
	}
	return uint32(n)
}
