package systemd

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// ErrFDName is returned by StoreFDs and RemoveFDs for a name systemd would
// refuse: empty, longer than 255 bytes, or with a ':' or a byte outside
// printable ASCII.
var ErrFDName = errors.New("systemd: invalid fd store name")

// ErrNoFiles is returned by StoreFDs when it is given no files.
var ErrNoFiles = errors.New("systemd: no files to store")

// Notifier sends sd_notify(3) messages to the service manager. The zero
// value and a Notifier made without NOTIFY_SOCKET are disabled: every method
// is a no-op returning nil. A Notifier is safe for concurrent use; it keeps
// no connection open (each message is one datagram on a fresh socket, as
// sd_notify does), so it survives `systemctl daemon-reexec`.
type Notifier struct {
	// addr is the notify socket ("" = disabled). A leading '@' names an
	// abstract socket (unix.SockaddrUnix maps it to the leading NUL byte).
	addr string
	// watchdog is the WATCHDOG_USEC interval meant for this process (0 =
	// no watchdog), watchdogErr why it could not be read.
	watchdog    time.Duration
	watchdogErr error
	// sendTimeout bounds each send (SendTimeout; tests shorten it).
	sendTimeout time.Duration
}

// SendTimeout bounds how long one message may wait for room in the notify
// socket's queue. systemd reads its socket at once, so the queue only fills
// when the service manager is stuck; then the message is dropped with an
// error instead of blocking its sender — at worst forkd's status reporter,
// which would hold up the master's exit — for as long as the manager is.
const SendTimeout = time.Second

// NewNotifier returns a Notifier for the NOTIFY_SOCKET of the environment,
// read now and only now, together with WATCHDOG_USEC and WATCHDOG_PID. The
// environment is left as it is: whoever starts child processes decides what
// they inherit.
func NewNotifier() *Notifier {
	n := &Notifier{addr: os.Getenv("NOTIFY_SOCKET"), sendTimeout: SendTimeout}
	n.watchdog, n.watchdogErr = sddaemon.SdWatchdogEnabled(false)
	return n
}

// Enabled reports whether the Notifier has a notify socket, that is whether
// its messages go anywhere.
func (n *Notifier) Enabled() bool {
	return n != nil && n.addr != ""
}

// Notify sends state — newline-separated VAR=value assignments, see
// sd_notify(3) — as one datagram. It returns nil without sending when the
// Notifier is disabled.
func (n *Notifier) Notify(state string) error {
	if !n.Enabled() {
		return nil
	}
	if err := n.send([]byte(state), nil); err != nil {
		return fmt.Errorf("systemd: notify %q: %w", firstLine(state), err)
	}
	return nil
}

// Ready tells systemd the service is up (READY=1), with status as the
// STATUS= text when it is not empty. forkd sends it when the first
// generation of workers serves and again when a reload is done.
func (n *Notifier) Ready(status string) error {
	return n.Notify(withStatus(sddaemon.SdNotifyReady, status))
}

// Reloading tells systemd a reload began: RELOADING=1 and MONOTONIC_USEC=
// the CLOCK_MONOTONIC time in microseconds, as Type=notify-reload requires
// (systemd ≥ 253). Ready must follow when the reload is done.
func (n *Notifier) Reloading() error {
	if !n.Enabled() {
		return nil
	}
	usec, err := monotonicUsec()
	if err != nil {
		return fmt.Errorf("systemd: notify reloading: %w", err)
	}
	return n.Notify(sddaemon.SdNotifyReloading + "\nMONOTONIC_USEC=" + strconv.FormatUint(usec, 10))
}

// Stopping tells systemd the service is shutting down (STOPPING=1).
func (n *Notifier) Stopping() error {
	return n.Notify(sddaemon.SdNotifyStopping)
}

// Status sets the one-line text `systemctl status` shows (STATUS=). Line
// breaks in s become spaces, so s cannot smuggle in other assignments.
func (n *Notifier) Status(s string) error {
	return n.Notify("STATUS=" + oneLine(s))
}

// ExtendTimeout asks systemd for d more time for what is under way —
// starting, reloading or stopping — from now (EXTEND_TIMEOUT_USEC=); forkd
// sends it while a large generation boots. d is rounded down to whole
// microseconds; a negative d counts as 0.
func (n *Notifier) ExtendTimeout(d time.Duration) error {
	if d < 0 {
		d = 0
	}
	return n.Notify("EXTEND_TIMEOUT_USEC=" + strconv.FormatInt(d.Microseconds(), 10))
}

// Errno reports why the service failed: ERRNO=errno (an errno(3) value,
// shown by `systemctl status`) and, when status is not empty, STATUS=status.
func (n *Notifier) Errno(errno int, status string) error {
	state := "ERRNO=" + strconv.Itoa(errno)
	if status != "" {
		state = "STATUS=" + oneLine(status) + "\n" + state
	}
	return n.Notify(state)
}

// send writes b, with the control message oob if any, as one datagram to
// the notify socket, from a fresh unbound socket as sd_notify(3) does. The
// kernel adds the sender's credentials, which systemd checks against
// NotifyAccess=. A send that finds the socket's queue full for sendTimeout
// fails with EAGAIN.
func (n *Notifier) send(b, oob []byte) error {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(n.sendTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return fmt.Errorf("set SO_SNDTIMEO: %w", err)
	}
	// SockaddrUnix maps a leading '@' to the NUL byte of an abstract name.
	to := &unix.SockaddrUnix{Name: n.addr}
	for {
		err = unix.Sendmsg(fd, b, oob, to, unix.MSG_NOSIGNAL)
		if err != unix.EINTR {
			break
		}
	}
	if errors.Is(err, unix.EAGAIN) {
		return fmt.Errorf("send to %s: its queue stayed full for %v (is the service manager reading it?): %w",
			n.addr, n.sendTimeout, err)
	}
	if err != nil {
		return fmt.Errorf("send to %s: %w", n.addr, err)
	}
	return nil
}

// monotonicUsec returns CLOCK_MONOTONIC in microseconds, the clock systemd
// compares MONOTONIC_USEC= against.
func monotonicUsec() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("read CLOCK_MONOTONIC: %w", err)
	}
	return uint64(ts.Sec)*1e6 + uint64(ts.Nsec)/1e3, nil
}

// withStatus appends a STATUS= line to state when status is not empty.
func withStatus(state, status string) string {
	if status == "" {
		return state
	}
	return state + "\nSTATUS=" + oneLine(status)
}

// oneLine replaces line breaks with spaces.
func oneLine(s string) string {
	return strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s)
}

// firstLine returns s up to its first line break, for error messages.
func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
