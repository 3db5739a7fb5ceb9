package master

import (
	"fmt"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/forkd/forkd/bus"
	"github.com/forkd/forkd/internal/testkit"
)

// busClient is a connection to the test bus that receives forkd's signals.
type busClient struct {
	t       *testing.T
	conn    *dbus.Conn
	signals chan *dbus.Signal
}

// dialBus connects to address; the connection closes when the test ends.
func dialBus(t *testing.T, address string) *busClient {
	t.Helper()
	conn, err := dbus.Connect(address)
	if err != nil {
		t.Fatalf("connect to the test bus: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &busClient{t: t, conn: conn, signals: make(chan *dbus.Signal, 4096)}
	conn.Signal(c.signals)
	return c
}

// subscribe matches every signal of forkd's interface.
func (c *busClient) subscribe() {
	c.t.Helper()
	if err := c.conn.AddMatchSignal(dbus.WithMatchInterface(bus.Interface)); err != nil {
		c.t.Fatalf("add match: %v", err)
	}
}

// subscribeProperties matches PropertiesChanged of forkd's object.
func (c *busClient) subscribeProperties() {
	c.t.Helper()
	if err := c.conn.AddMatchSignal(dbus.WithMatchObjectPath(bus.ObjectPath),
		dbus.WithMatchInterface("org.freedesktop.DBus.Properties"),
		dbus.WithMatchMember("PropertiesChanged")); err != nil {
		c.t.Fatalf("add match: %v", err)
	}
}

// waitOwned returns once name has an owner, failing the test after d.
func (c *busClient) waitOwned(name string, d time.Duration) {
	c.t.Helper()
	match := []dbus.MatchOption{
		dbus.WithMatchSender("org.freedesktop.DBus"),
		dbus.WithMatchMember("NameOwnerChanged"),
		dbus.WithMatchArg(0, name),
	}
	if err := c.conn.AddMatchSignal(match...); err != nil {
		c.t.Fatalf("add match: %v", err)
	}
	defer c.conn.RemoveMatchSignal(match...)
	var has bool
	if err := c.conn.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, name).Store(&has); err != nil {
		c.t.Fatalf("NameHasOwner: %v", err)
	}
	deadline := time.After(d)
	for !has {
		select {
		case s := <-c.signals:
			has = s.Name == "org.freedesktop.DBus.NameOwnerChanged" && len(s.Body) == 3 &&
				s.Body[0] == name && s.Body[2] != ""
		case <-deadline:
			c.t.Fatalf("%s not owned within %v", name, d)
		}
	}
}

// member is s's name without forkd's interface ("" for other signals).
func member(s *dbus.Signal) string {
	m, ok := strings.CutPrefix(s.Name, bus.Interface+".")
	if !ok {
		return ""
	}
	return m
}

// collect returns forkd's signals (other signals are skipped) up to and
// including the first for which last holds; it fails the test after d.
func (c *busClient) collect(what string, d time.Duration, last func(*dbus.Signal) bool) []*dbus.Signal {
	c.t.Helper()
	var got []*dbus.Signal
	deadline := time.After(d)
	for {
		select {
		case s := <-c.signals:
			if member(s) == "" {
				continue
			}
			got = append(got, s)
			if last(s) {
				return got
			}
		case <-deadline:
			c.t.Fatalf("no %s within %v; got:\n%s", what, d, dump(got))
			return nil
		}
	}
}

// propertiesChanged returns the next PropertiesChanged's changed
// properties, failing the test after d.
func (c *busClient) propertiesChanged(d time.Duration) map[string]any {
	c.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case s := <-c.signals:
			if s.Name != "org.freedesktop.DBus.Properties.PropertiesChanged" {
				continue
			}
			if len(s.Body) != 3 || s.Body[0] != bus.Interface {
				c.t.Fatalf("PropertiesChanged %v: want interface %s first", s.Body, bus.Interface)
			}
			changed, ok := s.Body[1].(map[string]dbus.Variant)
			if !ok {
				c.t.Fatalf("PropertiesChanged changed_properties is %T", s.Body[1])
			}
			out := map[string]any{}
			for k, v := range changed {
				out[k] = v.Value()
			}
			return out
		case <-deadline:
			c.t.Fatalf("no PropertiesChanged within %v", d)
			return nil
		}
	}
}

// object is forkd's object for instance.
func (c *busClient) object(instance string) dbus.BusObject {
	return c.conn.Object(bus.Name(instance), bus.ObjectPath)
}

