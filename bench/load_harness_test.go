package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/forkd/forkd/bench/benchworker"
	"github.com/forkd/forkd/bus"
)

// wrkWithErrors is wrk 4.1's report of a run with socket errors and
// non-2xx responses.
const wrkWithErrors = `Running 10s test @ http://127.0.0.1:23457/
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   635.91us    0.89ms  12.92ms   93.69%
    Req/Sec    28.72k     2.38k   34.02k    78.50%
  Latency Distribution
     50%  385.00us
     75%  490.00us
     90%    1.08ms
     99%    1.20s
  571601 requests in 10.00s, 81.23MB read
  Socket errors: connect 1, read 241, write 3, timeout 4
  Non-2xx or 3xx responses: 12
Requests/sec:  57134.23
Transfer/sec:      8.12MB
`

// wrkClean is the same without errors: wrk leaves those lines out.
const wrkClean = `Running 1m test @ http://127.0.0.1:23457/
  2 threads and 32 connections
  Latency Distribution
     50%  385.00us
     75%  490.00us
     90%    1.08ms
     99%    4.20ms
  1200 requests in 1.00m, 81.23MB read
Requests/sec:     20.00
`

func TestParseWrk(t *testing.T) {
	l, err := ParseWrk(wrkWithErrors)
	if err != nil {
		t.Fatal(err)
	}
	want := Load{Requests: 571601, Took: 10 * time.Second, Non2xx: 12, Connect: 1, Read: 241, Write: 3, Timeout: 4,
		P50: 385 * time.Microsecond, P90: 1080 * time.Microsecond, P99: 1200 * time.Millisecond}
	if l != want {
		t.Errorf("ParseWrk = %+v\nwant      %+v", l, want)
	}
	if got := l.Failed(); got != 12+1+241+3+4 {
		t.Errorf("Failed() = %d, want 261", got)
	}
	l, err = ParseWrk(wrkClean)
	if err != nil {
		t.Fatal(err)
	}
	if l.Failed() != 0 || l.Requests != 1200 || l.Took != time.Minute || l.Rate() != 20 || l.P99 != 4200*time.Microsecond {
		t.Errorf("ParseWrk(clean) = %+v, rate %v", l, l.Rate())
	}
	for name, bad := range map[string]string{
		"no latency":  strings.Replace(wrkClean, "     99%    4.20ms\n", "", 1),
		"no requests": strings.Replace(wrkClean, "  1200 requests in 1.00m, 81.23MB read\n", "", 1),
		"bad unit":    strings.Replace(wrkClean, "4.20ms", "4.20xs", 1),
	} {
		if _, err := ParseWrk(bad); !errors.Is(err, ErrWrkOutput) {
			t.Errorf("ParseWrk(%s) error = %v, want ErrWrkOutput", name, err)
		}
	}
}

