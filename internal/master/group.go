package master

import "context"

// group runs actors together, as oklog/run does: when the first returns,
// the shared context is cancelled so the others return too; wait reports
// the first error.
type group struct {
	ctx    context.Context
	cancel context.CancelFunc
	errs   chan error
	n      int
}

func newGroup(parent context.Context) *group {
	ctx, cancel := context.WithCancel(parent)
	return &group{ctx: ctx, cancel: cancel, errs: make(chan error, 16)}
}

// Go starts fn(ctx) as a member of the group.
func (g *group) Go(fn func(ctx context.Context) error) {
	g.n++
	go func() {
		err := fn(g.ctx)
		g.cancel()
		g.errs <- err
	}()
}

// Wait waits for every member and returns the first non-nil error.
func (g *group) Wait() error {
	var first error
	for range g.n {
		if err := <-g.errs; err != nil && first == nil {
			first = err
		}
	}
	g.cancel()
	return first
}
