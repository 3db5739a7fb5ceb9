// Package workers is forkd's arbiter: one goroutine that owns a pool of
// worker processes sharing the listening sockets, as Gunicorn's master does.
//
// A Pool spawns N workers through the exec-shim (see package activation),
// each with the sockets as fds 3…, LISTEN_FDS/LISTEN_FDNAMES/LISTEN_PID,
// NOTIFY_SOCKET pointing at the pool's datagram socket, WATCHDOG_USEC set
// from the config's timeout, and FORKD_WORKER_ID, FORKD_GENERATION and
// FORKD_INSTANCE. Workers report READY=1, WATCHDOG=1, STATUS= and STOPPING=1
// as they would to systemd; the pool identifies the sender by
// SCM_CREDENTIALS and ignores processes that are not its workers.
//
// Everything the pool reacts to arrives on channels its Run loop selects
// over: signals, exits (each worker's pidfd, so no polling and no
// wait4(-1)), notify messages, timers and control requests, which carry
// their own reply channel. Nothing else touches its state.
//
// Signals (Gunicorn's meanings): HUP reloads (a new generation beside the
// old, which is stopped once the new one is ready; a generation that fails
// to come up is rolled back), TTIN/TTOU add or remove a worker, TERM stops
// gracefully, INT and QUIT stop quickly, USR1 is forwarded to the workers,
// WINCH stops the workers and keeps the master.
//
// A worker that exits is replaced at once when it had been serving for a
// while; one that keeps failing is restarted with exponential backoff per
// slot. A worker that misses its heartbeat or its boot deadline gets SIGABRT
// and, kill_timeout later, SIGKILL; its replacement is started at once.
// Workers get SIGKILL as their parent-death signal, so none outlives the
// master.
package workers
