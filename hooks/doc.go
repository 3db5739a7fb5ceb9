// Package hooks is forkd's hook vocabulary — Gunicorn's lifecycle hooks,
// each fired at one moment of the arbiter (the Hook constants, in the order
// of a master's life), forkd's run-once hooks for [[singleton]] processes
// and [[schedule]] runs, the Event each firing carries — and the sinks that
// need no D-Bus (the D-Bus signals are package bus's Service, a Sink too):
//
//   - Exec: the commands the config lists for a hook (its hooks.NAME
//     tables), with the event's fields in their environment.
//   - Journal: one structured systemd journal entry per event, when forkd
//     runs under systemd.
//   - NewLog: one log record per event.
//   - Func: a Go callback.
//
// The arbiter calls Sink.Emit, which never blocks: sinks queue what they
// cannot deliver at once and count what they drop. pre_request and
// post_request happen inside workers (package sdk runs them); the master
// learns of requests only from the counts workers report, which bus.Service
// publishes as aggregated RequestStats signals.
//
// A command run when a worker times out, in an instance's config:
//
//	[[hooks.worker_abort]]
//	exec = ["/usr/local/bin/alert", "worker timed out"]
//	timeout = "10s"
//
// and every hook of instance myapp as it happens:
//
//	forkctl monitor myapp --json
//	journalctl -f -t forkd FORKD_INSTANCE=myapp
package hooks
