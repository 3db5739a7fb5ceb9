package bench

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/forkd/forkd/activation"
	"github.com/forkd/forkd/bench/benchworker"
	"github.com/forkd/forkd/config"
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
	return StartLone(worker, 1, env...)
}

// StartLone is StartAlone for n workers started back to back, sharing the
// socket and the inboxes: the workers of a master, without the master. The
// Master's Process is the first; Close stops all of them.
func StartLone(worker string, n int, env ...string) (*Master, error) {
	m, err := newMaster("lone worker")
	if err != nil {
		return nil, err
	}
	f, err := listenAt(m.Port)
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("listen for the lone worker: %w", err)
	}
	// The workers get their own descriptors of the socket: ours can go.
	defer f.Close()
	envv := append(m.env(), benchworker.EnvAlone+"=1", "LISTEN_FDS=1", benchworker.EnvProbe+"="+m.Probe.Path())
	envv = append(envv, env...)
	for i := range n {
		p, err := Start([]string{worker}, envv, "", f)
		if err != nil {
			m.Close()
			return nil, err
		}
		if i == 0 {
			m.Process = p
		} else {
			m.others = append(m.others, p)
		}
	}
	return m, nil
}

// listenAt binds 127.0.0.1:port with forkd's own activation.Listen and
// returns the socket as the master hands its own: in blocking mode, once,
// before any worker starts — each worker then sets the mode it wants — from
// os.NewFile, whose Fd (os/exec calls it at every start) leaves the mode
// alone. Not a net.Listener's File(): its Fd switches the socket, shared
// with the workers started before, back to blocking, and a Go worker whose
// Accept runs then blocks in accept4 (it no longer waits in the runtime's
// poller), where closing its listener to drain cannot wake it.
func listenAt(port int) (*os.File, error) {
	b, err := config.ParseBind(fmt.Sprintf("tcp://127.0.0.1:%d", port))
	if err != nil {
		return nil, err
	}
	socks, _, err := activation.Listen([]config.Bind{b}, 0, "bench")
	if err != nil {
		return nil, err
	}
	return socks[0].File, nil
}

// stopOthers stops the lone workers after the first (see StartLone).
func (m *Master) stopOthers(grace time.Duration) error {
	var errs []error
	for _, p := range m.others {
		errs = append(errs, p.Stop(grace))
	}
	return errors.Join(errs...)
}