// properties reads every Manager1 property of instance but Listeners
// (whose queues the kernel reports as they are; see listeners).
func (c *busClient) properties(instance string) map[string]any {
	c.t.Helper()
	var all map[string]dbus.Variant
	if err := c.object(instance).Call("org.freedesktop.DBus.Properties.GetAll", 0, bus.Interface).Store(&all); err != nil {
		c.t.Fatalf("GetAll: %v", err)
	}
	out := map[string]any{}
	for k, v := range all {
		if k != "Listeners" {
			out[k] = v.Value()
		}
	}
	return out
}

// listeners reads instance's Listeners property.
func (c *busClient) listeners(instance string) []bus.ListenerEntry {
	c.t.Helper()
	v, err := c.object(instance).GetProperty(bus.Interface + ".Listeners")
	if err != nil {
		c.t.Fatalf("get Listeners: %v", err)
	}
	var out []bus.ListenerEntry
	if err := v.Store(&out); err != nil {
		c.t.Fatalf("Listeners: %v", err)
	}
	return out
}

// is matches the signal named m whose body satisfies ok (nil: any).
func is(m string, ok func(body []any) bool) func(*dbus.Signal) bool {
	return func(s *dbus.Signal) bool { return member(s) == m && (ok == nil || ok(s.Body)) }
}

// arg matches bodies whose i-th argument is v.
func arg(i int, v any) func([]any) bool {
	return func(b []any) bool { return len(b) > i && reflect.DeepEqual(b[i], v) }
}

// sig is an expected signal: its member and body.
type sig struct {
	member string
	body   []any
}

func (s sig) String() string { return fmt.Sprintf("%s%v", s.member, s.body) }

func dump(got []*dbus.Signal) string {
	var b strings.Builder
	for _, s := range got {
		fmt.Fprintf(&b, "\t%s%v\n", member(s), s.Body)
	}
	return b.String()
}

// expectExactly fails the test unless got is want, in order.
func expectExactly(t *testing.T, step string, got []*dbus.Signal, want []sig) {
	t.Helper()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		ok = member(got[i]) == want[i].member && reflect.DeepEqual(got[i].Body, want[i].body)
	}
	if !ok {
		var w strings.Builder
		for _, s := range want {
			fmt.Fprintf(&w, "\t%s\n", s)
		}
		t.Fatalf("%s: signals\n%swant\n%s", step, dump(got), w.String())
	}
}

// counts tallies got by member.
func counts(got []*dbus.Signal) map[string]int {
	m := map[string]int{}
	for _, s := range got {
		m[member(s)]++
	}
	return m
}

// index returns the position of the first signal in got that is want, or
// -1.
func index(got []*dbus.Signal, want sig) int {
	for i, s := range got {
		if member(s) == want.member && reflect.DeepEqual(s.Body, want.body) {
			return i
		}
	}
	return -1
}

// checkSpawns checks that got holds, for each worker id of generation gen,
// PreFork, PostFork and PostWorkerInit with one pid, in that order, and
// returns the pids by worker id.
func checkSpawns(t *testing.T, step string, got []*dbus.Signal, inst string, gen uint64, ids ...int) map[int]uint32 {
	t.Helper()
	pids := map[int]uint32{}
	for _, id := range ids {
		pre := index(got, sig{"PreFork", []any{inst, gen, int32(id)}})
		post := -1
		for i, s := range got {
			if member(s) == "PostFork" && len(s.Body) == 4 && reflect.DeepEqual(s.Body[:3], []any{inst, gen, int32(id)}) {
				post = i
				pids[id], _ = s.Body[3].(uint32)
				break
			}
		}
		if pre < 0 || post < 0 || pids[id] == 0 {
			t.Fatalf("%s: no PreFork/PostFork for worker %d of generation %d in\n%s", step, id, gen, dump(got))
		}
		init := index(got, sig{"PostWorkerInit", []any{inst, gen, int32(id), pids[id]}})
		if init < 0 {
			t.Fatalf("%s: no PostWorkerInit [%s %d %d %d] in\n%s", step, inst, gen, id, pids[id], dump(got))
		}
		if !(pre < post && post < init) {
			t.Fatalf("%s: worker %d's PreFork (#%d), PostFork (#%d), PostWorkerInit (#%d) out of order in\n%s",
				step, id, pre, post, init, dump(got))
		}
	}
	return pids
}

// exitOf is the ChildExit or WorkerExit of a worker.
func exitOf(m, inst string, gen uint64, id int, pid uint32, code, signal int, reason string) sig {
	return sig{m, []any{inst, gen, int32(id), pid, int32(code), int32(signal), reason}}
}

