package master

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/bus"
	"github.com/forkd/forkd/internal/testkit"
	"github.com/forkd/forkd/metrics"
)

// scrape is one scrape of a metrics endpoint: its body and its samples by
// series, written as the exposition format writes them
// (`forkd_workers{state="ready"}`).
type scrape struct {
	body    []byte
	samples map[string]float64
}

// get scrapes url, failing the test on an error or a status other than 200.
func getMetrics(t *testing.T, url string) scrape {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %d %v\n%s", url, resp.StatusCode, err, body)
	}
	s := scrape{body: body, samples: map[string]float64{}}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("scrape %s: line %q: %v", url, line, err)
		}
		s.samples[line[:i]] = v
	}
	return s
}

// value returns the sample of series, failing the test when there is none.
func (s scrape) value(t *testing.T, series string) float64 {
	t.Helper()
	v, ok := s.samples[series]
	if !ok {
		t.Fatalf("no sample %s in the scrape:\n%s", series, s.body)
	}
	return v
}

// sum adds the samples of every series of the family name.
func (s scrape) sum(name string) float64 {
	total := 0.0
	for k, v := range s.samples {
		if k == name || strings.HasPrefix(k, name+"{") {
			total += v
		}
	}
	return total
}

// metricsForkd starts forkd with n workers in mode, a private bus and a
// [metrics] bind on a free port, and waits until its workers serve.
func metricsForkd(t *testing.T, inst, mode string, n int) (*forkd, *busClient, string) {
	t.Helper()
	d := testkit.StartBus(t)
	c := dialBus(t, d.Address)
	c.subscribe()
	f := newForkd(t, setup{instance: inst, workers: n, mode: mode, bus: d.Address})
	mport := freePort(t)
	f.writeConfig(mode, fmt.Sprintf("\n[metrics]\nbind = \"tcp://127.0.0.1:%d\"\n", mport))
	f.start()
	c.collect("WhenReady", testTimeout, is("WhenReady", nil))
	return f, c, fmt.Sprintf("http://127.0.0.1:%d/metrics", mport)
}

// listWorkers calls ListWorkers.
func (c *busClient) listWorkers(inst string) []bus.WorkerEntry {
	c.t.Helper()
	var list []bus.WorkerEntry
	if err := c.object(inst).Call(bus.Interface+".ListWorkers", 0).Store(&list); err != nil {
		c.t.Fatalf("ListWorkers: %v", err)
	}
	return list
}

