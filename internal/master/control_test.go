package master

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/forkd/forkd/bus"
	"github.com/forkd/forkd/internal/forkctl"
	"github.com/forkd/forkd/internal/testkit"
)

// runForkctl runs forkctl against the bus at address and returns its output.
func runForkctl(t *testing.T, address string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var out, errOut bytes.Buffer
	err := forkctl.Main(ctx, append([]string{"--bus", address}, args...), &out, &errOut)
	if ctx.Err() != nil {
		t.Fatalf("forkctl %q did not return within %v", args, testTimeout)
	}
	return out.String(), err
}

// listed is one row of forkctl workers.
type listed struct {
	answer
	state string
}

// forkctlWorkers runs forkctl workers and parses its table.
func forkctlWorkers(t *testing.T, address string) []listed {
	t.Helper()
	out, err := runForkctl(t, address, "workers")
	if err != nil {
		t.Fatalf("forkctl workers: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "ID") {
		t.Fatalf("forkctl workers printed no header:\n%s", out)
	}
	var rows []listed
	for _, line := range lines[1:] {
		f := strings.Fields(line)
		if len(f) < 4 {
			t.Fatalf("forkctl workers row %q", line)
		}
		id, err1 := strconv.Atoi(f[0])
		pid, err2 := strconv.Atoi(f[1])
		gen, err3 := strconv.ParseUint(f[2], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			t.Fatalf("forkctl workers row %q", line)
		}
		rows = append(rows, listed{answer{pid: pid, gen: gen, id: id}, f[3]})
	}
	return rows
}

// readyWorkers returns the ready rows of generation gen, by pid.
func readyWorkers(rows []listed, gen uint64) map[int]answer {
	m := map[int]answer{}
	for _, r := range rows {
		if r.gen == gen && r.state == "ready" {
			m[r.pid] = r.answer
		}
	}
	return m
}

// waitOnly waits until forkctl workers lists workers of generation gen
// only, and returns the rows: it lists them once, then waits for the
// WorkerExit signal of every worker of another generation listed — a
// worker leaves the list as its WorkerExit is sent — and lists them again.
// It fails the test after testTimeout.
func waitOnly(t *testing.T, c *busClient, address string, gen uint64) []listed {
	t.Helper()
	rows := forkctlWorkers(t, address)
	others := map[uint32]bool{}
	for _, r := range rows {
		if r.gen != gen {
			others[uint32(r.pid)] = true
		}
	}
	if len(others) == 0 {
		return rows
	}
	c.collect(fmt.Sprintf("the WorkerExit of every worker not of generation %d", gen), testTimeout, func(s *dbus.Signal) bool {
		if member(s) == "WorkerExit" && len(s.Body) > 3 {
			pid, _ := s.Body[3].(uint32)
			delete(others, pid)
		}
		return len(others) == 0
	})
	return forkctlWorkers(t, address)
}

// startOnBus starts forkd on a fresh bus and returns once it serves and
// its status is on the bus.
func startOnBus(t *testing.T, inst string, workers int) (*testkit.Bus, *busClient, *forkd) {
	t.Helper()
	d := testkit.StartBus(t)
	c := dialBus(t, d.Address)
	c.subscribe()
	f := startForkd(t, setup{instance: inst, workers: workers, bus: d.Address})
	c.collect("WhenReady", testTimeout, is("WhenReady", nil))
	c.waitOwned(bus.Name(inst), testTimeout)
	waitProperties(t, c, inst, map[string]any{"Instance": inst, "State": "running", "Generation": uint64(1),
		"Workers": uint32(workers), "ReadyWorkers": uint32(workers), "DroppedSignals": uint64(0), "Cluster": ""})
	return d, c, f
}

// TestMaster_Forkctl drives a running forkd with forkctl: status,
// workers, scale, reload, and a reload of an invalid config.
func TestMaster_Forkctl(t *testing.T) {
	const inst = "fctl"
	d, c, f := startOnBus(t, inst, 2)

	out, err := runForkctl(t, d.Address, "status")
	if err != nil {
		t.Fatalf("forkctl status: %v", err)
	}
	for _, want := range []string{`Instance:\s+fctl\s+\(io\.github\.forkd\.fctl\)\n`, `State:\s+running\n`,
		`Generation:\s+1\n`, `Workers:\s+2/2 ready\n`} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("forkctl status lacks %s:\n%s", want, out)
		}
	}

	// No [[singleton]] or [[schedule]]: no jobs, and nothing to run.
	if out, err := runForkctl(t, d.Address, "jobs"); err != nil || strings.Count(out, "\n") != 1 {
		t.Errorf("forkctl jobs: %v\n%s; want the header only", err, out)
	}
	if out, err := runForkctl(t, d.Address, "run", "cleanup"); err == nil ||
		!strings.Contains(err.Error(), `no singleton or schedule named "cleanup"`) {
		t.Errorf("forkctl run cleanup: %q, %v; want no such job", out, err)
	}

	rows := forkctlWorkers(t, d.Address)
	gen1 := readyWorkers(rows, 1)
	if len(rows) != 2 || len(gen1) != 2 {
		t.Fatalf("forkctl workers: %v; want 2 ready workers of generation 1", rows)
	}
	f.askAll(gen1) // the pids listed are the workers that answer

	// scale 3: a third worker, id 2.
	if out, err := runForkctl(t, d.Address, "scale", "3"); err != nil || out != "fctl: workers set to 3\n" {
		t.Fatalf("forkctl scale 3: %q, %v", out, err)
	}
	c.collect("worker 2's PostWorkerInit", testTimeout, is("PostWorkerInit", arg(2, int32(2))))
	rows = forkctlWorkers(t, d.Address)
	gen1 = readyWorkers(rows, 1)
	if len(rows) != 3 || len(gen1) != 3 {
		t.Fatalf("after scale 3, forkctl workers: %v; want 3 ready workers of generation 1", rows)
	}
	f.askAll(gen1)

	// reload returns once generation 2 serves.
	out, err = runForkctl(t, d.Address, "reload")
	if err != nil {
		t.Fatalf("forkctl reload: %v", err)
	}
	if want := "fctl: reloaded, generation 2 serving\n"; out != want {
		t.Errorf("forkctl reload printed %q, want %q", out, want)
	}
	rows = forkctlWorkers(t, d.Address)
	gen2 := readyWorkers(rows, 2)
	if len(gen2) != 3 {
		t.Fatalf("right after reload returned, forkctl workers: %v; want 3 ready workers of generation 2", rows)
	}
	for pid := range gen2 {
		if _, old := gen1[pid]; old {
			t.Fatalf("pid %d is in both generations: %v", pid, rows)
		}
	}
	out, err = runForkctl(t, d.Address, "status")
	if err != nil || !regexp.MustCompile(`Generation:\s+2\n`).MatchString(out) {
		t.Errorf("forkctl status after reload: %v\n%s; want generation 2", err, out)
	}
	// Once generation 1 is gone only generation 2 answers.
	gone := map[uint32]bool{}
	c.collect("generation 1's exits", testTimeout, func(s *dbus.Signal) bool {
		if member(s) == "WorkerExit" && len(s.Body) > 3 {
			pid, _ := s.Body[3].(uint32)
			gone[pid] = true
		}
		for pid := range gen1 {
			if !gone[uint32(pid)] {
				return false
			}
		}
		return true
	})
	f.askAll(gen2)
	f.checkOnly(20, gen2)

	// An invalid config is rejected, naming file:line:col; generation 2
	// keeps serving.
	f.writeConfig("serve", "bogus_key = 1\n")
	out, err = runForkctl(t, d.Address, "reload")
	where := fmt.Sprintf("%s:%d:1: server.bogus_key", f.cfgPath, f.cfgLines+1)
	if err == nil || !strings.Contains(err.Error(), where) {
		t.Fatalf("forkctl reload of an invalid config: %q, %v; want an error naming %s", out, err, where)
	}
	if !strings.Contains(err.Error(), "generation 2 still serving") {
		t.Errorf("reload error %q does not say generation 2 still serves", err)
	}
	rows = forkctlWorkers(t, d.Address)
	if now := readyWorkers(rows, 2); len(rows) != 3 || !reflect.DeepEqual(now, gen2) {
		t.Errorf("after the rejected reload, forkctl workers: %v; want the same generation 2: %v", rows, gen2)
	}
	out, err = runForkctl(t, d.Address, "status")
	if err != nil || !regexp.MustCompile(`State:\s+running\n`).MatchString(out) ||
		!regexp.MustCompile(`Generation:\s+2\n`).MatchString(out) {
		t.Errorf("forkctl status after the rejected reload: %v\n%s; want running, generation 2", err, out)
	}
	f.askAll(gen2)
	f.checkOnly(20, gen2)
}

