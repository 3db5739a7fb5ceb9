// Package actor holds what forkd's actors — the arbiter (workers.Pool) and
// the supervisor of singletons and schedules — share: a request into an
// actor's loop that carries its own reply.
package actor

import "context"

// Ask hands fn to the actor whose loop receives on inbox and runs each
// function it receives on its own goroutine, and returns fn's result. The
// result goes through a buffered channel of this call's own, so a caller
// that gave up (ctx done) leaves it unread and reads nothing written
// later. done is closed once the actor's loop has returned; Ask then
// returns closed, unless fn ran as the loop returned.
func Ask[A, T any](ctx context.Context, inbox chan<- func(A), done <-chan struct{}, closed error, fn func(A) T) (T, error) {
	reply := make(chan T, 1)
	var zero T
	select {
	case inbox <- func(a A) { reply <- fn(a) }:
	case <-done:
		return zero, closed
	case <-ctx.Done():
		return zero, ctx.Err()
	}
	select {
	case v := <-reply:
		return v, nil
	case <-done:
		select {
		case v := <-reply: // answered as the loop returned
			return v, nil
		default:
			return zero, closed
		}
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// Barrier hands a new channel to the actor whose loop receives on inbox
// and returns once the loop has closed it — which the loop does once what
// it was asked for is done (everything queued before, say) — or once done
// is closed (the loop has returned; nil: never) or ctx ends, whichever
// comes first.
func Barrier(ctx context.Context, inbox chan<- chan struct{}, done <-chan struct{}) {
	c := make(chan struct{})
	select {
	case inbox <- c:
	case <-done:
		return
	case <-ctx.Done():
		return
	}
	select {
	case <-c:
	case <-done:
	case <-ctx.Done():
	}
}
