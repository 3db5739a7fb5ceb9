package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
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

// dialNotify connects to NOTIFY_SOCKET ("@name" is an abstract socket);
// nil when it is unset or cannot be reached.
func dialNotify() *net.UnixConn {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench worker: notify socket %s: %v\n", path, err)
		return nil
	}
	return c
}

// floodTick is how often the flood sends what is due; floodReportEvery how
// often it reports its count.
const (
	floodTick        = 10 * time.Millisecond
	floodReportEvery = 250 * time.Millisecond
)

// flood sends rate datagrams a second to NOTIFY_SOCKET, alternately
// WATCHDOG=1 and STATUS=flood N, while toggled on (each value on toggle
// flips it; it starts off), and reports its running count to the probe
// (KindSent) every floodReportEvery, and once more when toggled off
// (KindFlooded). A master that reads slowly
// makes the sends block (a unixgram socket's queue is bounded), so the
// achieved rate is also what the master kept up with.
func flood(rate int, toggle <-chan os.Signal, probe *probeConn) {
	conn := dialNotify()
	if conn == nil {
		return
	}
	defer conn.Close()
	tick := time.NewTicker(floodTick)
	tick.Stop()
	report := time.NewTicker(floodReportEvery)
	report.Stop()
	var (
		on          bool
		onAt        time.Time
		sent, since uint64 // in all; since onAt
	)
	maxBurst := uint64(max(rate/10, 1)) // never catch up more than 100 ms at once
	for {
		select {
		case <-toggle:
			on = !on
			if on {
				onAt, since = time.Now(), 0
				tick.Reset(floodTick)
				report.Reset(floodReportEvery)
				probe.SendCount(KindSent, sent, time.Now())
			} else {
				tick.Stop()
				report.Stop()
				probe.SendCount(KindFlooded, sent, time.Now())
			}
		case <-tick.C:
			due := uint64(float64(rate) * time.Since(onAt).Seconds())
			for n := uint64(0); since < due && n < maxBurst; n++ {
				var err error
				if sent%2 == 0 {
					_, err = conn.Write([]byte("WATCHDOG=1"))
				} else {
					_, err = fmt.Fprintf(conn, "STATUS=flood %d", sent)
				}
				if err != nil {
					fmt.Fprintf(os.Stderr, "bench worker: flood: %v\n", err)
					return
				}
				sent++
				since++
			}
			if since < due {
				since = due // fell behind: do not burst to catch up
			}
		case <-report.C:
			probe.SendCount(KindSent, sent, time.Now())
		}
	}
}

// Sent is a flood progress report: by then, PID had sent Count datagrams.
type Sent struct {
	PID   int
	Count uint64
	At    time.Time
	// Final is set on the report sent when the flood was toggled off.
	Final bool
}

// ParseSent returns the flood reports ("sent PID COUNT UNIX-NANOS", or
// "flooded …" when toggled off) among msgs, in order.
func ParseSent(msgs []Message) []Sent {
	var out []Sent
	for _, m := range msgs {
		f := strings.Fields(m.Data)
		if len(f) != 4 || (f[0] != KindSent && f[0] != KindFlooded) {
			continue
		}
		pid, err1 := strconv.Atoi(f[1])
		n, err2 := strconv.ParseUint(f[2], 10, 64)
		ns, err3 := strconv.ParseInt(f[3], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil || pid <= 0 {
			continue
		}
		out = append(out, Sent{PID: pid, Count: n, At: time.Unix(0, ns), Final: f[0] == KindFlooded})
	}
	return out
}

// FloodRate returns the datagrams per second the flood reports in sents
// show between from and to: for each pid, the count difference between its
// first and last report in the span over their time difference, summed.
func FloodRate(sents []Sent, from, to time.Time) float64 {
	type span struct{ first, last Sent }
	by := map[int]*span{}
	for _, s := range sents {
		if s.At.Before(from) || s.At.After(to) {
			continue
		}
		if sp, ok := by[s.PID]; ok {
			sp.last = s
		} else {
			by[s.PID] = &span{first: s, last: s}
		}
	}
	var rate float64
	for _, sp := range by {
		if d := sp.last.At.Sub(sp.first.At).Seconds(); d > 0 {
			rate += float64(sp.last.Count-sp.first.Count) / d
		}
	}
	return rate
}

// connTracker counts the connections an http.Server holds that are new
// (accepted, first request not read yet) or active, as its ConnState hook.
type connTracker struct {
	mu    sync.Mutex
	busy  map[net.Conn]bool
	quiet chan struct{} // closed while no connection is busy
}

func newConnTracker() *connTracker {
	q := make(chan struct{})
	close(q)
	return &connTracker{busy: map[net.Conn]bool{}, quiet: q}
}

// track is the http.Server's ConnState hook.
func (t *connTracker) track(c net.Conn, st http.ConnState) {
	t.mu.Lock()
	defer t.mu.Unlock()
	was := len(t.busy)
	if st == http.StateNew || st == http.StateActive {
		t.busy[c] = true
	} else {
		delete(t.busy, c)
	}
	switch now := len(t.busy); {
	case was == 0 && now > 0:
		t.quiet = make(chan struct{})
	case was > 0 && now == 0:
		close(t.quiet)
	}
}

// Quiet returns a channel that is closed once no connection is busy.
func (t *connTracker) Quiet() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.quiet
}

// drain stops srv without dropping a request: it closes the listeners,
// waits for the n Serve loops to return on served (so that every accepted
// connection is tracked), then for every new or active connection to be
// answered, and only then calls Shutdown, which closes the idle ones.
//
// Shutdown alone is not enough for a worker that shares its listening
// socket: a connection accepted just before it whose request is read just
// after is closed unanswered (net/http returns from the connection when it
// finds the server shutting down after reading a request), and the client
// sees its request fail although other workers were there to serve it.
func drain(ctx context.Context, srv *http.Server, listeners []net.Listener, served <-chan error, conns *connTracker) {
	for _, l := range listeners {
		l.Close()
	}
	for range listeners {
		select {
		case <-served:
		case <-ctx.Done():
		}
	}
	select {
	case <-conns.Quiet():
	case <-ctx.Done():
	}
	srv.Shutdown(ctx)
}
