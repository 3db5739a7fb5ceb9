package cluster

import (
	"time"

	"github.com/forkd/forkd/config"
)

// The master and forkd-cluster talk over a connected stream socket (the
// sidecar's fd 3) in JSON lines: one Request per line from the master,
// one Message per line from the sidecar. docs/cluster.md describes the
// exchange; in short:
//
//   - The master's first line is "hello" (a new sidecar: its [cluster]
//     table, member name, and a lease to take over) or "attach" (a master
//     that adopted the sidecar in an in-place upgrade).
//   - "lead" and "resign" name a singleton and get no reply: leaderships
//     come as "event" Messages. A "lead" for a singleton the sidecar
//     already holds is answered by a replayed "event".
//   - "running" names a cluster singleton's process (pid; 0 once it has
//     exited) and gets no reply: the sidecar keeps a pidfd of it.
//   - "claim", "last" and "holder" carry an ID that their "reply" repeats.
//   - "detach" (before an upgrade's exec) is answered by "detached", after
//     which the sidecar sends nothing, queueing what it has to say, until
//     the next "attach".
//   - The sidecar sends "status" on every change of its etcd connection,
//     "lease" on every renewal, and "log" for each record of its log.
//   - "stop" (the master stops, its singletons gone), then end of file:
//     the sidecar gives up its leaderships, revokes its lease and exits.
//     End of file without "stop" means the master died: the sidecar waits
//     until the master has exited (its children have been sent their
//     parent-death SIGKILL by then) and the singletons named by "running"
//     have exited too, lease_ttl at most, then does the same.

// Ops of a Request.
const (
	OpHello   = "hello"
	OpAttach  = "attach"
	OpLead    = "lead"
	OpResign  = "resign"
	OpRunning = "running"
	OpClaim   = "claim"
	OpLast    = "last"
	OpHolder  = "holder"
	OpDetach  = "detach"
	OpStop    = "stop"
)

// Kinds of a Message.
const (
	KindReply    = "reply"
	KindStatus   = "status"
	KindEvent    = "event"
	KindLease    = "lease"
	KindLog      = "log"
	KindDetached = "detached"
)

// Request is one line from the master to forkd-cluster.
type Request struct {
	// Op is one of the Op constants.
	Op string `json:"op"`
	// ID names a claim, last or holder request in its reply.
	ID int64 `json:"id,omitempty"`
	// Job is the singleton or schedule of lead, resign, running, claim,
	// last, holder.
	Job string `json:"job,omitempty"`
	// At is the period a claim claims.
	At time.Time `json:"at,omitzero"`
	// PID is running's process (0: Job's process has exited).
	PID int `json:"pid,omitempty"`
	// Hello is the sidecar's configuration, with OpHello.
	Hello *Hello `json:"hello,omitempty"`
}

// Hello configures a new forkd-cluster.
type Hello struct {
	// Cluster is the [cluster] table; ServerName is server.name (the
	// cluster's name when the table has none).
	Cluster    config.Cluster `json:"cluster"`
	ServerName string         `json:"server_name"`
	// Member names this forkd in etcd.
	Member string `json:"member"`
	// Lease is an etcd lease to take over if still alive (0: none): a
	// master from before the sidecar handed it over in an upgrade.
	Lease int64 `json:"lease,omitempty"`
	// Debug asks for the sidecar's debug records too.
	Debug bool `json:"debug,omitempty"`
}

// Message is one line from forkd-cluster to the master.
type Message struct {
	// Kind is one of the Kind constants.
	Kind string `json:"kind"`
	// ID is the request a reply answers.
	ID int64 `json:"id,omitempty"`
	// Err is a failed request's error; Unavailable says it failed because
	// there is no etcd session (ErrUnavailable).
	Err         string `json:"err,omitempty"`
	Unavailable bool   `json:"unavailable,omitempty"`
	// Claim is a claim's outcome.
	Claim *Claim `json:"claim,omitempty"`
	// At and Holder are last's period and member, Holder a holder's.
	At     time.Time `json:"at,omitzero"`
	Holder string    `json:"holder,omitempty"`
	// Status is the etcd connection's new state.
	Status *Status `json:"status,omitempty"`
	// Event is a change of leadership; Replay says it repeats the
	// leadership held for a "lead" of a singleton already held.
	Event  *Event `json:"event,omitempty"`
	Replay bool   `json:"replay,omitempty"`
	// Lease is the session's lease (0: none), Renewed when its last
	// answered renewal was sent.
	Lease   int64     `json:"lease,omitempty"`
	Renewed time.Time `json:"renewed,omitzero"`
	// Level, Msg and Attrs are a log record (Attrs: key, value, …).
	Level int      `json:"level,omitempty"`
	Msg   string   `json:"msg,omitempty"`
	Attrs []string `json:"attrs,omitempty"`
}
