package bench

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/forkd/forkd/bus"
)

// metricsDoc describes BenchmarkMetrics in docs/BENCHMARKS.md.
const metricsDoc = `- **19 metrics** (forkd only). 64 bench workers and a ` + "`[metrics]`" + ` bind; 300
  scrapes of /metrics, one after another (after 10 unmeasured), then 300 D-Bus
  ` + "`ListWorkers`" + ` calls on a private dbus-daemon: each call's latency (p50,
  p99) and the master's CPU time (/proc/PID/stat, utime + stime) over the 300
  divided by 300, and forkd-metrics' (the sidecar that serves the endpoint)
  the same way. Both ask the arbiter once per call; for a scrape the master
  also reads /proc/PID/stat of every worker, the accept queues (sock_diag)
  and its Go runtime's statistics, off the arbiter's goroutine, and sends
  them to forkd-metrics as one JSON line, which exports about 400 series
  with the master's process_* and go_*; ListWorkers also reads every worker's memory and
  CPU off it, at most once a second (the calls in between share that
  reading). Then the FastAPI app of examples/fastapi-scheduler
  under forkd, one uvicorn worker each, with its ` + "`forkd_stats`" + ` middleware
  and with ` + "`FORKD_STATS=0`" + `, side by side: 10 rounds of 200 sequential
  keep-alive GETs to each, interleaved; the difference of the medians. And
  ` + "`bench/stats_middleware.py`" + `: a trivial ASGI app called directly and
  through the middleware in-process, 200,000 calls, best of 5: the
  middleware's own cost per request, below what HTTP timing resolves.
`

// BenchmarkMetrics is scenario 19, observability (forkd only). With 64
// workers: the latency of a Prometheus scrape of forkd's [metrics]
// endpoint (p50, p99) and the master's CPU time per scrape, against a
// D-Bus ListWorkers call in the same run. Then the FastAPI app of
// examples/fastapi-scheduler with one uvicorn worker, with and without
// its forkd_stats middleware (FORKD_STATS=0), in the same run: the
// middleware's cost per request over HTTP, and in-process by
// stats_middleware.py.
func BenchmarkMetrics(b *testing.B) {
	s := env(b)
	const workers = 64
	const calls = 300
	d, err := StartBusDaemon()
	if errors.Is(err, ErrNoBusDaemon) {
		b.Skip("no dbus-daemon: ListWorkers cannot be compared (apt-get install dbus)")
	}
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = d.Close() })
	mport, err := FreePort(20000, 32000)
	if err != nil {
		b.Fatal(err)
	}
	m, err := newMaster("forkd")
	if err != nil {
		b.Fatal(err)
	}
	spec := s.forkdSpec(workers, 30*time.Second)
	cfg := spec.TOML(m.Port, m.Probe.Path()) + fmt.Sprintf("\n[metrics]\nbind = \"tcp://127.0.0.1:%d\"\n", mport)
	if err := m.startForkd(s.forkd, cfg, d.Address, nil, ""); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { closeMaster(b, m) })
	if _, err := m.WaitReady(workers, 60*time.Second); err != nil {
		b.Fatal(err)
	}
	conn, err := dbus.Connect(d.Address)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	obj := conn.Object("io.github.forkd.bench", "/io/github/forkd")
	listWorkers := func() error {
		var list []bus.WorkerEntry
		if err := obj.Call(bus.Interface+".ListWorkers", 0).Store(&list); err != nil {
			return err
		}
		if len(list) != workers {
			return fmt.Errorf("ListWorkers: %d workers, want %d", len(list), workers)
		}
		return nil
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	url := fmt.Sprintf("http://127.0.0.1:%d/metrics", mport)
	scrape := func() error {
		resp, err := hc.Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("scrape: %s", resp.Status)
		}
		return nil
	}
	// measure runs call n times and returns its latencies (ms), the
	// master's CPU time per call (ms) and forkd-metrics' (NaN without one).
	measure := func(call func() error) (Sample, float64, float64) {
		for range 10 { // warm up
			if err := call(); err != nil {
				b.Fatal(err)
			}
		}
		side := metricsSidecar(m.PID())
		sideCPU := func() time.Duration {
			if side == 0 {
				return 0
			}
			d, err := CPUTime(side)
			if err != nil {
				b.Fatal(err)
			}
			return d
		}
		side0 := sideCPU()
		cpu0, err := CPUTime(m.PID())
		if err != nil {
			b.Fatal(err)
		}
		lat := make([]time.Duration, 0, calls)
		for range calls {
			t0 := time.Now()
			if err := call(); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		cpu1, err := CPUTime(m.PID())
		if err != nil {
			b.Fatal(err)
		}
		sideMS := math.NaN()
		if side != 0 {
			sideMS = ms(sideCPU()-side0) / calls
		}
		return Durations(lat), ms(cpu1-cpu0) / calls, sideMS
	}
	scrapeLat, scrapeCPU, sidecarCPU := measure(scrape)
	listLat, listCPU, _ := measure(listWorkers)
	b.ReportMetric(scrapeLat.Quantile(0.99), "scrape-p99-ms")
	b.ReportMetric(scrapeCPU, "scrape-master-cpu-ms")
	b.ReportMetric(listLat.Quantile(0.99), "listworkers-p99-ms")
	b.ReportMetric(listCPU, "listworkers-master-cpu-ms")
	const sc = "19 metrics, 64 workers"
	report.Add(row(sc, "scrape latency p50", "ms", Goal{Text: "≤ 10 ms", Limit: 10}, pair{scrapeLat.Median(), math.NaN()}))
	report.Add(row(sc, "scrape latency p99", "ms", Goal{Text: "≤ 25 ms", Limit: 25}, pair{scrapeLat.Quantile(0.99), math.NaN()}))
	report.Add(row(sc, "D-Bus ListWorkers latency p99 (same run)", "ms", Goal{Text: "—", Limit: math.Inf(1)},
		pair{listLat.Quantile(0.99), math.NaN()}))
	report.Add(row(sc, "master CPU per scrape (/proc of 64 workers, accept queue, encoding its answer for forkd-metrics)", "ms",
		Goal{Text: "≤ 5 ms", Limit: 5}, pair{scrapeCPU, math.NaN()}))
	report.Add(row(sc, "master CPU per D-Bus ListWorkers (same run)", "ms", Goal{Text: "—", Limit: math.Inf(1)},
		pair{listCPU, math.NaN()}))
	if !math.IsNaN(sidecarCPU) {
		b.ReportMetric(sidecarCPU, "scrape-sidecar-cpu-ms")
		report.Add(row(sc, "forkd-metrics CPU per scrape (decoding the master's answer, process_* of the master, encoding; same run)",
			"ms", Goal{Text: "—", Limit: math.Inf(1)}, pair{sidecarCPU, math.NaN()}))
	}
	closeMaster(b, m)

	middlewareOverhead(b, s)
}

