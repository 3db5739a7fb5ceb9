package cluster

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFindExecutable: forkd-cluster is found beside the running
// executable; when it is in neither place, the error names both.
func TestFindExecutable(t *testing.T) {
	if _, err := os.Stat(filepath.Join(LibDir, Executable)); err == nil {
		t.Skipf("%s is installed: the missing case cannot be tested here", filepath.Join(LibDir, Executable))
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	beside := filepath.Join(filepath.Dir(self), Executable)
	if _, err := os.Stat(beside); err == nil {
		t.Skipf("%s exists already", beside)
	}
	_, err = FindExecutable()
	if err == nil || !strings.Contains(err.Error(), beside) || !strings.Contains(err.Error(), filepath.Join(LibDir, Executable)) {
		t.Fatalf("FindExecutable with none: %v; want an error naming %s and %s", err, beside, filepath.Join(LibDir, Executable))
	}
	if err := os.WriteFile(beside, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Skipf("cannot write beside the test binary: %v", err)
	}
	t.Cleanup(func() { os.Remove(beside) })
	if p, err := FindExecutable(); err != nil || p != beside {
		t.Fatalf("FindExecutable = %q, %v; want %q", p, err, beside)
	}
}
