package master

import (
	"os"
	"os/signal"
	"syscall"
)

// caught are the signals the master handles (see the README's signal table).
var caught = []os.Signal{syscall.SIGHUP, syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGTERM,
	syscall.SIGINT, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH}

// signals are the master's caught signals, registered in the background:
// the Go runtime enables each signal with a round trip to its signal
// thread, so registering them from the first line of Run overlaps that
// with reading the config instead of holding up the start. wait tells when
// they are all registered.
type signals struct {
	c          chan os.Signal
	registered chan struct{}
}

// listenSignals starts registering the caught signals on a channel.
// execIgnored are ignored first: one that comes before the registration is
// dropped rather than ending the master, and the runtime then records
// SIG_IGN as their disposition before Notify, which ignoreForExec relies on.
func listenSignals() *signals {
	s := &signals{c: make(chan os.Signal, 32), registered: make(chan struct{})}
	go func() {
		signal.Ignore(execIgnored...)
		signal.Notify(s.c, caught...)
		close(s.registered)
	}()
	return s
}

// wait returns once every caught signal is registered: from then on none
// is lost, and none has its default action (most would end the master).
func (s *signals) wait() { <-s.registered }

// execIgnored are the caught signals that ask for something other than a
// stop and whose default action would end or stop the process.
var execIgnored = []os.Signal{syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGTTIN, syscall.SIGTTOU}

// ignoreForExec ignores execIgnored from now on, as the master is about to
// re-execute itself: execve resets a caught signal to its default action
// but keeps an ignored one ignored, until the new master has registered
// its own. One that arrives meanwhile is dropped, as an upgrade under way
// refuses another, instead of ending the master and its workers; even one
// that comes while Ignore switches a signal over, as the runtime then falls
// back to the disposition it recorded before Notify, SIG_IGN (see
// listenSignals), not to the default action. A stop
// (TERM, INT, QUIT) keeps its default action: it ends the process. The
// function returned registers them again, for an exec that failed.
func (s *signals) ignoreForExec() (undo func()) {
	signal.Ignore(execIgnored...)
	return func() { signal.Notify(s.c, execIgnored...) }
}

// stop unregisters the signals, once they are registered.
func (s *signals) stop() {
	s.wait()
	signal.Stop(s.c)
}
