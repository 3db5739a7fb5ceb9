package bus

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"

	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/hooks"
	"github.com/forkd/forkd/workers"
)

func TestName(t *testing.T) {
	cases := []struct{ instance, want string }{
		{"myapp", "io.github.forkd.myapp"},
		{"MyApp2", "io.github.forkd.MyApp2"},
		{"my-app", "io.github.forkd.my_2dapp"},
		{"my_app", "io.github.forkd.my_5fapp"},
		{"a.b", "io.github.forkd.a_2eb"},
		{"1app", "io.github.forkd._31app"},
		{"app1", "io.github.forkd.app1"},
		{"ü", "io.github.forkd._c3_bc"},
		{"", "io.github.forkd._"},
	}
	for _, c := range cases {
		if got := Name(c.instance); got != c.want {
			t.Errorf("Name(%q) = %q, want %q", c.instance, got, c.want)
		}
		back, ok := InstanceFromName(c.want)
		if !ok || back != c.instance {
			t.Errorf("InstanceFromName(%q) = %q, %v; want %q, true", c.want, back, ok, c.instance)
		}
	}
	for _, bad := range []string{"org.example.x", "io.github.forkd.", "io.github.forkd.a_2", "io.github.forkd.a_zz", "io.github.forkd.a-b"} {
		if got, ok := InstanceFromName(bad); ok {
			t.Errorf("InstanceFromName(%q) = %q, true; want false", bad, got)
		}
	}
}

// TestService_InterfaceXML checks that the shipped XML describes exactly the
// signals Emit sends, argument by argument, and the properties served.
func TestService_InterfaceXML(t *testing.T) {
	var node introspect.Node
	if err := xml.Unmarshal([]byte(InterfaceXML()), &node); err != nil {
		t.Fatalf("parse io.github.forkd.Manager1.xml: %v", err)
	}
	var iface *introspect.Interface
	var names []string
	for i := range node.Interfaces {
		names = append(names, node.Interfaces[i].Name)
		if node.Interfaces[i].Name == Interface {
			iface = &node.Interfaces[i]
		}
	}
	if iface == nil {
		t.Fatalf("XML has no %s interface", Interface)
	}
	for _, want := range []string{"org.freedesktop.DBus.Properties", "org.freedesktop.DBus.Introspectable"} {
		if !strings.Contains(strings.Join(names, " "), want) {
			t.Errorf("XML lacks interface %s", want)
		}
	}
	signals := map[string]introspect.Signal{}
	for _, s := range iface.Signals {
		signals[s.Name] = s
	}
	for _, h := range hooks.All {
		s, ok := signals[h.Signal()]
		if !ok {
			t.Errorf("XML lacks signal %s", h.Signal())
			continue
		}
		delete(signals, h.Signal())
		var got, want []string
		for _, a := range s.Args {
			got = append(got, a.Name+" "+a.Type)
		}
		for _, a := range signalArgs(h) {
			want = append(want, a.name+" "+a.sig)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("signal %s: XML args %v, Emit sends %v", h.Signal(), got, want)
		}
		body := signalBody(hooks.Event{Hook: h})
		if sig := dbus.SignatureOf(body...).String(); sig != strings.Join(sigTypes(s.Args), "") {
			t.Errorf("signal %s: Emit's body has signature %s, XML says %v", h.Signal(), sig, sigTypes(s.Args))
		}
	}
	for name, want := range map[string]string{"LeadershipAcquired": "st", "LeadershipLost": "ss"} {
		if got := strings.Join(sigTypes(signals[name].Args), ""); got != want {
			t.Errorf("%s signature %q, want %s", name, got, want)
		}
		delete(signals, name)
	}
	rs, ok := signals["RequestStats"]
	delete(signals, "RequestStats")
	if !ok {
		t.Error("XML lacks signal RequestStats")
	} else if got := strings.Join(sigTypes(rs.Args), ""); got != "stiutatat" {
		t.Errorf("RequestStats signature %s, want stiutatat", got)
	}
	for name := range signals {
		t.Errorf("XML has signal %s that no hook sends", name)
	}

	props := map[string]string{}
	for _, p := range iface.Properties {
		props[p.Name] = p.Type
	}
	wantProps := map[string]string{"Instance": "s", "State": "s", "Generation": "t", "Workers": "u", "ReadyWorkers": "u", "DroppedSignals": "t",
		"Listeners": "a(ssuu)", "Cluster": "s"}
	if !reflect.DeepEqual(props, wantProps) {
		t.Errorf("XML properties %v, want %v", props, wantProps)
	}
	methods := map[string][]string{}
	for _, m := range iface.Methods {
		var args []string
		for _, a := range m.Args {
			args = append(args, a.Direction+" "+a.Type)
		}
		methods[m.Name] = args
	}
	wantMethods := map[string][]string{"Reload": nil, "Upgrade": nil, "SetWorkers": {"in u"}, "ListWorkers": {"out a(iutsttt)"},
		"RunNow": {"in s"}, "ListJobs": {"out a(sssuststtss)"}, "Details": {"out s"}}
	if !reflect.DeepEqual(methods, wantMethods) {
		t.Errorf("XML methods %v, want %v", methods, wantMethods)
	}
	if sig := dbus.SignatureOf([]WorkerEntry{}).String(); sig != "a(iutsttt)" {
		t.Errorf("ListWorkers returns %s, XML says a(iutsttt)", sig)
	}
	if sig := dbus.SignatureOf([]JobEntry{}).String(); sig != "a(sssuststtss)" {
		t.Errorf("ListJobs returns %s, XML says a(sssuststtss)", sig)
	}
}

