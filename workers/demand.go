package workers

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/activation"
)

// demand waits for the first connection queued on any of the listening
// sockets, for autoscaling with min = 0 and no worker (PHP-FPM's
// ondemand): an epoll instance holds the sockets, and Go's poller waits on
// the epoll instance's own readability, so that no goroutine or thread
// wakes until a connection waits. The master never accepts: the
// connection stays queued for the worker it starts.
type demand struct {
	ep   *os.File      // the epoll instance, in Go's poller
	done chan struct{} // closed when the waiting goroutine returned
}

// watchDemand starts waiting on socks and calls queued, once, from its own
// goroutine, when a connection waits on one of them. Stop ends the wait.
func watchDemand(socks []activation.Socket, queued func()) (*demand, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	for _, s := range socks {
		rc, err := s.File.SyscallConn()
		if err == nil {
			cerr := rc.Control(func(fd uintptr) {
				err = unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, int(fd), &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)})
			})
			if cerr != nil {
				err = cerr
			}
		}
		if err != nil {
			unix.Close(epfd)
			return nil, fmt.Errorf("watch %s for connections: %w", s.Addr, err)
		}
	}
	// Non-blocking, so that os.NewFile hands it to Go's poller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("epoll: %w", err)
	}
	d := &demand{ep: os.NewFile(uintptr(epfd), "epoll"), done: make(chan struct{})}
	rc, err := d.ep.SyscallConn()
	if err != nil {
		d.ep.Close()
		return nil, fmt.Errorf("epoll: %w", err)
	}
	go func() {
		defer close(d.done)
		events := make([]unix.EpollEvent, 1)
		var (
			n    int
			werr error
		)
		err := rc.Read(func(fd uintptr) bool {
			n, werr = unix.EpollWait(int(fd), events, 0)
			return n > 0 || werr != nil && !errors.Is(werr, unix.EINTR)
		})
		if err == nil && werr == nil && n > 0 {
			queued()
		}
	}()
	return d, nil
}

// stop ends the wait (if it still runs) and returns once its goroutine
// has; it may be called more than once.
func (d *demand) stop() {
	d.ep.Close()
	<-d.done
}
