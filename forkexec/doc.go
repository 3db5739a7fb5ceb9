// Package forkexec starts a program the way the socket-activation protocol
// wants it started: with variables such as LISTEN_PID and WATCHDOG_PID set to
// the new process's own pid, which only the child knows, between fork and
// exec, and with no intermediate program.
//
// syscall.ForkExec runs no caller code between fork and exec, so forkd used
// to start every worker through a re-executed copy of itself (the exec-shim
// of package activation) that set LISTEN_PID and exec'd the command: a second
// execve and a Go runtime start for every worker, about 2.5 ms of CPU each.
// Start does the child's part itself, with raw system calls only:
//
//	clone(CLONE_PIDFD)                      the parent goes on at once
//	  reset every signal handler to SIG_DFL  (signals are blocked meanwhile)
//	  prctl(PR_SET_PDEATHSIG); getppid()    dies with the thread that started it
//	  dup3 the Files into 0, 1, 2, 3…       everything else is close-on-exec
//	  chdir(Dir)
//	  write getpid() into the PIDEnv values
//	  unblock signals; execve(Path, Args, Env)
//	  on failure: errno into a pipe, _exit(127)
//
// The parent does not wait for the exec: it can start the next child while
// this one execs, and Process.Exec reports the outcome later. The child runs
// on a copy of the parent's memory (no CLONE_VM), so nothing it writes
// reaches the parent. It allocates nothing, takes no lock and calls
// only functions that are //go:nosplit and //go:norace, so neither the Go
// runtime nor the race detector runs in it; every argument is prepared by the
// parent beforehand.
//
// Start needs Linux ≥ 5.2 (CLONE_PIDFD). A kernel or seccomp filter that
// refuses the clone makes Start fail with an error wrapping ErrUnsupported,
// and the caller can fall back to syscall.ForkExec.
package forkexec
