// Package libexec finds and starts forkd's helper executables, the
// sidecars that keep a library out of the master (forkd-cluster: etcd's
// client; forkd-metrics: Prometheus' client): beside the running
// executable, as in a build tree (bin/), else where the packages install
// them (LibDir); each talks to the master over a socket pair.
package libexec

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

// LibDir is where the packages install forkd's helper executables.
const LibDir = "/usr/lib/forkd"

// Find returns the path of the executable name: beside the running
// executable, else in LibDir. The error says where it looked: `found
// neither "…" nor "…"`.
func Find(name string) (string, error) {
	var tried []string
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), name)
		if isExecutable(p) {
			return p, nil
		}
		tried = append(tried, p)
	}
	p := filepath.Join(LibDir, name)
	if isExecutable(p) {
		return p, nil
	}
	tried = append(tried, p)
	if len(tried) == 2 {
		return "", fmt.Errorf("found neither %q nor %q", tried[0], tried[1])
	}
	return "", fmt.Errorf("found %q", tried[0])
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// Start starts the executable at path with extra as its file descriptors
// 3, 4, … and its end of a new socket pair after them, its standard error
// this process's. It returns the process and this end of the pair, with
// its descriptor number (for a handover): non-blocking, so that closing
// it wakes a reader, and close-on-exec.
func Start(path string, extra ...*os.File) (p *os.Process, conn *os.File, fd int, err error) {
	name := filepath.Base(path)
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, -1, fmt.Errorf("socket pair for %s: %w", name, err)
	}
	if err := syscall.SetNonblock(fds[0], true); err != nil {
		syscall.Close(fds[0])
		syscall.Close(fds[1])
		return nil, nil, -1, fmt.Errorf("socket pair for %s: %w", name, err)
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), name), os.NewFile(uintptr(fds[1]), name)
	cmd := exec.Command(path)
	cmd.ExtraFiles = append(append([]*os.File(nil), extra...), theirs)
	cmd.Stderr = os.Stderr
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		mine.Close()
		return nil, nil, -1, fmt.Errorf("start %s: %w", path, err)
	}
	return cmd.Process, mine, fds[0], nil
}

// Exited returns a channel that receives, once, how p ended (its status as
// an error) or why it could not be waited for. p must be this process's
// child.
func Exited(p *os.Process) <-chan error {
	exited := make(chan error, 1)
	go func() {
		st, err := p.Wait()
		if err == nil {
			err = errors.New(st.String())
		}
		exited <- err
	}()
	return exited
}
