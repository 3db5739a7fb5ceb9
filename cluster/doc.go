// Package cluster runs jobs once across several forkd instances: the
// [[singleton]] and [[schedule]] tables with scope = "cluster", shared by
// every forkd whose [cluster] name is the same, elected through etcd.
// There is no consensus of forkd's own.
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
// This package is the master's side and uses the standard library only:
// etcd's client (and gRPC, protobuf) is linked into a sidecar executable,
// forkd-cluster (package cluster/etcd, cmd/forkd-cluster), so that a forkd
// without cluster jobs does not pay for its initialization. A Cluster
// starts the sidecar, talks to it over a socket pair in JSON lines
// (Request, Message; see protocol.go and docs/cluster.md), and is an
// actor: Run owns the connection, the methods are messages to it.
//
// What it promises, the sidecar keeping it:
//
//   - One etcd session per forkd: one lease, one keep-alive stream, however
//     many jobs.
//   - Leadership of a singleton (Lead): an etcd election under
//     PREFIX/NAME/singleton/JOB. The subscriber gets an Event when it
//     wins, with a fencing token larger than any earlier holder's, and
//     when it loses it, with KillBy: when the process must be gone, half a
//     stop_margin before the lease can expire.
//   - A schedule's period (Claim) goes to exactly one forkd; Last reads
//     the last claimed period, for a persistent schedule's catch-up.
//   - An in-place upgrade hands the sidecar over (Handover, Options.Adopt):
//     its session, lease and leaderships carry on under the new master.
//   - The master gone (its end of the socket closed, a crash included):
//     the sidecar revokes its lease once the master and the singleton
//     processes it was told of (Running) have exited, lease_ttl at most,
//     and exits, so another forkd takes over.
//   - etcd unreachable, at start or later: one warning in the log, Status
//     says so, claims fail at once with ErrUnavailable, and the sidecar
//     keeps trying; nothing else waits for etcd.
//
// What only the fencing token can do: a forkd that is paused (SIGSTOP, a
// VM frozen) or cut off longer than stop_margin after its last renewal,
// with its clock or timers stalled too, cannot stop its process in time;
// nor can a process that ignores TERM and is stuck in the kernel past
// KILL. An application whose writes must never come from two holders
// checks FORKD_FENCING_TOKEN where it writes.
package cluster
