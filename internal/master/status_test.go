package master

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/forkd/forkd/internal/testkit"
	"github.com/forkd/forkd/metrics/status"
)

// tmux is a private tmux server (its own socket) running one command in a
// window of a fixed size.
type tmux struct {
	t      *testing.T
	socket string
}

// startTmux runs command (a shell command line) in a detached tmux
// session of 160×40 on a private server, killed when the test ends.
func startTmux(t *testing.T, command string) *tmux {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("no tmux (apt-get install -y tmux)")
	}
	tm := &tmux{t: t, socket: filepath.Join(t.TempDir(), "tmux.sock")}
	tm.run("new-session", "-d", "-x", "160", "-y", "40", command)
	t.Cleanup(func() { _ = exec.Command("tmux", "-S", tm.socket, "kill-server").Run() })
	return tm
}

func (tm *tmux) run(args ...string) string {
	tm.t.Helper()
	cmd := exec.Command("tmux", append([]string{"-S", tm.socket}, args...)...)
	cmd.Env = append(os.Environ(), "TERM=xterm")
	out, err := cmd.CombinedOutput()
	if err != nil {
		tm.t.Fatalf("tmux %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// screen returns what the pane shows now.
func (tm *tmux) screen() string { return tm.run("capture-pane", "-p") }

// waitScreen reads the pane every 100ms until ok accepts it, failing the
// test after testTimeout with the last screen.
func (tm *tmux) waitScreen(what string, ok func(string) bool) string {
	tm.t.Helper()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(testTimeout)
	for {
		s := tm.screen()
		if ok(s) {
			return s
		}
		select {
		case <-tick.C:
		case <-deadline:
			tm.t.Fatalf("the screen never showed %s; it shows:\n%s", what, s)
		}
	}
}

// workerLine matches a worker's line of forkctl status: slot, pid,
// generation, state, age, requests.
var workerLine = regexp.MustCompile(`(?m)^(\d+)\s+(\d+)\s+(\d+)\s+(starting|ready|busy|idle|stopping)\s+(\S+)\s+(\d+)\s`)

// idleServed reports whether screen shows n workers, every one idle, that
// served requests in all.
func idleServed(screen string, n, requests int) bool {
	lines := workerLine.FindAllStringSubmatch(screen, -1)
	served := 0
	for _, l := range lines {
		if l[4] != "idle" {
			return false
		}
		r, _ := strconv.Atoi(l[6])
		served += r
	}
	return len(lines) == n && served == requests
}

func TestMaster_StatusWatch(t *testing.T) {
	const inst = "watched"
	d := testkit.StartBus(t)
	c := dialBus(t, d.Address)
	c.subscribe()
	f := newForkd(t, setup{instance: inst, workers: 2, mode: "sdk", bus: d.Address})
	f.start()
	c.collect("WhenReady", testTimeout, is("WhenReady", nil))
	for range 4 {
		f.get(t)
	}

	exe := testkit.Executable(t)
	tm := startTmux(t, fmt.Sprintf("env %s=forkctl %s --bus %q status --watch %s", testkit.RoleEnv, exe, d.Address, inst))
	screen := tm.waitScreen("2 idle workers that served 4 requests", func(s string) bool {
		return idleServed(s, 2, 4)
	})
	for _, want := range []string{"Every 1s: forkctl status " + inst, "Instance:", "State:", "running",
		"Uptime:", "Reloads:", "LISTENER", "tcp://" + f.addr, "SLOT", "HEARTBEAT"} {
		if !strings.Contains(screen, want) {
			t.Errorf("the screen lacks %q:\n%s", want, screen)
		}
	}

	f.signal(syscall.SIGTTIN)
	screen = tm.waitScreen("3 idle workers", func(s string) bool { return idleServed(s, 3, 4) })
	if n := strings.Count(screen, "SLOT"); n != 1 {
		t.Errorf("the screen shows the table %d times, want once (redrawn in place):\n%s", n, screen)
	}
	if !strings.HasPrefix(screen, "Every 1s") {
		t.Errorf("the screen does not start with the header (not redrawn from the top):\n%s", screen)
	}

	var out strings.Builder
	cmd := exec.Command(exe, "--bus", d.Address, "status", "--json", inst)
	cmd.Env = append(os.Environ(), testkit.RoleEnv+"=forkctl")
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("forkctl status --json: %v", err)
	}
	var page status.Page
	if err := json.Unmarshal([]byte(out.String()), &page); err != nil {
		t.Fatalf("forkctl status --json: %v\n%s", err, out.String())
	}
	if page.Instance != inst || page.State != "running" || len(page.WorkerList) != 3 || len(page.Listeners) != 1 {
		t.Errorf("forkctl status --json: instance %q, state %q, %d workers, %d listeners; want %q, running, 3, 1\n%s",
			page.Instance, page.State, len(page.WorkerList), len(page.Listeners), inst, out.String())
	}
	var requests uint64
	for _, w := range page.WorkerList {
		requests += w.Requests
		if w.PID == 0 || w.RSS == 0 || w.Inflight < 0 && w.Requests > 0 {
			t.Errorf("worker %+v: want a pid, its RSS, and its in-flight count once it reported", w)
		}
	}
	if requests != 4 {
		t.Errorf("the workers served %d requests by --json, want 4", requests)
	}
}
