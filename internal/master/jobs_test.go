package master

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/forkd/forkd/internal/testkit"
	"golang.org/x/sys/unix"
)

// jobProbe is the variable naming the socket a test job reports to.
const jobProbe = "JOB_PROBE"

// runTestJob is a singleton or a schedule's run that reports to the
// unixgram socket $JOB_PROBE: "EVENT=start" when it starts (with
// FORKD_RUN_ID and FORKD_SCHEDULED_AT if set), "EVENT=stop" when TERM
// stops it. Modes:
//
//	wait   runs until TERM, then exits 0
//	crash  exits 1 at once
//	once   exits 0 at once
func runTestJob(mode string) int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	report := func(event string) {
		c, err := net.Dial("unixgram", os.Getenv(jobProbe))
		if err != nil {
			fmt.Fprintln(os.Stderr, "test job:", err)
			return
		}
		defer c.Close()
		fmt.Fprintf(c, "EVENT=%s\nRUN_ID=%s\nSCHEDULED_AT=%s\nSINGLETON=%s\nTAG=%s\nINSTANCE=%s\nTOKEN=%s", event,
			os.Getenv("FORKD_RUN_ID"), os.Getenv("FORKD_SCHEDULED_AT"), os.Getenv("FORKD_SINGLETON"), os.Getenv("JOB_TAG"),
			os.Getenv("FORKD_INSTANCE"), os.Getenv("FORKD_FENCING_TOKEN"))
	}
	report("start")
	switch mode {
	case "crash":
		return 1
	case "once":
		return 0
	case "notify":
		// Ready once the test opens the fifo $JOB_RELEASE for writing.
		f, err := os.Open(os.Getenv("JOB_RELEASE"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "test job:", err)
			return 1
		}
		f.Close()
		if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
			fmt.Fprintln(os.Stderr, "test job: notify:", err)
		}
		report("ready")
	}
	<-sigs
	report("stop")
	return 0
}

// jobTable is a [[singleton]] or [[schedule]] table running the test
// binary as a job in mode, reporting to probe; more is added to the table.
func jobTable(kind, name, mode string, probe *testkit.Notify, more string) string {
	exe, _ := os.Executable()
	return fmt.Sprintf("\n[[%s]]\nname = %q\ncommand = %q\n%s\n[%s.env]\n%s = %q\n%s = %q\n", kind, name, exe, more,
		kind, testkit.RoleEnv, "job "+mode, jobProbe, probe.Path)
}

// event waits for the next job report with EVENT=what and returns it.
func event(probe *testkit.Notify, what string) testkit.Note {
	n, _ := probe.Until("EVENT="+what, func(n testkit.Note) bool { return n.Has("EVENT=" + what) })
	return n
}

