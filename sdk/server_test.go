package sdk

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/forkd/forkd/internal/testkit"
	"github.com/forkd/forkd/sdk/reqstats"
)

// deadline bounds every wait.
const deadline = testkit.Deadline

func TestMain(m *testing.M) {
	testkit.Main(m, testkit.Roles{"sdk-worker": testkit.WorkerRole("helper", helperMain)})
}

// helperMain is the worker the tests start. -mode picks the entry point:
// "run" (Server.Run with hooks that print to stdout), "serve" (Serve), or
// "ctx" (Server.Run with a context SIGHUP cancels).
func helperMain(args []string) error {
	fs := flag.NewFlagSet("helper", flag.ContinueOnError)
	mode := fs.String("mode", "run", "run, serve or ctx")
	reportEvery := fs.Duration("report-every", 0, "Server.ReportEvery")
	gracefulTimeout := fs.Duration("graceful-timeout", 0, "Server.GracefulTimeout")
	if err := fs.Parse(args); err != nil {
		return err
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Printf("handle %s pre=%s\n", r.URL.Path, r.Header.Get("X-Pre"))
		io.WriteString(w, "hello\n")
	})
	mux.HandleFunc("GET /sleep", func(w http.ResponseWriter, r *http.Request) {
		fmt.Printf("handle %s pre=%s\n", r.URL.Path, r.Header.Get("X-Pre"))
		d, err := time.ParseDuration(r.URL.Query().Get("d"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		// Headers first, so that the client knows the request is in flight.
		w.WriteHeader(http.StatusOK)
		http.NewResponseController(w).Flush()
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			fmt.Fprintf(w, "slept %v\n", d)
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		fmt.Printf("handle %s pre=%s\n", r.URL.Path, r.Header.Get("X-Pre"))
		code, _ := strconv.Atoi(r.URL.Query().Get("code"))
		w.WriteHeader(code)
	})
	mux.HandleFunc("GET /panic", func(w http.ResponseWriter, r *http.Request) {
		fmt.Printf("handle %s pre=%s\n", r.URL.Path, r.Header.Get("X-Pre"))
		panic(http.ErrAbortHandler) // net/http closes the connection quietly
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Printf("handle %s pre=%s\n", r.URL.Path, r.Header.Get("X-Pre"))
		http.NotFound(w, r)
	})

	srv := &Server{
		Handler:         mux,
		ReportEvery:     *reportEvery,
		GracefulTimeout: *gracefulTimeout,
		Hooks: Hooks{
			PreRequest: func(r *http.Request) {
				r.Header.Set("X-Pre", "yes")
				fmt.Printf("pre %s\n", r.URL.Path)
			},
			PostRequest: func(r *http.Request, status int, d time.Duration) {
				fmt.Printf("post %s %d %d\n", r.URL.Path, status, d)
			},
		},
	}
	switch *mode {
	case "run":
		return srv.Run(context.Background())
	case "serve":
		return Serve(mux)
	case "ctx":
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGHUP)
		defer stop()
		return srv.Run(ctx)
	}
	return fmt.Errorf("unknown -mode %q", *mode)
}

// helper is the test binary re-executed as a worker built on the SDK
// (helperMain).
type helper struct {
	*testkit.Worker
	t testing.TB
}

// startHelper starts the worker with the given extra environment and
// flags, on a listening socket of its own.
func startHelper(t *testing.T, env []string, args ...string) *helper {
	t.Helper()
	return startOn(t, nil, env, args...)
}

// startOn starts the worker on ln (nil: a socket of its own).
func startOn(t testing.TB, ln *net.TCPListener, env []string, args ...string) *helper {
	t.Helper()
	w := testkit.StartWorker(t, testkit.WorkerSpec{Role: "sdk-worker", Args: args, Env: env, Listener: ln})
	return &helper{Worker: w, t: t}
}

// client makes a connection per request: one a test's pool keeps idle would
// hold a stopping worker until near the end of its graceful timeout (see
// testkit.DrainAnswersIdleKeepAlive for keep-alive across a drain).
var client = &http.Client{Timeout: deadline, Transport: &http.Transport{DisableKeepAlives: true}}

// get makes a request and returns the status code and body.
func (h *helper) get(path string) (int, string) {
	h.t.Helper()
	resp, err := client.Get("http://" + h.Addr + path)
	if err != nil {
		h.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatalf("GET %s: read body: %v", path, err)
	}
	return resp.StatusCode, string(body)
}

// inFlight starts a request whose handler flushes its headers first, and
// returns once they arrived: the handler is running.
func (h *helper) inFlight(path string) *http.Response {
	h.t.Helper()
	resp, err := client.Get("http://" + h.Addr + path)
	if err != nil {
		h.t.Fatalf("GET %s: %v", path, err)
	}
	h.t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		h.t.Fatalf("GET %s = %s", path, resp.Status)
	}
	return resp
}

