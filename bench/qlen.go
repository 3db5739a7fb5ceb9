package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// qlenPath is the sysctl that bounds a unix datagram socket's queue: how
// many datagrams forkd's NOTIFY_SOCKET holds before the workers' sd_notify
// waits.
const qlenPath = "/proc/sys/net/unix/max_dgram_qlen"

// SystemdDgramQlen is net.unix.max_dgram_qlen as systemd sets it at boot
// (the kernel's own default is 10): the queue forkd's notify socket has on
// any machine that runs systemd.
const SystemdDgramQlen = 512

// RaiseDgramQlen raises net.unix.max_dgram_qlen to at least min for the
// sockets created from now on, and returns the function that puts the old
// value back (nil when nothing changed) and the value before. Writing it
// needs root; sockets keep the bound they were created with.
func RaiseDgramQlen(min int) (restore func() error, was int, err error) {
	b, err := os.ReadFile(qlenPath)
	if err != nil {
		return nil, 0, err
	}
	was, err = strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %q: %w", qlenPath, b, err)
	}
	if was >= min {
		return nil, was, nil
	}
	if err := os.WriteFile(qlenPath, []byte(strconv.Itoa(min)), 0o644); err != nil {
		return nil, was, fmt.Errorf("raise net.unix.max_dgram_qlen from %d to %d: %w", was, min, err)
	}
	return func() error { return os.WriteFile(qlenPath, []byte(strconv.Itoa(was)), 0o644) }, was, nil
}
