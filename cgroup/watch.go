package cgroup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SamplePeriod is how often a Watcher reads the memory of what it watches
// while some watch has a threshold: the kernel tells of memory.high and
// memory.max events, not of a threshold of forkd's own (max_memory).
const SamplePeriod = 250 * time.Millisecond

// Meter measures one process's (or cgroup's) memory: a *Group, or RSS
// where there is no cgroup.
type Meter interface {
	// Memory returns the bytes in use.
	Memory() (int64, error)
	// EventsFile is a file the kernel modifies on memory events, which
	// inotify can watch; "" for none.
	EventsFile() string
}

// Watcher is an actor that tells when a Meter's memory passes a
// threshold, and removes cgroups once they are empty. Create it with
// NewWatcher and run it with Run; its other methods may be called from any
// goroutine and never block on a Watcher that is not running.
type Watcher struct {
	period time.Duration
	reqs   chan func(*watchState)
	done   chan struct{} // closed when Run returns
}

// NewWatcher returns a Watcher that samples every period while a watch
// has a threshold (0: SamplePeriod).
func NewWatcher(period time.Duration) *Watcher {
	if period <= 0 {
		period = SamplePeriod
	}
	return &Watcher{period: period, reqs: make(chan func(*watchState)), done: make(chan struct{})}
}

// watch is one Watch call's state.
type watch struct {
	key     any
	m       Meter
	limit   int64
	crossed func(int64)
	wd      int // inotify watch of m's EventsFile, -1 for none
}

// watchState is owned by Run's goroutine.
type watchState struct {
	ino     int
	watches map[any]*watch
	byWD    map[int][]*watch
	// removing maps the inotify watch of a cgroup.events to the cgroup
	// that Remove waits to see empty.
	removing map[int]removal
	sampling int // watches with a threshold
}

// Watch calls crossed once, on the Watcher's goroutine, with the memory
// seen, when m's memory is limit or more, learning of it from m's events
// file as soon as the kernel modifies it and otherwise from a sample every
// period. key identifies the watch for Unwatch; watching a key again
// replaces its watch. crossed must not block.
func (w *Watcher) Watch(key any, m Meter, limit int64, crossed func(int64)) {
	w.post(func(s *watchState) {
		s.unwatch(key)
		s.watch(&watch{key: key, m: m, limit: limit, crossed: crossed, wd: -1})
	})
}

// Unwatch ends key's watch, if there is one.
func (w *Watcher) Unwatch(key any) { w.post(func(s *watchState) { s.unwatch(key) }) }

// Remove removes the cgroup at path, the process it was made for having
// ended: at once when it is empty; otherwise it kills what is left in it
// (cgroup.kill) and removes it once the kernel reports it empty. done, if
// not nil, is called on the Watcher's goroutine once the cgroup is gone
// or cannot be removed, and must not block. A cgroup still there when Run
// returns is left behind.
func (w *Watcher) Remove(path string, done func()) {
	w.post(func(s *watchState) { s.remove(removal{path, done}) })
}

// removal is a cgroup that Remove waits to see empty.
type removal struct {
	path string
	done func()
}

// end reports the removal over.
func (r removal) end() {
	if r.done != nil {
		r.done()
	}
}

// post hands fn to Run's goroutine, or drops it once Run has returned.
func (w *Watcher) post(fn func(*watchState)) {
	select {
	case w.reqs <- fn:
	case <-w.done:
	}
}

