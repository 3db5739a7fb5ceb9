package metrics

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/forkd/forkd/workers"
)

// fakePool answers Snapshot with n workers, each this process.
type fakePool struct{ n int }

func (f fakePool) Snapshot(context.Context) (workers.Snapshot, error) {
	s := workers.Snapshot{Status: workers.Status{State: workers.StateRunning, Generation: 1, Workers: f.n, ReadyWorkers: f.n}}
	for i := range f.n {
		s.Workers = append(s.Workers, workers.Info{ID: i, PID: os.Getpid(), Generation: 1, State: "ready",
			Started: time.Now(), Inflight: 0, LastBeat: time.Now()})
	}
	return s, nil
}

// BenchmarkGather is one scrape's work besides the arbiter's Snapshot: 64
// workers' /proc, the recorder, encoding every family with the library's
// process and Go collectors.
func BenchmarkGather(b *testing.B) {
	r := New(Options{Instance: "bench"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = r.Run(ctx) }()
	r.SetPool(fakePool{64})
	reg := r.Registry()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := reg.Gather(); err != nil {
			b.Fatal(err)
		}
	}
}
