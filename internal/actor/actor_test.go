package actor

import (
	"context"
	"errors"
	"testing"
	"time"
)

var errClosed = errors.New("closed")

// loop is an actor that runs what it receives until stop.
func loop(inbox <-chan func(int), stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	for {
		select {
		case fn := <-inbox:
			fn(7)
		case <-stop:
			return
		}
	}
}

func TestAsk(t *testing.T) {
	inbox, stop, done := make(chan func(int)), make(chan struct{}), make(chan struct{})
	go loop(inbox, stop, done)
	got, err := Ask(context.Background(), inbox, done, errClosed, func(n int) int { return n * 6 })
	if err != nil || got != 42 {
		t.Fatalf("Ask = %d, %v; want 42", got, err)
	}
	close(stop)
	<-done
	if _, err := Ask(context.Background(), inbox, done, errClosed, func(n int) int { return n }); !errors.Is(err, errClosed) {
		t.Fatalf("Ask after the loop returned: %v, want %v", err, errClosed)
	}
}

// TestAsk_GaveUp: a caller whose context ends returns its error and reads
// nothing the actor writes later.
func TestAsk_GaveUp(t *testing.T) {
	inbox, done := make(chan func(int)), make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := Ask(ctx, inbox, done, errClosed, func(n int) int { return n }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Ask with nobody receiving: %v, want the deadline", err)
	}
}

// TestBarrier: Barrier returns once the loop closes the channel it handed
// over, and no sooner; once done is closed; once ctx ends.
func TestBarrier(t *testing.T) {
	inbox := make(chan chan struct{})
	returned := make(chan struct{})
	go func() {
		Barrier(context.Background(), inbox, nil)
		close(returned)
	}()
	c := <-inbox
	select {
	case <-returned:
		t.Fatal("Barrier returned before the loop closed its channel")
	case <-time.After(50 * time.Millisecond):
	}
	close(c)
	<-returned

	done := make(chan struct{})
	close(done)
	Barrier(context.Background(), inbox, done) // nobody receives: done ends it

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	go func() { <-inbox }() // taken, never closed: ctx ends it
	Barrier(ctx, inbox, nil)
}
