// Package cgroup gives each worker and singleton a cgroup v2 of its own,
// inside the subtree systemd delegates to forkd, and reads back what the
// kernel counts there. The unit delegates the controllers the limits need
// and leaves its own cgroup writable under ProtectControlGroups=, as
// forkd@.service does:
//
//	[Service]
//	Delegate=cpu memory pids
//	ProtectControlGroups=yes
//	ReadWritePaths=-/sys/fs/cgroup/system.slice/system-forkd.slice/%n
//
// The layout under the unit's cgroup, which Tree.Setup makes:
//
//	forkd@myapp.service/            the delegated root: controllers enabled
//	├── master/                     forkd itself (a process may not sit in
//	│                               a cgroup whose controllers it hands down)
//	├── worker-0.g1.1/              one per worker process: memory.max, …
//	└── singleton-cleanup.1/        one per singleton process
//
// A process is placed in its cgroup as it is created (clone3 with
// CLONE_INTO_CGROUP, see internal/forkexec): it never runs a single
// instruction in the master's. Limits are written before that, from Limits:
// memory.max, memory.high, pids.max and cpu.weight.
//
// Open finds the subtree and says, when there is none, what is missing (a
// cgroup v2 hierarchy, write access to it, systemd's delegation). Without
// one, forkd runs every child in its own cgroup as before and can measure
// only a process's resident memory (RSS).
//
// Watcher is the actor that learns of memory crossings: the kernel tells
// when a cgroup's memory.events changes (high, max and oom events), which
// Watcher watches with inotify; memory.current changes without telling, so
// Watcher also samples it every SamplePeriod, but only while some watch has
// a threshold. Watcher also removes the cgroups of processes that ended,
// once they are empty.
package cgroup
