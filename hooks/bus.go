package hooks

import (
	"context"
	_ "embed" // the introspection XML
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/godbus/dbus/v5"
)

// The D-Bus surface's names. Every instance owns BusName(instance) and
// exports BusObjectPath with BusInterface; clients match signals on
// BusInterface.
const (
	// BusNamePrefix starts every instance's well-known name.
	BusNamePrefix = "io.github.forkd."
	// BusObjectPath is the object every instance exports.
	BusObjectPath = "/io/github/forkd"
	// BusInterface is the interface of the methods, signals and properties.
	BusInterface = "io.github.forkd.Manager1"
)

// The D-Bus error names the methods return.
const (
	// BusErrorReloadFailed: Reload failed (the config was rejected or the
	// new generation did not come up); the message says why.
	BusErrorReloadFailed = "io.github.forkd.Error.ReloadFailed"
	// BusErrorInvalidArgs: an argument is out of range.
	BusErrorInvalidArgs = "io.github.forkd.Error.InvalidArgs"
	// BusErrorFailed: any other failure; the message says what.
	BusErrorFailed = "io.github.forkd.Error.Failed"
)

// MaxWorkers is the largest worker count SetWorkers accepts.
const MaxWorkers = 4096

// ErrInvalidArgs is wrapped by Controller errors about out-of-range
// arguments; the bus reports them as BusErrorInvalidArgs.
var ErrInvalidArgs = errors.New("hooks: invalid argument")

// errBusNameTaken reports that another process owns the instance's name.
var errBusNameTaken = errors.New("hooks: D-Bus name already owned by another process")

//go:embed io.github.forkd.Manager1.xml
var introspectionXML string

// InterfaceXML returns the D-Bus introspection XML of BusObjectPath: the
// shipped io.github.forkd.Manager1.xml, which documents every signal's
// arguments.
func InterfaceXML() string { return introspectionXML }

// BusName returns the well-known D-Bus name of an instance:
// BusNamePrefix followed by the instance name escaped as systemd's
// bus_label_escape does — ASCII letters and digits are kept, every other
// byte and a leading digit become "_" and two lowercase hex digits, and ""
// becomes "_".
func BusName(instance string) string {
	return BusNamePrefix + busLabelEscape(instance)
}

// InstanceFromBusName returns the instance whose BusName is name; ok is
// false when name is not such a name.
func InstanceFromBusName(name string) (instance string, ok bool) {
	label, found := strings.CutPrefix(name, BusNamePrefix)
	if !found || label == "" {
		return "", false
	}
	if label == "_" {
		return "", true
	}
	var b strings.Builder
	for i := 0; i < len(label); i++ {
		c := label[i]
		if c != '_' {
			if !isASCIIAlnum(c) {
				return "", false
			}
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(label) {
			return "", false
		}
		hi, lo := unhex(label[i+1]), unhex(label[i+2])
		if hi < 0 || lo < 0 {
			return "", false
		}
		b.WriteByte(byte(hi<<4 | lo))
		i += 2
	}
	return b.String(), true
}

func busLabelEscape(s string) string {
	if s == "" {
		return "_"
	}
	const hex = "0123456789abcdef"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isASCIIAlnum(c) && !(i == 0 && c >= '0' && c <= '9') {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('_')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}

func isASCIIAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	}
	return -1
}

// BusOptions configures a Bus.
type BusOptions struct {
	// Instance is the instance name; it names the bus name and fills
	// events whose Instance is empty.
	Instance string
	// Controller serves the methods and the properties until the first
	// UpdateStatus. Nil: methods fail with BusErrorFailed.
	Controller Controller
	// Logger receives the bus's few log lines. Nil: slog.Default().
	Logger *slog.Logger
	// Address is the bus to connect to: "" for the system bus (honouring
	// DBUS_SYSTEM_BUS_ADDRESS), "session" for the session bus, otherwise a
	// D-Bus address such as "unix:path=/run/dbus/system_bus_socket".
	Address string
	// Queue is how many signals wait for the bus before Emit drops them.
	// Default 1024.
	Queue int
	// RequestSignals is how many PreRequest/PostRequest signals may be sent
	// per second. Default 0: they are never sent (RequestStats carries
	// aggregates instead). Events over the rate are skipped, not counted as
	// dropped.
	RequestSignals float64
}

