// Package libexec finds forkd's helper executables, the sidecars that
// keep a library out of the master (forkd-cluster: etcd's client;
// forkd-metrics: Prometheus' client): beside the running executable, as
// in a build tree (bin/), else where the packages install them (LibDir).
package libexec

import (
	"fmt"
	"os"
	"path/filepath"
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
