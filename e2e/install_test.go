//go:build linux

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// installChecks are the names install.sh reports, in order.
var installChecks = []string{"boot", "install", "instance", "reload", "signals", "stop", "purge"}

// TestInstall boots this machine's systemd in a container on an overlay of
// / and does there what a new user does with the built .deb (install.sh):
// apt-get install ./forkd_*.deb, the sample config as an instance, socket
// activation, systemctl reload, the hook signals on the system bus,
// systemctl stop; then apt-get purge forkd, after which no unit, link,
// process, bus policy or file of forkd's may remain. Needs root,
// systemd-nspawn and dbus-monitor.
//
// The .deb is built with `make deb`, or taken from FORKD_E2E_DEB.
func TestInstall(t *testing.T) {
	nspawn := needContainer(t, "/usr/bin/apt-get", "/usr/bin/dbus-monitor")
	if err := exec.Command("dpkg", "-s", "forkd").Run(); err == nil {
		t.Skip("forkd is installed on this machine: the container, made of its root, would have it already")
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	deb := buildDeb(t, repo)

	work := t.TempDir()
	root := mountOverlay(t, work)
	data, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, root, "/root/"+filepath.Base(deb), string(data), 0o644)
	for script, mode := range map[string]os.FileMode{"install.sh": 0o755, "lib.sh": 0o644} {
		b, err := os.ReadFile(filepath.Join(repo, "e2e", script))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, root, "/usr/lib/forkd-e2e/"+script, string(b), mode)
	}
	writeFile(t, root, "/etc/systemd/system/forkd-e2e.service", runnerUnit("forkd install test", "install.sh", 120*time.Second), 0o644)

	bootAndCheck(t, container(nspawn, root), work, filepath.Join(work, "results"), "install.sh", installChecks, 80, false)
}

// buildDeb returns the .deb to install: $FORKD_E2E_DEB, or the one `make
// deb` builds into dist/ for this machine's architecture. It skips the
// test when there is no make; a failed build fails it.
func buildDeb(t *testing.T, repo string) string {
	t.Helper()
	if p := os.Getenv("FORKD_E2E_DEB"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("FORKD_E2E_DEB: %v", err)
		}
		return p
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make: cannot build the .deb (or set FORKD_E2E_DEB)")
	}
	cmd := exec.Command("make", "--no-print-directory", "deb", "ARCH="+runtime.GOARCH)
	cmd.Dir = repo
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make deb: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(repo, "dist", "forkd_*_"+runtime.GOARCH+".deb"))
	var newest string
	var newestTime time.Time
	for _, d := range debs {
		if st, err := os.Stat(d); err == nil && st.ModTime().After(newestTime) {
			newest, newestTime = d, st.ModTime()
		}
	}
	if newest == "" {
		t.Fatalf("make deb built no dist/forkd_*_%s.deb", runtime.GOARCH)
	}
	return newest
}
