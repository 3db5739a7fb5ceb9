package workers

import (
	"context"
	"testing"
	"time"

	"github.com/forkd/forkd/internal/testkit"
)

// TestPool_Snapshot: one request gives the status and the workers as
// Status and ListWorkers do, with each ready worker's last sign of life; a
// worker's request report reaches Options.Requests and its Info.
func TestPool_Snapshot(t *testing.T) {
	reports := make(chan RequestReport, 16)
	h := start(t, testConfig(testkit.Executable(t), "report", 2), func(o *Options) {
		o.Requests = func(r RequestReport) { reports <- r }
	})
	h.waitReady(2)
	served := atoi(h.dial()["pid"])
	var rep RequestReport
	select {
	case rep = <-reports:
	case <-time.After(20 * time.Second):
		t.Fatal("no request report within 20s")
	}
	if rep.PID != served || !rep.HasRequests || rep.Requests != 1 || rep.Stats != "1;1000;1,0" ||
		!rep.HasSum || rep.SumUsec != 250 || !rep.HasInflight || rep.Inflight != 0 || rep.Generation != 1 {
		t.Errorf("report %+v, want pid %d's whole report", rep, served)
	}

	ctx := context.Background()
	snap, err := h.pool.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st, err := h.pool.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	list, err := h.pool.ListWorkers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Status != st {
		t.Errorf("Snapshot's status %+v, Status says %+v", snap.Status, st)
	}
	if len(snap.Workers) != 2 || len(list) != 2 {
		t.Fatalf("Snapshot has %d workers, ListWorkers %d; want 2", len(snap.Workers), len(list))
	}
	for i, w := range snap.Workers {
		l := list[i]
		if w.ID != l.ID || w.PID != l.PID || w.State != l.State || w.Requests != l.Requests || w.Inflight != l.Inflight {
			t.Errorf("Snapshot worker %+v, ListWorkers %+v", w, l)
		}
		if w.LastBeat.IsZero() || w.ReadyAt.IsZero() || w.State != "ready" {
			t.Errorf("worker %+v: want it ready, with its last sign of life", w)
		}
		want := int64(-1)
		if w.PID == served {
			want = 0
		}
		if w.Inflight != want {
			t.Errorf("worker %d: in flight %d, want %d", w.PID, w.Inflight, want)
		}
	}
}