func TestServer_Ready(t *testing.T) {
	h := startHelper(t, []string{"FORKD_WORKER_ID=2"})
	ready, before := h.Notify.Wait("READY=1")
	if len(before) > 0 {
		t.Errorf("datagrams before READY=1: %v", before)
	}
	// READY=1 names the socket it serves, and that socket answers.
	if status, _ := ready.Field("STATUS"); status != "serving on tcp:"+h.Addr {
		t.Errorf("READY message %q, want STATUS=serving on tcp:%s", ready.Text, h.Addr)
	}
	if code, body := h.get("/"); code != http.StatusOK || body != "hello\n" {
		t.Errorf("GET / = %d %q, want 200 %q", code, body, "hello\n")
	}
	h.Signal(syscall.SIGTERM)
	h.Rest()
}

func TestServer_Watchdog(t *testing.T) {
	const watchdog = 400 * time.Millisecond // heartbeats every 200ms
	h := startHelper(t, []string{"WATCHDOG_USEC=" + strconv.Itoa(int(watchdog/time.Microsecond))})
	_, before := h.Notify.Wait("READY=1")
	for _, n := range before {
		if n.Has("WATCHDOG=1") {
			t.Errorf("heartbeat before READY=1")
		}
	}
	var beats []time.Time
	for len(beats) < 7 {
		n, _ := h.Notify.Wait("WATCHDOG=1")
		beats = append(beats, n.At)
	}
	var gaps []time.Duration
	for i := 1; i < len(beats); i++ {
		gaps = append(gaps, beats[i].Sub(beats[i-1]))
	}
	slices.Sort(gaps)
	// The median resists one late delivery on a busy machine; half of
	// WATCHDOG_USEC is 200ms, the whole of it would be 400ms.
	if median := gaps[len(gaps)/2]; median < 150*time.Millisecond || median > 320*time.Millisecond {
		t.Errorf("heartbeat gaps %v: median %v, want about %v", gaps, median, watchdog/2)
	}
	h.Signal(syscall.SIGTERM)
	h.Rest()
}

func TestServer_NoWatchdog(t *testing.T) {
	for name, env := range map[string][]string{
		"unset":     nil,
		"other pid": {"WATCHDOG_USEC=100000", "WATCHDOG_PID=1"}, // would beat every 50ms
	} {
		t.Run(name, func(t *testing.T) {
			h := startHelper(t, env)
			h.Notify.Wait("READY=1")
			// Keep the worker alive for a while: a request that takes 600ms.
			if code, _ := h.get("/sleep?d=600ms"); code != http.StatusOK {
				t.Fatalf("GET /sleep = %d", code)
			}
			h.Signal(syscall.SIGTERM)
			for _, n := range h.Rest() {
				if n.Has("WATCHDOG=1") {
					t.Fatalf("heartbeat sent with %v", env)
				}
			}
		})
	}
}

// statsOf parses a stats datagram's two fields.
func statsOf(t *testing.T, n testkit.Note) (total uint64, period Stats) {
	t.Helper()
	v, ok := n.Field(FieldRequests)
	if !ok {
		t.Fatalf("stats datagram %q has no %s", n.Text, FieldRequests)
	}
	total, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		t.Fatalf("stats datagram %q: %v", n.Text, err)
	}
	v, ok = n.Field(FieldRequestStats)
	if !ok {
		t.Fatalf("stats datagram %q has no %s", n.Text, FieldRequestStats)
	}
	if period, err = ParseRequestStats(v); err != nil {
		t.Fatalf("stats datagram %q: %v", n.Text, err)
	}
	if lines := strings.Count(n.Text, "\n") + 1; lines != 4 {
		t.Errorf("stats datagram %q has %d lines, want 4", n.Text, lines)
	}
	for _, f := range []string{reqstats.FieldSum, reqstats.FieldInflight} {
		if _, ok := n.Field(f); !ok {
			t.Errorf("stats datagram %q has no %s", n.Text, f)
		}
	}
	return total, period
}

