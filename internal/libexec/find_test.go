package libexec

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
