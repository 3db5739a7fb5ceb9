package hooks

import (
	"context"
	_ "embed" // the introspection XML
	"errors"
	"fmt"
	"log/slog"
	"os"
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

// What a connection attempt or a write can run into besides plain I/O
// errors.
var (
	// errBusNameTaken reports that another process owns the instance's name.
	errBusNameTaken = errors.New("hooks: D-Bus name already owned by another process")
	// errBusNameStale reports that the name was not granted but is owned by
	// no other process: by the Bus's own previous connection, given up
	// after a write that did not complete but not yet seen closed by the
	// bus, or by nobody any more.
	errBusNameStale = errors.New("hooks: D-Bus name still owned by the previous connection")
	// errBusUnresponsive reports a bus that did not answer or take a write
	// in time.
	errBusUnresponsive = errors.New("hooks: D-Bus not responding")
)

// The bounds on waiting for the bus. godbus has no timeouts of its own: a
// bus that accepts connections but does not answer (a stopped or wedged
// dbus-daemon) holds its authentication and calls, and its writes once the
// socket buffers are full, forever.
const (
	// busConnectTimeout bounds connecting: dialing, authentication, Hello,
	// exporting the object and owning the name. A bus that takes longer
	// counts as missing.
	busConnectTimeout = 5 * time.Second
	// busSendTimeout bounds one write to a connected bus. A bus that does
	// not take a message within it counts as lost.
	busSendTimeout = 5 * time.Second
	// drainTimeout bounds how long a stopping Bus keeps sending what is
	// queued, and so how long Run takes to return once cancelled.
	drainTimeout = time.Second
)

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
// DroppedSignals property). While the bus is away — missing, not answering
// within a few seconds, or gone after the Bus owned its name — Run keeps
// reconnecting with backoff; signals emitted meanwhile wait in the queue and
// are sent once it is back, and when the queue is full they are dropped.
// While another process owns the name, signals are dropped as they are
// emitted: once the Bus takes the name over, only later events are sent.
// The arbiter goes on either way, and Run returns within about a second of
// being cancelled, dropping what it could not send by then.
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
	// nameTaken is set from an attempt that found the name owned by another
	// process until one owns it: Emit drops signals meanwhile.
	nameTaken atomic.Bool
	// lastConn is the unique name of the Bus's latest connection, and
	// abandoned says an attempt since gave up waiting for the bus, which
	// may still grant it the name before it reads the close (Run's
	// goroutine only).
	lastConn  string
	abandoned bool

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
	// busConnectTimeout and busSendTimeout; tests shorten them.
	connectTimeout, sendTimeout time.Duration
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
		instance:       opts.Instance,
		name:           BusName(opts.Instance),
		controller:     opts.Controller,
		log:            logger,
		address:        opts.Address,
		queue:          make(chan busSignal, n),
		statusChanged:  make(chan struct{}, 1),
		droppedMore:    make(chan struct{}, 1),
		backoffMin:     100 * time.Millisecond,
		backoffMax:     10 * time.Second,
		connectTimeout: busConnectTimeout,
		sendTimeout:    busSendTimeout,
		droppedEvery:   time.Second,
	}
	if opts.RequestSignals > 0 {
		b.requestEvery = time.Duration(float64(time.Second) / opts.RequestSignals)
	}
	return b
}

// Name returns the well-known name the bus owns: BusName(instance).
func (b *Bus) Name() string { return b.name }

// Dropped returns how many signals were dropped: emitted while the queue
// was full (the bus slow, or away for long) or while another process owned
// the name, lost with a connection that broke or stopped taking them while
// they were sent, or still queued when Run returned.
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

