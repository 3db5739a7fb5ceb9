//go:build linux

package forkexec

// sharedVM says the child shares the parent's memory until it execs
// (CLONE_VM|CLONE_VFORK, as syscall.ForkExec does): no page tables to copy,
// none to tear down at exec. It takes rawVfork, which is assembly.
const sharedVM = true

// rawVfork is system call trap (clone or clone3) with arguments a1, a2 and
// a3, for a child that runs on the caller's stack; see vfork_amd64.s.
func rawVfork(trap, a1, a2, a3 uintptr) (pid, errno uintptr)
