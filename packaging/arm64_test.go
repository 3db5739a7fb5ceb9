package packaging

import (
	"debug/elf"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestPackages_Arm64 builds the packages for arm64 on any machine, as
// `make deb rpm ARCH=arm64` does, and checks that they say arm64 (the rpm:
// aarch64) and carry arm64 binaries.
func TestPackages_Arm64(t *testing.T) {
	if runtime.GOARCH == "arm64" {
		t.Skip("this machine is arm64: TestPackages covers its packages")
	}
	need(t, "dpkg-deb", "to read the .deb")
	need(t, "rpm", "to read the .rpm; apt-get install rpm")
	pk := buildPackagesFor(t, "arm64")

	if got := strings.TrimSpace(mustRun(t, "", nil, "dpkg-deb", "--field", pk.deb, "Architecture")); got != "arm64" {
		t.Errorf("%s: Architecture %q, want arm64", filepath.Base(pk.deb), got)
	}
	if got := strings.TrimSpace(mustRun(t, "", nil, "rpm", "-qp", "--queryformat", "%{ARCH}", pk.rpm)); got != "aarch64" {
		t.Errorf("%s: arch %q, want aarch64", filepath.Base(pk.rpm), got)
	}
	root := t.TempDir()
	mustRun(t, "", nil, "dpkg-deb", "--extract", pk.deb, root)
	for _, bin := range []string{"usr/bin/forkd", "usr/bin/forkctl", "usr/lib/forkd/forkd-demo"} {
		f, err := elf.Open(filepath.Join(root, bin))
		if err != nil {
			t.Errorf("%s in the .deb: %v", bin, err)
			continue
		}
		if f.Machine != elf.EM_AARCH64 {
			t.Errorf("%s in the .deb is for %v, want EM_AARCH64", bin, f.Machine)
		}
		f.Close()
	}
}
