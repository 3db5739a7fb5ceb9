package bench

import (
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/forkd/forkd/bench/benchworker"
)

func TestSample_Quantile(t *testing.T) {
	s := Sample{5, 1, 4, 2, 3, 10, 9, 8, 7, 6}
	for _, c := range []struct {
		q    float64
		want float64
	}{{0, 1}, {0.5, 5}, {0.9, 9}, {1, 10}} {
		if got := s.Quantile(c.q); got != c.want {
			t.Errorf("Quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if s[0] != 5 {
		t.Errorf("Quantile sorted the sample in place: %v", s)
	}
	if !math.IsNaN(Sample(nil).Median()) {
		t.Error("Median of an empty sample is not NaN")
	}
	if got := Durations([]time.Duration{1500 * time.Microsecond}); got[0] != 1.5 {
		t.Errorf("Durations(1.5ms) = %v, want [1.5]", got)
	}
}

func TestParseEvent(t *testing.T) {
	ev, ok := ParseEvent("ready 42 1700000000123456789")
	if !ok || ev.Kind != benchworker.KindReady || ev.PID != 42 || ev.At.UnixNano() != 1700000000123456789 {
		t.Errorf("ParseEvent = %+v, %v", ev, ok)
	}
	for _, bad := range []string{"READY=1", "ready 42", "boot 42 1", "ready x 1", "ready 0 1", "ready 1 2 3"} {
		if _, ok := ParseEvent(bad); ok {
			t.Errorf("ParseEvent(%q) accepted it", bad)
		}
	}
}

func TestInbox_Wait(t *testing.T) {
	in, err := ListenInbox(filepath.Join(t.TempDir(), "in.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	c, err := net.Dial("unixgram", in.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sent := time.Now()
	fmt.Fprintf(c, "start %d %d", os.Getpid(), sent.UnixNano())
	fmt.Fprint(c, "STATUS=booting\nREADY=1")
	msgs, err := in.Wait(5*time.Second, "READY=1", func(m []Message) bool {
		_, ok := FirstReady(m)
		return ok
	})
	if err != nil {
		t.Fatal(err)
	}
	at, _ := FirstReady(msgs)
	if at.Before(sent) || at != msgs[1].At {
		t.Errorf("READY=1 at %v: not the second message's arrival (sent %v)", at, sent)
	}
	evs := in.Events()
	if len(evs) != 1 || evs[0].Kind != benchworker.KindStart || evs[0].PID != os.Getpid() || !evs[0].At.Equal(sent.Round(0)) {
		t.Errorf("Events() = %+v", evs)
	}
	if _, err := in.Wait(10*time.Millisecond, "nothing", func([]Message) bool { return false }); !errors.Is(err, ErrTimeout) {
		t.Errorf("Wait for what never comes = %v, want ErrTimeout", err)
	}
}

func TestContextSwitches(t *testing.T) {
	before, err := ContextSwitches(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Each round trip through a pipe to another goroutine blocks this one.
	ch := make(chan int)
	go func() {
		for v := range ch {
			ch <- v
		}
	}()
	for i := range 200 {
		ch <- i
		<-ch
		<-time.After(50 * time.Microsecond)
	}
	close(ch)
	after, err := ContextSwitches(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after <= before {
		t.Errorf("context switches went from %d to %d across 200 timer sleeps", before, after)
	}
	if _, err := ContextSwitches(1 << 30); err == nil {
		t.Error("ContextSwitches of a pid that cannot exist succeeded")
	}
}

func TestMemoryOf(t *testing.T) {
	m, err := MemoryOf(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS < 1<<20 || m.PSS == 0 || m.PSS > m.RSS+(64<<10) {
		t.Errorf("MemoryOf(self) = %+v: want RSS ≥ 1 MiB and 0 < Pss ≤ RSS", m)
	}
	if avail, err := MemAvailable(); err != nil || avail == 0 {
		t.Errorf("MemAvailable() = %d, %v", avail, err)
	}
}

func TestFreePort(t *testing.T) {
	p, err := FreePort(20000, 29999)
	if err != nil {
		t.Fatal(err)
	}
	if p < 20000 || p > 29999 {
		t.Fatalf("FreePort = %d, outside 20000…29999", p)
	}
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
	if err != nil {
		t.Fatalf("port %d is not free: %v", p, err)
	}
	defer l.Close()
	if _, err := FreePort(p, p); !errors.Is(err, ErrNoPort) {
		t.Errorf("FreePort of a taken port = %v, want ErrNoPort", err)
	}
}

// TestProcess_Stop starts a shell that leaves a grandchild ignoring TERM
// behind and checks that Stop kills both and says so.
func TestProcess_Stop(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("needs sh:", err)
	}
	p, err := Start([]string{sh, "-c", "trap '' TERM; sleep 30 & echo started; wait"}, os.Environ(), "")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	var kids []ProcID
	for len(kids) == 0 && time.Now().Before(deadline) {
		if strings.Contains(p.Output(), "started") {
			kids = Descendants(p.PID())
		} else {
			select {
			case <-p.Exited():
				t.Fatalf("shell exited: %s", p.Output())
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	if len(kids) != 1 || !kids[0].Alive() {
		t.Fatalf("Descendants = %+v, want the one sleep", kids)
	}
	err = p.Stop(200 * time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("Stop = %v, want an error saying what it had to kill", err)
	}
	if p.Err() == nil {
		t.Error("Err() = nil after Stop")
	}
	if kids[0].Alive() {
		// SIGKILL is sent; give the kernel a bounded moment to reap.
		dl := time.After(5 * time.Second)
		for kids[0].Alive() {
			select {
			case <-dl:
				t.Fatalf("sleep %d survived Stop", kids[0].PID)
			case <-time.After(time.Millisecond):
			}
		}
	}
	if again := p.Stop(time.Second); again == nil || again.Error() != err.Error() {
		t.Errorf("second Stop = %v, want the first one's result", again)
	}
}

func TestReport_Table(t *testing.T) {
	var r Report
	r.Add(Row{Scenario: "s", Figure: "f", Unit: "ms", Goal: Goal{Text: "≤ 2 ms", Limit: 2}, Forkd: 1.5, Gunicorn: 3})
	r.Add(Row{Scenario: "s", Figure: "g", Unit: "MB", Goal: Goal{Text: "≤ 12 MB", Limit: 12}, Forkd: 13, Gunicorn: math.NaN()})
	r.Add(Row{Scenario: "s", Figure: "h", Unit: "/s", Forkd: 0.1, Gunicorn: 1})
	r.Note("a note")
	got := r.Table()
	for _, want := range []string{
		"| s | f | ≤ 2 ms | 1.50 ms | 3.00 ms | 0.5× | pass |",
		"| s | g | ≤ 12 MB | 13.0 MB | — | — | MISS |",
		"| s | h | — | 0.100/s | 1.00/s | 0.1× | — |",
		"- a note",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
}

// TestBenchWorker boots the bench worker (bench/cmd/bench-worker) alone
// and checks its probes, its READY=1, its answer and /hang.
func TestBenchWorker(t *testing.T) {
	m, err := StartAlone(benchWorker(t), "WATCHDOG_USEC=100000")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	// A hung worker ignores TERM: this Stop, run before Close's, kills it.
	defer m.Stop(100 * time.Millisecond)
	if _, err := m.WaitReady(1, 10*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, m.Output())
	}
	// Two heartbeats 50 ms apart, after READY=1.
	if _, err := m.Notify.Wait(5*time.Second, "READY=1 and 2 heartbeats", func(ms []Message) bool {
		return len(ms) >= 3 && ms[0].Data == "READY=1" && ms[2].Data == "WATCHDOG=1"
	}); err != nil {
		t.Fatal(err)
	}
	body, err := m.Get("/")
	if want := fmt.Sprintf("ok %d\n", m.PID()); err != nil || body != want {
		t.Fatalf("GET / = %q, %v; want %q", body, err, want)
	}
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", m.Port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
	evs, err := m.Probe.WaitEvents(5*time.Second, "hang", func(evs []Event) bool {
		return len(evs) > 0 && evs[len(evs)-1].Kind == benchworker.KindHang
	})
	if err != nil {
		t.Fatal(err)
	}
	if evs[0].Kind != benchworker.KindStart || evs[1].Kind != benchworker.KindReady || !evs[0].At.Before(evs[1].At) {
		t.Errorf("probe events %+v: want start, ready, hang in order", evs)
	}
	// Hung: no heartbeat for three intervals after the hang.
	hangAt := len(m.Notify.Messages())
	<-time.After(150 * time.Millisecond) // the absence of heartbeats over a span is what is tested
	for _, msg := range m.Notify.Messages()[hangAt:] {
		if msg.At.After(evs[len(evs)-1].At.Add(5 * time.Millisecond)) {
			t.Errorf("heartbeat %q at %v, after the hang at %v", msg.Data, msg.At, evs[len(evs)-1].At)
		}
	}
	if m.Err() != nil {
		t.Fatalf("hung worker exited: %v", m.Err())
	}
}

// TestStartGunicorn runs Gunicorn with the bench's config and app and
// checks that both probes come from every worker and that it serves.
func TestStartGunicorn(t *testing.T) {
	g, err := exec.LookPath("gunicorn")
	if err != nil {
		t.Skip("gunicorn is not installed (apt-get install gunicorn)")
	}
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	m, err := StartGunicorn(g, dir, Spec{Workers: 2, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
	}()
	evs, err := m.WaitReady(2, 30*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, m.Output())
	}
	starts := 0
	for _, ev := range evs {
		if ev.Kind == benchworker.KindStart {
			starts++
			if at, ok := ReadyPIDs(evs)[ev.PID]; !ok || at.Before(ev.At) {
				t.Errorf("worker %d: start at %v, ready at %v (ok %v)", ev.PID, ev.At, at, ok)
			}
		}
	}
	if starts != 2 {
		t.Errorf("%d start probes, want 2: %+v", starts, evs)
	}
	body, err := m.Get("/")
	if err != nil || !strings.HasPrefix(body, "ok ") {
		t.Errorf("GET / = %q, %v", body, err)
	}
	if _, err := m.Notify.Wait(5*time.Second, "READY=1", func(ms []Message) bool {
		_, ok := FirstReady(ms)
		return ok
	}); err != nil {
		t.Errorf("Gunicorn sent no READY=1: %v", err)
	}
}

func TestProcWatch_ForkExecExit(t *testing.T) {
	w, err := WatchProcs()
	if err != nil {
		t.Skipf("no proc connector here (run as root to test it): %v", err)
	}
	defer w.Close()
	before := Monotonic()
	cmd := exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	evs, err := w.Wait(5*time.Second, "fork, exec and exit of /bin/true", func(evs []ProcEvent) bool {
		n := 0
		for _, e := range evs {
			if e.PID == pid {
				n++
			}
		}
		return n >= 3
	})
	if err != nil {
		t.Fatal(err)
	}
	after := Monotonic()
	var kinds []ProcKind
	last := before
	for _, e := range evs {
		if e.PID != pid || e.Kind == ProcThread {
			continue
		}
		if e.Kind == ProcExit && len(kinds) > 0 && kinds[len(kinds)-1] == ProcExit {
			continue // another thread of it
		}
		kinds = append(kinds, e.Kind)
		if e.At < last || e.At > after {
			t.Errorf("event %+v at %v, outside [%v, %v] or before the one ahead of it", e, e.At, last, after)
		}
		last = e.At
		if e.Kind == ProcFork && e.Parent != os.Getpid() {
			t.Errorf("fork of %d from parent %d, want this process %d", pid, e.Parent, os.Getpid())
		}
	}
	if fmt.Sprint(kinds) != fmt.Sprint([]ProcKind{ProcFork, ProcExec, ProcExit}) {
		t.Errorf("events of pid %d: %v, want fork, exec, exit", pid, kinds)
	}
}

// TestStartLone_EveryWorkerStops starts lone workers sharing a socket and
// stops them: each must drain and exit on SIGTERM. It guards listenAt's
// promise that no start switches the shared socket back to blocking mode,
// which would leave a worker blocked in accept4 where its drain cannot
// wake it.
func TestStartLone_EveryWorkerStops(t *testing.T) {
	w := benchWorker(t)
	for round := range 10 {
		m, err := StartLone(w, 4, "GOMAXPROCS=1")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.WaitReady(4, 10*time.Second); err != nil {
			m.Close()
			t.Fatal(err)
		}
		if _, err := m.Get("/"); err != nil {
			t.Error(err)
		}
		err = m.Stop(3 * time.Second)
		if oerr := m.stopOthers(3 * time.Second); err == nil {
			err = oerr
		}
		m.Close()
		if err != nil {
			t.Fatalf("round %d: %v", round+1, err)
		}
	}
}
