package bus

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/forkd/forkd/jobs"
)

// busTestJobs is a busTestController that also runs jobs (a JobRunner): it
// knows the jobs in list, records RunNow calls, and fails them with runErr.
type busTestJobs struct {
	*busTestController
	mu     sync.Mutex
	list   []jobs.Info
	runErr error
	ran    []string
}

var _ JobRunner = (*busTestJobs)(nil)

func (c *busTestJobs) RunNow(_ context.Context, name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, j := range c.list {
		if j.Name == name {
			if c.runErr != nil {
				return c.runErr
			}
			c.ran = append(c.ran, name)
			return nil
		}
	}
	return fmt.Errorf("run %q: %w", name, jobs.ErrUnknown)
}

func (c *busTestJobs) ListJobs(context.Context) ([]jobs.Info, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]jobs.Info(nil), c.list...), nil
}

func (c *busTestJobs) runs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.ran...)
}

func TestService_RunNow(t *testing.T) {
	d := startBusTestDaemon(t, busTestDir(t))
	client := dialBusTest(t, d.Address)
	ctl := &busTestJobs{busTestController: newBusTestController(), list: []jobs.Info{
		{Name: "cleanup", Kind: jobs.KindSchedule, State: "idle"},
		{Name: "scheduler", Kind: jobs.KindSingleton, State: "running"},
	}}
	b := New(Options{Instance: "runnow", Address: d.Address, Controller: ctl})
	runBusTest(t, b)
	client.waitOwned(t, b.Name())
	obj := client.object("runnow")

	if err := obj.Call(Interface+".RunNow", 0, "cleanup").Err; err != nil {
		t.Fatalf("RunNow(cleanup): %v", err)
	}
	if got := ctl.runs(); !reflect.DeepEqual(got, []string{"cleanup"}) {
		t.Errorf("runner got RunNow %v, want [cleanup]", got)
	}

	for _, name := range []string{"nope", ""} {
		err := obj.Call(Interface+".RunNow", 0, name).Err
		var de dbus.Error
		if !errors.As(err, &de) || de.Name != ErrorInvalidArgs {
			t.Fatalf("RunNow(%q): %v, want %s", name, err, ErrorInvalidArgs)
		}
		if want := fmt.Sprintf("no singleton or schedule named %q", name); len(de.Body) != 1 || de.Body[0] != want {
			t.Errorf("RunNow(%q) error body %#v, want %q", name, de.Body, want)
		}
	}

	ctl.mu.Lock()
	ctl.runErr = errors.New(`scheduler is a singleton: it runs all the time`)
	ctl.mu.Unlock()
	err := obj.Call(Interface+".RunNow", 0, "scheduler").Err
	var de dbus.Error
	if !errors.As(err, &de) || de.Name != ErrorFailed || len(de.Body) != 1 || de.Body[0] != ctl.runErr.Error() {
		t.Errorf("RunNow refused by the runner: %v, want %s with its message", err, ErrorFailed)
	}
	if err := obj.Call(Interface+".RunNow", 0, uint32(1)).Err; err == nil {
		t.Error("RunNow(1) succeeded: a wrong argument type must not reach the runner")
	}
}

func TestService_ListJobs(t *testing.T) {
	d := startBusTestDaemon(t, busTestDir(t))
	client := dialBusTest(t, d.Address)
	started := time.Date(2026, 3, 4, 5, 6, 7, 8000, time.UTC)
	ctl := &busTestJobs{busTestController: newBusTestController(), list: []jobs.Info{
		{Name: "report", Kind: jobs.KindSchedule, State: "idle", Timing: "0 3 * * * Europe/Seoul",
			NextDue: started.Add(time.Hour)},
		{Name: "cleanup", Kind: jobs.KindSchedule, State: "running", PID: 4321, Timing: "every 5m0s",
			LastStart: started, LastResult: jobs.ResultTimeout, NextDue: started.Add(5 * time.Minute), Starts: 7},
		{Name: "scheduler", Kind: jobs.KindSingleton, State: "running", PID: 1234, LastStart: started,
			LastResult: "crashed", Starts: 2, Scope: "cluster", Holder: "host1/shop"},
	}}
	plain := newBusTestController() // not a JobRunner: no jobs
	b := New(Options{Instance: "jobs", Address: d.Address, Controller: ctl})
	none := New(Options{Instance: "nojobs", Address: d.Address, Controller: plain})
	runBusTest(t, b)
	runBusTest(t, none)
	client.waitOwned(t, b.Name())
	client.waitOwned(t, none.Name())

	var got []JobEntry
	if err := client.object("jobs").Call(Interface+".ListJobs", 0).Store(&got); err != nil {
		t.Fatalf("ListJobs: %v", err)
	}
	us := func(t time.Time) uint64 { return uint64(t.UnixMicro()) }
	want := []JobEntry{
		{"scheduler", "singleton", "running", 1234, "", us(started), "crashed", 0, 2, "cluster", "host1/shop"},
		{"cleanup", "schedule", "running", 4321, "every 5m0s", us(started), "timeout", us(started.Add(5 * time.Minute)), 7, "", ""},
		{"report", "schedule", "idle", 0, "0 3 * * * Europe/Seoul", 0, "", us(started.Add(time.Hour)), 0, "", ""},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ListJobs = %+v\nwant %+v", got, want)
	}

	got = nil
	if err := client.object("nojobs").Call(Interface+".ListJobs", 0).Store(&got); err != nil || len(got) != 0 {
		t.Errorf("ListJobs of a controller without jobs: %v, %v; want an empty list", got, err)
	}
	err := client.object("nojobs").Call(Interface+".RunNow", 0, "cleanup").Err
	if name := dbusErrorName(err); name != ErrorInvalidArgs {
		t.Errorf("RunNow on a controller without jobs: %v, want %s", err, ErrorInvalidArgs)
	}
}
