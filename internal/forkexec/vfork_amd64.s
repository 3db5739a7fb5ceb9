#include "textflag.h"

// func rawVfork(flags, pidfd uintptr) (pid, errno uintptr)
//
// clone(flags, 0, pidfd, 0, 0): with CLONE_VM|CLONE_VFORK the child runs on
// this very stack until it execs. The return address is popped into R12 before
// the system call and pushed back after it, so that what the child writes
// below the caller's stack pointer cannot change where the parent returns
// (syscall.rawVforkSyscall does the same).
TEXT ·rawVfork(SB),NOSPLIT|NOFRAME,$0-32
	MOVQ	flags+0(FP), DI
	MOVQ	$0, SI
	MOVQ	pidfd+8(FP), DX
	MOVQ	$0, R10
	MOVQ	$0, R8
	MOVQ	$0, R9
	MOVQ	$56, AX // SYS_clone
	POPQ	R12
	SYSCALL
	PUSHQ	R12
	CMPQ	AX, $0xfffffffffffff001
	JLS	ok
	MOVQ	$0, pid+16(FP)
	NEGQ	AX
	MOVQ	AX, errno+24(FP)
	RET
ok:
	MOVQ	AX, pid+16(FP)
	MOVQ	$0, errno+24(FP)
	RET
