// Package syncbuf is a text buffer that goroutines — a logger, the copier
// of a child's output — may write while a test reads it.
package syncbuf

import (
	"strings"
	"sync"
)

// Buffer collects what is written to it. Write and String may be called
// from several goroutines at once; the zero value is ready to use.
type Buffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

// Write appends p; it never fails.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
