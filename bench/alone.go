package bench

import (
	"fmt"
	"net"

	"github.com/forkd/forkd/bench/benchworker"
)

// StartAlone starts the bench worker (the program at worker, see package
// benchworker) alone, without a master, as a Master named "lone worker"
// whose Process is the worker itself: the harness listens on Port and hands
// the socket over as fd 3 (LISTEN_FDS=1 with benchworker.EnvAlone, as the
// worker's pid is not known before exec), and the Probe and Notify inboxes
// are the worker's probe socket and NOTIFY_SOCKET. env ("KEY=VALUE") is
// added to its environment. Close stops it as it stops a master; a hung
// worker ignores SIGTERM, so Stop it with a short grace first.
func StartAlone(worker string, env ...string) (*Master, error) {
	m, err := newMaster("lone worker")
	if err != nil {
		return nil, err
	}
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: m.Port})
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("listen for the lone worker: %w", err)
	}
	// The worker gets its own descriptor of the socket: ours can go.
	defer l.Close()
	f, err := l.File()
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("listen for the lone worker: %w", err)
	}
	defer f.Close()
	envv := append(m.env(), benchworker.EnvAlone+"=1", "LISTEN_FDS=1", benchworker.EnvProbe+"="+m.Probe.Path())
	p, err := Start([]string{worker}, append(envv, env...), "", f)
	if err != nil {
		m.Close()
		return nil, err
	}
	m.Process = p
	return m, nil
}
