package benchworker

import (
	"context"
	"net"
	"net/http"
	"sync"
)

// connTracker counts the connections an http.Server holds that are new
// (accepted, first request not read yet) or active, as its ConnState hook.
type connTracker struct {
	mu    sync.Mutex
	busy  map[net.Conn]bool
	quiet chan struct{} // closed while no connection is busy
}

// newConnTracker returns a tracker with no connection busy.
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