func TestServer_Stats(t *testing.T) {
	const reportEvery = 200 * time.Millisecond
	// Heartbeats (every 200ms) give the test a clock it can wait on.
	h := startHelper(t, []string{"WATCHDOG_USEC=400000"}, "-report-every", reportEvery.String())
	h.Notify.Wait("READY=1")

	var stats []testkit.Note
	collect := func(upTo int) {
		t.Helper()
		want := FieldRequests + "=" + strconv.Itoa(upTo)
		for {
			n := h.Notify.Next()
			if _, ok := n.Field(FieldRequests); ok {
				stats = append(stats, n)
			}
			if n.Has(want) {
				return
			}
		}
	}

	// Five requests: three fast, two that take 30ms.
	for _, path := range []string{"/", "/sleep?d=30ms", "/", "/sleep?d=30ms", "/"} {
		if code, _ := h.get(path); code != http.StatusOK {
			t.Fatalf("GET %s = %d", path, code)
		}
	}
	collect(5)
	var buckets []uint64
	var sum uint64
	for _, n := range stats {
		total, period := statsOf(t, n)
		if !slices.Equal(period.Bounds, DefaultBounds()) {
			t.Errorf("bounds %v, want the defaults %v", period.Bounds, DefaultBounds())
		}
		if period.Requests == 0 {
			t.Errorf("report of an empty period: %q", n.Text)
		}
		sum += period.Requests
		if total != sum {
			t.Errorf("%s=%d, but the periods so far add up to %d", FieldRequests, total, sum)
		}
		if buckets == nil {
			buckets = make([]uint64, len(period.Counts))
		}
		for i, c := range period.Counts {
			buckets[i] += c
		}
	}
	if sum != 5 {
		t.Errorf("periods add up to %d requests, want 5", sum)
	}
	// DefaultBounds()[3] is 25ms: the 30ms requests lie above it, and at
	// most the three fast ones below.
	var fast, slow uint64
	for i, c := range buckets {
		if i <= 3 {
			fast += c
		} else {
			slow += c
		}
	}
	if slow < 2 || fast > 3 {
		t.Errorf("buckets %v: %d at most 25ms, %d slower; want ≤ 3 and ≥ 2", buckets, fast, slow)
	}

	// Ten more requests of 50ms each span several report periods.
	for range 10 {
		if code, _ := h.get("/sleep?d=50ms"); code != http.StatusOK {
			t.Fatalf("GET /sleep = %d", code)
		}
	}
	collect(15)
	sum = 0
	for i, n := range stats {
		total, period := statsOf(t, n)
		sum += period.Requests
		if total != sum {
			t.Errorf("%s=%d, but the periods so far add up to %d", FieldRequests, total, sum)
		}
		if i > 0 {
			// Arrival times jitter; a report per tick cannot come twice as often.
			if gap := n.At.Sub(stats[i-1].At); gap < reportEvery/2 {
				t.Errorf("reports %d and %d only %v apart, ReportEvery is %v", i-1, i, gap, reportEvery)
			}
		}
	}
	if len(stats) < 3 {
		t.Errorf("%d reports for 15 requests over more than 500ms, want at least 3", len(stats))
	}

	// No request finishes now: three heartbeats (400ms, two report
	// ticks) pass without a report.
	for range 3 {
		_, before := h.Notify.Wait("WATCHDOG=1")
		for _, n := range before {
			t.Errorf("datagram while idle: %q", n.Text)
		}
	}
	h.Signal(syscall.SIGTERM)
	for _, n := range h.Rest() {
		if _, ok := n.Field(FieldRequests); ok {
			t.Errorf("report with no request finished since the last: %q", n.Text)
		}
	}
}

// hookLines groups the lines the helper printed by request path: "pre
// PATH", "handle PATH pre=…" and "post PATH STATUS NANOSECONDS".
func hookLines(out string) map[string][]string {
	lines := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		lines[fields[1]] = append(lines[fields[1]], line)
	}
	return lines
}

func TestServer_Hooks(t *testing.T) {
	h := startHelper(t, nil)
	h.Notify.Wait("READY=1")
	for _, tc := range []struct {
		path string
		code int
	}{
		{"/", 200},
		{"/status?code=418", 418},
		{"/status?code=204", 204},
		{"/missing", 404},
		{"/sleep?d=30ms", 200},
	} {
		if code, _ := h.get(tc.path); code != tc.code {
			t.Errorf("GET %s = %d, want %d", tc.path, code, tc.code)
		}
	}
	// A fresh connection: net/http's client retries a GET once when a
	// reused one closes before answering.
	fresh := &http.Client{Timeout: deadline, Transport: &http.Transport{DisableKeepAlives: true}}
	if _, err := fresh.Get("http://" + h.Addr + "/panic"); err == nil {
		t.Errorf("GET /panic answered; want the connection closed")
	}
	h.Signal(syscall.SIGTERM)
	h.Rest()

	lines := hookLines(h.Stdout.String())
	for _, tc := range []struct {
		path    string
		status  int
		atLeast time.Duration
	}{
		{"/", 200, 0},
		{"/status", 418, 0},
		{"/missing", 404, 0},
		{"/sleep", 200, 30 * time.Millisecond},
		{"/panic", 500, 0},
	} {
		got := lines[tc.path]
		if tc.path == "/status" {
			// Two requests: 418 then 204.
			if len(got) != 6 {
				t.Errorf("%s: lines %q, want pre, handle, post twice", tc.path, got)
				continue
			}
			if !strings.HasPrefix(got[5], "post /status 204 ") {
				t.Errorf("%s: second post line %q, want status 204", tc.path, got[5])
			}
			got = got[:3]
		}
		if len(got) != 3 {
			t.Errorf("%s: lines %q, want exactly pre, handle, post", tc.path, got)
			continue
		}
		if got[0] != "pre "+tc.path {
			t.Errorf("%s: first line %q, want PreRequest's", tc.path, got[0])
		}
		if got[1] != "handle "+tc.path+" pre=yes" {
			t.Errorf("%s: second line %q, want the handler's, seeing PreRequest's header", tc.path, got[1])
		}
		var status int
		var d time.Duration
		if _, err := fmt.Sscanf(got[2], "post "+tc.path+" %d %d", &status, &d); err != nil {
			t.Errorf("%s: third line %q is not PostRequest's: %v", tc.path, got[2], err)
			continue
		}
		if status != tc.status {
			t.Errorf("%s: PostRequest status %d, want %d", tc.path, status, tc.status)
		}
		if d < tc.atLeast || d > deadline {
			t.Errorf("%s: PostRequest duration %v, want at least %v", tc.path, d, tc.atLeast)
		}
	}
}