// Run watches until ctx is cancelled (which is not an error); it fails
// only when it cannot set up inotify.
func (w *Watcher) Run(ctx context.Context) error {
	defer close(w.done)
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return fmt.Errorf("cgroup: inotify: %w", err)
	}
	ino := os.NewFile(uintptr(fd), "inotify") // non-blocking: in the runtime's poller
	s := &watchState{ino: fd, watches: make(map[any]*watch), byWD: make(map[int][]*watch), removing: make(map[int]removal)}
	events := make(chan []int)
	quit := make(chan struct{})
	readDone := make(chan struct{})
	go func() { defer close(readDone); readEvents(ino, events, quit) }()
	defer func() {
		close(quit)
		ino.Close()
		<-readDone
	}()

	tick := time.NewTicker(w.period)
	tick.Stop()
	defer tick.Stop()
	ticking := false
	for {
		switch {
		case s.sampling > 0 && !ticking:
			tick.Reset(w.period)
			ticking = true
		case s.sampling == 0 && ticking:
			tick.Stop()
			ticking = false
		}
		select {
		case <-ctx.Done():
			return nil
		case fn := <-w.reqs:
			fn(s)
		case wds := <-events:
			for _, wd := range wds {
				s.event(wd)
			}
		case <-tick.C:
			for _, x := range s.watches {
				s.check(x)
			}
		}
	}
}

// readEvents reads inotify events from ino and sends the watch
// descriptors of each read to events, until ino is closed.
func readEvents(ino *os.File, events chan<- []int, quit <-chan struct{}) {
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := ino.Read(buf)
		if err != nil {
			return
		}
		var wds []int
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			wds = append(wds, int(ev.Wd))
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
		select {
		case events <- wds:
		case <-quit:
			return
		}
	}
}

func (s *watchState) watch(x *watch) {
	s.watches[x.key] = x
	if f := x.m.EventsFile(); f != "" {
		if wd, err := unix.InotifyAddWatch(s.ino, f, unix.IN_MODIFY); err == nil {
			x.wd = wd
			s.byWD[wd] = append(s.byWD[wd], x)
		}
	}
	if x.limit > 0 {
		s.sampling++
		s.check(x)
	}
}

func (s *watchState) unwatch(key any) {
	x := s.watches[key]
	if x == nil {
		return
	}
	delete(s.watches, key)
	if x.limit > 0 {
		s.sampling--
	}
	if x.wd >= 0 {
		list := s.byWD[x.wd]
		for i, y := range list {
			if y == x {
				list = append(list[:i], list[i+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(s.byWD, x.wd)
			_, _ = unix.InotifyRmWatch(s.ino, uint32(x.wd))
		} else {
			s.byWD[x.wd] = list
		}
	}
}

// check calls x's crossed, once, if its memory is past its threshold.
func (s *watchState) check(x *watch) {
	if x.limit <= 0 {
		return
	}
	v, err := x.m.Memory()
	if err != nil || v < x.limit {
		return
	}
	x.limit = 0 // once
	s.sampling--
	x.crossed(v)
}

// event handles a modification of watch descriptor wd's file.
func (s *watchState) event(wd int) {
	if r, ok := s.removing[wd]; ok {
		if err := unix.Rmdir(r.path); err == nil || errors.Is(err, unix.ENOENT) {
			delete(s.removing, wd)
			_, _ = unix.InotifyRmWatch(s.ino, uint32(wd))
			r.end()
		}
		return
	}
	for _, x := range s.byWD[wd] {
		s.check(x)
	}
}

func (s *watchState) remove(r removal) {
	err := unix.Rmdir(r.path)
	if err == nil || errors.Is(err, unix.ENOENT) || !errors.Is(err, unix.EBUSY) {
		r.end()
		return
	}
	if busy, _ := populated(r.path); !busy {
		r.end() // busy with a child cgroup: not one of ours to remove
		return
	}
	wd, err := unix.InotifyAddWatch(s.ino, filepath.Join(r.path, "cgroup.events"), unix.IN_MODIFY)
	if err != nil {
		r.end()
		return
	}
	s.removing[wd] = r
	_ = write(r.path, "cgroup.kill", "1")
	if err := unix.Rmdir(r.path); err == nil {
		delete(s.removing, wd)
		_, _ = unix.InotifyRmWatch(s.ino, uint32(wd))
		r.end()
	}
}