func sigTypes(args []introspect.Arg) []string {
	var out []string
	for _, a := range args {
		out = append(out, a.Type)
	}
	return out
}

// emitWithin calls f in a goroutine and fails unless it returns in time.
func emitWithin(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
	case <-time.After(busTestTimeout):
		t.Fatalf("%s blocked for %v", what, busTestTimeout)
	}
}

// TestService_NoBus checks that Emit never blocks without a bus, counts what it
// drops, and that Run warns once and returns nil on cancel.
func TestService_NoBus(t *testing.T) {
	log := &busTestLog{}
	b := New(Options{Instance: "nobus", Logger: slog.New(log), Queue: 4,
		Address: "unix:path=" + t.TempDir() + "/no-such-bus"})
	b.backoffMin, b.backoffMax = time.Millisecond, 2*time.Millisecond

	emitWithin(t, "Emit with nobody draining the queue", func() {
		for i := 0; i < 10; i++ {
			b.Emit(hooks.Event{Hook: hooks.PostFork, WorkerID: i, PID: 100 + i})
		}
	})
	if got := b.Dropped(); got != 6 {
		t.Fatalf("Dropped() = %d after 10 events into a queue of 4, want 6", got)
	}
	emitWithin(t, "UpdateStatus with nobody reading", func() {
		for i := 0; i < 10; i++ {
			b.UpdateStatus(workers.Status{State: "running", Generation: uint64(i)})
		}
	})
	if s, _ := b.currentStatus(context.Background()); s.Generation != 9 {
		t.Errorf("status after 10 updates has generation %d, want the latest, 9", s.Generation)
	}

	attempts := make(chan error, 100)
	var n atomic.Int32
	b.onAttempt = func(err error) {
		if n.Add(1) <= 100 {
			attempts <- err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	for i := 0; i < 5; i++ {
		select {
		case err := <-attempts:
			if err == nil {
				t.Fatal("connecting to a missing socket succeeded")
			}
		case <-time.After(busTestTimeout):
			t.Fatalf("Run made %d connection attempts in %v, want retries", i, busTestTimeout)
		}
	}
	emitWithin(t, "Emit while Run retries", func() {
		for i := 0; i < 100; i++ {
			b.Emit(hooks.Event{Hook: hooks.OnStarting})
		}
	})
	if got := b.Dropped(); got != 106 {
		t.Errorf("Dropped() = %d, want 106", got)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v after cancel, want nil", err)
		}
	case <-time.After(busTestTimeout):
		t.Fatal("Run did not return after cancel")
	}
	warns := log.at(slog.LevelWarn)
	if len(warns) != 1 || warns[0] != "no D-Bus: hook signals disabled, serving anyway" {
		t.Errorf("warnings %q after 5+ failed attempts, want exactly one \"no D-Bus…\"", warns)
	}
}

// busTestEvents is one event per hook with distinct values, and the body
// each signal must carry (written out, not computed by the code under test).
func busTestEvents() []struct {
	e    hooks.Event
	body []any
} {
	const inst = "sig-test"
	return []struct {
		e    hooks.Event
		body []any
	}{
		{hooks.Event{Hook: hooks.OnStarting, Generation: 1, WorkerID: -1}, []any{inst, uint64(1)}},
		{hooks.Event{Hook: hooks.OnReload, Generation: 2, WorkerID: -1}, []any{inst, uint64(2)}},
		{hooks.Event{Hook: hooks.WhenReady, Generation: 2, WorkerID: -1, Workers: 4}, []any{inst, uint64(2), uint32(4)}},
		{hooks.Event{Hook: hooks.PreFork, Generation: 2, WorkerID: 3}, []any{inst, uint64(2), int32(3)}},
		{hooks.Event{Hook: hooks.PostFork, Generation: 2, WorkerID: 3, PID: 4242}, []any{inst, uint64(2), int32(3), uint32(4242)}},
		{hooks.Event{Hook: hooks.PostWorkerInit, Generation: 2, WorkerID: 1, PID: 4243}, []any{inst, uint64(2), int32(1), uint32(4243)}},
		{hooks.Event{Hook: hooks.WorkerInt, Generation: 2, WorkerID: 1, PID: 4243, Signal: 2}, []any{inst, uint64(2), int32(1), uint32(4243), int32(2)}},
		{hooks.Event{Hook: hooks.WorkerAbort, Generation: 2, WorkerID: 0, PID: 4244, Reason: "timeout"}, []any{inst, uint64(2), int32(0), uint32(4244), "timeout"}},
		{hooks.Event{Hook: hooks.PreExec, Generation: 3, WorkerID: -1}, []any{inst, uint64(3)}},
		{hooks.Event{Hook: hooks.PreRequest, Generation: 3, WorkerID: 2, PID: 4245}, []any{inst, uint64(3), int32(2), uint32(4245)}},
		{hooks.Event{Hook: hooks.PostRequest, Generation: 3, WorkerID: 2, PID: 4245}, []any{inst, uint64(3), int32(2), uint32(4245)}},
		{hooks.Event{Hook: hooks.ChildExit, Generation: 3, WorkerID: 2, PID: 4245, ExitCode: -1, Signal: 9, Reason: "crashed"}, []any{inst, uint64(3), int32(2), uint32(4245), int32(-1), int32(9), "crashed"}},
		{hooks.Event{Hook: hooks.WorkerExit, Generation: 3, WorkerID: 2, PID: 4245, ExitCode: 3, Reason: "scale down"}, []any{inst, uint64(3), int32(2), uint32(4245), int32(3), int32(0), "scale down"}},
		{hooks.Event{Hook: hooks.NworkersChanged, Generation: 3, WorkerID: -1, OldWorkers: 4, Workers: 6}, []any{inst, uint64(3), uint32(4), uint32(6)}},
		{hooks.Event{Hook: hooks.OnExit, Generation: 3, WorkerID: -1, Reason: "stopped"}, []any{inst, uint64(3), "stopped"}},
		// The run-once hooks' signals carry the job's name, not instance and generation.
		{hooks.Event{Hook: hooks.SingletonStarted, Generation: 3, WorkerID: -1, Job: "scheduler", PID: 5001},
			[]any{"scheduler", uint32(5001)}},
		{hooks.Event{Hook: hooks.SingletonExited, Generation: 3, WorkerID: -1, Job: "scheduler", PID: 5001,
			ExitCode: -1, Signal: 15, Reason: "stopping"},
			[]any{"scheduler", uint32(5001), int32(-1), int32(15), "stopping"}},
		{hooks.Event{Hook: hooks.ScheduleStarted, Generation: 3, WorkerID: -1, Job: "cleanup", RunID: "0190a1b2-run",
			ScheduledAt: time.Date(2026, 1, 2, 3, 5, 0, 500000000, time.FixedZone("KST", 9*3600)), PID: 5002},
			[]any{"cleanup", "0190a1b2-run", "2026-01-02T03:05:00.5+09:00", uint32(5002)}},
		{hooks.Event{Hook: hooks.ScheduleFinished, Generation: 3, WorkerID: -1, Job: "cleanup", RunID: "0190a1b2-run",
			ExitCode: 0, Duration: 1500 * time.Millisecond, Result: "ok", PID: 5002},
			[]any{"cleanup", "0190a1b2-run", int32(0), int32(0), uint64(1500000), "ok"}},
	}
}

func TestService_Signals(t *testing.T) {
	d := startBusTestDaemon(t, busTestDir(t))
	client := dialBusTest(t, d.Address)
	client.subscribe(t)
	b := New(Options{Instance: "sig-test", Address: d.Address, RequestSignals: 1e9})
	runBusTest(t, b)
	client.waitOwned(t, Name("sig-test"))

	events := busTestEvents()
	if len(events) != len(hooks.All) {
		t.Fatalf("test covers %d hooks, there are %d", len(events), len(hooks.All))
	}
	for _, ev := range events {
		b.Emit(ev.e)
	}
	for _, ev := range events {
		s := client.nextForkd(t)
		want := Interface + "." + ev.e.Hook.Signal()
		if s.Name != want {
			t.Fatalf("got signal %s, want %s (signals must arrive in order)", s.Name, want)
		}
		if s.Path != ObjectPath {
			t.Errorf("%s sent from %s, want %s", s.Name, s.Path, ObjectPath)
		}
		if !reflect.DeepEqual(s.Body, ev.body) {
			t.Errorf("%s body = %#v, want %#v", s.Name, s.Body, ev.body)
		}
	}

	b.EmitRequestStats(RequestStats{Generation: 3, WorkerID: 1, PID: 77, Requests: 10,
		Bounds: []time.Duration{time.Millisecond, 10 * time.Millisecond}, Counts: []uint64{6, 3, 1}})
	s := client.nextForkd(t)
	want := []any{"sig-test", uint64(3), int32(1), uint32(77), uint64(10), []uint64{1000, 10000}, []uint64{6, 3, 1}}
	if s.Name != Interface+".RequestStats" || !reflect.DeepEqual(s.Body, want) {
		t.Errorf("got %s %#v, want RequestStats %#v", s.Name, s.Body, want)
	}
	if got := b.Dropped(); got != 0 {
		t.Errorf("Dropped() = %d with a bus that keeps up, want 0", got)
	}
}

// TestService_RequestSignalsOptIn checks that PreRequest/PostRequest are not
// sent by default and are rate-limited when enabled.
func TestService_RequestSignalsOptIn(t *testing.T) {
	d := startBusTestDaemon(t, busTestDir(t))
	client := dialBusTest(t, d.Address)
	client.subscribe(t)

	off := New(Options{Instance: "req-off", Address: d.Address})
	limited := New(Options{Instance: "req-limited", Address: d.Address, RequestSignals: 1.0 / 3600})
	runBusTest(t, off)
	runBusTest(t, limited)
	client.waitOwned(t, off.Name())
	client.waitOwned(t, limited.Name())

	now := time.Now()
	off.Emit(hooks.Event{Hook: hooks.PreRequest, Time: now})
	off.Emit(hooks.Event{Hook: hooks.PostRequest, Time: now})
	off.Emit(hooks.Event{Hook: hooks.OnExit, Reason: "marker"})
	if s := client.nextForkd(t); s.Name != Interface+".OnExit" {
		t.Errorf("by default got %s before the marker, want no request signals", s.Name)
	}

	limited.Emit(hooks.Event{Hook: hooks.PreRequest, Time: now})
	limited.Emit(hooks.Event{Hook: hooks.PostRequest, Time: now.Add(time.Second)})
	limited.Emit(hooks.Event{Hook: hooks.PreRequest, Time: now.Add(time.Minute)})
	limited.Emit(hooks.Event{Hook: hooks.OnExit, Reason: "marker"})
	if s := client.nextForkd(t); s.Name != Interface+".PreRequest" {
		t.Errorf("rate-limited: first signal %s, want PreRequest", s.Name)
	}
	if s := client.nextForkd(t); s.Name != Interface+".OnExit" {
		t.Errorf("rate-limited (1/hour): got %s after the first request signal, want the marker", s.Name)
	}
	if off.Dropped()+limited.Dropped() != 0 {
		t.Errorf("skipped request signals were counted as dropped")
	}
}

func TestService_Properties(t *testing.T) {
	d := startBusTestDaemon(t, busTestDir(t))
	client := dialBusTest(t, d.Address)
	ctl := newBusTestController()
	ctl.status = workers.Status{State: "starting", Generation: 1, Workers: 3}
	ctl.listeners = []workers.Listener{{Name: "web", Addr: "tcp://127.0.0.1:8000", Queue: 7, Backlog: 2048},
		{Name: "admin", Addr: "unix:/run/admin.sock", Queue: 0, Backlog: 128}}
	b := New(Options{Instance: "props", Address: d.Address, Controller: ctl, Queue: 2})
	// Dropped before Run: the queue holds 2 of these 5.
	for i := 0; i < 5; i++ {
		b.Emit(hooks.Event{Hook: hooks.PreFork, WorkerID: i})
	}
	match := []dbus.MatchOption{dbus.WithMatchInterface("org.freedesktop.DBus.Properties"),
		dbus.WithMatchMember("PropertiesChanged"), dbus.WithMatchObjectPath(ObjectPath)}
	if err := client.AddMatchSignal(match...); err != nil {
		t.Fatal(err)
	}
	runBusTest(t, b)
	client.waitOwned(t, b.Name())
	obj := client.object("props")

	// Before any UpdateStatus, the controller answers.
	var all map[string]dbus.Variant
	if err := obj.Call("org.freedesktop.DBus.Properties.GetAll", 0, Interface).Store(&all); err != nil {
		t.Fatalf("GetAll: %v", err)
	}
	var ls []ListenerEntry
	if err := all["Listeners"].Store(&ls); err != nil {
		t.Errorf("Listeners: %v", err)
	}
	wantLs := []ListenerEntry{{"web", "tcp://127.0.0.1:8000", 7, 2048}, {"admin", "unix:/run/admin.sock", 0, 128}}
	if !reflect.DeepEqual(ls, wantLs) {
		t.Errorf("Listeners = %+v, want %+v", ls, wantLs)
	}
	delete(all, "Listeners")
	want := map[string]any{"Instance": "props", "State": "starting", "Generation": uint64(1),
		"Workers": uint32(3), "ReadyWorkers": uint32(0), "DroppedSignals": uint64(3), "Cluster": ""}
	if got := variantValues(all); !reflect.DeepEqual(got, want) {
		t.Errorf("GetAll = %v, want %v", got, want)
	}

	// The first update announces the whole status: Run never asks the
	// controller, whose pool may be waiting for it.
	b.UpdateStatus(workers.Status{State: "running", Generation: 1, Workers: 3, ReadyWorkers: 3})
	s := client.next(t, "org.freedesktop.DBus.Properties.PropertiesChanged")
	checkChanged(t, s, map[string]any{"State": "running", "Generation": uint64(1), "Workers": uint32(3), "ReadyWorkers": uint32(3)})
	b.UpdateStatus(workers.Status{State: "running", Generation: 1, Workers: 3, ReadyWorkers: 2})
	s = client.next(t, "org.freedesktop.DBus.Properties.PropertiesChanged")
	checkChanged(t, s, map[string]any{"ReadyWorkers": uint32(2)})

	b.UpdateStatus(workers.Status{State: "running", Generation: 2, Workers: 5, ReadyWorkers: 3})
	s = client.next(t, "org.freedesktop.DBus.Properties.PropertiesChanged")
	checkChanged(t, s, map[string]any{"Generation": uint64(2), "Workers": uint32(5), "ReadyWorkers": uint32(3)})

	var v dbus.Variant
	if err := obj.Call("org.freedesktop.DBus.Properties.Get", 0, Interface, "Workers").Store(&v); err != nil {
		t.Fatalf("Get Workers: %v", err)
	}
	if v.Value() != uint32(5) {
		t.Errorf("Get Workers = %v, want 5", v.Value())
	}
	err := obj.Call("org.freedesktop.DBus.Properties.Get", 0, Interface, "Nope").Err
	if name := dbusErrorName(err); name != "org.freedesktop.DBus.Error.UnknownProperty" {
		t.Errorf("Get Nope: error %v, want UnknownProperty", err)
	}
	err = obj.Call("org.freedesktop.DBus.Properties.Set", 0, Interface, "Workers", dbus.MakeVariant(uint32(1))).Err
	// The shipped policy denies Set to everyone (the object would answer
	// PropertyReadOnly anyway).
	if name := dbusErrorName(err); name != "org.freedesktop.DBus.Error.AccessDenied" {
		t.Errorf("Set Workers: error %v, want AccessDenied", err)
	}
}

func variantValues(m map[string]dbus.Variant) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v.Value()
	}
	return out
}

