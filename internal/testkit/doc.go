// Package testkit is forkd's test support, kept in one place: what the
// tests of every package need to run real processes, sockets and buses.
//
//   - Main and Command: the test binary re-executed as the process a test
//     needs (a worker, a master, the exec shim), picked by its first
//     argument or by RoleEnv.
//   - Worker: the test binary started as a socket-activated worker, the way
//     systemd and forkd start one: a TCP listener at fd 3 and a
//     NOTIFY_SOCKET owned by the test.
//   - Notify: a NOTIFY_SOCKET as a service manager holds it (a unixgram
//     socket with SO_PASSCRED), whose datagrams the test waits for.
//   - StartBus: a private dbus-daemon with the system bus's policy and
//     forkd's shipped one, as net/http's httptest starts servers.
//   - Run, Exited, WaitExit: an actor run until the test ends, and a
//     process's exit waited for through a pidfd.
//   - Buffer: text written by goroutines while the test reads it.
//   - Cgroup, WaitEmpty: a fresh cgroup v2 to start processes in (the test
//     skips without a writable hierarchy), and the wait for it to empty.
//   - DrainSharedSocket, DrainAnswersAcceptedConnection: the drain
//     scenarios every worker implementation must pass.
//
// Nothing here sleeps to synchronize: every wait is on an event, bounded
// by Deadline, and fails the test when the deadline passes.
//
//	func TestMain(m *testing.M) {
//		testkit.Main(m, testkit.Roles{"worker": runWorker})
//	}
//
//	func TestWorker_Ready(t *testing.T) {
//		w := testkit.StartWorker(t, testkit.WorkerSpec{Role: "worker"})
//		w.Notify.Wait("READY=1")
//		…
//	}
//
// The package imports none of forkd's own packages, so that the tests of
// every one of them, in-package or external, may use it.
package testkit

import "time"

// Deadline bounds every wait of this package: long, because a
// race-enabled binary on a busy machine is slow, and a wait that reaches it
// fails the test.
const Deadline = 20 * time.Second