// enqueue queues s for Run, or drops it when the queue is full or another
// process owns the name.
func (b *Bus) enqueue(s busSignal) {
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
func (b *Bus) dropQueued() int {
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
// reached, does not answer within a few seconds, goes away or stops taking
// signals, or another process owns the name, it logs one warning and keeps
// retrying with backoff, re-acquiring the name each time. Once ctx is done
// it sends what is queued for at most drainTimeout, drops and logs the rest,
// and returns nil.
func (b *Bus) Run(ctx context.Context) error {
	backoff := b.backoffMin
	warned := false
	for {
		// The snapshot that property changes are compared with is taken
		// before the name is owned: whatever changes once a client can see
		// the name gets announced.
		published, _ := b.properties(ctx)
		conn, err := b.connect(ctx)
		b.noteName(err)
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
			if ctx.Err() != nil {
				b.dropAtExit() // serve drained, unless it lost the bus first
				return nil
			}
			b.log.Warn("D-Bus connection lost: hook signals disabled until it is back", "err", err)
			warned = true
		} else if ctx.Err() != nil {
			b.dropAtExit()
			return nil
		} else if errors.Is(err, errBusNameStale) {
			b.log.Debug("D-Bus name still owned by the lost connection", "name", b.name)
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
			b.dropAtExit()
			return nil
		case <-t.C:
		}
		backoff = min(backoff*2, b.backoffMax)
	}
}

// noteName records what a connection attempt learnt about the name. Found
// owned by another process, it stays taken for the Bus until an attempt
// owns it: what is queued was emitted while the name was not the Bus's,
// and is dropped, as is what is emitted meanwhile — never sent minutes
// later, once the other process has gone. Other failures (the bus away)
// leave it as it was: the signals of a Bus that owned its name wait for
// the bus to come back.
func (b *Bus) noteName(err error) {
	switch {
	case err == nil:
		b.nameTaken.Store(false)
	case errors.Is(err, errBusNameTaken):
		b.nameTaken.Store(true)
		b.dropQueued()
	}
}

// dropAtExit drops what is still queued when Run stops without a bus
// connection, and says how much.
func (b *Bus) dropAtExit() {
	if n := b.dropQueued(); n > 0 {
		b.log.Info("no D-Bus at exit: hook signals not sent", "signals", n)
	}
}

// connect connects to the bus, exports the object and owns the name within
// connectTimeout; cancelling ctx abandons the attempt at once.
func (b *Bus) connect(ctx context.Context) (*dbus.Conn, error) {
	// The connection's context is not ctx: godbus closes a connection when
	// its context ends, and a stopping Bus still drains its queue (on_exit)
	// before closing. Until connected, ending it is how the timeout and ctx
	// interrupt godbus's authentication and calls, which wait for the bus
	// without a deadline: the socket is closed under them.
	connCtx, abandon := context.WithCancel(context.WithoutCancel(ctx))
	timer := time.AfterFunc(b.connectTimeout, abandon)
	stopWatching := context.AfterFunc(ctx, abandon)
	conn, err := b.dial(connCtx)
	timedOut, cancelled := !timer.Stop(), !stopWatching()
	if timedOut || cancelled || err != nil {
		abandon()
		if conn != nil {
			conn.Close()
		}
	}
	switch {
	case cancelled:
		return nil, fmt.Errorf("connect to D-Bus %s: %w", b.addressName(), ctx.Err())
	case timedOut:
		b.abandoned = true
		return nil, fmt.Errorf("connect to D-Bus %s: no answer within %v: %w",
			b.addressName(), b.connectTimeout, errBusUnresponsive)
	}
	return conn, err
}

// dial connects to the bus with ctx as the connection's context, exports
// the object and owns the name. When ctx ends it returns at once.
func (b *Bus) dial(ctx context.Context) (*dbus.Conn, error) {
	// godbus dials a TCP bus without a timeout, before the connection (and
	// its context) exists: such an attempt is left to fail or finish in the
	// background, and what it connects is closed.
	type dialed struct {
		conn *dbus.Conn
		err  error
	}
	c := make(chan dialed, 1)
	go func() {
		conn, err := ConnectBus(ctx, b.address)
		c <- dialed{conn, err}
	}()
	var d dialed
	select {
	case d = <-c:
	case <-ctx.Done():
		go func() {
			if d := <-c; d.conn != nil {
				d.conn.Close()
			}
		}()
		d.err = ctx.Err()
	}
	if d.err != nil {
		return nil, fmt.Errorf("connect to D-Bus %s: %w", b.addressName(), d.err)
	}
	conn := d.conn
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
		err := b.takenBy(conn)
		conn.Close()
		return nil, fmt.Errorf("request D-Bus name %s: %w", b.name, err)
	}
	b.lastConn, b.abandoned = conn.Names()[0], false
	return conn, nil
}

