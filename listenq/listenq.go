package listenq

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Queue is the accept queue of one listening socket.
type Queue struct {
	// Len is the number of connections the kernel has completed and holds
	// for accept(2).
	Len uint32
	// Backlog is the most the queue holds (listen(2)'s backlog as the kernel
	// capped it); connections beyond it wait in the client's SYN retries.
	Backlog uint32
}

// ErrNotListening is returned for a socket that is not listening, or of a
// kind sock_diag does not report (UDP, netlink, …).
var ErrNotListening = errors.New("listenq: not a listening TCP or unix stream socket")

// Read returns the accept queue of the listening socket f. It does not
// change or wait on the socket. It returns ErrNotListening (wrapped) for a
// socket that is not a listening TCP or unix socket.
func Read(f *os.File) (Queue, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return Queue{}, fmt.Errorf("listenq: %w", err)
	}
	var (
		q    Queue
		qerr error
	)
	if err := rc.Control(func(fd uintptr) { q, qerr = read(int(fd)) }); err != nil {
		return Queue{}, fmt.Errorf("listenq: %w", err)
	}
	return q, qerr
}

func read(fd int) (Queue, error) {
	listening, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return Queue{}, fmt.Errorf("listenq: fd %d: %w", fd, err)
	}
	if listening == 0 {
		return Queue{}, fmt.Errorf("fd %d: %w", fd, ErrNotListening)
	}
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return Queue{}, fmt.Errorf("listenq: fd %d: %w", fd, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return Queue{}, fmt.Errorf("listenq: fd %d: %w", fd, err)
	}
	ino := uint32(st.Ino)
	switch domain {
	case unix.AF_UNIX:
		return unixQueue(ino)
	case unix.AF_INET, unix.AF_INET6:
		proto, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
		if err != nil {
			return Queue{}, fmt.Errorf("listenq: fd %d: %w", fd, err)
		}
		if proto != unix.IPPROTO_TCP && proto != unix.IPPROTO_MPTCP {
			return Queue{}, fmt.Errorf("fd %d: protocol %d: %w", fd, proto, ErrNotListening)
		}
		return tcpQueue(uint8(domain), ino)
	}
	return Queue{}, fmt.Errorf("fd %d: family %d: %w", fd, domain, ErrNotListening)
}

// sock_diag constants that golang.org/x/sys/unix does not name.
const (
	sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY
	tcpListen        = 10 // TCP_LISTEN, the state listeners are in
	udiagShowRQLen   = 0x10
	unixDiagRQLen    = 4 // UNIX_DIAG_RQLEN attribute
	nlmsgHdrLen      = 16
	inetDiagMsgLen   = 72 // struct inet_diag_msg
	unixDiagMsgLen   = 16 // struct unix_diag_msg
)

// tcpQueue dumps the family's TCP listeners and returns the queue of the
// one with inode ino. For a listener, inet_diag's rqueue is the accept
// queue's length and wqueue its backlog. An MPTCP listener (what Go's
// net.Listen makes where the kernel has MPTCP) queues connections on its TCP
// subflow listener, which the kernel grafts onto the same socket inode.
func tcpQueue(family uint8, ino uint32) (Queue, error) {
	// struct inet_diag_req_v2: family, protocol, ext, pad, states, then a
	// 48-byte inet_diag_sockid left zero (a dump ignores it).
	req := make([]byte, 56)
	req[0] = family
	req[1] = unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(req[4:], 1<<tcpListen)
	var (
		q     Queue
		found bool
	)
	err := exchange(req, unix.NLM_F_DUMP, func(msg []byte) {
		if found || len(msg) < inetDiagMsgLen {
			return
		}
		if binary.NativeEndian.Uint32(msg[68:]) == ino {
			q = Queue{Len: binary.NativeEndian.Uint32(msg[56:]), Backlog: binary.NativeEndian.Uint32(msg[60:])}
			found = true
		}
	})
	if err != nil {
		return Queue{}, err
	}
	if !found {
		return Queue{}, fmt.Errorf("listenq: inode %d: not among the kernel's TCP listeners", ino)
	}
	return q, nil
}

// unixQueue asks unix_diag for the socket with inode ino and its
// UNIX_DIAG_RQLEN attribute: for a listener, the number of connections
// queued and the backlog.
func unixQueue(ino uint32) (Queue, error) {
	// struct unix_diag_req: family, protocol, pad, states, ino, show, cookie.
	req := make([]byte, 24)
	req[0] = unix.AF_UNIX
	binary.NativeEndian.PutUint32(req[4:], 1<<tcpListen)
	binary.NativeEndian.PutUint32(req[8:], ino)
	binary.NativeEndian.PutUint32(req[12:], udiagShowRQLen)
	binary.NativeEndian.PutUint32(req[16:], ^uint32(0)) // no cookie to check
	binary.NativeEndian.PutUint32(req[20:], ^uint32(0))
	var (
		q     Queue
		found bool
	)
	err := exchange(req, 0, func(msg []byte) {
		if len(msg) < unixDiagMsgLen || binary.NativeEndian.Uint32(msg[4:]) != ino {
			return
		}
		for attrs := msg[unixDiagMsgLen:]; len(attrs) >= 4; {
			l := int(binary.NativeEndian.Uint16(attrs[0:]))
			typ := binary.NativeEndian.Uint16(attrs[2:])
			if l < 4 || l > len(attrs) {
				return
			}
			if typ == unixDiagRQLen && l >= 12 {
				q = Queue{Len: binary.NativeEndian.Uint32(attrs[4:]), Backlog: binary.NativeEndian.Uint32(attrs[8:])}
				found = true
				return
			}
			attrs = attrs[min(nlaAlign(l), len(attrs)):]
		}
	})
	if err != nil {
		return Queue{}, err
	}
	if !found {
		return Queue{}, fmt.Errorf("listenq: inode %d: unix_diag reported no queue", ino)
	}
	return q, nil
}

func nlaAlign(n int) int { return (n + 3) &^ 3 }

// exchange sends one sock_diag request with the given extra flags and calls
// each for the payload of every answer until the kernel is done.
func exchange(req []byte, flags uint16, each func(msg []byte)) error {
	s, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return fmt.Errorf("listenq: netlink socket: %w", err)
	}
	defer unix.Close(s)
	msg := make([]byte, nlmsgHdrLen+len(req))
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], sockDiagByFamily)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|flags)
	binary.NativeEndian.PutUint32(msg[8:], 1)
	copy(msg[nlmsgHdrLen:], req)
	if err := unix.Sendto(s, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("listenq: sock_diag request: %w", err)
	}
	buf := make([]byte, 32<<10)
	for {
		n, _, err := unix.Recvfrom(s, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("listenq: sock_diag answer: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("listenq: sock_diag answer: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
						return fmt.Errorf("listenq: sock_diag: %w", unix.Errno(-errno))
					}
				}
				return nil
			}
			each(m.Data)
			if flags&unix.NLM_F_DUMP == 0 {
				return nil
			}
		}
	}
}
