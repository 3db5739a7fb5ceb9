// Package activation gets forkd's listening sockets and hands them on to
// workers with the protocol systemd uses for socket activation
// (sd_listen_fds(3)): fds 3…3+n-1, LISTEN_FDS=n, LISTEN_FDNAMES=a:b:…, and
// LISTEN_PID set to the worker's own pid.
//
// # Where the sockets come from
//
// Listen takes the sockets systemd passed when forkd was socket-activated
// (LISTEN_PID is forkd's pid and LISTEN_FDS > 0); the addresses in the config
// are then ignored. Otherwise it binds every configured address itself, with
// SO_REUSEADDR and the configured listen backlog. A socket unit for an
// instance named myapp, as a drop-in (systemctl edit forkd@myapp.socket):
//
//	[Socket]
//	ListenStream=
//	ListenStream=127.0.0.1:8000
//	# The name workers see in LISTEN_FDNAMES (default: the socket unit's name).
//	FileDescriptorName=web
//	Backlog=2048
//
// and the service it starts (Accept=no, the default, is required: one forkd
// owns the listening socket, its workers share it):
//
//	[Service]
//	Type=notify
//	ExecStart=/usr/bin/forkd --config /etc/forkd/%i.toml
//	KillMode=mixed
//
// Without systemd the config's bind list is used:
//
//	[server]
//	bind = ["tcp://127.0.0.1:8000", "unix:/run/myapp/admin.sock?mode=0660&name=admin"]
//	backlog = 2048
//
// A unix socket file left behind by a crashed server is removed only when
// nothing accepts connections on it; a live socket or a file that is not a
// socket is an error and is left alone. Close removes the socket files forkd
// created itself, never the ones systemd passed.
//
// # Handing the sockets to workers
//
// Each Socket's File goes, in order, into the worker's fds 3…; Env gives the
// LISTEN_FDS and LISTEN_FDNAMES entries of its environment. Only the worker
// knows its pid before it runs its program, and syscall.ForkExec runs no
// caller code between fork and exec. forkd starts workers with package
// forkexec, which sets LISTEN_PID in the child itself; where the kernel
// refuses that (or workers.Options.ExecShim asks), it starts every worker
// through itself instead:
//
//	forkd __forkd-exec-shim /usr/bin/myapp --fd 3
//
// ShimArgv builds that argv; forkd's main calls Shim when os.Args[1] is
// ShimArg. Shim sets LISTEN_PID (and WATCHDOG_PID when WATCHDOG_USEC is set)
// to its own pid, makes sure fds 3…3+n-1 survive exec, and execve's the
// worker command in the same process: no extra process remains, and the pid
// forkd started is the worker's pid. If FORKD_SHIM_PARENT is set and is not
// the shim's parent, the master died before the shim ran and the command is
// never started (ErrMasterGone); ShimParentEnv is that entry.
//
// The parent-death signal the spawner sets (Pdeathsig, prctl
// PR_SET_PDEATHSIG) survives execve for binaries that are not set-user-ID or
// set-group-ID and have no file capabilities, so a worker started through the
// shim still dies with the master. Signal handlers are reset by execve; the
// signal mask and ignored signals are inherited.
//
// The shim does little: no config, one pass over the environment, a few
// fcntl calls, and nothing in this package's initialization. Still, every
// worker it starts pays for the Go runtime's start and the package
// initialization of the whole forkd binary (BenchmarkShim compares the two
// ways of starting a program), which is why it is the fallback, not the
// rule.
package activation
