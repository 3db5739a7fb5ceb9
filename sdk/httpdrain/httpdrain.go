// Package httpdrain stops a net/http server that shares its listening
// sockets with other processes (forkd's workers, or any socket-activated
// service) without dropping a request: the listeners close first, so the
// kernel hands new connections to the other processes, and the server
// shuts down only once every connection it accepted has been answered.
//
//	conns := httpdrain.NewTracker()
//	srv := &http.Server{Handler: h, ConnState: conns.ConnState}
//	// serve on listeners; served is closed once every Serve loop returned
//	// on SIGTERM:
//	err := <-httpdrain.Start(ctx, 30*time.Second, srv, listeners, served, conns)
//
// The worker SDK (package sdk) drains with it, and so does the demo worker,
// which otherwise speaks only plain go-systemd.
package httpdrain

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Start stops srv, which serves on listeners, without dropping a
// request. srv's handler must be wrapped by conns.Wrap and its ConnState
// be conns.ConnState. Before it returns it closes the listeners, so that
// the kernel hands new connections to the other workers sharing the
// socket, and from then on every answer says "Connection: close", after
// which net/http closes the connection. In the background it waits for
// served (closed once srv's Serve loops have all returned) and for every
// connection this worker accepted to be answered; then, until shortly
// before timeout, for the idle keep-alive connections to send their next
// request (answered, then closed) or to close; and only then calls
// srv.Shutdown, which closes what is left: for at most timeout in all, or
// until ctx is done. The returned channel gets Shutdown's error.
//
// Shutdown alone would not do: net/http hangs up unanswered on a request
// it reads once Shutdown has begun, a connection accepted just before may
// send its request just after, and closing an idle keep-alive connection
// races with the request its client may be sending on it.
func Start(ctx context.Context, timeout time.Duration, srv *http.Server, listeners []net.Listener, served <-chan struct{}, conns *Tracker) <-chan error {
	conns.draining.Store(true)
	for _, ln := range listeners {
		ln.Close()
	}
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		idle, cancelIdle := context.WithTimeout(ctx, timeout-idleMargin(timeout))
		defer cancelIdle()
		select {
		case <-served:
			conns.wait(ctx, false)
			conns.wait(idle, true)
		case <-ctx.Done():
		}
		drained <- srv.Shutdown(ctx)
	}()
	return drained
}

// idleMargin is how long before the end of a drain of timeout idle
// keep-alive connections are closed: a tenth of it, at most a second.
func idleMargin(timeout time.Duration) time.Duration {
	return min(timeout/10, time.Second)
}

// Wrap returns h answering "Connection: close" once a drain began.
func (t *Tracker) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if t.draining.Load() {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
}

// NewConnPatience is how long a drain waits for the first request of a
// connection that sent nothing yet: net/http's Shutdown too closes a
// connection that has sent nothing for 5 seconds, such as a browser's
// speculative one.
const NewConnPatience = 5 * time.Second

// Tracker follows an http.Server's connections through its ConnState
// hook and tells when none of them owes its client an answer: none is new
// (accepted, its first request not read yet) or active (a request being
// read or served).
type Tracker struct {
	mu sync.Mutex
	// owing maps a connection that owes an answer to when it was
	// accepted if it is new, to the zero time if it is active.
	owing map[net.Conn]time.Time
	// idle are the keep-alive connections between two requests.
	idle map[net.Conn]bool
	// draining says a drain began: answers say Connection: close.
	draining atomic.Bool
	// paid gets a value (if it has none) when a connection stops owing.
	paid chan struct{}
}

// NewTracker returns a Tracker that follows no connection yet.
func NewTracker() *Tracker {
	return &Tracker{owing: make(map[net.Conn]time.Time), idle: make(map[net.Conn]bool), paid: make(chan struct{}, 1)}
}

// ConnState is the http.Server's ConnState hook: set it as
// http.Server.ConnState.
func (t *Tracker) ConnState(c net.Conn, state http.ConnState) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch state {
	case http.StateNew:
		t.owing[c] = time.Now()
	case http.StateActive:
		t.owing[c] = time.Time{}
		delete(t.idle, c)
	case http.StateIdle: // answered, and kept open for the next request
		delete(t.owing, c)
		t.idle[c] = true
		t.changed()
	default: // hijacked or closed
		delete(t.owing, c)
		delete(t.idle, c)
		t.changed()
	}
}

// changed wakes a waiter, if it has no wake-up pending already.
func (t *Tracker) changed() {
	select {
	case t.paid <- struct{}{}:
	default:
	}
}

// owed returns how many connections owe an answer at now, leaving out new
// ones older than NewConnPatience, and when the youngest new one among
// them will be that old (zero if there is none); with idle, the idle
// keep-alive connections count too.
func (t *Tracker) owed(now time.Time, idle bool) (n int, next time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if idle {
		n = len(t.idle)
	}
	for _, accepted := range t.owing {
		if accepted.IsZero() {
			n++
			continue
		}
		left := accepted.Add(NewConnPatience).Sub(now)
		if left <= 0 {
			continue
		}
		n++
		if next == 0 || left < next {
			next = left
		}
	}
	return n, next
}

// wait returns once no connection owes an answer (new ones older than
// NewConnPatience left out) and, with idle, none is idle either, or ctx is
// done.
func (t *Tracker) wait(ctx context.Context, idle bool) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		n, next := t.owed(time.Now(), idle)
		if n == 0 {
			return
		}
		var expired <-chan time.Time
		if next > 0 {
			if timer == nil {
				timer = time.NewTimer(next)
			} else {
				timer.Reset(next)
			}
			expired = timer.C
		}
		select {
		case <-t.paid:
		case <-expired:
		case <-ctx.Done():
			return
		}
	}
}
