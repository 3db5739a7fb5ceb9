package testkit

import (
	"context"
	"sync"
	"testing"
	"time"
)

// Run runs an actor — run returns once its context is cancelled — in a
// goroutine, and returns stop: it cancels the context and fails the test
// unless run returns nil within Deadline. Stop is idempotent, and called
// when the test ends if the test did not call it.
func Run(t testing.TB, run func(context.Context) error) (stop func()) {
	t.Helper()
	return RunWithin(t, Deadline, run)
}

// RunWithin is Run with a bound of its own on how soon run must return
// once cancelled.
func RunWithin(t testing.TB, bound time.Duration, run func(context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	stop = func() {
		t.Helper()
		once.Do(func() {
			cancel()
			timeout := time.NewTimer(bound)
			defer timeout.Stop()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v after cancel, want nil", err)
				}
			case <-timeout.C:
				t.Errorf("Run did not return within %v of cancel", bound)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}