func checkChanged(t *testing.T, s *dbus.Signal, want map[string]any) {
	t.Helper()
	if len(s.Body) != 3 || s.Body[0] != Interface {
		t.Fatalf("PropertiesChanged body %#v", s.Body)
	}
	changed, ok := s.Body[1].(map[string]dbus.Variant)
	if !ok {
		t.Fatalf("PropertiesChanged changed = %T", s.Body[1])
	}
	if got := variantValues(changed); !reflect.DeepEqual(got, want) {
		t.Errorf("PropertiesChanged %v, want %v", got, want)
	}
}

// TestService_DroppedSignalsChanged checks that drops while connected are
// published as a DroppedSignals change.
func TestService_DroppedSignalsChanged(t *testing.T) {
	d := startBusTestDaemon(t, busTestDir(t))
	client := dialBusTest(t, d.Address)
	if err := client.AddMatchSignal(dbus.WithMatchInterface("org.freedesktop.DBus.Properties"),
		dbus.WithMatchMember("PropertiesChanged")); err != nil {
		t.Fatal(err)
	}
	b := New(Options{Instance: "drops", Address: d.Address, Queue: 1})
	b.droppedEvery = 0
	runBusTest(t, b)
	client.waitOwned(t, b.Name())
	b.drop() // as Emit does when the queue is full
	s := client.next(t, "org.freedesktop.DBus.Properties.PropertiesChanged")
	checkChanged(t, s, map[string]any{"DroppedSignals": uint64(1)})
}

