// Package supervisor runs what must happen once per forkd instance rather
// than once per worker: the [[singleton]] processes and the runs of the
// [[schedule]] jobs of the config (package jobs says when runs are due).
//
// A Supervisor is an actor: Run owns every singleton and schedule, and its
// methods are messages to it. It starts processes through the arbiter
// (workers.Pool.StartProcess), so that they are children of the master's
// main thread: they get SIGKILL when the master dies, and an in-place
// upgrade, which keeps that thread, hands them to the new master (Freeze,
// Options.Adopt) with the schedules' next due times and the runs in flight.
//
// What it promises:
//
//   - A singleton is never two processes at once. It starts with the
//     workers (start = "before_workers": before them, which wait until it
//     is ready; "after_ready": once they serve), is restarted when it exits,
//     with the workers' backoff when it exits within a second, and stops
//     after the workers. A reload that leaves its table as it was keeps the
//     process; one that changes it stops the old process before the new one
//     starts.
//   - A schedule runs once per due time of its Timing, however many workers
//     there are, with its jitter, its overlap policy and its timeout; due
//     times come from the schedule, not from when the last run ended. A
//     reload that leaves its table as it was keeps its timing; RunNow
//     starts a run at once under the same overlap policy. Each run has
//     FORKD_SCHEDULE, FORKD_RUN_ID and FORKD_SCHEDULED_AT in its
//     environment.
//   - A job with scope = "cluster" runs once across the forkd instances of
//     its [cluster] name (Options.Cluster, package cluster). A cluster
//     singleton starts only while this forkd leads its election, with
//     FORKD_FENCING_TOKEN; a lost leadership stops it at once, with KILL by
//     the lease's deadline (cluster.Event.KillBy), and no restart until it
//     leads again; it never holds the workers back (with start =
//     "before_workers" it may start before them, never gate them). Each
//     period of a cluster schedule runs only if this forkd claimed it in
//     etcd, with the claim's FORKD_FENCING_TOKEN; a persistent one catches
//     up from the period last claimed in etcd, not from the state file. An
//     upgrade hands the etcd lease over with the singletons
//     (AdoptedLease).
//   - Every start and exit is a hook event (hooks.SingletonStarted,
//     SingletonExited, ScheduleStarted, ScheduleFinished).
//   - On stop, schedules start no more runs and runs in flight get TERM
//     (Stopping, once the workers stop); cancelling Run's context stops the
//     singletons; each gets KILL when graceful_timeout has passed. Run
//     returns once every process has exited.
package supervisor
