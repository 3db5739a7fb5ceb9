package notify

import (
	"bytes"
	"strconv"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Note is one sd_notify datagram, parsed, with its sender's pid from
// SCM_CREDENTIALS and its arrival time.
type Note struct {
	PID int
	// At is when the datagram arrived (the kernel's timestamp, on the
	// monotonic clock).
	At       time.Time
	Ready    bool // READY=1
	Watchdog bool // WATCHDOG=1: a heartbeat
	Trigger  bool // WATCHDOG=trigger: the sender asks to be treated as hung
	Stopping bool // STOPPING=1
	// HasStatus says whether the message carried STATUS=, and Status is its
	// value.
	HasStatus bool
	Status    string
	// Requests is FORKD_REQUESTS (the worker SDK's count of finished
	// requests); HasRequests says whether the message carried it.
	Requests    uint64
	HasRequests bool
	// Stats is FORKD_REQUEST_STATS, as sent ("" when absent).
	Stats string
	// Inflight is FORKD_REQUESTS_INFLIGHT (requests in progress as the
	// worker sent the message); HasInflight says whether the message
	// carried it.
	Inflight    uint64
	HasInflight bool
	// SumUsec is FORKD_REQUEST_SUM_USEC (the total time of the requests
	// FORKD_REQUEST_STATS counts, in microseconds); HasSum says whether the
	// message carried it.
	SumUsec uint64
	HasSum  bool
	// Barrier is BARRIER=1: the sender waits, in sd_notify_barrier(3),
	// until the message is read (the fd it passed is closed on reading).
	Barrier bool
}

// HeartbeatOnly reports whether n is WATCHDOG=1 and nothing else.
func (n *Note) HeartbeatOnly() bool {
	return n.Watchdog && !n.Ready && !n.Trigger && !n.Stopping && !n.HasStatus && !n.HasRequests && n.Stats == "" &&
		!n.Barrier && !n.HasInflight
}

// chatty reports whether n says something that keeps the socket watched
// for a while (see QuietAfter): a status, a stop, request counts, a trigger.
func (n *Note) chatty() bool {
	return n.HasStatus || n.Stopping || n.HasRequests || n.Stats != "" || n.Trigger || n.HasInflight
}

// Parse parses newline-separated VAR=VALUE assignments (sd_notify(3)).
// It accepts any bytes: lines without '=', unknown variables and values
// it does not understand are ignored. PID and At are left zero.
func Parse(b []byte) Note {
	var n Note
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
			n.Ready = n.Ready || string(v) == "1"
		case "WATCHDOG":
			switch string(v) {
			case "1":
				n.Watchdog = true
			case "trigger":
				n.Trigger = true
			}
		case "STOPPING":
			n.Stopping = n.Stopping || string(v) == "1"
		case "STATUS":
			n.HasStatus, n.Status = true, string(v)
		case "FORKD_REQUESTS":
			if r, err := strconv.ParseUint(string(v), 10, 64); err == nil {
				n.Requests, n.HasRequests = r, true
			}
		case "FORKD_REQUEST_STATS":
			n.Stats = string(v)
		case "FORKD_REQUESTS_INFLIGHT":
			if r, err := strconv.ParseUint(string(v), 10, 64); err == nil {
				n.Inflight, n.HasInflight = r, true
			}
		case "FORKD_REQUEST_SUM_USEC":
			if r, err := strconv.ParseUint(string(v), 10, 64); err == nil {
				n.SumUsec, n.HasSum = r, true
			}
		case "BARRIER":
			n.Barrier = n.Barrier || string(v) == "1"
		}
	}
	return n
}

// recvBuf is the buffers the actor reads datagrams into.
type recvBuf struct {
	data, oob []byte
}

// read reads up to max queued datagrams from fd without blocking and
// passes each to f, parsed; it returns how many it read.
func (b *recvBuf) read(fd, max int, f func(Note)) int {
	if b.data == nil {
		b.data = make([]byte, 4096)
		b.oob = make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(16)+unix.CmsgSpace(4*16))
	}
	n := 0
	for n < max {
		size, oobn, errno := recvmsg(fd, b.data, b.oob)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			break // EAGAIN: nothing more queued
		}
		n++
		pid, at := parseControl(b.oob[:oobn])
		if pid <= 0 {
			continue
		}
		m := Parse(b.data[:size])
		m.PID, m.At = pid, at
		f(m)
	}
	return n
}

// recvmsg is recvmsg(2) with MSG_DONTWAIT, as a raw system call.
func recvmsg(fd int, data, oob []byte) (n, oobn int, errno unix.Errno) {
	iov := unix.Iovec{Base: &data[0]}
	iov.SetLen(len(data))
	msg := unix.Msghdr{Iov: &iov, Iovlen: 1, Control: &oob[0]}
	msg.SetControllen(len(oob))
	r, _, errno := unix.RawSyscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)),
		unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
	if errno != 0 {
		return 0, 0, errno
	}
	return int(r), int(msg.Controllen), 0
}

// parseControl returns the pid from the SCM_CREDENTIALS control message
// and the arrival time from SCM_TIMESTAMPNS (now when there is none, on
// the monotonic clock either way), and closes any file descriptors a
// sender passed (FDSTORE=1 is not for us; BARRIER=1's is closed so).
func parseControl(oob []byte) (pid int, at time.Time) {
	now := time.Now()
	at = now
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0, at
	}
	for i := range msgs {
		h := msgs[i].Header
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && len(msgs[i].Data) >= 16 {
			ts := (*unix.Timespec)(unsafe.Pointer(&msgs[i].Data[0]))
			// A wall-clock stamp: keep its age, not its value, so that a
			// clock step cannot move a heartbeat.
			if age := now.Sub(time.Unix(ts.Unix())); age > 0 {
				at = now.Add(-age)
			}
			continue
		}
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
	return pid, at
}