// middlewareOverhead runs the FastAPI example's app with one uvicorn
// worker under forkd, with its forkd_stats middleware and without
// (FORKD_STATS=0), and times sequential keep-alive requests to each,
// interleaved in rounds so that both see the same machine.
func middlewareOverhead(b *testing.B, s *setup) {
	root, err := ModuleRoot(".")
	if err != nil {
		b.Fatal(err)
	}
	ex, err := FindExample(root)
	if err != nil {
		b.Logf("skipping the middleware's overhead: %v", err)
		return
	}
	start := func(stats string) (*Master, string) {
		m, err := StartForkdWith(s.forkd, func(m *Master) string {
			return fmt.Sprintf(`[server]
name = "bench-stats-%s"
workers = 1
bind = ["tcp://127.0.0.1:%d"]
timeout = "0s"
graceful_timeout = "5s"

[worker]
command = %q
args = ["-m", "uvicorn", "app:app", "--fd", "3", "--no-access-log"]
dir = %q
ready = "started"
ready_delay = "1s"

[worker.env]
FORKD_STATS = %q
`, stats, m.Port, ex.Python, ex.Dir, stats)
		}, nil, "")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { closeMaster(b, m) })
		return m, fmt.Sprintf("http://127.0.0.1:%d/", m.Port)
	}
	_, withURL := start("1")
	_, withoutURL := start("0")
	c := &http.Client{Timeout: 10 * time.Second}
	get := func(url string) error {
		resp, err := c.Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	for _, url := range []string{withURL, withoutURL} {
		deadline := time.Now().Add(30 * time.Second)
		for get(url) != nil {
			if time.Now().After(deadline) {
				b.Fatalf("%s does not answer", url)
			}
			<-time.After(100 * time.Millisecond)
		}
	}
	const rounds, perRound = 10, 200
	var withLat, withoutLat []time.Duration
	for range rounds {
		for _, side := range []struct {
			url string
			lat *[]time.Duration
		}{{withURL, &withLat}, {withoutURL, &withoutLat}} {
			for range perRound {
				t0 := time.Now()
				if err := get(side.url); err != nil {
					b.Fatal(err)
				}
				*side.lat = append(*side.lat, time.Since(t0))
			}
		}
	}
	w, wo := Durations(withLat), Durations(withoutLat)
	over := (w.Median() - wo.Median()) * 1000
	b.ReportMetric(over, "middleware-overhead-µs")
	out, err := exec.Command(ex.Python, "stats_middleware.py", ex.Dir).Output()
	if err != nil {
		b.Fatalf("stats_middleware.py: %v", err)
	}
	var raw, wrapped float64
	if _, err := fmt.Sscan(string(out), &raw, &wrapped); err != nil {
		b.Fatalf("stats_middleware.py printed %q: %v", out, err)
	}
	inProcess := (wrapped - raw) / 1000
	b.ReportMetric(inProcess, "middleware-in-process-µs")
	const sc = "19 metrics, FastAPI + uvicorn, 1 worker"
	report.Add(row(sc, "request latency median, with forkd_stats", "ms", Goal{Text: "—", Limit: math.Inf(1)},
		pair{w.Median(), math.NaN()}))
	report.Add(row(sc, "request latency median, without (same app, same run)", "ms", Goal{Text: "—", Limit: math.Inf(1)},
		pair{wo.Median(), math.NaN()}))
	report.Add(row(sc, "forkd_stats overhead per request over HTTP (median difference)", "µs", Goal{Text: "≤ 50 µs", Limit: 50},
		pair{over, math.NaN()}))
	report.Add(row(sc, "forkd_stats overhead per request in-process (stats_middleware.py, best of 5)", "µs",
		Goal{Text: "≤ 5 µs", Limit: 5}, pair{inProcess, math.NaN()}))
}

// metricsSidecar returns the pid of the forkd-metrics child of the master
// pid (0: none, a forkd that serves its metrics itself).
func metricsSidecar(pid int) int {
	for _, p := range Descendants(pid) {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p.PID))
		if err == nil && strings.TrimSpace(string(comm)) == "forkd-metrics" {
			return p.PID
		}
	}
	return 0
}