// ConnectBus dials the bus at address — "" the system bus, "session" the
// session bus, else a D-Bus address, as BusOptions.Address says —
// authenticates and says Hello, with ctx as the connection's context.
func ConnectBus(ctx context.Context, address string) (*dbus.Conn, error) {
	opt := dbus.WithContext(ctx)
	switch address {
	case "":
		return dbus.ConnectSystemBus(opt)
	case "session":
		return dbus.ConnectSessionBus(opt)
	}
	return dbus.Connect(address, opt)
}

// takenBy tells why the name was not granted: errBusNameTaken when another
// process owns it, errBusNameStale when a connection the Bus gave up still
// does — its previous one, dropped after a write that did not complete, or
// an attempt that timed out, which a bus slow to read may still have
// granted the name; the bus closes them once it reads again — or nobody
// does any more.
func (b *Bus) takenBy(conn *dbus.Conn) error {
	var owner string
	err := conn.BusObject().Call("org.freedesktop.DBus.GetNameOwner", 0, b.name).Store(&owner)
	var de dbus.Error
	switch {
	case errors.As(err, &de) && de.Name == "org.freedesktop.DBus.Error.NameHasNoOwner":
		return errBusNameStale // released meanwhile
	case err != nil || owner != b.lastConn && !b.abandoned:
		return errBusNameTaken
	}
	// A bus never reuses a unique name, but a restarted bus counts again
	// from the start.
	var pid uint32
	err = conn.BusObject().Call("org.freedesktop.DBus.GetConnectionUnixProcessID", 0, owner).Store(&pid)
	switch {
	case errors.As(err, &de) && de.Name == "org.freedesktop.DBus.Error.NameHasNoOwner":
		return errBusNameStale // the owner went away meanwhile
	case err != nil || int(pid) != os.Getpid():
		return errBusNameTaken
	}
	return errBusNameStale
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
// done (nil, after draining the queue) or the connection breaks or stops
// taking writes (an error). It closes conn.
func (b *Bus) serve(ctx context.Context, conn *dbus.Conn, published map[string]dbus.Variant) error {
	// Writes stop drainTimeout after ctx is done: a stopping Bus drains
	// its queue until then, and gives up a write still blocked then.
	writeCtx, stopWriting := context.WithCancel(context.WithoutCancel(ctx))
	unwatch := context.AfterFunc(ctx, func() { time.AfterFunc(drainTimeout, stopWriting) })
	c := newBusConn(writeCtx, conn, b.sendTimeout)
	defer func() {
		unwatch()
		c.close()
		stopWriting()
	}()

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
		if err := c.emit("org.freedesktop.DBus.Properties.PropertiesChanged",
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
		var (
			err  error
			lost int // signals dropped by the failure
		)
		select {
		case <-ctx.Done():
			b.drain(c)
			return nil
		case <-conn.Context().Done():
			err = errors.New("D-Bus connection closed")
		case s := <-b.queue:
			err, lost = b.send(c, s), 1
		case <-b.statusChanged:
			// Signals emitted before the update go first.
			for n := len(b.queue); n > 0 && err == nil; n-- {
				err, lost = b.send(c, <-b.queue), 1
			}
			if err == nil {
				err, lost = publish("State", "Generation", "Workers", "ReadyWorkers"), 0
			}
		case <-b.droppedMore:
			if droppedTimer != nil {
				continue
			}
			if wait := b.droppedEvery - time.Since(droppedAt); wait > 0 {
				droppedTimer = time.After(wait)
				continue
			}
			err = publishDropped()
		case <-droppedTimer:
			err = publishDropped()
		}
		if err != nil && ctx.Err() != nil {
			b.unsentAtExit(err, lost) // say, a write given up at the drain's deadline
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// drain sends the signals still queued when Run is cancelled — on_exit and
// the last exits among them — until the connection's writes stop
// (drainTimeout after the cancel) or one fails.
func (b *Bus) drain(c *busConn) {
	var err error
	for err == nil && c.ctx.Err() == nil && len(b.queue) > 0 {
		err = b.send(c, <-b.queue) // Run's goroutine is the only receiver
	}
	switch {
	case err != nil:
		b.unsentAtExit(err, 1)
	case len(b.queue) > 0:
		b.unsentAtExit(fmt.Errorf("not sent within %v", drainTimeout), 0)
	}
}

// unsentAtExit drops what is still queued when a stopping Bus cannot send
// it, err saying why, and logs how many signals were lost: those and the
// lost that the failure err dropped already.
func (b *Bus) unsentAtExit(err error, lost int) {
	if lost += b.dropQueued(); lost > 0 {
		b.log.Warn("D-Bus at exit: hook signals not sent", "signals", lost, "err", err)
	}
}

// send emits one queued signal; a signal that cannot be sent is dropped.
func (b *Bus) send(c *busConn, s busSignal) error {
	if err := c.emit(BusInterface+"."+s.member, s.body...); err != nil {
		b.drop()
		return fmt.Errorf("send %s signal: %w", s.member, err)
	}
	return nil
}

// busConn is a connection to the bus whose writes are bounded. godbus
// writes synchronously and has no write deadline: a write to a bus that
// stopped reading blocks until it reads again, and so does Close, which
// waits for the write. So one goroutine of the busConn's own writes, and
// emit waits for it only so long.
type busConn struct {
	*dbus.Conn
	// ctx ends when writes stop altogether: drainTimeout after Run's
	// context.
	ctx context.Context
	// timeout bounds each write; timer times it.
	timeout time.Duration
	timer   *time.Timer
	// stalled says a write did not complete in time. The connection is
	// given up: the write is left to finish (or fail) in the background,
	// and so is Close.
	stalled bool

	writes  chan busWrite // to the writer; it takes one at a time
	written chan error    // the writer's results
}

// busWrite is a signal for the writer: its name (interface.member) and
// body.
type busWrite struct {
	name string
	body []any
}

// newBusConn starts the writer of conn, whose writes stop when ctx ends.
func newBusConn(ctx context.Context, conn *dbus.Conn, timeout time.Duration) *busConn {
	c := &busConn{Conn: conn, ctx: ctx, timeout: timeout, timer: time.NewTimer(timeout),
		writes: make(chan busWrite, 1), written: make(chan error, 1)}
	c.timer.Stop()
	go c.write()
	return c
}

// write sends what emit hands it until close.
func (c *busConn) write() {
	for w := range c.writes {
		c.written <- c.Emit(BusObjectPath, w.name, w.body...)
	}
}

// emit sends the signal name (interface.member) from BusObjectPath. It
// returns an errBusUnresponsive error, and gives the connection up, when
// the write does not complete within the timeout or before c.ctx ends.
func (c *busConn) emit(name string, body ...any) error {
	if c.stalled {
		return errBusUnresponsive
	}
	c.writes <- busWrite{name, body}
	c.timer.Reset(c.timeout)
	defer c.timer.Stop()
	var why string
	select {
	case err := <-c.written:
		return err
	case <-c.timer.C:
		why = fmt.Sprintf("within %v", c.timeout)
	case <-c.ctx.Done():
		why = "when stopping"
	}
	select {
	case err := <-c.written: // done just now after all
		return err
	default:
	}
	c.stalled = true
	return fmt.Errorf("write not taken %s: %w", why, errBusUnresponsive)
}

// close stops the writer and closes the connection. It waits for that at
// most the write timeout or until c.ctx ends, and not at all after a
// stalled write.
func (c *busConn) close() {
	close(c.writes)
	done := make(chan struct{})
	go func() {
		c.Close()
		close(done)
	}()
	if c.stalled {
		return
	}
	c.timer.Reset(c.timeout)
	defer c.timer.Stop()
	select {
	case <-done:
	case <-c.timer.C:
	case <-c.ctx.Done():
	}
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