// TestWrk_Run runs the real wrk against a server that fails every other
// request.
func TestWrk_Run(t *testing.T) {
	path, err := exec.LookPath("wrk")
	if err != nil {
		t.Skip("wrk is not installed (apt-get install wrk)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/fail") {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})}
	go srv.Serve(l)
	defer srv.Close()
	w := Wrk{Path: path, Threads: 1, Conns: 1, Duration: time.Second, Headers: []string{"Connection: close"}}
	ok, err := w.Run(context.Background(), fmt.Sprintf("http://%s/", l.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	if ok.Requests == 0 || ok.Failed() != 0 || ok.P99 <= 0 {
		t.Errorf("against a healthy server: %v", ok)
	}
	bad, err := w.Run(context.Background(), fmt.Sprintf("http://%s/fail", l.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	if bad.Requests == 0 || bad.Non2xx != bad.Requests {
		t.Errorf("against a failing server: %v; want every request non-2xx", bad)
	}
}

// TestSignalLog sends forkd-shaped signals on a private bus and checks
// that the log records those of forkd's object and interface only.
func TestSignalLog(t *testing.T) {
	d, err := StartBusDaemon()
	if errors.Is(err, ErrNoBusDaemon) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	log, err := WatchSignals(d.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	sender, err := dbus.Connect(d.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	if err := sender.Emit("/elsewhere", bus.Interface+".PostFork", "x", uint64(1), int32(0), uint32(7)); err != nil {
		t.Fatal(err)
	}
	if err := sender.Emit(bus.ObjectPath, bus.Interface+".PostFork", "x", uint64(1), int32(2), uint32(42)); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	sigs, err := log.Wait(5*time.Second, "PostFork", func(s []Signal) bool { return len(s) > 0 })
	if err != nil {
		t.Fatal(err)
	}
	if len(sigs) != 1 || sigs[0].Name != "PostFork" {
		t.Fatalf("signals %+v, want the one PostFork on %s", sigs, bus.ObjectPath)
	}
	if pid, ok := sigs[0].PID(); !ok || pid != 42 {
		t.Errorf("PID() = %d, %v; want 42", pid, ok)
	}
	if sigs[0].At.Before(sent.Add(-time.Second)) || sigs[0].At.After(time.Now()) {
		t.Errorf("arrival time %v not around the send at %v", sigs[0].At, sent)
	}
	if _, err := log.Wait(50*time.Millisecond, "nothing", func(s []Signal) bool { return false }); !errors.Is(err, ErrTimeout) {
		t.Errorf("Wait for nothing = %v, want ErrTimeout", err)
	}
}

// TestBenchWorker_Load runs the bench worker alone with request counting
// and the notify flood on, and stops it with TERM.
func TestBenchWorker_Load(t *testing.T) {
	m, err := StartAlone(benchWorker(t), benchworker.EnvBootDelay+"=50", benchworker.EnvCountRequests+"=1",
		benchworker.EnvNotifyRate+"=1000")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	evs, err := m.WaitReady(1, 10*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, m.Output())
	}
	if boot := evs[1].At.Sub(evs[0].At); evs[0].Kind != benchworker.KindStart || boot < 50*time.Millisecond {
		t.Errorf("start → ready %v (events %+v), want ≥ the 50 ms boot delay", boot, evs)
	}

	// Requests are counted: the last report says 25.
	const requests = 25
	for range requests {
		if _, err := m.Get("/"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Notify.Wait(5*time.Second, "FORKD_REQUESTS=25", func(ms []Message) bool {
		return len(ms) > 0 && ms[len(ms)-1].Data == fmt.Sprintf("FORKD_REQUESTS=%d", requests)
	}); err != nil {
		t.Fatal(err)
	}
	var reports int
	for _, msg := range m.Notify.Messages() {
		if strings.HasPrefix(msg.Data, "FORKD_REQUESTS=") {
			reports++
		}
	}
	if reports > 5 {
		t.Errorf("%d FORKD_REQUESTS reports for %d quick requests, want them batched", reports, requests)
	}

	// USR1 starts the flood, USR1 stops it; the counts add up.
	before := len(m.Notify.Messages())
	if err := syscall.Kill(m.PID(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Probe.Wait(5*time.Second, "a flood report of ≥ 200 sent", func(ms []Message) bool {
		s := ParseSent(ms)
		return len(s) > 0 && s[len(s)-1].Count >= 200
	}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(m.PID(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	var final Sent
	if _, err := m.Probe.Wait(5*time.Second, "the flood's final report", func(ms []Message) bool {
		for _, s := range ParseSent(ms) {
			if s.Final {
				final = s
				return true
			}
		}
		return false
	}); err != nil {
		t.Fatal(err)
	}
	msgs, err := m.Notify.Wait(5*time.Second, fmt.Sprintf("%d flood datagrams", final.Count), func(ms []Message) bool {
		return countFlood(ms[before:]) >= int(final.Count)
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := countFlood(msgs[before:]); got != int(final.Count) || final.Count < 200 {
		t.Errorf("notify socket got %d flood datagrams, the worker reports %d (want ≥ 200)", got, final.Count)
	}

	if err := syscall.Kill(m.PID(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Exited():
	case <-time.After(5 * time.Second):
		t.Fatal("the worker did not exit within 5 s of TERM")
	}
	if err := m.Err(); !strings.Contains(err.Error(), "<nil>") {
		t.Errorf("worker exit: %v", err)
	}
	if n := countKind(m.Probe.Events(), benchworker.KindStop); n != 1 {
		t.Errorf("%d stop probes, want 1", n)
	}
}

// countFlood counts the flood's datagrams among msgs.
func countFlood(msgs []Message) int {
	n := 0
	for _, m := range msgs {
		if m.Data == "WATCHDOG=1" || strings.HasPrefix(m.Data, "STATUS=flood ") {
			n++
		}
	}
	return n
}

func TestFloodRate(t *testing.T) {
	t0 := time.Unix(1000, 0)
	sents := []Sent{
		{PID: 1, Count: 0, At: t0},
		{PID: 2, Count: 50, At: t0.Add(time.Second)},
		{PID: 1, Count: 100, At: t0.Add(time.Second)},
		{PID: 1, Count: 300, At: t0.Add(2 * time.Second)},
		{PID: 2, Count: 250, At: t0.Add(3 * time.Second)},
		{PID: 1, Count: 9999, At: t0.Add(10 * time.Second)}, // outside the span
	}
	// pid 1: 300 in 2 s; pid 2: 200 in 2 s.
	if got := FloodRate(sents, t0, t0.Add(5*time.Second)); got != 250 {
		t.Errorf("FloodRate = %v, want 150 + 100 = 250", got)
	}
	msgs := []Message{{Data: "sent 7 12 1000000000"}, {Data: "ready 7 1"}, {Data: "sent x 1 1"},
		{Data: "flooded 7 13 2000000000"}}
	if s := ParseSent(msgs); len(s) != 2 || s[0] != (Sent{PID: 7, Count: 12, At: time.Unix(1, 0)}) ||
		s[1] != (Sent{PID: 7, Count: 13, At: time.Unix(2, 0), Final: true}) {
		t.Errorf("ParseSent = %+v", s)
	}
}

func TestFewestServing(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	evs := []Event{
		{benchworker.KindReady, 1, at(0)}, {benchworker.KindReady, 2, at(1)},
		{benchworker.KindReady, 3, at(20)}, {benchworker.KindStop, 1, at(21)}, // a recycle without a dip
		{benchworker.KindStop, 2, at(30)}, {benchworker.KindReady, 4, at(31)}, // a dip to 1
		{benchworker.KindStart, 5, at(40)},
	}
	if got := fewestServing(evs, at(10), at(25)); got != 2 {
		t.Errorf("fewest in 10…25 ms = %d, want 2", got)
	}
	if got := fewestServing(evs, at(10), at(40)); got != 1 {
		t.Errorf("fewest in 10…40 ms = %d, want 1", got)
	}
	if got := fewestServing(evs, at(50), at(60)); got != 2 {
		t.Errorf("fewest in 50…60 ms (no event) = %d, want 2", got)
	}
	msgs := []Message{{Data: "READY=1\nSTATUS=4/4 workers ready, generation 1"}, {Data: "STATUS=3/4 workers ready, generation 1"},
		{Data: "STATUS=4/4 workers ready, generation 1"}, {Data: "RELOADING=1\nSTATUS=reloading, 2/4 workers ready, generation 1"}}
	if f, n := fewestReadyStatus(msgs, 2); f != 2 || n != 2 {
		t.Errorf("fewestReadyStatus from 2 = %d, %d lines; want 2, 2", f, n)
	}
	if f, n := fewestReadyStatus(msgs[:3], 3); f != 4 || n != 0 {
		t.Errorf("fewestReadyStatus with no line after the mark = %d, %d lines; want 4 (in force), 0", f, n)
	}
}

func TestGoal_AtLeast(t *testing.T) {
	g := Goal{Text: "≥ 4", Limit: 4, AtLeast: true}
	if !g.Met(4) || !g.Met(5) || g.Met(3) || g.Met(math.NaN()) {
		t.Errorf("AtLeast goal: Met(4), Met(5), Met(3), Met(NaN) = %v %v %v %v", g.Met(4), g.Met(5), g.Met(3), g.Met(math.NaN()))
	}
	up := Goal{Text: "0", Limit: 0}
	if !up.Met(0) || up.Met(1) {
		t.Errorf("upper bound 0: Met(0) = %v, Met(1) = %v", up.Met(0), up.Met(1))
	}
	if got := FormatValue(798, ""); got != "798" {
		t.Errorf("FormatValue(798, \"\") = %q, want a bare count", got)
	}
}