func TestService_Reload(t *testing.T) {
	d := startBusTestDaemon(t, busTestDir(t))
	client := dialBusTest(t, d.Address)
	ctl := newBusTestController()
	b := New(Options{Instance: "reload", Address: d.Address, Controller: ctl})
	runBusTest(t, b)
	client.waitOwned(t, b.Name())
	obj := client.object("reload")

	for _, tc := range []struct {
		name     string
		result   error
		wantName string
	}{
		{"ok", nil, ""},
		{"failed", errors.New("new generation did not come up: worker 0 exited with 3"), ErrorReloadFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			call := obj.Go(Interface+".Reload", 0, make(chan *dbus.Call, 1))
			select {
			case <-ctl.reloadIn:
			case <-time.After(busTestTimeout):
				t.Fatal("Reload did not reach the controller")
			}
			// A signal sent while the reload is in flight still arrives:
			// methods do not hold up the signal queue.
			client.subscribe(t)
			b.Emit(hooks.Event{Hook: hooks.OnReload, Generation: 9})
			if s := client.nextForkd(t); s.Name != Interface+".OnReload" {
				t.Errorf("during Reload got %s, want OnReload", s.Name)
			}
			select {
			case <-call.Done:
				t.Fatalf("Reload returned (%v) before the controller did", call.Err)
			default:
			}
			ctl.reloadDone <- tc.result
			select {
			case <-call.Done:
			case <-time.After(busTestTimeout):
				t.Fatal("Reload did not return after the controller did")
			}
			if got := dbusErrorName(call.Err); got != tc.wantName {
				t.Fatalf("Reload error %v (name %q), want name %q", call.Err, got, tc.wantName)
			}
			if tc.result != nil {
				var de dbus.Error
				if !errors.As(call.Err, &de) || len(de.Body) != 1 || de.Body[0] != tc.result.Error() {
					t.Errorf("Reload error body %#v, want the controller's message %q", de.Body, tc.result)
				}
			}
		})
	}
}