// Bus publishes hooks as D-Bus signals and serves the Manager1 methods and
// properties on the system bus (or the bus BusOptions.Address names).
//
// Emit and UpdateStatus never block: signals wait in a bounded queue that
// Run drains, and what does not fit is dropped and counted (Dropped, the
// DroppedSignals property). While the bus is away Run keeps reconnecting
// with backoff; signals emitted meanwhile wait in the queue and are sent
// once it is back, and when the queue is full they are dropped. The
// arbiter goes on either way.
//
// A Bus is a Sink. The unit that runs forkd needs the D-Bus policy
// io.github.forkd.conf installed for the service user to own its name.
type Bus struct {
	instance   string
	name       string
	controller Controller
	log        *slog.Logger
	address    string

	queue   chan busSignal
	dropped atomic.Uint64

	// requestEvery is the minimum gap between request signals (0: never);
	// lastRequest is when the last one went through (UnixNano).
	requestEvery time.Duration
	lastRequest  atomic.Int64

	mu        sync.Mutex
	status    Status
	hasStatus bool

	statusChanged chan struct{} // capacity 1: UpdateStatus happened
	droppedMore   chan struct{} // capacity 1: a signal was dropped

	// Reconnection backoff; tests shorten it.
	backoffMin, backoffMax time.Duration
	// droppedEvery limits DroppedSignals PropertiesChanged signals.
	droppedEvery time.Duration
	// onAttempt, when set (tests), is called after every connection attempt
	// with its result.
	onAttempt func(error)
}

var _ Sink = (*Bus)(nil)

// busSignal is one queued signal: its member name and body.
type busSignal struct {
	member string
	body   []any
}

