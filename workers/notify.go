package workers

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/hooks"
)

// note is one sd_notify datagram, parsed, with the sender's pid from
// SCM_CREDENTIALS.
type note struct {
	pid       int
	ready     bool
	watchdog  bool
	trigger   bool // WATCHDOG=trigger: the worker asks to be treated as hung
	stopping  bool
	hasStatus bool
	status    string
	// requests is FORKD_REQUESTS (the worker SDK's count of finished
	// requests); hasRequests says whether the message carried it.
	requests    uint64
	hasRequests bool
	// stats is FORKD_REQUEST_STATS, passed on as is ("" when absent).
	stats string
}

// notifySocket is the pool's NOTIFY_SOCKET: a datagram socket in a private
// directory, with SO_PASSCRED so every message carries its sender's pid.
type notifySocket struct {
	conn *net.UnixConn
	dir  string
	path string
}

// listenNotify creates the notify socket in a new private directory under
// base ($RUNTIME_DIRECTORY or the temp dir when base is "").
func listenNotify(base string) (*notifySocket, error) {
	if base == "" {
		base = os.Getenv("RUNTIME_DIRECTORY")
		if i := bytes.IndexByte([]byte(base), ':'); i >= 0 {
			base = base[:i] // several runtime directories: use the first
		}
	}
	if base == "" {
		base = os.TempDir()
	}
	dir, err := os.MkdirTemp(base, "forkd-")
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	rc, err := conn.SyscallConn()
	if err == nil {
		cerr := rc.Control(func(fd uintptr) {
			err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
		})
		if cerr != nil {
			err = cerr
		}
	}
	if err != nil {
		conn.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("notify socket: SO_PASSCRED: %w", err)
	}
	// Room for a burst of READY=1 from many workers starting at once.
	_ = conn.SetReadBuffer(4 << 20)
	return &notifySocket{conn: conn, dir: dir, path: path}, nil
}

// close closes the socket and removes its directory.
func (s *notifySocket) close() {
	s.conn.Close()
	os.RemoveAll(s.dir)
}

// maxBatch bounds how many messages one hand-over to the arbiter carries.
const maxBatch = 256

// read delivers parsed messages until the socket is closed. It reads every
// datagram already queued before handing them over as one batch, so that a
// burst (many workers starting, heartbeats from hundreds of workers) wakes
// the arbiter once, not once a message.
func (s *notifySocket) read(out chan<- []note, done <-chan struct{}) {
	rc, err := s.conn.SyscallConn()
	if err != nil {
		return
	}
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(4*16))
	for {
		var batch []note
		rerr := rc.Read(func(fd uintptr) bool {
			for len(batch) < maxBatch {
				n, oobn, _, _, err := unix.Recvmsg(int(fd), buf, oob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
				if err == unix.EINTR {
					continue
				}
				if err != nil {
					break // EAGAIN: nothing more queued
				}
				pid := senderPID(oob[:oobn])
				if pid <= 0 {
					continue
				}
				m := parseNote(buf[:n])
				m.pid = pid
				batch = append(batch, m)
			}
			return len(batch) > 0 // false: wait until readable
		})
		if rerr != nil {
			return // closed
		}
		select {
		case out <- batch:
		case <-done:
			return
		}
	}
}

// senderPID returns the pid from the SCM_CREDENTIALS control message, and
// closes any file descriptors a sender passed (FDSTORE=1 is not for us).
func senderPID(oob []byte) int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	pid := 0
	for i := range msgs {
		if cred, err := unix.ParseUnixCredentials(&msgs[i]); err == nil {
			pid = int(cred.Pid)
			continue
		}
		if fds, err := unix.ParseUnixRights(&msgs[i]); err == nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
	}
	return pid
}

// parseNote parses newline-separated VAR=VALUE assignments (sd_notify(3)).
func parseNote(b []byte) note {
	var m note
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		k, v, ok := bytes.Cut(line, []byte("="))
		if !ok {
			continue
		}
		switch string(k) {
		case "READY":
			m.ready = m.ready || string(v) == "1"
		case "WATCHDOG":
			switch string(v) {
			case "1":
				m.watchdog = true
			case "trigger":
				m.trigger = true
			}
		case "STOPPING":
			m.stopping = m.stopping || string(v) == "1"
		case "STATUS":
			m.hasStatus, m.status = true, string(v)
		case "FORKD_REQUESTS":
			if n, err := strconv.ParseUint(string(v), 10, 64); err == nil {
				m.requests, m.hasRequests = n, true
			}
		case "FORKD_REQUEST_STATS":
			m.stats = string(v)
		}
	}
	return m
}

// handleNote applies a worker's message.
func (p *Pool) handleNote(m note) {
	w, ok := p.byPID[m.pid]
	if !ok {
		p.stats.IgnoredNotify++
		p.log.Debug("ignored notify message from a process that is not a worker", "pid", m.pid)
		return
	}
	if m.hasStatus {
		w.status = m.status
	}
	if m.stopping && w.reason == "" {
		w.reason = "worker stopping by itself"
	}
	if m.trigger && w.phase != phaseStopping {
		p.abort(w, "worker sent WATCHDOG=trigger")
		return
	}
	if m.ready && w.phase == phaseStarting {
		p.markReady(w)
	}
	if m.stats != "" && p.opts.RequestStats != nil {
		p.opts.RequestStats(w.gen.id, w.id, w.pid, m.stats)
	}
	if m.hasRequests {
		p.countRequests(w, m.requests)
	}
	if m.watchdog && w.phase == phaseReady {
		// No timer work per heartbeat: the deadline, when it fires,
		// re-arms itself from the last heartbeat (see handleTimer).
		w.lastBeat = time.Now()
	}
}

// markReady records that w serves, arms its heartbeat deadline and
// advances the generation when it is complete.
func (p *Pool) markReady(w *worker) {
	g := w.gen
	w.phase = phaseReady
	w.readyAt = p.now()
	w.lastBeat = w.readyAt
	p.disarm(w)
	if g.cfg.Worker.Ready != config.ReadyStarted && g.cfg.Server.Timeout.Duration > 0 {
		p.arm(w, g.cfg.Server.Timeout.Duration, timerHeartbeat)
	}
	p.log.Debug("worker ready", "worker_id", w.id, "pid", w.pid, "generation", g.id,
		"boot", w.readyAt.Sub(w.started).Round(10*time.Microsecond))
	p.emit(hooks.Event{Hook: hooks.PostWorkerInit, Generation: g.id, WorkerID: w.id, PID: w.pid})
	p.handOver(w)
	p.armRecycling(w)
	p.generationProgress(g)
	p.observe()
}
