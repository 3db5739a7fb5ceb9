// Package forkexec starts a program the way the socket-activation protocol
// wants it started: with variables such as LISTEN_PID and WATCHDOG_PID set to
// the new process's own pid, which only the child knows, between fork and
// exec, and with no intermediate program.
//
// syscall.ForkExec runs no caller code between fork and exec; the other way
// to set those variables is a re-executed copy of forkd in between (the
// exec-shim of package activation), a second execve and Go runtime start
// for every process. Start does the child's part itself, with raw system
// calls only:
//
//	clone(CLONE_VM|CLONE_VFORK|CLONE_PIDFD)  on amd64; elsewhere a copy, see below
//	  reset every signal handler to SIG_DFL  (signals are blocked meanwhile)
//	  prctl(PR_SET_PDEATHSIG); getppid()    dies with the thread that started it
//	  sched_setattr(sched_runtime 0)        if DefaultSlice: the kernel's slice
//	  dup3 the Files into 0, 1, 2, 3…       everything else is close-on-exec
//	  chdir(Dir)
//	  write getpid() into the PIDEnv values
//	  unblock signals; execve(Path, Args, Env)
//	  on failure: step and errno into a pipe, _exit(127)
//
// On amd64 the child shares the parent's memory and runs on the calling
// goroutine's stack until it execs, as syscall.ForkExec's children do: no
// page tables to copy and none to tear down at exec. The calling thread
// waits meanwhile; a small assembly function keeps the parent's return
// address out of the child's way (see vfork_amd64.s). Elsewhere the child gets a copy of the parent's memory
// and the parent goes on at once; the tests run that path on amd64 too.
// Either way the outcome of the exec comes later, from Process.Exec.
//
// The child allocates nothing, takes no lock and calls only functions that
// are //go:nosplit and //go:norace, so neither the Go runtime nor the race
// detector runs in it; every argument is prepared by the parent beforehand,
// and what the child writes (its stack below the caller's frame, the values
// prepared for it) the parent does not read again.
//
// Start needs Linux ≥ 5.2 (CLONE_PIDFD). A kernel or seccomp filter that
// refuses the clone makes Start fail with an error wrapping ErrUnsupported,
// and the caller can fall back to syscall.ForkExec.
package forkexec
