package workers

import (
	"context"
	"errors"
	"fmt"

	"github.com/forkd/forkd/listenq"
)

// Listener is one of the pool's listening sockets and its accept queue,
// as Pool.Listeners reports it.
type Listener struct {
	// Name is the socket's LISTEN_FDNAMES entry.
	Name string
	// Addr describes the socket for people ("tcp://127.0.0.1:8000").
	Addr string
	// Queue is how many connections the kernel accepted that no worker
	// took yet; Backlog is the most it queues (listen(2)'s backlog). Both
	// are 0 for a socket whose queue the kernel does not report (not a
	// listening TCP or unix socket).
	Queue, Backlog uint32
}

// Listeners returns the pool's listening sockets, in LISTEN_FDS order, with
// their accept queues as the kernel reports them now (sock_diag, see
// package listenq). The error, if any, says which sockets could not be
// read; the list holds every socket regardless. It does not wait for the
// arbiter.
func (p *Pool) Listeners(ctx context.Context) ([]Listener, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	list := make([]Listener, len(p.opts.Sockets))
	var errs []error
	for i, s := range p.opts.Sockets {
		list[i] = Listener{Name: s.Name, Addr: s.Addr}
		q, err := p.opts.readQueue(s.File)
		if err != nil {
			if !errors.Is(err, listenq.ErrNotListening) {
				errs = append(errs, fmt.Errorf("accept queue of %s: %w", s.Addr, err))
			}
			continue
		}
		list[i].Queue, list[i].Backlog = q.Len, q.Backlog
	}
	return list, errors.Join(errs...)
}

// longestQueue returns the longest accept queue of the pool's listening
// sockets; those the kernel does not report count as empty.
func (p *Pool) longestQueue() int {
	longest := 0
	for _, s := range p.opts.Sockets {
		if q, err := p.opts.readQueue(s.File); err == nil && int(q.Len) > longest {
			longest = int(q.Len)
		}
	}
	return longest
}
