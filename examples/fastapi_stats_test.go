package examples_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestExamples_FastAPIRequestStats runs the FastAPI app of
// examples/fastapi-scheduler under forkd with 2 uvicorn workers and its
// forkd_stats middleware: the workers' requests reach forkd's latency
// histogram over the metrics endpoint, and max_requests recycles a uvicorn
// worker as it does a Go one.
func TestExamples_FastAPIRequestStats(t *testing.T) {
	skipWithoutPython(t, "uvicorn", "fastapi")
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	forkd := filepath.Join(t.TempDir(), "forkd")
	goBuild(t, root, forkd, "./cmd/forkd")
	// [metrics] bind needs forkd-metrics beside forkd.
	goBuild(t, root, filepath.Join(filepath.Dir(forkd), "forkd-metrics"), "./cmd/forkd-metrics")
	addr, maddr := freeAddr(t), freeAddr(t)
	cfg := filepath.Join(t.TempDir(), "stats.toml")
	config := fmt.Sprintf(`[server]
name = "stats"
workers = 2
bind = ["tcp://%s"]
timeout = "0s"
graceful_timeout = "5s"
max_requests = 20

[worker]
command = "/usr/bin/python3"
args = ["-m", "uvicorn", "app:app", "--fd", "3", "--no-access-log"]
dir = %q
ready = "started"
ready_delay = "1s"

[metrics]
bind = "tcp://%s"
`, addr, filepath.Join(root, "examples/fastapi-scheduler"), maddr)
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(forkd, "--config", cfg, "--bus", "none")
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("forkd output:\n%s", log.String())
		}
	})

	c := &http.Client{Timeout: 5 * time.Second}
	waitFor(t, "the workers to serve", func() bool { return get(c, "http://"+addr+"/") == nil })
	// One keep-alive connection: one worker answers them all and reaches
	// max_requests (20).
	for i := 1; i < 30; i++ {
		if err := get(c, "http://"+addr+"/"); err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
	}
	c.CloseIdleConnections()
	var last map[string]float64
	waitFor(t, "30 requests in the histogram and a recycled worker", func() bool {
		last = scrapeMetrics(t, "http://"+maddr+"/metrics")
		return last["forkd_request_duration_seconds_count"] == 30 &&
			last[`forkd_worker_exits_total{reason="recycled"}`] >= 1
	})
	if last[`forkd_worker_starts_total{reason="recycle"}`] < 1 {
		t.Errorf("no worker started to replace a recycled one: %v", last)
	}
	if last["forkd_request_duration_seconds_sum"] <= 0 {
		t.Errorf("forkd_request_duration_seconds_sum = %v, want more than 0", last["forkd_request_duration_seconds_sum"])
	}
}

// freeAddr returns a 127.0.0.1 address with a port free now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// get asks url and reads the answer, an error unless it is 200.
func get(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// waitFor checks ok every 100ms until it holds, failing the test after
// 30s.
func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for !ok() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// scrapeMetrics returns the samples of a scrape by series.
func scrapeMetrics(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	samples := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			samples[line[:i]] = v
		}
	}
	return samples
}
