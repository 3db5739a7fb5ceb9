package testkit

import (
	"strings"
	"sync"
	"testing"
	"time"
)

// Buffer collects text that goroutines — a logger, the copier of a child's
// output — write while a test reads it. Write, String and WaitFor may be
// called from several goroutines at once; the zero value is ready to use.
type Buffer struct {
	mu      sync.Mutex
	buf     strings.Builder
	written chan struct{} // closed and replaced by every Write
}

// Write appends p; it never fails.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.written != nil {
		close(b.written)
		b.written = nil
	}
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// WaitFor waits until a complete line (one ended by "\n") containing substr
// has been written, and returns the first such line without its newline.
// It fails the test after Deadline.
func (b *Buffer) WaitFor(t testing.TB, substr string) string {
	t.Helper()
	timeout := time.NewTimer(Deadline)
	defer timeout.Stop()
	for {
		b.mu.Lock()
		text := b.buf.String()
		for line := range strings.Lines(text) {
			if l, complete := strings.CutSuffix(line, "\n"); complete && strings.Contains(l, substr) {
				b.mu.Unlock()
				return l
			}
		}
		if b.written == nil {
			b.written = make(chan struct{})
		}
		written := b.written
		b.mu.Unlock()
		select {
		case <-written:
		case <-timeout.C:
			t.Fatalf("no line containing %q within %v; written so far:\n%s", substr, Deadline, text)
			return ""
		}
	}
}
