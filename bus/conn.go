package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/godbus/dbus/v5"
)

// Connect dials the bus at address — "" the system bus, "session" the
// session bus, else a D-Bus address, as Options.Address says —
// authenticates and says Hello, with ctx as the connection's context.
func Connect(ctx context.Context, address string) (*dbus.Conn, error) {
	opt := dbus.WithContext(ctx)
	switch address {
	case "":
		return dbus.ConnectSystemBus(opt)
	case "session":
		return dbus.ConnectSessionBus(opt)
	}
	return dbus.Connect(address, opt)
}

// boundedConn is a connection to the bus whose writes are bounded. godbus
// writes synchronously and has no write deadline: a write to a bus that
// stopped reading blocks until it reads again, and so does Close, which
// waits for the write. So one goroutine of the boundedConn's own writes, and
// emit waits for it only so long.
type boundedConn struct {
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

	writes  chan pendingWrite // to the writer; it takes one at a time
	written chan error        // the writer's results
}

// pendingWrite is a signal for the writer: its name (interface.member) and
// body. One with written set is no signal: the writer calls written once
// everything before it is written.
type pendingWrite struct {
	name    string
	body    []any
	written func()
}

// newBoundedConn starts the writer of conn, whose writes stop when ctx ends.
func newBoundedConn(ctx context.Context, conn *dbus.Conn, timeout time.Duration) *boundedConn {
	c := &boundedConn{Conn: conn, ctx: ctx, timeout: timeout, timer: time.NewTimer(timeout),
		writes: make(chan pendingWrite, 1), written: make(chan error, 1)}
	c.timer.Stop()
	go c.write()
	return c
}

// write sends what emit hands it until close.
func (c *boundedConn) write() {
	for w := range c.writes {
		c.written <- c.Emit(ObjectPath, w.name, w.body...)
	}
}

// emit sends the signal name (interface.member) from ObjectPath. It
// returns an errUnresponsive error, and gives the connection up, when
// the write does not complete within the timeout or before c.ctx ends.
func (c *boundedConn) emit(name string, body ...any) error {
	if c.stalled {
		return errUnresponsive
	}
	c.writes <- pendingWrite{name: name, body: body}
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
	return fmt.Errorf("write not taken %s: %w", why, errUnresponsive)
}

// close stops the writer and closes the connection. It waits for that at
// most the write timeout or until c.ctx ends, and not at all after a
// stalled write.
func (c *boundedConn) close() {
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
