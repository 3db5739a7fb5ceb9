package benchworker

import (
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// requestReportEvery is the least time between two FORKD_REQUESTS reports
// of one worker.
const requestReportEvery = 100 * time.Millisecond

// requestCounter counts the requests its handler finished and reports the
// total to NOTIFY_SOCKET as FORKD_REQUESTS=<total> (EnvCountRequests): at
// once when the last report is requestReportEvery old, else once that much
// time has passed — so the master learns every total within 100 ms, with at
// most ten datagrams a second.
type requestCounter struct {
	next  http.Handler
	conn  *net.UnixConn // nil: no NOTIFY_SOCKET, nothing is reported
	total atomic.Uint64

	mu      sync.Mutex
	last    time.Time // when the last report was sent
	pending bool      // a report is scheduled
}

// newRequestCounter wraps next.
func newRequestCounter(next http.Handler) *requestCounter {
	return &requestCounter{next: next, conn: dialNotify()}
}

// ServeHTTP serves the request, then counts it.
func (c *requestCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.next.ServeHTTP(w, r)
	c.total.Add(1)
	if c.conn == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending {
		return
	}
	if wait := requestReportEvery - time.Since(c.last); wait > 0 {
		c.pending = true
		time.AfterFunc(wait, func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.pending = false
			c.report()
		})
		return
	}
	c.report()
}

// report sends the total; c.mu is held.
func (c *requestCounter) report() {
	c.last = time.Now()
	fmt.Fprintf(c.conn, "FORKD_REQUESTS=%d", c.total.Load())
}
