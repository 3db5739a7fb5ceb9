package sdk

import (
	"fmt"
	"strings"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Ready tells the master (or systemd) that the worker serves, by sending
// READY=1 to NOTIFY_SOCKET. Server.Run sends it by itself; call Ready only
// when serving without Server. It is a no-op returning nil when
// NOTIFY_SOCKET is unset.
func Ready() error {
	return notify(daemon.SdNotifyReady)
}

// Stopping tells the master (or systemd) that the worker is beginning to
// shut down, by sending STOPPING=1 to NOTIFY_SOCKET. Server.Run sends it by
// itself. It is a no-op returning nil when NOTIFY_SOCKET is unset.
func Stopping() error {
	return notify(daemon.SdNotifyStopping)
}

// Status sends STATUS=s to NOTIFY_SOCKET: one line of human-readable text
// that forkd (and systemctl status) show for the worker. s must not contain
// a newline, which would start another field of the message. It is a no-op
// returning nil when NOTIFY_SOCKET is unset.
func Status(s string) error {
	if strings.ContainsAny(s, "\n") {
		return fmt.Errorf("send STATUS=%q: a status must be one line", s)
	}
	return notify("STATUS=" + s)
}

// notify sends state, one or more newline-separated fields, as one
// datagram to NOTIFY_SOCKET. NOTIFY_SOCKET stays set: the worker sends
// more than once (heartbeats, stats).
func notify(state string) error {
	if _, err := daemon.SdNotify(false, state); err != nil {
		first, _, _ := strings.Cut(state, "\n")
		return fmt.Errorf("send %s to NOTIFY_SOCKET: %w", first, err)
	}
	return nil
}
