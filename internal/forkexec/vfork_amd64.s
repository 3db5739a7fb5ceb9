#include "textflag.h"

// func rawVfork(trap, a1, a2, a3 uintptr) (pid, errno uintptr)
//
// clone(flags, 0, pidfd, 0, 0) or clone3(args, size): with
// CLONE_VM|CLONE_VFORK the child runs on this very stack until it execs.
// The return address is popped into R12 before the system call and pushed
// back after it, so that what the child writes below the caller's stack
// pointer cannot change where the parent returns (syscall.rawVforkSyscall
// does the same).
TEXT ·rawVfork(SB),NOSPLIT|NOFRAME,$0-48
	MOVQ	a1+8(FP), DI
	MOVQ	a2+16(FP), SI
	MOVQ	a3+24(FP), DX
	MOVQ	$0, R10
	MOVQ	$0, R8
	MOVQ	$0, R9
	MOVQ	trap+0(FP), AX
	POPQ	R12
	SYSCALL
	PUSHQ	R12
	CMPQ	AX, $0xfffffffffffff001
	JLS	ok
	MOVQ	$0, pid+32(FP)
	NEGQ	AX
	MOVQ	AX, errno+40(FP)
	RET
ok:
	MOVQ	AX, pid+32(FP)
	MOVQ	$0, errno+40(FP)
	RET
