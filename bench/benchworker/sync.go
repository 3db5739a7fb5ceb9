package benchworker

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// syncListener makes the worker serve as a synchronous worker does (one
// of Gunicorn's sync workers, say): it accepts a connection only once the
// one before it is closed, so that connections beyond the one in service
// wait in the listening socket's accept queue, where forkd's autoscaling
// sees them (EnvSyncMS).
type syncListener struct {
	net.Listener
	free chan struct{} // holds a token while no connection is open
}

func newSyncListener(l net.Listener) *syncListener {
	s := &syncListener{Listener: l, free: make(chan struct{}, 1)}
	s.free <- struct{}{}
	return s
}

// Accept waits until the connection before is closed, then accepts the
// next one. Close on the listener ends the wait.
func (s *syncListener) Accept() (net.Conn, error) {
	<-s.free
	c, err := s.Listener.Accept()
	if err != nil {
		s.free <- struct{}{}
		return nil, err
	}
	return &syncConn{Conn: c, free: s.free}, nil
}

// syncConn gives its listener's token back when it is closed.
type syncConn struct {
	net.Conn
	free chan struct{}
	once sync.Once
}

func (c *syncConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.free <- struct{}{} })
	return err
}

// slowly answers every request after d of work, and closes its connection
// after the answer: one request per connection, as synchronous workers
// serve.
func slowly(next http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-time.After(d) // the request's own work
		w.Header().Set("Connection", "close")
		next.ServeHTTP(w, r)
	})
}
