//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// installChecks are the names install.sh reports, in order.
var installChecks = []string{"boot", "install", "instance", "reload", "signals", "stop", "purge"}

// installRunner runs install.sh once the container is up, then saves the
// journal and powers off — also when the script fails or times out. It
// has the name boot wants.
const installRunner = `[Unit]
Description=forkd install test
After=multi-user.target dbus.service

[Service]
Type=oneshot
ExecStart=/usr/lib/forkd-e2e/install.sh
TimeoutStartSec=120s
StandardOutput=journal+console
StandardError=journal+console
ExecStopPost=-/bin/sh -c 'journalctl -b --no-pager -o short-monotonic > /results/journal.txt 2>&1'
ExecStopPost=/bin/systemctl --no-block poweroff
`

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
	if os.Geteuid() != 0 {
		t.Skip("e2e needs root: it mounts an overlay of / and boots systemd in systemd-nspawn")
	}
	nspawn, err := exec.LookPath("systemd-nspawn")
	if err != nil {
		t.Skip("systemd-nspawn is not installed (apt-get install systemd-container)")
	}
	if fs, err := os.ReadFile("/proc/filesystems"); err != nil || !bytes.Contains(fs, []byte("\toverlay\n")) {
		t.Skip("the kernel has no overlay file system")
	}
	for _, tool := range []string{"/lib/systemd/systemd", "/usr/bin/curl", "/bin/bash", "/usr/bin/apt-get", "/usr/bin/dbus-monitor"} {
		if _, err := os.Stat(tool); err != nil {
			t.Skipf("%s is missing on this machine; the container is made of its root: %v", tool, err)
		}
	}
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
	script, err := os.ReadFile(filepath.Join(repo, "e2e", "install.sh"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, root, "/usr/lib/forkd-e2e/install.sh", string(script), 0o755)
	writeFile(t, root, "/etc/systemd/system/forkd-e2e.service", installRunner, 0o644)

	results := filepath.Join(work, "results")
	if err := os.Mkdir(results, 0o755); err != nil {
		t.Fatal(err)
	}
	console := filepath.Join(work, "console.log")
	start := time.Now()
	bootErr := boot(t, nspawn, root, results, console)
	t.Logf("container ran for %v", time.Since(start).Round(time.Millisecond))

	got := readInstallResults(t, filepath.Join(results, "results.txt"))
	failed := bootErr != nil
	if bootErr != nil {
		t.Errorf("container: %v", bootErr)
	}
	for _, name := range installChecks {
		r, ok := got[name]
		t.Run(name, func(t *testing.T) {
			switch {
			case !ok:
				t.Error("not run (install.sh did not report it)")
			case r != "":
				t.Error(r)
			}
		})
		if !ok || r != "" {
			failed = true
		}
	}
	logTail(t, "install.sh log", filepath.Join(results, "log.txt"), 80)
	if failed {
		logTail(t, "container journal", filepath.Join(results, "journal.txt"), 150)
		logTail(t, "container console", console, 40)
	}
}

// buildDeb returns the .deb to install: $FORKD_E2E_DEB, or the one `make
// deb` builds into dist/ for this machine's architecture. It skips the
// test when the package cannot be built here.
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
		t.Skipf("make deb failed, so there is no package to install (or set FORKD_E2E_DEB): %v\n%s", err, out)
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

// readInstallResults parses results.txt: name → "" for PASS, the detail
// for FAIL; a name install.sh should not report is an error.
func readInstallResults(t *testing.T, path string) map[string]string {
	t.Helper()
	got := map[string]string{}
	f, err := os.Open(path)
	if err != nil {
		t.Errorf("no results: %v", err)
		return got
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		var name, detail string
		switch {
		case strings.HasPrefix(line, "PASS "):
			name = strings.TrimPrefix(line, "PASS ")
		case strings.HasPrefix(line, "FAIL "):
			name, detail, _ = strings.Cut(strings.TrimPrefix(line, "FAIL "), ": ")
			if detail == "" {
				detail = "failed"
			}
		case line == "":
			continue
		default:
			t.Errorf("results.txt: unexpected line %q", line)
			continue
		}
		known := false
		for _, c := range installChecks {
			known = known || c == name
		}
		if !known {
			t.Errorf("results.txt: unknown check %q: %s", name, detail)
		}
		got[name] = detail
	}
	if err := sc.Err(); err != nil {
		t.Errorf("read %s: %v", path, err)
	}
	return got
}
