package sdk

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestInstrument checks the status PostRequest sees for the ways a handler
// can answer, over a real loopback connection.
func TestInstrument(t *testing.T) {
	type result struct {
		status int
		d      time.Duration
	}
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		want    int
	}{
		{"nothing written", func(w http.ResponseWriter, r *http.Request) {}, 200},
		{"body only", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "x") }, 200},
		{"explicit", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }, 503},
		{"second WriteHeader ignored", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(201)
			w.WriteHeader(500)
		}, 201},
		{"early hints first", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.WriteHeader(http.StatusAccepted)
		}, 202},
		{"flushed", func(w http.ResponseWriter, r *http.Request) {
			w.(http.Flusher).Flush()
		}, 200},
		{"ReadFrom", func(w http.ResponseWriter, r *http.Request) {
			io.Copy(w, strings.NewReader("copied"))
		}, 200},
		{"hijacked", func(w http.ResponseWriter, r *http.Request) {
			conn, rw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				panic(err)
			}
			defer conn.Close()
			rw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			rw.Flush()
		}, 101},
	} {
		t.Run(tc.name, func(t *testing.T) {
			results := make(chan result, 1)
			rec := newRecorder(DefaultBounds())
			hooks := Hooks{PostRequest: func(r *http.Request, status int, d time.Duration) {
				results <- result{status, d}
			}}
			srv := httptest.NewServer(instrument(tc.handler, hooks, rec))
			defer srv.Close()
			resp, err := http.Get(srv.URL)
			if err != nil {
				t.Fatalf("GET: %v", err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			select {
			case got := <-results:
				if got.status != tc.want {
					t.Errorf("PostRequest status %d, want %d", got.status, tc.want)
				}
			case <-time.After(deadline):
				t.Fatalf("PostRequest not called within %v", deadline)
			}
			if msg := rec.take(); !strings.HasPrefix(msg, "FORKD_REQUESTS=1\n") {
				t.Errorf("recorder reports %q, want one request", msg)
			}
		})
	}
}

// TestInstrument_Flush checks that a flush through the wrapper reaches the
// client before the handler returns.
func TestInstrument_Flush(t *testing.T) {
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first\n")
		http.NewResponseController(w).Flush()
		<-release
		io.WriteString(w, "second\n")
	})
	srv := httptest.NewServer(instrument(h, Hooks{}, newRecorder(DefaultBounds())))
	defer srv.Close()
	defer close(release)
	conn, err := net.DialTimeout("tcp", srv.Listener.Addr().String(), deadline)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(deadline))
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "first\n" {
		t.Errorf("first flushed line %q, %v; want it before the handler returns", line, err)
	}
}