func TestService_SetWorkers(t *testing.T) {
	d := startBusTestDaemon(t, busTestDir(t))
	client := dialBusTest(t, d.Address)
	ctl := newBusTestController()
	b := New(Options{Instance: "scale", Address: d.Address, Controller: ctl})
	runBusTest(t, b)
	client.waitOwned(t, b.Name())
	obj := client.object("scale")

	if err := obj.Call(Interface+".SetWorkers", 0, uint32(7)).Err; err != nil {
		t.Fatalf("SetWorkers(7): %v", err)
	}
	err := obj.Call(Interface+".SetWorkers", 0, uint32(config.MaxWorkers+1)).Err
	if got := dbusErrorName(err); got != ErrorInvalidArgs {
		t.Errorf("SetWorkers(%d) error %v, want %s", config.MaxWorkers+1, err, ErrorInvalidArgs)
	}
	if _, set := ctl.calls(); !reflect.DeepEqual(set, []int{7}) {
		t.Errorf("controller got SetWorkers %v, want [7]", set)
	}
	ctl.mu.Lock()
	ctl.setErr = fmt.Errorf("scale to 9: %w", workers.ErrOutOfRange)
	ctl.mu.Unlock()
	err = obj.Call(Interface+".SetWorkers", 0, uint32(9)).Err
	if got := dbusErrorName(err); got != ErrorInvalidArgs {
		t.Errorf("controller's workers.ErrOutOfRange came back as %v, want %s", err, ErrorInvalidArgs)
	}
	ctl.mu.Lock()
	ctl.setErr = errors.New("stopping")
	ctl.mu.Unlock()
	err = obj.Call(Interface+".SetWorkers", 0, uint32(9)).Err
	if got := dbusErrorName(err); got != ErrorFailed {
		t.Errorf("controller failure came back as %v, want %s", err, ErrorFailed)
	}
	// A wrong argument type never reaches the controller.
	if err := obj.Call(Interface+".SetWorkers", 0, "seven").Err; err == nil {
		t.Error(`SetWorkers("seven") succeeded`)
	}
}

