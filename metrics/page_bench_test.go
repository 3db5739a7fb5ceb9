package metrics

import (
	"context"
	"encoding/json"
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

// BenchmarkAnswer is the master's work for one scrape besides the
// arbiter's Snapshot: 64 workers' /proc, the recorder, the Go runtime's
// statistics and the answer's encoding.
func BenchmarkAnswer(b *testing.B) {
	r := New(Options{Instance: "bench"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = r.Run(ctx) }()
	r.SetPool(fakePool{64})
	b.ReportAllocs()
	for b.Loop() {
		a, err := r.answer(ctx, 1)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := json.Marshal(a); err != nil {
			b.Fatal(err)
		}
	}
}
