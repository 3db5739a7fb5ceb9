package benchworker

import (
	"fmt"
	"net"
	"os"
	"time"
)

// The kinds of probe events.
const (
	// KindStart is sent first thing in the worker's main (in Gunicorn's
	// post_fork hook).
	KindStart = "start"
	// KindReady is sent right before the worker's READY=1 (in Gunicorn's
	// post_worker_init hook).
	KindReady = "ready"
	// KindHang is sent when a worker starts serving GET /hang, after which
	// it never answers, heartbeats nor accepts again.
	KindHang = "hang"
	// KindStop is sent when the worker gets SIGTERM, before it stops
	// accepting (in-flight requests still finish).
	KindStop = "stop"
	// KindSent is the flood's progress report: "sent PID COUNT UNIX-NANOS";
	// KindFlooded the same, sent when the flood is toggled off.
	KindSent    = "sent"
	KindFlooded = "flooded"
)

// probeConn sends probe events; one without a connection sends nothing.
type probeConn struct{ c *net.UnixConn }

// dialProbe connects to the probe socket at path; "" or a failure give a
// probeConn that sends nothing (the worker must serve regardless).
func dialProbe(path string) *probeConn {
	if path == "" {
		return &probeConn{}
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench worker: probe %s: %v\n", path, err)
		return &probeConn{}
	}
	return &probeConn{c: c}
}

// Send reports an event of kind at t as "KIND PID UNIX-NANOS". It is safe
// for concurrent use (each event is one datagram).
func (p *probeConn) Send(kind string, t time.Time) {
	if p.c == nil {
		return
	}
	fmt.Fprintf(p.c, "%s %d %d", kind, os.Getpid(), t.UnixNano())
}

// SendCount reports a count at t as "KIND PID COUNT UNIX-NANOS".
func (p *probeConn) SendCount(kind string, n uint64, t time.Time) {
	if p.c == nil {
		return
	}
	fmt.Fprintf(p.c, "%s %d %d %d", kind, os.Getpid(), n, t.UnixNano())
}

// Close closes the connection.
func (p *probeConn) Close() {
	if p.c != nil {
		p.c.Close()
	}
}