// TestMaster_Metrics scrapes a running forkd with 3 SDK workers over HTTP:
// the worker-state gauges match ListWorkers, the workers' requests reach
// the histogram, promtool accepts the scrape, a SIGKILLed worker counts as
// crashed, with the workers stopped (WINCH) the accept-queue gauge counts
// the connections that wait, and a USR2 refused counts as refused.
func TestMaster_Metrics(t *testing.T) {
	const inst = "metrics"
	f, c, url := metricsForkd(t, inst, "sdk", 3)

	t.Run("states match ListWorkers", func(t *testing.T) {
		s := getMetrics(t, url)
		states := map[string]float64{}
		for _, w := range c.listWorkers(inst) {
			states[w.State]++
			if w.State == "ready" && w.MemoryBytes == 0 {
				t.Errorf("ListWorkers: ready worker %d with no memory: %+v", w.PID, w)
			}
		}
		for _, st := range []string{"starting", "ready", "stopping"} {
			if got := s.value(t, `forkd_workers{state="`+st+`"}`); got != states[st] {
				t.Errorf("forkd_workers{state=%q} = %v, ListWorkers has %v", st, got, states[st])
			}
		}
		if got := s.value(t, "forkd_workers_target"); got != 3 {
			t.Errorf("forkd_workers_target = %v, want 3", got)
		}
		if got := s.value(t, `forkd_state{state="running"}`); got != 1 {
			t.Errorf(`forkd_state{state="running"} = %v, want 1`, got)
		}
		if got := s.value(t, `forkd_worker_starts_total{reason="initial"}`); got != 3 {
			t.Errorf(`forkd_worker_starts_total{reason="initial"} = %v, want 3`, got)
		}
		for _, fam := range []string{"forkd_build_info", "process_cpu_seconds_total", "go_goroutines",
			`forkd_worker_heartbeat_age_seconds{generation="1",slot="0"}`,
			`forkd_worker_resident_memory_bytes{generation="1",slot="2"}`} {
			if _, ok := s.samples[fam]; !ok && s.sum(fam) == 0 {
				t.Errorf("no %s in the scrape", fam)
			}
		}
		if strings.Contains(string(s.body), "pid=") {
			t.Errorf("a label carries a pid:\n%s", s.body)
		}
	})

	t.Run("requests reach the histogram", func(t *testing.T) {
		for range 6 {
			f.get(t)
		}
		var total uint64
		c.collect("RequestStats for 6 requests", testTimeout, func(s *dbus.Signal) bool {
			if member(s) == "RequestStats" {
				total += s.Body[4].(uint64)
			}
			return total >= 6
		})
		s := getMetrics(t, url)
		if got := s.value(t, "forkd_request_duration_seconds_count"); got != 6 {
			t.Errorf("forkd_request_duration_seconds_count = %v, want 6", got)
		}
		if got := s.value(t, `forkd_request_duration_seconds_bucket{le="+Inf"}`); got != 6 {
			t.Errorf("+Inf bucket = %v, want 6", got)
		}
		if got := s.sum("forkd_worker_requests_total"); got != 6 {
			t.Errorf("forkd_worker_requests_total adds up to %v, want 6", got)
		}
		if got := s.value(t, "forkd_request_duration_seconds_sum"); got <= 0 {
			t.Errorf("forkd_request_duration_seconds_sum = %v, want more than 0", got)
		}
	})

	t.Run("promtool check metrics", func(t *testing.T) {
		promtool, err := exec.LookPath("promtool")
		if err != nil {
			t.Skip("no promtool (Debian's prometheus package: apt-get install -y prometheus)")
		}
		s := getMetrics(t, url)
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(s.body)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s\nscrape:\n%s", err, out, s.body)
		}
	})

	t.Run("SIGKILL counts as crashed", func(t *testing.T) {
		victim := c.listWorkers(inst)[0].PID
		if err := syscall.Kill(int(victim), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		c.collect("the killed worker's successor", testTimeout, func(s *dbus.Signal) bool {
			return member(s) == "PostWorkerInit" && s.Body[3].(uint32) != victim
		})
		s := getMetrics(t, url)
		if got := s.value(t, `forkd_worker_exits_total{reason="crashed"}`); got != 1 {
			t.Errorf(`forkd_worker_exits_total{reason="crashed"} = %v, want 1`, got)
		}
		if got := s.value(t, `forkd_worker_starts_total{reason="replace"}`); got != 1 {
			t.Errorf(`forkd_worker_starts_total{reason="replace"} = %v, want 1`, got)
		}
	})

	t.Run("accept queue while the workers are stopped", func(t *testing.T) {
		f.signal(syscall.SIGWINCH)
		exits := 0
		c.collect("3 workers stopped by WINCH", testTimeout, func(s *dbus.Signal) bool {
			if member(s) == "WorkerExit" {
				exits++
			}
			return exits == 3
		})
		const waiting = 4
		for range waiting {
			conn, err := net.DialTimeout("tcp", f.addr, 5*time.Second)
			if err != nil {
				t.Fatalf("connect with no worker: %v", err)
			}
			defer conn.Close()
		}
		s := getMetrics(t, url)
		series := fmt.Sprintf(`forkd_listener_queue_length{address="tcp://%s",name="%s"}`, f.addr, inst)
		if got := s.value(t, series); got != waiting {
			t.Errorf("%s = %v, want %d connections waiting", series, got, waiting)
		}
		if got := s.value(t, fmt.Sprintf(`forkd_listener_backlog{address="tcp://%s",name="%s"}`, f.addr, inst)); got < waiting {
			t.Errorf("forkd_listener_backlog = %v, want at least %d", got, waiting)
		}
		if got := s.sum("forkd_workers"); got != 0 {
			t.Errorf("forkd_workers adds up to %v with every worker stopped", got)
		}
		if got := s.value(t, `forkd_worker_exits_total{reason="scale"}`); got != 3 {
			t.Errorf(`forkd_worker_exits_total{reason="scale"} = %v, want 3`, got)
		}
	})

	t.Run("a refused USR2 counts as refused", func(t *testing.T) {
		if err := os.WriteFile(f.cfgPath, []byte("[server\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		f.signal(syscall.SIGUSR2) // refused: the new master could not load the file
		f.signal(syscall.SIGTTIN) // handled after it: its signal says the USR2 was
		c.collect("NworkersChanged after the refused USR2", testTimeout, is("NworkersChanged", nil))
		s := getMetrics(t, url)
		if got := s.value(t, `forkd_upgrades_total{result="refused"}`); got != 1 {
			t.Errorf(`forkd_upgrades_total{result="refused"} = %v, want 1`, got)
		}
	})
}

// TestMaster_MetricsGarbledStats: a malformed FORKD_REQUEST_STATS is
// counted and ignored; the worker keeps serving.
func TestMaster_MetricsGarbledStats(t *testing.T) {
	f, _, url := metricsForkd(t, "garbled", "garbled", 1)
	s := getMetrics(t, url)
	if got := s.value(t, "forkd_request_reports_malformed_total"); got != 1 {
		t.Errorf("forkd_request_reports_malformed_total = %v, want 1", got)
	}
	if got := s.value(t, "forkd_request_duration_seconds_count"); got != 0 {
		t.Errorf("forkd_request_duration_seconds_count = %v, want 0", got)
	}
	if _, err := f.ask(); err != nil {
		t.Errorf("the worker stopped serving after its garbled report: %v", err)
	}
	if f.exited() {
		t.Error("forkd exited")
	}
}

// TestMaster_MetricsBindErrors: a metrics bind in use fails the start, and
// a malformed one the config, each error naming it.
func TestMaster_MetricsBindErrors(t *testing.T) {
	t.Run("in use", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		f := newForkd(t, setup{instance: "inuse", workers: 1})
		f.writeConfig("serve", fmt.Sprintf("\n[metrics]\nbind = \"tcp://%s\"\n", l.Addr()))
		f.start()
		if code := f.wait(testTimeout); code != 1 {
			t.Errorf("forkd exited %d, want 1", code)
		}
		want := fmt.Sprintf(`metrics: listen on [metrics] bind "tcp://%s"`, l.Addr())
		if log := f.log(); !strings.Contains(log, want) || !strings.Contains(log, "address already in use") {
			t.Errorf("forkd's log does not say %q … address already in use:\n%s", want, log)
		}
	})
	t.Run("malformed", func(t *testing.T) {
		f := newForkd(t, setup{instance: "malformed", workers: 1})
		f.writeConfig("serve", "\n[metrics]\nbind = \"127.0.0.1:9150\"\n")
		f.start()
		if code := f.wait(testTimeout); code != 1 {
			t.Errorf("forkd exited %d, want 1", code)
		}
		if log := f.log(); !strings.Contains(log, `metrics.bind: invalid bind "127.0.0.1:9150"`) {
			t.Errorf("forkd's log does not name metrics.bind:\n%s", log)
		}
	})
}

// TestMaster_MetricsUnix serves the metrics on a unix socket whose path
// names the instance (%i), replacing a stale socket file a dead process
// left there, with the mode the bind asks for.
func TestMaster_MetricsUnix(t *testing.T) {
	const inst = "unixmetrics"
	d := testkit.StartBus(t)
	c := dialBus(t, d.Address)
	c.subscribe()
	f := newForkd(t, setup{instance: inst, workers: 1, bus: d.Address})
	dir := filepath.Join(filepath.Dir(f.cfgPath), inst)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "metrics.sock")
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	f.writeConfig("serve", fmt.Sprintf("\n[metrics]\nbind = \"unix:%s?mode=0600\"\n",
		filepath.Join(filepath.Dir(f.cfgPath), "%i", "metrics.sock")))
	f.start()
	c.collect("WhenReady", testTimeout, is("WhenReady", nil))
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 || st.Mode()&os.ModeSocket == 0 {
		t.Fatalf("metrics socket %s: %v, %v; want a socket with mode 0600", path, st.Mode(), err)
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "unix", path)
	}}, Timeout: 10 * time.Second}
	resp, err := hc.Get("http://forkd/metrics")
	if err != nil {
		t.Fatalf("scrape over %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`forkd_workers{state="ready"} 1`)) {
		t.Errorf("scrape over %s: %s\n%s", path, resp.Status, body)
	}
}