// answers turns pids by worker id into the answers those workers give.
func answers(gen uint64, pids map[int]uint32) map[int]answer {
	m := map[int]answer{}
	for id, pid := range pids {
		m[int(pid)] = answer{pid: int(pid), gen: gen, id: id}
	}
	return m
}

// TestMaster_HookSignals drives a real forkd through a scripted sequence —
// start, kill a worker, TTIN, TTOU, HUP, TERM — and checks that every
// hook's signal arrives on a real bus with the right arguments, and that
// the pids in them are the workers that answer on the port.
func TestMaster_HookSignals(t *testing.T) {
	d := testkit.StartBus(t)
	c := dialBus(t, d.Address)
	c.subscribe() // before forkd starts: nothing may be missed
	const inst = "web-1"
	f := startForkd(t, setup{instance: inst, workers: 2, bus: d.Address})

	// Start.
	got := c.collect("WhenReady", testTimeout, is("WhenReady", nil))
	if want := (sig{"OnStarting", []any{inst, uint64(0)}}); index(got, want) != 0 {
		t.Fatalf("start: first signal is not %v:\n%s", want, dump(got))
	}
	if want := (sig{"WhenReady", []any{inst, uint64(1), uint32(2)}}); index(got, want) != len(got)-1 {
		t.Fatalf("start: last signal is not %v:\n%s", want, dump(got))
	}
	if n, want := counts(got), map[string]int{"OnStarting": 1, "PreFork": 2, "PostFork": 2, "PostWorkerInit": 2, "WhenReady": 1}; !reflect.DeepEqual(n, want) {
		t.Fatalf("start: signals %v, want %v:\n%s", n, want, dump(got))
	}
	pids := checkSpawns(t, "start", got, inst, 1, 0, 1)
	if pids[0] == pids[1] {
		t.Fatalf("start: both workers have pid %d", pids[0])
	}
	f.askAll(answers(1, pids))
	// The bus owner is this forkd.
	var owner uint32
	if err := c.conn.BusObject().Call("org.freedesktop.DBus.GetConnectionUnixProcessID", 0, bus.Name(inst)).Store(&owner); err != nil || int(owner) != f.pid() {
		t.Fatalf("owner of %s: pid %d, %v; want forkd's pid %d", bus.Name(inst), owner, err, f.pid())
	}

	// SIGKILL worker 0: it is reaped and replaced in the same slot.
	if err := syscall.Kill(int(pids[0]), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	got = c.collect("the replacement's PostWorkerInit", testTimeout, is("PostWorkerInit", arg(2, int32(0))))
	replacement := uint32(0)
	if len(got) == 5 && member(got[3]) == "PostFork" && len(got[3].Body) == 4 {
		replacement, _ = got[3].Body[3].(uint32)
	}
	expectExactly(t, "kill worker 0", got, []sig{
		exitOf("ChildExit", inst, 1, 0, pids[0], -1, int(syscall.SIGKILL), "crashed"),
		exitOf("WorkerExit", inst, 1, 0, pids[0], -1, int(syscall.SIGKILL), "crashed"),
		{"PreFork", []any{inst, uint64(1), int32(0)}},
		{"PostFork", []any{inst, uint64(1), int32(0), replacement}},
		{"PostWorkerInit", []any{inst, uint64(1), int32(0), replacement}},
	})
	if replacement == pids[0] {
		t.Fatalf("the replacement has the killed worker's pid %d", replacement)
	}
	pids[0] = replacement
	f.askAll(answers(1, pids))

	// TTIN: a third worker, id 2.
	f.signal(syscall.SIGTTIN)
	got = c.collect("worker 2's PostWorkerInit", testTimeout, is("PostWorkerInit", arg(2, int32(2))))
	if len(got) > 0 {
		expectExactly(t, "TTIN", got[:1], []sig{{"NworkersChanged", []any{inst, uint64(1), uint32(2), uint32(3)}}})
	}
	if len(got) != 4 {
		t.Fatalf("TTIN: want NworkersChanged then worker 2's PreFork, PostFork, PostWorkerInit; got\n%s", dump(got))
	}
	pids[2] = checkSpawns(t, "TTIN", got[1:], inst, 1, 2)[2]
	f.askAll(answers(1, pids))

	// TTOU: worker 2 goes, gracefully.
	f.signal(syscall.SIGTTOU)
	got = c.collect("worker 2's WorkerExit", testTimeout, is("WorkerExit", arg(3, pids[2])))
	expectExactly(t, "TTOU", got, []sig{
		{"NworkersChanged", []any{inst, uint64(1), uint32(3), uint32(2)}},
		exitOf("ChildExit", inst, 1, 2, pids[2], 0, 0, "scaled down"),
		exitOf("WorkerExit", inst, 1, 2, pids[2], 0, 0, "scaled down"),
	})
	delete(pids, 2)
	gen1 := pids

	// HUP: generation 2 comes up, then generation 1 goes.
	f.signal(syscall.SIGHUP)
	exited := map[uint32]bool{}
	ready := false
	got = c.collect("generation 2 ready and generation 1 gone", testTimeout, func(s *dbus.Signal) bool {
		if is("WhenReady", arg(1, uint64(2)))(s) {
			ready = true
		}
		if member(s) == "WorkerExit" && len(s.Body) > 3 {
			pid, _ := s.Body[3].(uint32)
			exited[pid] = true
		}
		return ready && exited[gen1[0]] && exited[gen1[1]]
	})
	if want := (sig{"OnReload", []any{inst, uint64(1)}}); index(got, want) != 0 {
		t.Fatalf("HUP: first signal is not %v:\n%s", want, dump(got))
	}
	if n, want := counts(got), map[string]int{"OnReload": 1, "PreFork": 2, "PostFork": 2, "PostWorkerInit": 2,
		"WhenReady": 1, "ChildExit": 2, "WorkerExit": 2}; !reflect.DeepEqual(n, want) {
		t.Fatalf("HUP: signals %v, want %v:\n%s", n, want, dump(got))
	}
	gen2 := checkSpawns(t, "HUP", got, inst, 2, 0, 1)
	whenReady := index(got, sig{"WhenReady", []any{inst, uint64(2), uint32(2)}})
	if whenReady < 0 {
		t.Fatalf("HUP: no WhenReady [%s 2 2]:\n%s", inst, dump(got))
	}
	for id, pid := range gen2 {
		if i := index(got, sig{"PostWorkerInit", []any{inst, uint64(2), int32(id), pid}}); i > whenReady {
			t.Errorf("HUP: WhenReady (#%d) before worker %d's PostWorkerInit (#%d)", whenReady, id, i)
		}
	}
	for id, pid := range gen1 {
		reason := "replaced by generation 2"
		ce := index(got, exitOf("ChildExit", inst, 1, id, pid, 0, 0, reason))
		we := index(got, exitOf("WorkerExit", inst, 1, id, pid, 0, 0, reason))
		if ce < 0 || we < 0 || !(whenReady < ce && ce < we) {
			t.Errorf("HUP: old worker %d (pid %d): want ChildExit then WorkerExit (exit 0, %q) after WhenReady; got\n%s",
				id, pid, reason, dump(got))
		}
	}
	f.askAll(answers(2, gen2))
	f.checkOnly(20, answers(2, gen2))

	// TERM: every worker exits, then OnExit, and forkd exits 0.
	f.signal(syscall.SIGTERM)
	if code := f.wait(testTimeout); code != 0 {
		t.Errorf("forkd exited %d after TERM, want 0", code)
	}
	got = c.collect("OnExit", 5*time.Second, is("OnExit", nil))
	if n, want := counts(got), map[string]int{"ChildExit": 2, "WorkerExit": 2, "OnExit": 1}; !reflect.DeepEqual(n, want) {
		t.Fatalf("TERM: signals %v, want %v:\n%s", n, want, dump(got))
	}
	if want := (sig{"OnExit", []any{inst, uint64(2), "stopped"}}); index(got, want) != len(got)-1 {
		t.Errorf("TERM: last signal is not %v:\n%s", want, dump(got))
	}
	for id, pid := range gen2 {
		ce := index(got, exitOf("ChildExit", inst, 2, id, pid, 0, 0, "SIGTERM"))
		we := index(got, exitOf("WorkerExit", inst, 2, id, pid, 0, 0, "SIGTERM"))
		if ce < 0 || we < 0 || ce > we {
			t.Errorf("TERM: worker %d (pid %d): want ChildExit then WorkerExit, exit 0, reason SIGTERM; got\n%s", id, pid, dump(got))
		}
	}
}

// TestMaster_Properties reads the properties of a running forkd and
// watches PropertiesChanged follow a TTIN.
func TestMaster_Properties(t *testing.T) {
	d := testkit.StartBus(t)
	c := dialBus(t, d.Address)
	c.subscribe()
	const inst = "props"
	f := startForkd(t, setup{instance: inst, workers: 2, bus: d.Address})
	c.collect("WhenReady", testTimeout, is("WhenReady", nil))
	c.waitOwned(bus.Name(inst), testTimeout)

	// WhenReady is emitted before the status reaches the bus: wait for it.
	want := map[string]any{"Instance": inst, "State": "running", "Generation": uint64(1),
		"Workers": uint32(2), "ReadyWorkers": uint32(2), "DroppedSignals": uint64(0), "Cluster": ""}
	waitProperties(t, c, inst, want)
	ls := c.listeners(inst)
	if len(ls) != 1 || ls[0].Name != inst || !strings.HasPrefix(ls[0].Address, "tcp://127.0.0.1:") || ls[0].Backlog == 0 {
		t.Errorf("Listeners = %+v, want the one TCP socket named %s, with its backlog", ls, inst)
	}

	c.subscribeProperties()
	f.signal(syscall.SIGTTIN)
	seen := map[string]any{}
	deadline := time.Now().Add(testTimeout)
	for seen["Workers"] != uint32(3) || seen["ReadyWorkers"] != uint32(3) {
		changed := c.propertiesChanged(time.Until(deadline))
		for k, v := range changed {
			if k == "Instance" || k == "DroppedSignals" {
				t.Errorf("PropertiesChanged carries %s = %v; it did not change", k, v)
			}
			seen[k] = v
		}
	}
	if seen["State"] != nil && seen["State"] != "running" {
		t.Errorf("PropertiesChanged State = %v after TTIN, want running", seen["State"])
	}
	want["Workers"], want["ReadyWorkers"] = uint32(3), uint32(3)
	if got := c.properties(inst); !reflect.DeepEqual(got, want) {
		t.Errorf("properties after TTIN %v, want %v", got, want)
	}
}

// waitProperties waits until instance's properties are want, failing the
// test after testTimeout: it reads them again at every PropertiesChanged.
func waitProperties(t *testing.T, c *busClient, inst string, want map[string]any) {
	t.Helper()
	match := []dbus.MatchOption{dbus.WithMatchObjectPath(bus.ObjectPath),
		dbus.WithMatchInterface("org.freedesktop.DBus.Properties"), dbus.WithMatchMember("PropertiesChanged")}
	changed := make(chan *dbus.Signal, 64)
	c.conn.Signal(changed)
	defer c.conn.RemoveSignal(changed)
	if err := c.conn.AddMatchSignal(match...); err != nil {
		t.Fatalf("add match: %v", err)
	}
	defer c.conn.RemoveMatchSignal(match...)
	timeout := time.After(testTimeout)
	for {
		// Read after the match is in place: a change after this read
		// comes as a signal.
		got := c.properties(inst)
		if reflect.DeepEqual(got, want) {
			return
		}
		for wait := true; wait; {
			select {
			case s := <-changed:
				wait = s.Name != "org.freedesktop.DBus.Properties.PropertiesChanged"
			case <-timeout:
				t.Fatalf("properties %v, want %v", got, want)
			}
		}
	}
}

// TestMaster_UpgradeKeepsName: a server.name changed in the file before an
// upgrade does not rename the running instance — its successor keeps the
// D-Bus name (and FORKD_INSTANCE), and says so in its log.
func TestMaster_UpgradeKeepsName(t *testing.T) {
	const inst = "keepname"
	_, c, f := startOnBus(t, inst, 1)
	f.setup.instance = "renamed"
	f.writeConfig(f.setup.mode, "")
	f.signal(syscall.SIGUSR2)
	c.collect("the successor's WhenReady", testTimeout, is("WhenReady", nil))
	c.waitOwned(bus.Name(inst), testTimeout)
	var has bool
	if err := c.conn.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, bus.Name("renamed")).Store(&has); err != nil {
		t.Fatal(err)
	}
	if has {
		t.Errorf("after the upgrade %s is owned: the instance was renamed", bus.Name("renamed"))
	}
	if got := c.properties(inst)["Instance"]; got != inst {
		t.Errorf("Instance property %v after the upgrade, want %q", got, inst)
	}
	if log := f.log(); !strings.Contains(log, "server.name cannot change on upgrade") {
		t.Errorf("the successor did not warn about the name:\n%s", log)
	}
}

// TestMaster_UpgradeSendsPreExec: the PreExec signal of an upgrade reaches
// the bus before the master re-executes and its connection drops.
func TestMaster_UpgradeSendsPreExec(t *testing.T) {
	const inst = "preexec"
	_, c, f := startOnBus(t, inst, 2)
	f.signal(syscall.SIGUSR2)
	got := c.collect("the successor's WhenReady", testTimeout, is("WhenReady", nil))
	for _, s := range got {
		if member(s) == "PreExec" {
			return
		}
	}
	t.Errorf("no PreExec signal before the successor's WhenReady; got\n%s", dump(got))
}
