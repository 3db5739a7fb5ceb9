// Package metricstest has what the tests of package metrics and of its
// users share: a pool to record.
package metricstest

import (
	"context"
	"os"
	"time"

	"github.com/forkd/forkd/workers"
)

// Pool is a metrics.Pool whose Snapshot has N ready workers of generation
// 1, each this process (so that their memory and CPU can be read).
type Pool struct{ N int }

// Snapshot returns the N workers, running.
func (p Pool) Snapshot(context.Context) (workers.Snapshot, error) {
	s := workers.Snapshot{Status: workers.Status{State: workers.StateRunning, Generation: 1, Workers: p.N, ReadyWorkers: p.N}}
	for i := range p.N {
		s.Workers = append(s.Workers, workers.Info{ID: i, PID: os.Getpid(), Generation: 1, State: "ready",
			Started: time.Now(), Inflight: 0, LastBeat: time.Now()})
	}
	return s, nil
}
