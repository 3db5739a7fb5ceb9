// Package process starts and reaps the master's child processes: one way,
// one contract, whichever of two mechanisms starts a process.
//
//   - Directly, the rule: package forkexec clones a child that writes its
//     own pid into the PIDEnv variables and execs the program.
//   - Through the exec-shim, when Attr.ExecShim asks for it or the kernel
//     refuses a direct start: forkd re-executed (activation.Shim), which
//     sets those variables in its own process and execs the program there.
//
// Either way, the started program
//
//   - is the process Start returns: no intermediate process remains;
//   - sees its own pid in each PIDEnv variable;
//   - gets Files as its fds 0, 1, 2, … and no other fd, also none the
//     caller holds without close-on-exec;
//   - gets SIGKILL when the thread that called Start exits
//     (PR_SET_PDEATHSIG): a caller holds its goroutine on its OS thread
//     (runtime.LockOSThread) for as long as its processes must live;
//   - runs with the kernel's default time slice, whatever the caller
//     asked for itself, and otherwise the caller's scheduling;
//   - could not start when Start returns an error, or when Wait's Exit
//     carries an ExecErr (a missing program, a file that is not
//     executable: the process then exited with status 127).
//
// Wait learns how a process ended without a thread or a polling loop: the
// process's pidfd becomes readable in the Go runtime's poller, and Wait
// then reaps it by its pid — never wait4(-1), which would take other
// children's statuses. Adopt watches a child this process did not start,
// such as a worker an in-place upgrade handed over, the same way.
package process
