//go:build linux

package forkexec

import (
	"os/exec"
	"runtime"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The two benchmarks start /bin/true and wait for it, with Start and with
// syscall.ForkExec (what forkd used with its exec-shim in between): compare
// them side by side in one run (go test -run '^$' -bench . ./forkexec).

func BenchmarkStart(b *testing.B) {
	a := trueAttr()
	for b.Loop() {
		proc, err := Start(a)
		reap(b, proc, err)
	}
}

// trueAttr starts /bin/true as forkd starts a worker.
func trueAttr() *Attr {
	return &Attr{Path: "/bin/true", Args: []string{"true"}, Env: []string{"A=1"},
		PIDEnv: []string{"LISTEN_PID"}, Files: []int{0, 1, 2}, Pdeathsig: syscall.SIGKILL}
}

// reap takes Start's outcome: the exec's, then the child's exit.
func reap(b *testing.B, proc *Process, err error) {
	b.Helper()
	if err == nil {
		err = proc.Exec()
	}
	if err != nil {
		b.Fatal(err)
	}
	var ws unix.WaitStatus
	if _, err := unix.Wait4(proc.PID, &ws, 0, nil); err != nil {
		b.Fatal(err)
	}
	syscall.Close(proc.PIDFD)
}

func BenchmarkForkExec(b *testing.B) {
	attr := &syscall.ProcAttr{Env: []string{"A=1", "LISTEN_PID=0"}, Files: []uintptr{0, 1, 2},
		Sys: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}}
	for b.Loop() {
		pid, err := syscall.ForkExec("/bin/true", []string{"true"}, attr)
		if err != nil {
			b.Fatal(err)
		}
		var ws unix.WaitStatus
		if _, err := unix.Wait4(pid, &ws, 0, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStartReturns times Start alone, until it returns to the caller,
// with the CPUs idle and with every CPU taken by a busy loop (as when the
// workers started just before are booting): run both in one go
// (go test -run '^$' -bench StartReturns ./forkexec) and compare. On amd64
// the caller waits in clone(CLONE_VFORK) until the child has exec'd, so the
// child's wait for a CPU is the caller's too.
func BenchmarkStartReturns(b *testing.B) {
	b.Run("idle", benchStartReturns)
	b.Run("cpus-busy", func(b *testing.B) {
		for range runtime.NumCPU() {
			spin := exec.Command("/bin/sh", "-c", "while :; do :; done")
			if err := spin.Start(); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() {
				spin.Process.Kill()
				spin.Wait()
			})
		}
		benchStartReturns(b)
	})
}

func benchStartReturns(b *testing.B) {
	a := trueAttr()
	for b.Loop() {
		proc, err := Start(a)
		b.StopTimer()
		reap(b, proc, err)
		b.StartTimer()
	}
}
