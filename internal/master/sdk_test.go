package master

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/forkd/forkd/internal/testkit"
)

// get asks forkd's port over HTTP and returns the answering worker's pid.
func (f *forkd) get(t *testing.T) int {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + f.addr + "/")
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var pid int
	if _, err := fmt.Sscanf(string(b), "pid=%d", &pid); err != nil {
		t.Fatalf("GET answered %d %q", resp.StatusCode, b)
	}
	return pid
}

// TestMaster_SDKRequestStats runs workers written with the Go worker SDK:
// their aggregated request stats reach D-Bus as RequestStats signals
// (never one message per request), and max_requests recycles them.
func TestMaster_SDKRequestStats(t *testing.T) {
	const inst = "sdk"
	d := testkit.StartBus(t)
	c := dialBus(t, d.Address)
	c.subscribe()
	f := newForkd(t, setup{instance: inst, workers: 1, mode: "sdk", bus: d.Address})
	f.writeConfig("sdk", "max_requests = 8\n")
	f.start()
	ready := c.collect("WhenReady", testTimeout, is("WhenReady", nil))
	var first uint32
	for _, s := range ready {
		if member(s) == "PostWorkerInit" {
			first = s.Body[3].(uint32)
		}
	}

	// 5 requests: below max_requests, one worker answers them all.
	for range 5 {
		if pid := f.get(t); uint32(pid) != first {
			t.Fatalf("request answered by %d, want the only worker %d", pid, first)
		}
	}
	var total uint64
	got := c.collect("RequestStats for 5 requests", testTimeout, func(s *dbus.Signal) bool {
		if member(s) != "RequestStats" {
			return false
		}
		if s.Body[0] != inst || s.Body[3].(uint32) != first {
			t.Errorf("RequestStats %v: want instance %q, pid %d", s.Body, inst, first)
		}
		total += s.Body[4].(uint64)
		bounds, counts := s.Body[5].([]uint64), s.Body[6].([]uint64)
		if len(counts) != len(bounds)+1 {
			t.Errorf("RequestStats %v: want one more count than bounds", s.Body)
		}
		return total >= 5
	})
	n := 0
	for _, s := range got {
		if member(s) == "RequestStats" {
			n++
		}
	}
	if total != 5 || n >= 5 {
		t.Errorf("%d RequestStats signals carried %d requests; want 5 requests aggregated into fewer signals", n, total)
	}

	// 3 more reach max_requests: a successor takes over, the old worker
	// exits cleanly only after the successor is ready.
	for range 3 {
		f.get(t)
	}
	seq := c.collect("the recycled worker's exit", testTimeout, is("ChildExit", nil))
	var successorReady bool
	for _, s := range seq {
		if member(s) == "PostWorkerInit" && s.Body[3].(uint32) != first {
			successorReady = true
		}
		if member(s) == "ChildExit" {
			if s.Body[3].(uint32) != first || s.Body[4].(int32) != 0 || !strings.Contains(s.Body[6].(string), "max_requests") {
				t.Errorf("ChildExit %v: want the first worker %d exiting 0, recycled for max_requests", s.Body, first)
			}
		}
	}
	if !successorReady {
		t.Errorf("the old worker exited before its successor was ready:\n%s", dump(seq))
	}
	if pid := f.get(t); uint32(pid) == first {
		t.Errorf("the recycled worker %d still answers", pid)
	}
}
