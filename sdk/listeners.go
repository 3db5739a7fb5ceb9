package sdk

import (
	"errors"
	"fmt"
	"net"

	sdactivation "github.com/coreos/go-systemd/v22/activation"
)

// ErrNoListeners is returned by Listeners, and so by Server.Run and Serve,
// when the process inherited no listening stream socket: LISTEN_FDS is
// unset, or LISTEN_PID names another process, or none of the inherited
// descriptors is a listening stream socket.
var ErrNoListeners = errors.New("worker: no inherited listening socket (LISTEN_FDS unset, or LISTEN_PID is not this process)")

// Listeners returns the listening sockets the worker inherited from forkd
// (or systemd): file descriptors 3, 4, … as announced by LISTEN_FDS and
// LISTEN_PID, in that order. Inherited descriptors that are not listening
// stream sockets (a datagram socket, a FIFO) are left out.
//
// Listeners unsets LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID, so that the
// worker's own children do not take the sockets for theirs, and marks the
// descriptors close-on-exec: a second call returns ErrNoListeners. It
// returns ErrNoListeners when there is no socket to serve on.
func Listeners() ([]net.Listener, error) {
	inherited, err := sdactivation.Listeners()
	if err != nil {
		return nil, fmt.Errorf("get inherited sockets: %w", err)
	}
	var listeners []net.Listener
	for _, ln := range inherited {
		if ln != nil { // nil: an inherited fd that is not a stream socket
			listeners = append(listeners, ln)
		}
	}
	if len(listeners) == 0 {
		if len(inherited) > 0 {
			return nil, fmt.Errorf("%w: none of the %d inherited descriptors is a listening stream socket", ErrNoListeners, len(inherited))
		}
		return nil, ErrNoListeners
	}
	return listeners, nil
}