// TestMaster_ReloadCrashingGeneration reloads into workers that exit at
// once: the reload fails and the old workers keep serving.
func TestMaster_ReloadCrashingGeneration(t *testing.T) {
	const inst = "crashy"
	d, c, f := startOnBus(t, inst, 2)
	gen1 := readyWorkers(forkctlWorkers(t, d.Address), 1)
	if len(gen1) != 2 {
		t.Fatalf("want 2 ready workers of generation 1, got %v", gen1)
	}
	f.askAll(gen1)

	f.writeConfig("exit1", "")
	out, err := runForkctl(t, d.Address, "reload")
	if err == nil {
		t.Fatalf("forkctl reload into crashing workers succeeded: %q", out)
	}
	for _, want := range []string{"generation 1 still serving", "exited with status 1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("reload error %q lacks %q", err, want)
		}
	}
	rows := waitOnly(t, c, d.Address, 1)
	if now := readyWorkers(rows, 1); len(rows) != 2 || !reflect.DeepEqual(now, gen1) {
		t.Fatalf("after the failed reload, workers %v; want the old ones %v", rows, gen1)
	}
	waitProperties(t, c, inst, map[string]any{"Instance": inst, "State": "running", "Generation": uint64(1),
		"Workers": uint32(2), "ReadyWorkers": uint32(2), "DroppedSignals": uint64(0), "Cluster": ""})
	f.askAll(gen1)
	f.checkOnly(20, gen1)
}