// metricsSidecar returns the one forkd-metrics that f's master runs,
// failing the test when there is not exactly one.
func metricsSidecar(t *testing.T, f *forkd) int {
	t.Helper()
	pids := childrenAs(f.pid(), metrics.Executable)
	if len(pids) != 1 {
		t.Fatalf("forkd-metrics children of the master: %v, want one", pids)
	}
	return pids[0]
}

// waitGone waits until the process pid has exited, failing the test after
// testTimeout.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return
	}
	if err != nil {
		t.Fatalf("pidfd_open %d: %v", pid, err)
	}
	defer unix.Close(fd)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, int(testTimeout/time.Millisecond))
	if err != nil || n != 1 {
		t.Fatalf("process %d still runs after %v (%v)", pid, testTimeout, err)
	}
}

// startEpoch is when pid started, in seconds since the Unix epoch, as
// process_start_time_seconds reports it (/proc/stat's btime + the
// process's starttime).
func startEpoch(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	var btime float64
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			btime, _ = strconv.ParseFloat(v, 64)
		}
	}
	st, err := procStart(pid)
	if err != nil {
		t.Fatal(err)
	}
	return btime + st.Seconds()
}

// TestMaster_MetricsSidecarRestart: the endpoint is served by a
// forkd-metrics child of the master, which the master starts again when
// it dies; the scrapes that arrive meanwhile wait and are served, and
// process_* describe the master, not the sidecar.
func TestMaster_MetricsSidecarRestart(t *testing.T) {
	const inst = "sidecar"
	f, _, url := metricsForkd(t, inst, "serve", 2)
	getMetrics(t, url) // served: the sidecar runs
	first := metricsSidecar(t, f)
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, first)
	s := getMetrics(t, url) // waits in the socket's queue for the next sidecar
	if got := s.value(t, "forkd_workers_target"); got != 2 {
		t.Errorf("forkd_workers_target = %v after the sidecar's restart, want 2", got)
	}
	second := metricsSidecar(t, f)
	if second == first {
		t.Fatalf("forkd-metrics %d still runs after SIGKILL", first)
	}
	got, master, side := s.value(t, "process_start_time_seconds"), startEpoch(t, f.pid()), startEpoch(t, second)
	if math.Abs(got-master) > 0.015 || math.Abs(got-side) < 0.015 {
		t.Errorf("process_start_time_seconds = %.2f: want the master's %.2f, not the sidecar's %.2f", got, master, side)
	}
	if log := f.log(); !strings.Contains(log, "forkd-metrics exited; starting it again") {
		t.Errorf("the master's log does not say the sidecar exited:\n%s", log)
	}
	f.stop()
	waitGone(t, second)
}

