package libexec

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/forkd/forkd/internal/testkit"
)

// TestFind: an executable is found beside the running executable; when it
// is in neither place, the error names both.
func TestFind(t *testing.T) {
	const name = "forkd-sidecar-find-test"
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	beside := filepath.Join(filepath.Dir(self), name)
	_, err = Find(name)
	if err == nil || !strings.Contains(err.Error(), beside) || !strings.Contains(err.Error(), filepath.Join(LibDir, name)) {
		t.Fatalf("Find with none: %v; want an error naming %s and %s", err, beside, filepath.Join(LibDir, name))
	}
	if err := os.WriteFile(beside, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Skipf("cannot write beside the test binary: %v", err)
	}
	t.Cleanup(func() { os.Remove(beside) })
	if p, err := Find(name); err != nil || p != beside {
		t.Fatalf("Find = %q, %v; want %q", p, err, beside)
	}
}

// TestStart: the started process's end of the socket pair is its only
// one: once it has exited, this end reads end of file; Exited says how it
// ended.
func TestStart(t *testing.T) {
	p, conn, fd, err := Start("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if fd < 0 {
		t.Errorf("descriptor %d", fd)
	}
	select {
	case err := <-Exited(p):
		if err == nil || err.Error() != "exit status 0" {
			t.Errorf("Exited: %v, want exit status 0", err)
		}
	case <-time.After(testkit.Deadline):
		t.Fatal("/bin/true did not exit")
	}
	if err := conn.SetReadDeadline(time.Now().Add(testkit.Deadline)); err != nil {
		t.Fatalf("the socket is not pollable (non-blocking): %v", err)
	}
	if n, err := conn.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("read after the process exited: %d, %v; want end of file", n, err)
	}
	if _, _, _, err := Start("/nonexistent/forkd-helper"); err == nil || !strings.Contains(err.Error(), "/nonexistent/forkd-helper") {
		t.Errorf("Start of a missing executable: %v, want an error naming it", err)
	}
}