// TestMaster_BusLoss kills the bus under a running forkd: the arbiter goes
// on (a killed worker is replaced, TTIN works), and once the bus is back
// forkd owns its name again and its signals flow.
func TestMaster_BusLoss(t *testing.T) {
	const inst = "phoenix"
	d := testkit.StartBus(t)
	c := dialBus(t, d.Address)
	c.subscribe()
	f := startForkd(t, setup{instance: inst, workers: 2, bus: d.Address})
	pids := checkSpawns(t, "start", c.collect("WhenReady", testTimeout, is("WhenReady", nil)), inst, 1, 0, 1)
	f.askAll(answers(1, pids))

	d.Stop()
	select {
	case <-c.conn.Context().Done():
	case <-time.After(testTimeout):
		t.Fatal("the client's connection survived the bus")
	}

	// A killed worker is replaced while the bus is down.
	if err := syscall.Kill(int(pids[0]), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	f.askUntil("worker 0's replacement", func(seen map[int]answer) bool {
		for pid, a := range seen {
			if a.id == 0 && a.gen == 1 && pid != int(pids[0]) {
				return true
			}
		}
		return false
	})
	// TTIN too.
	f.signal(syscall.SIGTTIN)
	f.askUntil("worker 2", func(seen map[int]answer) bool {
		for _, a := range seen {
			if a.id == 2 && a.gen == 1 {
				return true
			}
		}
		return false
	})

	d.Restart()
	c2 := dialBus(t, d.Address)
	c2.subscribe()
	// forkd retries with backoff (at most 10s between attempts).
	c2.waitOwned(bus.Name(inst), 30*time.Second)
	f.signal(syscall.SIGTTOU)
	c2.collect("NworkersChanged 3 → 2", testTimeout, is("NworkersChanged", func(b []any) bool {
		return arg(0, inst)(b) && arg(1, uint64(1))(b) && arg(2, uint32(3))(b) && arg(3, uint32(2))(b)
	}))
	c2.collect("worker 2's WorkerExit", testTimeout, is("WorkerExit", func(b []any) bool {
		return arg(2, int32(2))(b) && arg(6, "scaled down")(b)
	}))
	props := c2.properties(inst)
	delete(props, "DroppedSignals") // a signal being sent as the bus died counts
	if want := map[string]any{"Instance": inst, "State": "running", "Generation": uint64(1),
		"Workers": uint32(2), "ReadyWorkers": uint32(2), "Cluster": ""}; !reflect.DeepEqual(props, want) {
		t.Errorf("properties on the new bus %v, want %v", props, want)
	}
}
