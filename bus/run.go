package bus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/godbus/dbus/v5"
)

// What a connection attempt or a write can run into besides plain I/O
// errors.
var (
	// errNameTaken reports that another process owns the instance's name.
	errNameTaken = errors.New("bus: D-Bus name already owned by another process")
	// errNameStale reports that the name was not granted but is owned by
	// no other process: by the Service's own previous connection, given up
	// after a write that did not complete but not yet seen closed by the
	// bus, or by nobody any more.
	errNameStale = errors.New("bus: D-Bus name still owned by the previous connection")
	// errUnresponsive reports a bus that did not answer or take a write
	// in time.
	errUnresponsive = errors.New("bus: D-Bus not responding")
)

// The bounds on waiting for the bus. godbus has no timeouts of its own: a
// bus that accepts connections but does not answer (a stopped or wedged
// dbus-daemon) holds its authentication and calls, and its writes once the
// socket buffers are full, forever.
const (
	// defaultConnectTimeout bounds connecting: dialing, authentication, Hello,
	// exporting the object and owning the name. A bus that takes longer
	// counts as missing.
	defaultConnectTimeout = 5 * time.Second
	// defaultSendTimeout bounds one write to a connected bus. A bus that does
	// not take a message within it counts as lost.
	defaultSendTimeout = 5 * time.Second
	// drainTimeout bounds how long a stopping Service keeps sending what is
	// queued, and so how long Run takes to return once cancelled.
	drainTimeout = time.Second
)

// Run serves the peer-to-peer socket (Options.Socket) and the bus until
// ctx is done, and returns nil: see runBus and peers.run.
func (b *Service) Run(ctx context.Context) error {
	var stopped chan struct{}
	if b.peers != nil {
		stopped = make(chan struct{})
		go func() {
			b.peers.run(ctx)
			close(stopped)
		}()
	}
	if !b.noBus {
		_ = b.runBus(ctx)
	}
	<-ctx.Done()
	if stopped != nil {
		<-stopped
	}
	return nil
}

// runBus connects to the bus, owns the instance's name, exports the object
// and sends queued signals until ctx is done. When the bus cannot be
// reached, does not answer within a few seconds, goes away or stops taking
// signals, or another process owns the name, it logs one warning and keeps
// retrying with backoff, re-acquiring the name each time. Once ctx is done
// it sends what is queued for at most drainTimeout, drops and logs the rest,
// and returns nil.
func (b *Service) runBus(ctx context.Context) error {
	backoff := b.backoffMin
	warned := false
	for {
		// The snapshot that property changes are compared with is taken
		// before the name is owned: whatever changes once a client can see
		// the name gets announced.
		published := b.announced(b.status.Load())
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
			b.connected.Store(true)
			err = b.serve(ctx, conn, published)
			b.connected.Store(false)
			if ctx.Err() != nil {
				b.dropAtExit() // serve drained, unless it lost the bus first
				return nil
			}
			b.log.Warn("D-Bus connection lost: hook signals disabled until it is back", "err", err)
			warned = true
		} else if ctx.Err() != nil {
			b.dropAtExit()
			return nil
		} else if errors.Is(err, errNameStale) {
			b.log.Debug("D-Bus name still owned by the lost connection", "name", b.name)
		} else if !warned && errors.Is(err, errNameTaken) {
			b.log.Warn("D-Bus name taken by another process: hook signals disabled, serving anyway",
				"name", b.name, "err", err)
			warned = true
		} else if !warned {
			b.log.Warn("no D-Bus: hook signals disabled, serving anyway", "err", err,
				"peer_to_peer_socket", b.socketServed())
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

// socketServed returns the path of the peer-to-peer socket the Service
// serves, "none" when it serves none.
func (b *Service) socketServed() string {
	if b.peers == nil || b.peers.listenErr != nil {
		return "none"
	}
	return b.peers.path
}

// noteName records what a connection attempt learnt about the name. Found
// owned by another process, it stays taken for the Service until an attempt
// owns it: what is queued was emitted while the name was not the Service's,
// and is dropped, as is what is emitted meanwhile — never sent minutes
// later, once the other process has gone. Other failures (the bus away)
// leave it as it was: the signals of a Service that owned its name wait for
// the bus to come back.
func (b *Service) noteName(err error) {
	switch {
	case err == nil:
		b.nameTaken.Store(false)
	case errors.Is(err, errNameTaken):
		b.nameTaken.Store(true)
		b.dropQueued()
	}
}

// dropAtExit drops what is still queued when Run stops without a bus
// connection, and says how much.
func (b *Service) dropAtExit() {
	if n := b.dropQueued(); n > 0 {
		b.log.Info("no D-Bus at exit: hook signals not sent", "signals", n)
	}
}

// connect connects to the bus, exports the object and owns the name within
// connectTimeout; cancelling ctx abandons the attempt at once.
func (b *Service) connect(ctx context.Context) (*dbus.Conn, error) {
	// The connection's context is not ctx: godbus closes a connection when
	// its context ends, and a stopping Service still drains its queue (on_exit)
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
			b.addressName(), b.connectTimeout, errUnresponsive)
	}
	return conn, err
}

