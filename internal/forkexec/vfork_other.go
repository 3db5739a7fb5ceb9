//go:build linux && !amd64

package forkexec

// sharedVM is false where there is no rawVfork: the child gets a copy of
// the parent's memory (fork semantics).
const sharedVM = false

// rawVfork is not used without sharedVM.
func rawVfork(trap, a1, a2, a3 uintptr) (pid, errno uintptr) { panic("forkexec: no rawVfork") }
