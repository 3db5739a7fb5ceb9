// Package systemd is forkd's side of the conversation with systemd: the
// sd_notify(3) messages a Type=notify service sends (readiness, status,
// reloading, stopping, timeouts, errno), the watchdog that pings only while
// the arbiter is healthy, and the file descriptor store that keeps sockets
// forkd bound itself alive across a restart.
//
// Everything goes through a Notifier. NewNotifier reads NOTIFY_SOCKET (and
// WATCHDOG_USEC/WATCHDOG_PID) once; without them — a laptop, a container, a
// test — every method is a no-op that returns nil, so forkd behaves the same
// with and without systemd:
//
//	n := systemd.NewNotifier()
//	n.Status("starting 4 workers")
//	// … first generation serves …
//	n.Ready("4 workers, generation 1")
//	go n.Watchdog(ctx, arbiter.Healthy)
//	// … SIGHUP …
//	n.Reloading()
//	n.Ready("4 workers, generation 2")
//	// … SIGTERM …
//	n.Stopping()
//
// The unit files that ship beside this package (forkd@.socket and
// forkd@.service; notify-reload/forkd@.service for systemd ≥ 253) are what a
// user needs; the essential lines of the service are:
//
//	[Unit]
//	Wants=forkd@%i.socket
//	After=forkd@%i.socket network.target
//
//	[Service]
//	Type=notify
//	NotifyAccess=main
//	ExecStartPre=/usr/bin/forkd --check --config /etc/forkd/%i.toml
//	ExecStart=/usr/bin/forkd --config /etc/forkd/%i.toml
//	ExecReload=/usr/bin/forkctl reload %i
//	KillMode=mixed
//	TimeoutStopSec=45s
//	Restart=on-failure
//	WatchdogSec=30s
//	FileDescriptorStoreMax=16
//	User=forkd
//	Group=forkd
//	RuntimeDirectory=forkd/%i
//
// and of the socket (add TCP ports with `systemctl edit forkd@myapp.socket`):
//
//	[Socket]
//	ListenStream=/run/forkd/%i.sock
//	SocketMode=0660
//
// docs/systemd.md explains every setting, the hardening and what was left
// out of it.
package systemd
