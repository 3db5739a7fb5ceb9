package forkctl

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/forkd/forkd/metrics/status"
	"github.com/forkd/forkd/workers"
)

// detailedController is a testController that serves Details.
type detailedController struct {
	*testController
	page status.Page
}

func (c *detailedController) Details(context.Context) (json.RawMessage, error) {
	return json.Marshal(c.page)
}

func TestStatus_Details(t *testing.T) {
	addr := startDaemon(t)
	p50, p99 := 0.0012, 0.0098
	now := time.Now()
	ctl := &detailedController{
		testController: &testController{status: workers.Status{State: "running", Generation: 2, Workers: 2, ReadyWorkers: 2}},
		page: status.Page{Instance: "web", State: "running", Generation: 2, Workers: 2, ReadyWorkers: 2,
			Started: now.Add(-2 * time.Hour), Uptime: 7200, Reloads: 1,
			LastReload: &status.Reload{Result: "ok", At: now.Add(-41 * time.Minute)},
			Listeners:  []status.Listener{{Name: "web", Address: "tcp://127.0.0.1:8000", Queue: 3, Backlog: 4096}},
			WorkerList: []status.Worker{
				{Slot: 0, PID: 4242, Generation: 2, State: "busy", Age: 2460, Requests: 18244, Inflight: 2,
					P50: &p50, P99: &p99, RSS: 25 << 20, CPU: 12.4, HeartbeatAge: 2.1},
				{Slot: 1, PID: 4243, Generation: 2, State: "starting", Age: 0.5, Inflight: -1, HeartbeatAge: -1},
			}},
	}
	startBus(t, addr, "web", ctl)

	stdout, _, err := forkctl(t, "--bus", addr, "status")
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	for _, want := range []string{
		`Uptime:\s+2h0m\s+\(since `,
		`Reloads:\s+1, last ok 41m0s ago\n`,
		`LISTENER\s+NAME\s+QUEUE\s+BACKLOG\n`,
		`tcp://127\.0\.0\.1:8000\s+web\s+3\s+4096\n`,
		`SLOT\s+PID\s+GEN\s+STATE\s+AGE\s+REQUESTS\s+P50\s+P99\s+RSS\s+CPU\s+HEARTBEAT\n`,
		`0\s+4242\s+2\s+busy\s+41m0s\s+18244\s+1\.2ms\s+9\.8ms\s+25\.0MiB\s+12\.40s\s+2\.1s ago\n`,
		`1\s+4243\s+2\s+starting\s+500ms\s+0\s+-\s+-\s+-\s+0\.00s\s+-\n`,
	} {
		if !regexp.MustCompile(want).MatchString(stdout) {
			t.Errorf("status output lacks %s:\n%s", want, stdout)
		}
	}

	stdout, _, err = forkctl(t, "--bus", addr, "status", "--json", "web")
	if err != nil {
		t.Fatalf("status --json: %v", err)
	}
	var page status.Page
	if err := json.Unmarshal([]byte(stdout), &page); err != nil {
		t.Fatalf("status --json: %v\n%s", err, stdout)
	}
	if page.Instance != "web" || len(page.WorkerList) != 2 || *page.WorkerList[0].P99 != p99 {
		t.Errorf("status --json gave %+v", page)
	}
	if !strings.Contains(stdout, `"p50_seconds": null`) {
		t.Errorf("a worker without requests has no null p50:\n%s", stdout)
	}
}

// TestStatus_NoDetails: a master without the Details method still gets
// the short status; --json says why it cannot.
func TestStatus_NoDetails(t *testing.T) {
	addr := startDaemon(t)
	startBus(t, addr, "old", &testController{status: workers.Status{State: "running", Generation: 1, Workers: 1, ReadyWorkers: 1}})
	stdout, _, err := forkctl(t, "--bus", addr, "status")
	if err != nil || !strings.Contains(stdout, "Workers:") || strings.Contains(stdout, "SLOT") {
		t.Errorf("status of a master without Details: %v\n%s", err, stdout)
	}
	if _, _, err := forkctl(t, "--bus", addr, "status", "--json"); err == nil || !strings.Contains(err.Error(), "no Details method") {
		t.Errorf("status --json of a master without Details: %v", err)
	}
}
