package forkexec

import (
	"bytes"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestStart_CopyIsTheOtherClone checks that the "copy" variant of the
// tests (copyVM) runs the clone every architecture but amd64 uses: a child
// with a copy of the parent's memory, whose writes (its pid, put into the
// PIDEnv values before exec) the parent does not see; and that the
// "native" one on amd64 is the child that shares the memory, whose writes
// it does see.
func TestStart_CopyIsTheOtherClone(t *testing.T) {
	for _, copyVM := range []bool{false, true} {
		name := map[bool]string{false: "native", true: "copy"}[copyVM]
		t.Run(name, func(t *testing.T) {
			p, err := Start(&Attr{Path: "/bin/true", Args: []string{"true"}, PIDEnv: []string{"LISTEN_PID"}, copyVM: copyVM})
			if err != nil {
				t.Fatal(err)
			}
			defer syscall.Close(p.PIDFD)
			if err := p.Exec(); err != nil {
				t.Fatal(err)
			}
			var ws unix.WaitStatus
			if _, err := unix.Wait4(p.PID, &ws, 0, nil); err != nil {
				t.Fatal(err)
			}
			seen := bytes.HasPrefix(p.pids[0], []byte(strconv.Itoa(p.PID)+"\x00"))
			untouched := !bytes.ContainsFunc(p.pids[0], func(r rune) bool { return r != 0 })
			switch {
			case sharedVM && !copyVM:
				if !seen {
					t.Errorf("native clone on a shared-memory architecture: the parent sees LISTEN_PID %q, want the child's pid %d", p.pids[0], p.PID)
				}
			default:
				if !untouched {
					t.Errorf("%s clone: the parent sees the child's write %q: the child did not get a copy of the memory", name, p.pids[0])
				}
			}
		})
	}
}