func TestServer_Drain(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		sig  syscall.Signal
	}{
		{"Serve SIGTERM", []string{"-mode", "serve"}, syscall.SIGTERM},
		{"Run SIGTERM", []string{"-mode", "run"}, syscall.SIGTERM},
		{"Run context cancelled", []string{"-mode", "ctx"}, syscall.SIGHUP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startHelper(t, nil, tc.args...)
			h.Notify.Wait("READY=1")
			const took = 1500 * time.Millisecond
			started := time.Now()
			resp := h.inFlight("/sleep?d=" + took.String())
			h.Signal(tc.sig)
			stopping, _ := h.Notify.Wait("STOPPING=1")
			if stopping.At.Sub(started) >= took {
				t.Fatalf("STOPPING=1 came %v after the request started, when it had finished: nothing was drained", stopping.At.Sub(started))
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil || string(body) != "slept 1.5s\n" {
				t.Errorf("in-flight body %q, %v; want it complete", body, err)
			}
			h.WaitExit(0)
			if _, err := net.DialTimeout("tcp", h.Addr, deadline); err == nil {
				t.Errorf("%s still accepts connections after the worker exited", h.Addr)
			}
			// The request finished during the drain and is reported.
			var reported bool
			for _, n := range h.Rest() {
				if n.Has(FieldRequests + "=1") {
					reported = true
				}
			}
			if !reported {
				t.Errorf("the drained request was never reported")
			}
		})
	}
}

func TestServer_GracefulTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	h := startHelper(t, nil, "-graceful-timeout", timeout.String())
	h.Notify.Wait("READY=1")
	resp := h.inFlight("/sleep?d=1h")
	sent := time.Now()
	h.Signal(syscall.SIGTERM)
	h.Notify.Wait("STOPPING=1")
	body, err := io.ReadAll(resp.Body)
	if err == nil || len(body) > 0 {
		t.Errorf("body %q, %v after the graceful timeout; want it cut off", body, err)
	}
	h.WaitExit(0)
	if took := time.Since(sent); took < timeout {
		t.Errorf("exited %v after SIGTERM, before the %v graceful timeout", took, timeout)
	}
}

func TestServer_QuickExit(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGQUIT} {
		t.Run(sig.String(), func(t *testing.T) {
			h := startHelper(t, nil)
			h.Notify.Wait("READY=1")
			resp := h.inFlight("/sleep?d=1h")
			h.Signal(sig)
			h.Notify.Wait("STOPPING=1")
			body, err := io.ReadAll(resp.Body)
			if err == nil || len(body) > 0 {
				t.Errorf("body %q, %v; want the connection closed at once", body, err)
			}
			h.WaitExit(0)
		})
	}
}

func TestServer_USR1(t *testing.T) {
	h := startHelper(t, nil)
	h.Notify.Wait("READY=1")
	// Go's default for SIGUSR1 is to exit; forkd forwards it for reopening
	// logs. Linux delivers the lower-numbered USR1 before TERM.
	h.Signal(syscall.SIGUSR1)
	if code, _ := h.get("/"); code != http.StatusOK {
		t.Errorf("GET / after SIGUSR1 = %d", code)
	}
	h.Signal(syscall.SIGTERM)
	h.Rest() // exit code 0, not killed by USR1
	if !strings.Contains(h.Stderr.String(), "SIGUSR1") {
		t.Errorf("no log line about SIGUSR1:\n%s", h.Stderr.String())
	}
}
