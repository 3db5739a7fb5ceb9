package master

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/forkd/forkd/jobs"
)

// testJobRunner is a bus.JobRunner that records its calls.
type testJobRunner struct {
	list []jobs.Info
	ran  []string
}

func (r *testJobRunner) RunNow(_ context.Context, name string) error {
	r.ran = append(r.ran, name)
	return nil
}

func (r *testJobRunner) ListJobs(context.Context) ([]jobs.Info, error) { return r.list, nil }

// TestLateController_Jobs checks that RunNow and ListJobs reach the runner
// setJobs gave, and that without one there are no jobs.
func TestLateController_Jobs(t *testing.T) {
	ctx := context.Background()
	c := &lateController{}
	if err := c.RunNow(ctx, "cleanup"); !errors.Is(err, jobs.ErrUnknown) {
		t.Errorf("RunNow without a runner: %v, want jobs.ErrUnknown", err)
	}
	if list, err := c.ListJobs(ctx); err != nil || len(list) != 0 {
		t.Errorf("ListJobs without a runner: %v, %v; want none", list, err)
	}

	r := &testJobRunner{list: []jobs.Info{{Name: "cleanup", Kind: jobs.KindSchedule}}}
	c.setJobs(r)
	if err := c.RunNow(ctx, "cleanup"); err != nil || !reflect.DeepEqual(r.ran, []string{"cleanup"}) {
		t.Errorf("RunNow: %v, runner got %v; want [cleanup]", err, r.ran)
	}
	if list, err := c.ListJobs(ctx); err != nil || !reflect.DeepEqual(list, r.list) {
		t.Errorf("ListJobs: %v, %v; want the runner's %v", list, err, r.list)
	}

	c.setJobs(nil)
	if err := c.RunNow(ctx, "cleanup"); !errors.Is(err, jobs.ErrUnknown) {
		t.Errorf("RunNow after setJobs(nil): %v, want jobs.ErrUnknown", err)
	}
}
