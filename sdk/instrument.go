package sdk

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"time"
)

// Hooks are Gunicorn's pre_request and post_request hooks, run inside the
// worker around every request. They are called on the request's goroutine,
// so they must be safe for concurrent use and should be quick: their time
// counts towards the request's latency. forkd sees requests only as
// aggregated counts (FieldRequests, FieldRequestStats), never one bus
// message per request.
type Hooks struct {
	// PreRequest, if set, is called before the handler with the request
	// the handler will get; it may change it (add a header, a context
	// value).
	PreRequest func(r *http.Request)
	// PostRequest, if set, is called once the handler returned (or
	// panicked), with the response status (200 when the handler wrote
	// none, 500 when it panicked before writing one, 101 when it hijacked
	// the connection) and the time from the request's dispatch to the
	// handler's return, PreRequest included.
	PostRequest func(r *http.Request, status int, d time.Duration)
}

// instrument wraps h so that every request runs the hooks and is counted
// into rec.
func instrument(h http.Handler, hooks Hooks, rec *recorder) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec.begin()
		sw := &statusWriter{ResponseWriter: w}
		returned := false
		defer func() {
			d := time.Since(start)
			rec.observe(d)
			if hooks.PostRequest != nil {
				status := sw.status
				if status == 0 {
					status = http.StatusOK
					if !returned {
						status = http.StatusInternalServerError
					}
				}
				hooks.PostRequest(r, status, d)
			}
		}()
		if hooks.PreRequest != nil {
			hooks.PreRequest(r)
		}
		h.ServeHTTP(sw, r)
		returned = true
	})
}

// statusWriter records the status a handler responds with. It passes
// Flush, Hijack and ReadFrom through, and Unwrap gives
// http.ResponseController the original writer for everything else.
type statusWriter struct {
	http.ResponseWriter
	status int // 0 until the header is written
}

// WriteHeader records code as the response's status, unless it is a 1xx
// informational response (those precede the real one) other than 101.
func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write records 200 as the status when no header was written yet.
func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

// ReadFrom keeps net/http's sendfile path for io.Copy into the response.
func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(w.ResponseWriter, r)
}

// Flush sends buffered data to the client, if the writer can.
func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack hands the connection over to the handler (WebSockets); the
// request then counts as 101 Switching Protocols unless a status was
// written before.
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil && w.status == 0 {
		w.status = http.StatusSwitchingProtocols
	}
	return conn, rw, err
}

// Unwrap returns the wrapped writer, for http.ResponseController.
func (w *statusWriter) Unwrap() http.ResponseWriter {
	return w.ResponseWriter
}
