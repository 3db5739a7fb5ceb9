// Package benchworker is the bench worker: the worker program forkd manages
// in the benchmarks of package bench, written against the plain systemd
// protocols with go-systemd and nothing of forkd's own. The program is
// bench/cmd/bench-worker, which only calls Run; the benchmarks build it
// with CGO_ENABLED=0 and hand it to forkd as
//
//	[worker]
//	command = "/tmp/forkd-bench/bench-worker"
//
//	[worker.env]
//	GOMAXPROCS = "1"
//	BENCH_PROBE = "/tmp/forkd-bench-…/probe.sock"
//
// It serves HTTP on the inherited sockets (fds 3…, LISTEN_FDS, taken with
// activation.Listeners), answering "ok PID" to every request, sends READY=1
// and a WATCHDOG=1 heartbeat every WATCHDOG_USEC/2 to NOTIFY_SOCKET with
// daemon.SdNotify, and reports its start, readiness, hang and stop to the
// probe socket named by EnvProbe as "KIND PID UNIX-NANOS" datagrams (the
// Kind constants). The other Env constants add a simulated boot time,
// request counting and a notify flood.
//
// The package imports only the standard library and go-systemd's activation
// and daemon packages, so that its start-up is that of a small standalone
// worker program — the benchmarks' reference worker boot.
package benchworker