// dial connects to the bus with ctx as the connection's context, exports
// the object and owns the name. When ctx ends it returns at once.
func (b *Service) dial(ctx context.Context) (*dbus.Conn, error) {
	// godbus dials a TCP bus without a timeout, before the connection (and
	// its context) exists: such an attempt is left to fail or finish in the
	// background, and what it connects is closed.
	type dialed struct {
		conn *dbus.Conn
		err  error
	}
	c := make(chan dialed, 1)
	go func() {
		conn, err := Connect(ctx, b.address)
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
	if err := b.export(conn, true); err != nil {
		conn.Close()
		return nil, fmt.Errorf("export %s on D-Bus: %w", ObjectPath, err)
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

// takenBy tells why the name was not granted: errNameTaken when another
// process owns it, errNameStale when a connection the Service gave up still
// does — its previous one, dropped after a write that did not complete, or
// an attempt that timed out, which a bus slow to read may still have
// granted the name; the bus closes them once it reads again — or nobody
// does any more.
func (b *Service) takenBy(conn *dbus.Conn) error {
	var owner string
	err := conn.BusObject().Call("org.freedesktop.DBus.GetNameOwner", 0, b.name).Store(&owner)
	var de dbus.Error
	switch {
	case errors.As(err, &de) && de.Name == "org.freedesktop.DBus.Error.NameHasNoOwner":
		return errNameStale // released meanwhile
	case err != nil || owner != b.lastConn && !b.abandoned:
		return errNameTaken
	}
	// A bus never reuses a unique name, but a restarted bus counts again
	// from the start.
	var pid uint32
	err = conn.BusObject().Call("org.freedesktop.DBus.GetConnectionUnixProcessID", 0, owner).Store(&pid)
	switch {
	case errors.As(err, &de) && de.Name == "org.freedesktop.DBus.Error.NameHasNoOwner":
		return errNameStale // the owner went away meanwhile
	case err != nil || int(pid) != os.Getpid():
		return errNameTaken
	}
	return errNameStale
}

func (b *Service) addressName() string {
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
func (b *Service) serve(ctx context.Context, conn *dbus.Conn, published map[string]dbus.Variant) error {
	// Writes stop drainTimeout after ctx is done: a stopping Service drains
	// its queue until then, and gives up a write still blocked then.
	writeCtx, stopWriting := context.WithCancel(context.WithoutCancel(ctx))
	unwatch := context.AfterFunc(ctx, func() { time.AfterFunc(drainTimeout, stopWriting) })
	c := newBoundedConn(writeCtx, conn, b.sendTimeout)
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
		now := b.announced(b.status.Load())
		changed := changedProperties(published, now, names...)
		if len(changed) == 0 {
			return nil
		}
		if err := c.emit("org.freedesktop.DBus.Properties.PropertiesChanged",
			Interface, changed, []string{}); err != nil {
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
		case done := <-b.flushes:
			for n := len(b.queue); n > 0 && err == nil; n-- {
				err, lost = b.send(c, <-b.queue), 1
			}
			close(done)
		case <-b.statusChanged:
			// Signals emitted before the update go first.
			for n := len(b.queue); n > 0 && err == nil; n-- {
				err, lost = b.send(c, <-b.queue), 1
			}
			if err == nil {
				err, lost = publish("State", "Generation", "Workers", "ReadyWorkers", "Cluster"), 0
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
func (b *Service) drain(c *boundedConn) {
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

// unsentAtExit drops what is still queued when a stopping Service cannot send
// it, err saying why, and logs how many signals were lost: those and the
// lost that the failure err dropped already.
func (b *Service) unsentAtExit(err error, lost int) {
	if lost += b.dropQueued(); lost > 0 {
		b.log.Warn("D-Bus at exit: hook signals not sent", "signals", lost, "err", err)
	}
}

// send emits one queued signal; a signal that cannot be sent is dropped.
func (b *Service) send(c *boundedConn, s queuedSignal) error {
	if err := c.emit(Interface+"."+s.member, s.body...); err != nil {
		b.drop()
		return fmt.Errorf("send %s signal: %w", s.member, err)
	}
	return nil
}