// NewBus returns a Bus for opts; Run connects it.
func NewBus(opts BusOptions) *Bus {
	n := opts.Queue
	if n <= 0 {
		n = 1024
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	b := &Bus{
		instance:      opts.Instance,
		name:          BusName(opts.Instance),
		controller:    opts.Controller,
		log:           logger,
		address:       opts.Address,
		queue:         make(chan busSignal, n),
		statusChanged: make(chan struct{}, 1),
		droppedMore:   make(chan struct{}, 1),
		backoffMin:    100 * time.Millisecond,
		backoffMax:    10 * time.Second,
		droppedEvery:  time.Second,
	}
	if opts.RequestSignals > 0 {
		b.requestEvery = time.Duration(float64(time.Second) / opts.RequestSignals)
	}
	return b
}

// Name returns the well-known name the bus owns: BusName(instance).
func (b *Bus) Name() string { return b.name }

// Dropped returns how many signals were dropped because the queue was full
// (the bus slow or away) or the connection broke while sending them.
func (b *Bus) Dropped() uint64 { return b.dropped.Load() }

// Emit queues e's signal; it never blocks. Events with an invalid Hook are
// ignored, as are PreRequest/PostRequest unless BusOptions.RequestSignals
// allows them.
func (b *Bus) Emit(e Event) {
	if !e.Hook.Valid() {
		return
	}
	if (e.Hook == PreRequest || e.Hook == PostRequest) && !b.allowRequestSignal(e.Time) {
		return
	}
	if e.Instance == "" {
		e.Instance = b.instance
	}
	b.enqueue(busSignal{member: e.Hook.Signal(), body: signalBody(e)})
}

// RequestStats aggregates one worker's requests over a period.
type RequestStats struct {
	// Instance is the instance name ("" = the Bus's).
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
func (b *Bus) EmitRequestStats(s RequestStats) {
	if s.Instance == "" {
		s.Instance = b.instance
	}
	bounds := make([]uint64, len(s.Bounds))
	for i, d := range s.Bounds {
		bounds[i] = uint64(max(d.Microseconds(), 0))
	}
	counts := append([]uint64{}, s.Counts...)
	b.enqueue(busSignal{member: "RequestStats", body: []any{
		s.Instance, s.Generation, int32(s.WorkerID), busUint32(s.PID), s.Requests, bounds, counts,
	}})
}

func (b *Bus) enqueue(s busSignal) {
	select {
	case b.queue <- s:
	default:
		b.drop()
	}
}

func (b *Bus) drop() {
	b.dropped.Add(1)
	select {
	case b.droppedMore <- struct{}{}:
	default:
	}
}

// allowRequestSignal reports whether a request signal at t fits the rate.
func (b *Bus) allowRequestSignal(t time.Time) bool {
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
func (b *Bus) UpdateStatus(s Status) {
	b.mu.Lock()
	b.status, b.hasStatus = s, true
	b.mu.Unlock()
	select {
	case b.statusChanged <- struct{}{}:
	default:
	}
}

// Run connects to the bus, owns the instance's name, exports the object
// and sends queued signals until ctx is done. When the bus cannot be
// reached or goes away it logs one warning and keeps retrying with
// backoff, re-acquiring the name each time. It returns nil when ctx is
// done.
func (b *Bus) Run(ctx context.Context) error {
	backoff := b.backoffMin
	warned := false
	for {
		// The snapshot that property changes are compared with is taken
		// before the name is owned: whatever changes once a client can see
		// the name gets announced.
		published, _ := b.properties(ctx)
		conn, err := b.connect(ctx)
		if b.onAttempt != nil {
			b.onAttempt(err)
		}
		if err == nil {
			if warned {
				b.log.Info("D-Bus connected again: hook signals enabled", "name", b.name)
			} else {
				b.log.Debug("D-Bus connected", "name", b.name)
			}
			warned = false
			backoff = b.backoffMin
			err = b.serve(ctx, conn, published)
			conn.Close()
			if ctx.Err() != nil {
				return nil
			}
			b.log.Warn("D-Bus connection lost: hook signals disabled until it is back", "err", err)
			warned = true
		} else if ctx.Err() != nil {
			return nil
		} else if !warned && errors.Is(err, errBusNameTaken) {
			b.log.Warn("D-Bus name taken by another process: hook signals disabled, serving anyway",
				"name", b.name, "err", err)
			warned = true
		} else if !warned {
			b.log.Warn("no D-Bus: hook signals disabled, serving anyway", "err", err)
			warned = true
		} else {
			b.log.Debug("D-Bus still unreachable", "err", err)
		}

		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(backoff*2, b.backoffMax)
	}
}

// connect dials the bus, exports the object and owns the name.
func (b *Bus) connect(ctx context.Context) (*dbus.Conn, error) {
	var (
		conn *dbus.Conn
		err  error
	)
	// Not ctx itself: godbus closes a connection when its context ends,
	// and a stopping Bus still drains its queue (on_exit) before closing.
	opt := dbus.WithContext(context.WithoutCancel(ctx))
	switch b.address {
	case "":
		conn, err = dbus.ConnectSystemBus(opt)
	case "session":
		conn, err = dbus.ConnectSessionBus(opt)
	default:
		conn, err = dbus.Connect(b.address, opt)
	}
	if err != nil {
		return nil, fmt.Errorf("connect to D-Bus %s: %w", b.addressName(), err)
	}
	if err := b.export(conn); err != nil {
		conn.Close()
		return nil, fmt.Errorf("export %s on D-Bus: %w", BusObjectPath, err)
	}
	reply, err := conn.RequestName(b.name, dbus.NameFlagDoNotQueue)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("request D-Bus name %s: %w", b.name, err)
	}
	if reply != dbus.RequestNameReplyPrimaryOwner && reply != dbus.RequestNameReplyAlreadyOwner {
		conn.Close()
		return nil, fmt.Errorf("request D-Bus name %s: %w", b.name, errBusNameTaken)
	}
	return conn, nil
}

func (b *Bus) addressName() string {
	switch b.address {
	case "":
		return "system bus"
	case "session":
		return "session bus"
	}
	return b.address
}

// serve sends queued signals and property changes on conn until ctx is
// done (nil) or the connection breaks (an error).
func (b *Bus) serve(ctx context.Context, conn *dbus.Conn, published map[string]dbus.Variant) error {
	var (
		droppedTimer <-chan time.Time
		droppedAt    time.Time
	)
	publish := func(names ...string) error {
		now, _ := b.properties(ctx)
		changed := map[string]dbus.Variant{}
		for _, n := range names {
			v, ok := now[n]
			if !ok {
				continue
			}
			if old, seen := published[n]; !seen || old.String() != v.String() {
				changed[n] = v
				published[n] = v
			}
		}
		if len(changed) == 0 {
			return nil
		}
		if err := conn.Emit(BusObjectPath, "org.freedesktop.DBus.Properties.PropertiesChanged",
			BusInterface, changed, []string{}); err != nil {
			return fmt.Errorf("send PropertiesChanged: %w", err)
		}
		return nil
	}
	publishDropped := func() error {
		droppedTimer = nil
		droppedAt = time.Now()
		return publish("DroppedSignals")
	}
	for {
		select {
		case <-ctx.Done():
			b.drain(conn)
			return nil
		case <-conn.Context().Done():
			return fmt.Errorf("D-Bus connection closed")
		case s := <-b.queue:
			if err := b.send(conn, s); err != nil {
				return err
			}
		case <-b.statusChanged:
			// Signals emitted before the update go first.
			for n := len(b.queue); n > 0; n-- {
				if err := b.send(conn, <-b.queue); err != nil {
					return err
				}
			}
			if err := publish("State", "Generation", "Workers", "ReadyWorkers"); err != nil {
				return err
			}
		case <-b.droppedMore:
			if droppedTimer != nil {
				continue
			}
			if wait := b.droppedEvery - time.Since(droppedAt); wait > 0 {
				droppedTimer = time.After(wait)
				continue
			}
			if err := publishDropped(); err != nil {
				return err
			}
		case <-droppedTimer:
			if err := publishDropped(); err != nil {
				return err
			}
		}
	}
}

// drainTimeout bounds how long a stopping Bus keeps sending what is queued.
const drainTimeout = time.Second

// drain sends the signals still queued when Run is cancelled — on_exit and
// the last exits among them — for at most drainTimeout.
func (b *Bus) drain(conn *dbus.Conn) {
	deadline := time.Now().Add(drainTimeout)
	for time.Now().Before(deadline) {
		select {
		case s := <-b.queue:
			if b.send(conn, s) != nil {
				return
			}
		default:
			return
		}
	}
}

// send emits one queued signal; a signal that cannot be sent is dropped.
func (b *Bus) send(conn *dbus.Conn, s busSignal) error {
	if err := conn.Emit(BusObjectPath, BusInterface+"."+s.member, s.body...); err != nil {
		b.drop()
		return fmt.Errorf("send %s signal: %w", s.member, err)
	}
	return nil
}

// currentStatus returns the latest UpdateStatus, or asks the controller
// when there was none yet.
func (b *Bus) currentStatus(ctx context.Context) (Status, error) {
	b.mu.Lock()
	s, ok := b.status, b.hasStatus
	b.mu.Unlock()
	if ok || b.controller == nil {
		return s, nil
	}
	s, err := b.controller.Status(ctx)
	if err != nil {
		return Status{}, fmt.Errorf("get status: %w", err)
	}
	return s, nil
}

// properties returns every property's current value; on a failure to get
// the status it returns the error and the properties it has.
func (b *Bus) properties(ctx context.Context) (map[string]dbus.Variant, error) {
	props := map[string]dbus.Variant{
		"Instance":       dbus.MakeVariant(b.instance),
		"DroppedSignals": dbus.MakeVariant(b.Dropped()),
	}
	s, err := b.currentStatus(ctx)
	if err != nil {
		return props, err
	}
	props["State"] = dbus.MakeVariant(s.State)
	props["Generation"] = dbus.MakeVariant(s.Generation)
	props["Workers"] = dbus.MakeVariant(busUint32(s.Workers))
	props["ReadyWorkers"] = dbus.MakeVariant(busUint32(s.ReadyWorkers))
	return props, nil
}

// busUint32 converts a count or pid to D-Bus's u; negatives become 0.
func busUint32(n int) uint32 {
	if n < 0 {
		return 0
	}
	return uint32(n)
}