func TestService_ListWorkers(t *testing.T) {
	d := startBusTestDaemon(t, busTestDir(t))
	client := dialBusTest(t, d.Address)
	ctl := newBusTestController()
	started := time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)
	ctl.workers = []workers.Info{
		{ID: 1, PID: 301, Generation: 2, State: "starting", Started: started},
		{ID: 0, PID: 200, Generation: 1, State: "stopping", Started: started.Add(-time.Hour)},
		{ID: 0, PID: 300, Generation: 2, State: "ready", Memory: 64 << 20, CPU: 1500 * time.Millisecond},
	}
	b := New(Options{Instance: "list", Address: d.Address, Controller: ctl})
	runBusTest(t, b)
	client.waitOwned(t, b.Name())

	var got []WorkerEntry
	if err := client.object("list").Call(Interface+".ListWorkers", 0).Store(&got); err != nil {
		t.Fatalf("ListWorkers: %v", err)
	}
	want := []WorkerEntry{
		{0, 200, 1, "stopping", uint64(started.Add(-time.Hour).UnixMicro()), 0, 0},
		{0, 300, 2, "ready", 0, 64 << 20, 1500000},
		{1, 301, 2, "starting", uint64(started.UnixMicro()), 0, 0},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ListWorkers = %+v, want %+v", got, want)
	}
}