// TestMaster_MetricsUpgrade: across an in-place upgrade (USR2) the
// endpoint refuses no connection — scrapes on new connections, one after
// another, all answered 200 with the pool's families — the old master's
// forkd-metrics exits and
// the new master runs one of its own on the same socket, which counts the
// upgrade.
func TestMaster_MetricsUpgrade(t *testing.T) {
	const inst = "metricsup"
	f, c, url := metricsForkd(t, inst, "serve", 2)
	getMetrics(t, url) // served: the sidecar runs
	first := metricsSidecar(t, f)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	stop, scraped := make(chan struct{}), make(chan struct{})
	type result struct {
		n       int
		errs    []string
		slowest time.Duration
	}
	done := make(chan result, 1)
	go func() {
		var r result
		defer func() { done <- r }()
		for {
			r.n++
			t0 := time.Now()
			resp, err := hc.Get(url)
			r.slowest = max(r.slowest, time.Since(t0))
			if err != nil {
				r.errs = append(r.errs, err.Error())
			} else {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case resp.StatusCode != http.StatusOK:
					r.errs = append(r.errs, resp.Status)
				case !bytes.Contains(body, []byte("\nforkd_workers{")):
					r.errs = append(r.errs, "200 without forkd_workers")
				}
			}
			select {
			case scraped <- struct{}{}:
			case <-stop:
				return
			}
		}
	}()
	scrapes := func(n int) {
		for range n {
			select {
			case <-scraped:
			case <-time.After(testTimeout):
				t.Fatalf("no scrape for %v", testTimeout)
			}
		}
	}
	scrapes(3)
	f.signal(syscall.SIGUSR2)
	// Scrape on while the master re-executes, until its successor is ready.
	got := make(chan struct{})
	go func() {
		defer close(got)
		c.collect("the successor's WhenReady", testTimeout, is("WhenReady", nil))
	}()
	for waiting := true; waiting; {
		select {
		case <-scraped:
		case <-got:
			waiting = false
		}
	}
	waitGone(t, first)
	scrapes(3)
	s := getMetrics(t, url)
	close(stop)
	r := <-done
	if len(r.errs) > 0 {
		t.Errorf("%d of %d scrapes across the upgrade failed: %q", len(r.errs), r.n, r.errs)
	}
	if got := s.value(t, `forkd_upgrades_total{result="ok"}`); got != 1 {
		t.Errorf(`forkd_upgrades_total{result="ok"} = %v after the upgrade, want 1`, got)
	}
	if second := metricsSidecar(t, f); second == first {
		t.Errorf("forkd-metrics %d of the old master still runs", first)
	}
	t.Logf("%d scrapes across the upgrade, the slowest %v", r.n, r.slowest)
}

// TestMaster_MetricsUpgradeMoves: an upgrade to a config whose [metrics]
// bind changed serves the new address and closes the old one.
func TestMaster_MetricsUpgradeMoves(t *testing.T) {
	const inst = "metricsmove"
	f, c, oldURL := metricsForkd(t, inst, "serve", 1)
	getMetrics(t, oldURL)
	mport := freePort(t)
	f.writeConfig("serve", fmt.Sprintf("\n[metrics]\nbind = \"tcp://127.0.0.1:%d\"\n", mport))
	f.signal(syscall.SIGUSR2)
	c.collect("the successor's WhenReady", testTimeout, is("WhenReady", nil))
	s := getMetrics(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", mport))
	if got := s.value(t, `forkd_upgrades_total{result="ok"}`); got != 1 {
		t.Errorf(`forkd_upgrades_total{result="ok"} = %v at the new bind, want 1`, got)
	}
	old := strings.TrimSuffix(strings.TrimPrefix(oldURL, "http://"), "/metrics")
	if conn, err := net.DialTimeout("tcp", old, 5*time.Second); err == nil {
		conn.Close()
		t.Errorf("the old bind %s still accepts after the upgrade moved the endpoint", old)
	}
}