// TestSingleton_Reload: a reload that leaves the singleton's table as it
// was keeps its process; one that changes it stops the old process before
// the new one starts; one that does not load leaves it alone.
func TestSingleton_Reload(t *testing.T) {
	probe := testkit.ListenNotify(t)
	f := newForkd(t, setup{instance: "single", workers: 2})
	table := jobTable("singleton", "sched", "wait", probe, "")
	f.writeConfig("serve", table)
	f.start()
	first := event(probe, "start")

	f.signal(syscall.SIGHUP)
	f.askUntil("generation 2", func(m map[int]answer) bool { return genServing(m, 2, 2) })
	if notes := probe.Flush(); len(notes) > 0 {
		t.Fatalf("an unchanged singleton was touched by a reload: %q", texts(notes))
	}

	f.writeConfig("serve", table+"JOB_TAG = \"v2\"\n")
	f.signal(syscall.SIGHUP)
	stop := event(probe, "stop")
	if stop.PID != first.PID {
		t.Fatalf("stopped pid %d, want the first singleton %d", stop.PID, first.PID)
	}
	second := event(probe, "start")
	if second.PID == first.PID || !second.Has("TAG=v2") {
		t.Fatalf("after the changed reload: %q from pid %d, want a new process with TAG=v2", second.Text, second.PID)
	}
	f.askUntil("generation 3", func(m map[int]answer) bool { return genServing(m, 3, 2) })

	if err := os.WriteFile(f.cfgPath, []byte("[server]\nworkers = \"x\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f.signal(syscall.SIGHUP)
	f.signal(syscall.SIGTTIN) // queued behind the refused reload
	f.askUntil("3 workers", func(m map[int]answer) bool { return genServing(m, 3, 3) })
	if notes := probe.Flush(); len(notes) > 0 {
		t.Fatalf("a refused reload or TTIN touched the singleton: %q", texts(notes))
	}
	f.signal(syscall.SIGTERM)
	if got := event(probe, "stop"); got.PID != second.PID {
		t.Fatalf("stop reported by pid %d, want %d", got.PID, second.PID)
	}
	f.wait(testTimeout)
}

// TestSingleton_AddedByReload: an instance started without singletons or
// schedules gets one by a reload, started once the new generation serves,
// and stopped with the instance.
func TestSingleton_AddedByReload(t *testing.T) {
	probe := testkit.ListenNotify(t)
	f := newForkd(t, setup{instance: "singleadd", workers: 1})
	f.start()
	f.askUntil("a worker", func(m map[int]answer) bool { return len(m) == 1 })
	f.writeConfig("serve", jobTable("singleton", "late", "wait", probe, ""))
	f.signal(syscall.SIGHUP)
	started := event(probe, "start")
	f.signal(syscall.SIGTERM)
	if stop := event(probe, "stop"); stop.PID != started.PID {
		t.Fatalf("stop from %d, want %d", stop.PID, started.PID)
	}
	f.wait(testTimeout)
}

// TestSingleton_DiesWithMaster: a SIGKILLed master takes its singleton
// along, and the master started next starts one.
func TestSingleton_DiesWithMaster(t *testing.T) {
	probe := testkit.ListenNotify(t)
	f := newForkd(t, setup{instance: "singlekill", workers: 1})
	f.writeConfig("serve", jobTable("singleton", "sched", "wait", probe, `start = "before_workers"`))
	f.start()
	first := event(probe, "start")
	f.askUntil("a worker", func(m map[int]answer) bool { return len(m) == 1 })
	gone := testkit.Exited(t, int(first.PID))
	f.signal(syscall.SIGKILL)
	select {
	case <-gone:
	case <-time.After(testTimeout):
		t.Fatalf("the singleton %d outlived its SIGKILLed master", first.PID)
	}
	f.wait(testTimeout)
	f.start()
	second := event(probe, "start")
	if second.PID == first.PID {
		t.Fatal("the restarted master reported the old singleton")
	}
	f.askUntil("a worker", func(m map[int]answer) bool { return len(m) == 1 })
	if notes := probe.Flush(); len(notes) > 0 {
		t.Fatalf("more than one singleton started: %q", texts(notes))
	}
}

// TestSingleton_Upgrade: an in-place upgrade adopts the singleton (the
// same process, which the new master stops).
func TestSingleton_Upgrade(t *testing.T) {
	probe := testkit.ListenNotify(t)
	manager := testkit.ListenNotify(t)
	f := newForkd(t, setup{instance: "singleup", workers: 1, notify: manager.Path})
	f.writeConfig("serve", jobTable("singleton", "sched", "wait", probe, ""))
	f.start()
	first := event(probe, "start")
	manager.Wait("READY=1")
	f.signal(syscall.SIGUSR2)
	manager.Wait("READY=1") // the new master's
	f.askUntil("a worker", func(m map[int]answer) bool { return len(m) == 1 })
	f.signal(syscall.SIGTERM)
	stop, before := probe.Until("EVENT=stop", func(n testkit.Note) bool { return n.Has("EVENT=stop") })
	if stop.PID != first.PID || len(before) > 0 {
		t.Fatalf("stop from %d after %q; want the adopted %d and nothing before", stop.PID, texts(before), first.PID)
	}
	f.wait(testTimeout)
}

// TestSingleton_UpgradeChanged: a singleton whose table changed in the
// file before an upgrade is replaced by the new master as a reload would
// do it: the old process stops before the new one starts.
func TestSingleton_UpgradeChanged(t *testing.T) {
	probe := testkit.ListenNotify(t)
	manager := testkit.ListenNotify(t)
	f := newForkd(t, setup{instance: "singleupc", workers: 1, notify: manager.Path})
	table := jobTable("singleton", "sched", "wait", probe, "")
	f.writeConfig("serve", table)
	f.start()
	first := event(probe, "start")
	manager.Wait("READY=1")
	f.writeConfig("serve", table+"JOB_TAG = \"v2\"\n")
	f.signal(syscall.SIGUSR2)
	if stop := event(probe, "stop"); stop.PID != first.PID {
		t.Fatalf("stop from %d, want the old singleton %d", stop.PID, first.PID)
	}
	if second := event(probe, "start"); second.PID == first.PID || !second.Has("TAG=v2") {
		t.Fatalf("after the upgrade: %q from %d, want a new process with TAG=v2", second.Text, second.PID)
	}
}

// TestSingleton_CrashLoopBacksOff: a singleton that exits at once is
// restarted with a growing delay, and the workers serve meanwhile.
func TestSingleton_CrashLoopBacksOff(t *testing.T) {
	probe := testkit.ListenNotify(t)
	f := newForkd(t, setup{instance: "singlecrash", workers: 2})
	f.writeConfig("serve", jobTable("singleton", "crash", "crash", probe, ""))
	f.start()
	var starts []time.Time
	for range 5 {
		starts = append(starts, event(probe, "start").At)
	}
	// Each restart waits its backoff after the exit: 100ms, 200ms, 400ms,
	// 800ms, so the starts are at least that far apart.
	want := 100 * time.Millisecond
	for i := 1; i < len(starts); i++ {
		if gap := starts[i].Sub(starts[i-1]); gap < want {
			t.Errorf("restart %d came %v after the start before it, within its %v backoff", i, gap, want)
		}
		want *= 2
	}
	f.askUntil("2 workers", func(m map[int]answer) bool { return len(m) == 2 })
}

// TestSchedule_OncePerPeriod: a 1s schedule runs once per second whatever
// the number of workers, each run for the next due time of the grid, with
// its identity in its environment.
func TestSchedule_OncePerPeriod(t *testing.T) {
	probe := testkit.ListenNotify(t)
	f := newForkd(t, setup{instance: "sched", workers: 4})
	f.writeConfig("serve", jobTable("schedule", "tick", "once", probe, `every = "1s"`))
	f.start()
	var due []time.Time
	ids := map[string]bool{}
	for range 4 {
		n := event(probe, "start")
		at, err := time.Parse(time.RFC3339Nano, field(n, "SCHEDULED_AT"))
		if err != nil {
			t.Fatalf("FORKD_SCHEDULED_AT: %v", err)
		}
		id := field(n, "RUN_ID")
		if id == "" || ids[id] {
			t.Fatalf("run id %q: empty or seen before", id)
		}
		ids[id] = true
		due = append(due, at)
	}
	for i := 1; i < len(due); i++ {
		if d := due[i].Sub(due[i-1]); d != time.Second {
			t.Errorf("runs %d and %d are due %v apart, want 1s: %v", i-1, i, d, due)
		}
	}
	// A reload that keeps the table keeps the grid.
	f.signal(syscall.SIGHUP)
	f.askUntil("generation 2", func(m map[int]answer) bool { return genServing(m, 2, 4) })
	n := event(probe, "start")
	at, _ := time.Parse(time.RFC3339Nano, field(n, "SCHEDULED_AT"))
	if d := at.Sub(due[0]); d%time.Second != 0 || d <= 0 {
		t.Errorf("after the reload a run is due at %v, off the grid through %v", at, due[0])
	}
}

// TestSchedule_Timeout: a run that outlives its timeout gets TERM and is
// reported as timed out.
func TestSchedule_Timeout(t *testing.T) {
	probe := testkit.ListenNotify(t)
	f := newForkd(t, setup{instance: "schedto", workers: 1})
	f.writeConfig("serve", jobTable("schedule", "slow", "wait", probe, "every = \"1s\"\ntimeout = \"300ms\""))
	f.start()
	start := event(probe, "start")
	stop := event(probe, "stop")
	if stop.PID != start.PID {
		t.Fatalf("stop from %d, want %d", stop.PID, start.PID)
	}
	// The timeout runs from the run's start, which is at or after the
	// time it was due.
	due, err := time.Parse(time.RFC3339Nano, field(start, "SCHEDULED_AT"))
	if err != nil {
		t.Fatalf("the run's FORKD_SCHEDULED_AT: %v", err)
	}
	if took := stop.At.Sub(due); took < 300*time.Millisecond {
		t.Errorf("stopped %v after it was due, before its 300ms timeout", took)
	}
	f.signal(syscall.SIGTERM)
	f.wait(testTimeout)
	if log := f.log(); !strings.Contains(log, "result=timeout") {
		t.Errorf("the run was not reported as timed out:\n%s", log)
	}
}

// TestSingleton_BeforeWorkersNotify: a singleton with start =
// "before_workers" and ready = "notify" holds the workers back until it
// sends READY=1 on the NOTIFY_SOCKET forkd gave it.
func TestSingleton_BeforeWorkersNotify(t *testing.T) {
	probe := testkit.ListenNotify(t)
	release := filepath.Join(t.TempDir(), "release")
	if err := unix.Mkfifo(release, 0o600); err != nil {
		t.Fatal(err)
	}
	f := newForkd(t, setup{instance: "singlenotify", workers: 2})
	more := "start = \"before_workers\"\nready = \"notify\""
	f.writeConfig("serve", jobTable("singleton", "gate", "notify", probe, more)+fmt.Sprintf("JOB_RELEASE = %q\n", release))
	f.start()
	event(probe, "start")
	if log := f.log(); strings.Contains(log, "pre_fork") {
		t.Fatalf("a worker was forked before the singleton was ready:\n%s", log)
	}
	w, err := os.OpenFile(release, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	event(probe, "ready")
	f.askUntil("2 workers", func(m map[int]answer) bool { return len(m) == 2 })
}

// TestSchedule_UpgradeHandsOverRun: a run in flight at an in-place upgrade
// goes on, and the new master reports it when it ends.
func TestSchedule_UpgradeHandsOverRun(t *testing.T) {
	probe := testkit.ListenNotify(t)
	manager := testkit.ListenNotify(t)
	f := newForkd(t, setup{instance: "schedup", workers: 1, notify: manager.Path})
	f.writeConfig("serve", jobTable("schedule", "long", "wait", probe, `every = "1s"`))
	f.start()
	manager.Wait("READY=1")
	run := event(probe, "start")
	f.signal(syscall.SIGUSR2)
	manager.Wait("READY=1") // the new master's
	f.signal(syscall.SIGTERM)
	if stop := event(probe, "stop"); stop.PID != run.PID {
		t.Fatalf("stop from %d, want the run in flight %d", stop.PID, run.PID)
	}
	f.wait(testTimeout)
	id := field(run, "RUN_ID")
	if n := strings.Count(f.log(), "schedule run finished\" schedule=long run_id="+id); n != 1 {
		t.Errorf("the handed-over run %s was reported finished %d times, want once:\n%s", id, n, f.log())
	}
}

// field returns a job report's value of key.
func field(n testkit.Note, key string) string {
	v, _ := n.Field(key)
	return v
}

// genServing reports whether n workers of generation gen answered.
func genServing(m map[int]answer, gen uint64, n int) bool {
	for _, a := range m {
		if a.gen == gen {
			n--
		}
	}
	return n <= 0
}

// texts returns the notes' texts.
func texts(notes []testkit.Note) []string {
	var out []string
	for _, n := range notes {
		out = append(out, strings.ReplaceAll(n.Text, "\n", " "))
	}
	return out
}
