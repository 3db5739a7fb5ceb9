// Package cluster runs jobs once across several forkd instances: the
// [[singleton]] and [[schedule]] tables with scope = "cluster", shared by
// every forkd whose [cluster] name is the same, elected through etcd with
// its official client's sessions, leases and elections. There is no
// consensus of forkd's own.
//
//	[cluster]
//	endpoints = ["http://10.0.0.5:2379", "http://10.0.0.6:2379"]
//	name = "shop"        # default: server.name
//	lease_ttl = "10s"
//	stop_margin = "5s"   # default: half of lease_ttl
//
//	[[singleton]]
//	name = "scheduler"
//	scope = "cluster"
//	command = "/usr/bin/myapp-scheduler"
//
// A Cluster is an actor: Run owns the etcd session and the elections, and
// the methods are messages to it (Claim, Last and Holder talk to etcd on
// the caller's goroutine). Each forkd keeps one session, with one lease and
// one keep-alive stream however many jobs it has.
//
// What it promises:
//
//   - Leadership of a singleton (Lead): an etcd election under
//     PREFIX/NAME/singleton/JOB, campaigned with the session's lease. The
//     subscriber gets an Event when it wins, with a fencing token (the
//     revision that created its leader key: every later holder's is
//     larger), and when it loses it.
//   - Lease safety: the lease is renewed on one stream of forkd's own, each
//     renewal dated from when its request was sent (the lease holds for
//     lease_ttl from then at least). When it has not been renewed for
//     lease_ttl − stop_margin, the leaderships are lost with KillBy set to
//     last renewal + lease_ttl − stop_margin/2: the holder's process must
//     be gone by then, half a margin before etcd can expire the lease and
//     let another forkd win. The margin must cover the stop (TERM, then
//     KILL at KillBy) plus one network round trip to etcd.
//   - A schedule's period (Claim) goes to exactly one forkd: an etcd
//     transaction moves PREFIX/NAME/schedule/JOB to the period only if it
//     holds an earlier one. The key keeps the last claimed period, which
//     is what a persistent schedule catches up from (Last).
//   - An in-place upgrade hands the lease over (Options.Lease): the new
//     master's session takes it over while etcd still has it, and with it
//     the leader keys and their tokens.
//   - etcd unreachable, at start or later: one warning in the log, Status
//     says so (and the master puts it in STATUS= and on D-Bus), claims fail
//     at once with ErrUnavailable, and Run keeps trying; nothing else
//     waits for etcd.
//
// What only the fencing token can do: a forkd that is paused (SIGSTOP, a
// VM frozen) or cut off longer than stop_margin after its last renewal,
// with its clock or timers stalled too, cannot stop its process in time;
// nor can a process that ignores TERM and is stuck in the kernel past
// KILL. Another holder may then start while the old one still runs. An
// application whose writes must never come from two holders checks
// FORKD_FENCING_TOKEN where it writes (a conditional update on the token,
// refusing tokens lower than the highest seen).
package cluster
