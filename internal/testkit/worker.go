package testkit

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// WorkerSpec says how StartWorker starts a worker.
type WorkerSpec struct {
	Role string   // the test binary's role (RoleEnv)
	Args []string // its arguments
	Env  []string // added to CleanEnv and the activation variables
	// Listener is the listening socket handed to the worker as fd 3.
	// Nil: a fresh one on 127.0.0.1:0, which the worker alone holds once
	// it has started, so that connections are refused once it exits. A
	// listener of the test's stays open in the test: several workers may
	// share it, as forkd's do.
	Listener *net.TCPListener
}

// Worker is the test binary started as a socket-activated worker, the way
// systemd and forkd start one: its listening socket at fd 3 (LISTEN_FDS=1,
// LISTEN_FDNAMES=web) and NOTIFY_SOCKET pointing at a Notify of the test.
// The role must set LISTEN_PID to its own pid before it reads the
// activation variables (SetListenPID), as forkd's exec shim does between
// fork and exec.
type Worker struct {
	Cmd    *exec.Cmd
	Addr   string  // host:port of the listening socket
	Notify *Notify // the worker's NOTIFY_SOCKET
	Stdout Buffer
	Stderr Buffer

	t      testing.TB
	exited chan error // cmd.Wait's result, put back by every reader
}

// StartWorker starts a worker as spec says; it is killed, if still
// running, when the test ends, and its output is logged if the test
// failed.
func StartWorker(t testing.TB, spec WorkerSpec) *Worker {
	t.Helper()
	ln := spec.Listener
	if ln == nil {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("testkit: listen: %v", err)
		}
		ln = l.(*net.TCPListener)
		defer ln.Close()
	}
	lnFile, err := ln.File()
	if err != nil {
		t.Fatalf("testkit: listener file: %v", err)
	}
	defer lnFile.Close()
	w := &Worker{
		Addr:   ln.Addr().String(),
		Notify: ListenNotify(t),
		t:      t,
		exited: make(chan error, 1),
	}
	w.Cmd = Command(t, spec.Role, spec.Args...)
	w.Cmd.Env = append(w.Cmd.Env, "LISTEN_FDS=1", "LISTEN_FDNAMES=web", "NOTIFY_SOCKET="+w.Notify.Path)
	w.Cmd.Env = append(w.Cmd.Env, spec.Env...)
	w.Cmd.ExtraFiles = []*os.File{lnFile}
	w.Cmd.Stdout = &w.Stdout
	w.Cmd.Stderr = &w.Stderr
	if err := w.Cmd.Start(); err != nil {
		t.Fatalf("testkit: start worker %s: %v", spec.Role, err)
	}
	go func() { w.exited <- w.Cmd.Wait() }()
	t.Cleanup(func() {
		w.Cmd.Process.Kill()
		err := <-w.exited
		w.exited <- err
		if t.Failed() {
			t.Logf("worker %d stdout:\n%s\nworker %d stderr:\n%s",
				w.Cmd.Process.Pid, w.Stdout.String(), w.Cmd.Process.Pid, w.Stderr.String())
		}
	})
	return w
}

// SetListenPID sets LISTEN_PID to the process's own pid when LISTEN_FDS
// is set: what systemd and forkd's exec shim do between fork and exec,
// and os/exec cannot. A worker role calls it first.
func SetListenPID() {
	if os.Getenv("LISTEN_FDS") != "" {
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	}
}

// WorkerRole is a role for StartWorker: it sets LISTEN_PID
// (SetListenPID) and runs main with the role's arguments, exiting 0 when
// main returns nil and 1, with the error printed after name, when it
// fails.
func WorkerRole(name string, main func(args []string) error) Role {
	return func(args []string) int {
		SetListenPID()
		if err := main(args); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
			return 1
		}
		return 0
	}
}

// Signal sends sig to the worker, failing the test if it cannot.
func (w *Worker) Signal(sig os.Signal) {
	w.t.Helper()
	if err := w.Cmd.Process.Signal(sig); err != nil {
		w.t.Fatalf("testkit: send %v to worker %d: %v", sig, w.Cmd.Process.Pid, err)
	}
}

// Wait waits for the worker to exit and returns cmd.Wait's error; it
// fails the test after Deadline. It may be called again.
func (w *Worker) Wait() error {
	w.t.Helper()
	timeout := time.NewTimer(Deadline)
	defer timeout.Stop()
	select {
	case err := <-w.exited:
		w.exited <- err
		return err
	case <-timeout.C:
		w.t.Fatalf("testkit: worker %d did not exit within %v", w.Cmd.Process.Pid, Deadline)
		return nil
	}
}

// WaitExit waits for the worker to exit, failing the test unless it exits
// with code (a worker killed by a signal has code -1).
func (w *Worker) WaitExit(code int) {
	w.t.Helper()
	err := w.Wait()
	got := 0
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		got = exitErr.ExitCode()
	} else if err != nil {
		w.t.Fatalf("testkit: wait for worker %d: %v", w.Cmd.Process.Pid, err)
	}
	if got != code {
		w.t.Fatalf("testkit: worker %d exited with %v, want exit code %d", w.Cmd.Process.Pid, err, code)
	}
}

// Exited reports whether the worker has exited.
func (w *Worker) Exited() bool {
	select {
	case err := <-w.exited:
		w.exited <- err
		return true
	default:
		return false
	}
}

// Rest waits for the worker to exit with code 0 and returns every note it
// sent that the test had not taken.
func (w *Worker) Rest() []Note {
	w.t.Helper()
	w.WaitExit(0)
	return w.Notify.Flush()
}