func TestService_Introspect(t *testing.T) {
	d := startBusTestDaemon(t, busTestDir(t))
	client := dialBusTest(t, d.Address)
	b := New(Options{Instance: "intro", Address: d.Address})
	runBusTest(t, b)
	client.waitOwned(t, b.Name())
	var got string
	if err := client.object("intro").Call("org.freedesktop.DBus.Introspectable.Introspect", 0).Store(&got); err != nil {
		t.Fatalf("Introspect: %v", err)
	}
	if got != InterfaceXML() {
		t.Errorf("Introspect returned %d bytes that differ from the shipped XML (%d bytes)", len(got), len(InterfaceXML()))
	}
	if !strings.Contains(got, `<interface name="io.github.forkd.Manager1">`) {
		t.Error("introspection lacks the Manager1 interface")
	}
}

// TestService_Reconnect kills the bus under a running Service and starts a new one
// on the same socket: the Service must own its name again and send signals.
func TestService_Reconnect(t *testing.T) {
	dir := busTestDir(t)
	d := startBusTestDaemon(t, dir)
	client := dialBusTest(t, d.Address)
	client.subscribe(t)
	log := &busTestLog{}
	b := New(Options{Instance: "phoenix", Address: d.Address, Logger: slog.New(log)})
	b.backoffMin, b.backoffMax = 5*time.Millisecond, 50*time.Millisecond
	runBusTest(t, b)
	client.waitOwned(t, b.Name())
	b.Emit(hooks.Event{Hook: hooks.OnStarting, Generation: 1})
	if s := client.nextForkd(t); s.Name != Interface+".OnStarting" {
		t.Fatalf("got %s, want OnStarting", s.Name)
	}

	d.Stop()
	select {
	case <-client.Context().Done():
	case <-time.After(busTestTimeout):
		t.Fatal("client connection survived the daemon")
	}
	emitWithin(t, "Emit while the bus is down", func() {
		b.Emit(hooks.Event{Hook: hooks.WorkerExit, Generation: 1, WorkerID: 0, PID: 1})
	})

	d2 := startBusTestDaemon(t, dir)
	if d2.Address != d.Address {
		t.Fatalf("new daemon at %s, want %s", d2.Address, d.Address)
	}
	client2 := dialBusTest(t, d2.Address)
	client2.subscribe(t)
	client2.waitOwned(t, b.Name())
	b.Emit(hooks.Event{Hook: hooks.WhenReady, Generation: 2, Workers: 1})
	for {
		s := client2.nextForkd(t)
		if s.Name == Interface+".WorkerExit" {
			continue // queued while down; may or may not beat our match
		}
		if s.Name != Interface+".WhenReady" || !reflect.DeepEqual(s.Body, []any{"phoenix", uint64(2), uint32(1)}) {
			t.Fatalf("after reconnecting got %s %v, want WhenReady [phoenix 2 1]", s.Name, s.Body)
		}
		break
	}
	if warns := log.at(slog.LevelWarn); len(warns) == 0 {
		t.Error("losing the bus logged no warning")
	}
}

