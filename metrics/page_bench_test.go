package metrics

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/forkd/forkd/metrics/metricstest"
)

// BenchmarkAnswer is the master's work for one scrape besides the
// arbiter's Snapshot: 64 workers' /proc, the recorder, the Go runtime's
// statistics and the answer's encoding.
func BenchmarkAnswer(b *testing.B) {
	r := New(Options{Instance: "bench"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = r.Run(ctx) }()
	r.SetPool(metricstest.Pool{N: 64})
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
