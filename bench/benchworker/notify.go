package benchworker

import (
	"fmt"
	"net"
	"os"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// heartbeat sends WATCHDOG=1 every interval until hung is closed.
func heartbeat(interval time.Duration, hung <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			daemon.SdNotify(false, daemon.SdNotifyWatchdog)
		case <-hung:
			return
		}
	}
}

// dialNotify connects to NOTIFY_SOCKET ("@name" is an abstract socket);
// nil when it is unset or cannot be reached.
func dialNotify() *net.UnixConn {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench worker: notify socket %s: %v\n", path, err)
		return nil
	}
	return c
}