// TestService_NameTaken runs two Buses for one instance: the second warns once,
// keeps retrying, and takes the name over when the first stops.
func TestService_NameTaken(t *testing.T) {
	d := startBusTestDaemon(t, busTestDir(t))
	client := dialBusTest(t, d.Address)
	client.subscribe(t)
	first := New(Options{Instance: "twice", Address: d.Address})
	ctx1, stop1 := context.WithCancel(context.Background())
	done1 := make(chan error, 1)
	go func() { done1 <- first.Run(ctx1) }()
	defer stop1()
	client.waitOwned(t, first.Name())

	log := &busTestLog{}
	second := New(Options{Instance: "twice", Address: d.Address, Logger: slog.New(log)})
	second.backoffMin, second.backoffMax = time.Millisecond, 5*time.Millisecond
	attempts := make(chan error, 16)
	acquired := make(chan struct{}, 1)
	second.onAttempt = func(err error) {
		if err == nil {
			select {
			case acquired <- struct{}{}:
			default:
			}
			return
		}
		select {
		case attempts <- err:
		default:
		}
	}
	runBusTest(t, second)
	for i := 0; i < 3; i++ {
		select {
		case err := <-attempts:
			if !errors.Is(err, errNameTaken) {
				t.Fatalf("second Service attempt: %v, want errNameTaken", err)
			}
		case <-time.After(busTestTimeout):
			t.Fatal("second Service made no attempts")
		}
	}
	if warns := log.at(slog.LevelWarn); len(warns) != 1 || !strings.Contains(warns[0], "name taken") {
		t.Errorf("warnings %q, want one about the name being taken", warns)
	}

	stop1()
	<-done1
	select {
	case <-acquired:
	case <-time.After(busTestTimeout):
		t.Fatal("second Service did not take the name over")
	}
	second.Emit(hooks.Event{Hook: hooks.OnStarting, Generation: 7})
	s := client.nextForkd(t)
	if s.Name != Interface+".OnStarting" || !reflect.DeepEqual(s.Body, []any{"twice", uint64(7)}) {
		t.Errorf("after taking over got %s %v", s.Name, s.Body)
	}
}
