//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// bootTimeout bounds the container's whole life: boot, the checks in
// inside.sh, poweroff.
const bootTimeout = 4 * time.Minute

// checks are the names inside.sh reports, in order; a missing one fails.
var checks = []string{"boot", "activation", "status", "reload", "reload-invalid", "kill", "upgrade", "fdstore", "jobs", "metrics", "cgroup", "cgroup-limits", "stop"}

// demoConfig is /etc/forkd/demo.toml inside the container.
const demoConfig = `# forkd e2e: 4 demo workers on the socket systemd passes
# (forkd@demo.socket with the 127.0.0.1:18080 drop-in).
[server]
name = "demo"
workers = 4
bind = ["tcp://127.0.0.1:18080"]
graceful_timeout = "10s"
boot_timeout = "20s"

[worker]
command = "/usr/bin/forkd-demo"
ready = "notify"
`

// tcpDropIn replaces forkd@demo.socket's unix socket with a TCP port, as
// docs/systemd.md tells users to.
const tcpDropIn = `[Socket]
ListenStream=
ListenStream=127.0.0.1:18080
`

// runnerUnit is forkd-e2e.service: it runs script once the container is
// up, then saves the journal and powers off — also when the script fails
// or times out.
func runnerUnit(description, script string, timeout time.Duration) string {
	return fmt.Sprintf(`[Unit]
Description=%s
After=multi-user.target dbus.service

[Service]
Type=oneshot
ExecStart=/usr/lib/forkd-e2e/%s
TimeoutStartSec=%ds
StandardOutput=journal+console
StandardError=journal+console
ExecStopPost=-/bin/sh -c 'journalctl -b --no-pager -o short-monotonic > /results/journal.txt 2>&1'
ExecStopPost=/bin/systemctl --no-block poweroff
`, description, script, int(timeout.Seconds()))
}

// needContainer skips t unless this machine can boot its own root in a
// container (root, systemd-nspawn, overlayfs) with tools on it, and
// returns systemd-nspawn's path.
func needContainer(t *testing.T, tools ...string) string {
	t.Helper()
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
	for _, tool := range append([]string{"/lib/systemd/systemd", "/usr/bin/curl", "/bin/bash"}, tools...) {
		if _, err := os.Stat(tool); err != nil {
			t.Skipf("%s is missing on this machine; the container is made of its root: %v", tool, err)
		}
	}
	return nspawn
}

// machine boots a root where forkd-e2e.service runs a script until it
// powers itself off; the script's results land in the folder results, the
// machine's console in the file console.
type machine func(t *testing.T, results, console string) error

// container returns the machine that boots root in systemd-nspawn, with
// results bind-mounted at /results.
func container(nspawn, root string) machine {
	return func(t *testing.T, results, console string) error {
		return boot(t, nspawn, root, results, console)
	}
}

// bootAndCheck boots m, where forkd-e2e.service runs script, and reports
// each of the checks the script wrote to results.txt as a subtest; on a
// failure it logs the machine's journal and console. With strict, a check
// the script skipped fails: the machine was made to have what it needs.
func bootAndCheck(t *testing.T, m machine, work, results, script string, checks []string, logLines int, strict bool) {
	t.Helper()
	if err := os.MkdirAll(results, 0o755); err != nil {
		t.Fatal(err)
	}
	console := filepath.Join(work, "console.log")
	start := time.Now()
	bootErr := m(t, results, console)
	t.Logf("machine ran for %v", time.Since(start).Round(time.Millisecond))

	got := readResults(t, filepath.Join(results, "results.txt"), checks)
	failed := bootErr != nil
	if bootErr != nil {
		t.Errorf("container: %v", bootErr)
	}
	for _, name := range checks {
		r, ok := got[name]
		t.Run(name, func(t *testing.T) {
			switch {
			case !ok:
				t.Errorf("not run (%s did not report it)", script)
			case strings.HasPrefix(r, skipped) && strict:
				t.Errorf("skipped on a machine made for it: %s", strings.TrimPrefix(r, skipped))
			case strings.HasPrefix(r, skipped):
				t.Skip(strings.TrimPrefix(r, skipped))
			case r != "":
				t.Error(r)
			}
		})
		if !ok || r != "" && (strict || !strings.HasPrefix(r, skipped)) {
			failed = true
		}
	}
	logTail(t, script+" log", filepath.Join(results, "log.txt"), logLines)
	if failed {
		logTail(t, "machine journal", filepath.Join(results, "journal.txt"), 150)
		logTail(t, "machine console", console, 40)
	}
}

// TestSystemd boots this machine's own systemd as PID 1 in a container on
// an overlay of /, installs forkd's binaries, units, D-Bus policy and user
// there, and runs inside.sh's checks against real socket activation,
// reload, restart and stop. Needs root and systemd-nspawn.
//
// FORKD_E2E_BIN=DIR uses prebuilt forkd, forkctl, forkd-demo,
// forkd-cluster and forkd-metrics from DIR (say, from a package) instead of
// building them.
func TestSystemd(t *testing.T) {
	nspawn := needContainer(t)
	_, work, root := installedRoot(t)
	bootAndCheck(t, container(nspawn, root), work, filepath.Join(work, "results"), "inside.sh", checks, 120, false)
}

// installedRoot builds forkd's binaries into a new work folder, mounts an
// overlay of / there with forkd installed in it (install), and returns the
// repository, the work folder and the overlay's mount point.
func installedRoot(t *testing.T) (repo, work, root string) {
	t.Helper()
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	work = t.TempDir()
	bins := binaries(t, repo, filepath.Join(work, "bin"))
	root = mountOverlay(t, work)
	install(t, repo, root, bins)
	return repo, work, root
}

// binaries builds forkd, forkctl, forkd-demo, forkd-cluster and
// forkd-metrics into dir — or takes them from $FORKD_E2E_BIN — and returns
// their paths by installed name. It skips the test when one does not build
// yet.
func binaries(t *testing.T, repo, dir string) map[string]string {
	t.Helper()
	pkgs := map[string]string{"forkd": "./cmd/forkd", "forkctl": "./cmd/forkctl", "forkd-demo": "./examples/demo",
		"forkd-cluster": "./cmd/forkd-cluster", "forkd-metrics": "./cmd/forkd-metrics"}
	out := map[string]string{}
	if prebuilt := os.Getenv("FORKD_E2E_BIN"); prebuilt != "" {
		for name := range pkgs {
			p := filepath.Join(prebuilt, name)
			if _, err := os.Stat(p); err != nil {
				t.Fatalf("FORKD_E2E_BIN: %v", err)
			}
			out[name] = p
		}
		return out
	}
	for _, name := range []string{"forkd", "forkctl", "forkd-demo", "forkd-cluster", "forkd-metrics"} {
		p := filepath.Join(dir, name)
		cmd := exec.Command("go", "build", "-o", p, pkgs[name])
		cmd.Dir = repo
		// Static binaries: the container is this machine's root, but
		// that keeps the test honest on others too.
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Skipf("%s does not build yet, so there is nothing to test end to end: %v\n%s", pkgs[name], err, b)
		}
		out[name] = p
	}
	return out
}

// mountOverlay mounts an overlay with / as its lower layer and an upper
// layer under work, and returns its mount point. A cleanup unmounts it.
func mountOverlay(t *testing.T, work string) string {
	t.Helper()
	upper, wdir, root := filepath.Join(work, "upper"), filepath.Join(work, "overlay-work"), filepath.Join(work, "root")
	for _, d := range []string{upper, wdir, root} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opts := fmt.Sprintf("lowerdir=/,upperdir=%s,workdir=%s", upper, wdir)
	if err := unix.Mount("overlay", root, "overlay", 0, opts); err != nil {
		t.Skipf("cannot mount an overlay of / (%s): %v", opts, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(root, 0); err != nil {
			// Something still holds it (a container that would not die):
			// detach it so the temp dir can go, and say so.
			t.Errorf("unmount %s: %v; detaching it lazily", root, err)
			if err := unix.Unmount(root, unix.MNT_DETACH); err != nil {
				t.Errorf("lazy unmount %s: %v", root, err)
			}
		}
	})
	return root
}

// install puts forkd into the container's root as a package would, plus the
// demo instance's config, the TCP drop-in and the test runner.
func install(t *testing.T, repo, root string, bins map[string]string) {
	t.Helper()
	copyFile := func(src, dst string, mode os.FileMode) {
		t.Helper()
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatalf("install: %v", err)
		}
		writeFile(t, root, dst, string(b), mode)
	}
	for name, p := range bins {
		copyFile(p, "/usr/bin/"+name, 0o755)
	}
	sd := filepath.Join(repo, "systemd")
	copyFile(filepath.Join(sd, "forkd@.service"), "/etc/systemd/system/forkd@.service", 0o644)
	copyFile(filepath.Join(sd, "forkd@.socket"), "/etc/systemd/system/forkd@.socket", 0o644)
	copyFile(filepath.Join(sd, "sysusers.d/forkd.conf"), "/usr/lib/sysusers.d/forkd.conf", 0o644)
	policy := filepath.Join(sd, "io.github.forkd.conf")
	if _, err := os.Stat(policy); err == nil {
		copyFile(policy, "/usr/share/dbus-1/system.d/io.github.forkd.conf", 0o644)
	} else {
		t.Logf("no D-Bus policy at %s yet: forkd cannot own its bus name in the container", policy)
	}
	writeFile(t, root, "/etc/forkd/demo.toml", demoConfig, 0o644)
	writeFile(t, root, "/etc/systemd/system/forkd@demo.socket.d/tcp.conf", tcpDropIn, 0o644)
	copyFile(filepath.Join(repo, "e2e", "inside.sh"), "/usr/lib/forkd-e2e/inside.sh", 0o755)
	copyFile(filepath.Join(repo, "e2e", "lib.sh"), "/usr/lib/forkd-e2e/lib.sh", 0o644)
	copyFile(filepath.Join(repo, "e2e", "cgworker.py"), "/usr/lib/forkd-e2e/cgworker.py", 0o755)
	writeFile(t, root, "/etc/systemd/system/forkd-e2e.service", runnerUnit("forkd end-to-end checks", "inside.sh", 210*time.Second), 0o644)
}

// writeFile writes content to path inside root, creating directories.
func writeFile(t *testing.T, root, path, content string, mode os.FileMode) {
	t.Helper()
	dst := filepath.Join(root, path)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatalf("install %s: %v", path, err)
	}
	if err := os.WriteFile(dst, []byte(content), mode); err != nil {
		t.Fatalf("install %s: %v", path, err)
	}
	if err := os.Chmod(dst, mode); err != nil {
		t.Fatalf("install %s: %v", path, err)
	}
}

// boot runs the container until it powers itself off, and stops it —
// SIGTERM (nspawn asks the container's systemd to power off), then SIGKILL —
// when it outlives bootTimeout or the test ends first. Its console goes to
// the file console.
func boot(t *testing.T, nspawn, root, results, console string) error {
	t.Helper()
	out, err := os.Create(console)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, nspawn,
		"-D", root,
		"--register=no", "--keep-unit", "--private-network",
		"--bind="+results+":/results",
		"--boot", "--",
		"systemd.unit=multi-user.target", "systemd.wants=forkd-e2e.service",
	)
	cmd.Stdout, cmd.Stderr = out, out
	// The container gets a cgroup v2 hierarchy even on a host that runs
	// cgroup v1 or a hybrid, so that forkd's delegation is tested there
	// too (without controllers where the host keeps them in v1).
	cmd.Env = append(os.Environ(), "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1")
	// On timeout nspawn gets SIGTERM, which it turns into an orderly
	// poweroff of the container; WaitDelay later exec kills it.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 20 * time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start systemd-nspawn: %w", err)
	}
	pid := cmd.Process.Pid
	var waitErr error
	waited := make(chan struct{})
	go func() {
		waitErr = cmd.Wait()
		close(waited)
	}()
	// However the test ends, the container does not outlive it: stop
	// nspawn by its pid, gracefully first.
	t.Cleanup(func() {
		select {
		case <-waited:
			return
		default:
		}
		t.Logf("stopping systemd-nspawn (pid %d)", pid)
		_ = syscall.Kill(pid, syscall.SIGTERM)
		select {
		case <-waited:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(pid, syscall.SIGKILL)
			<-waited
		}
	})
	<-waited
	if ctx.Err() != nil {
		return fmt.Errorf("systemd-nspawn (pid %d) still running after %v, stopped it: %v", pid, bootTimeout, waitErr)
	}
	if waitErr != nil {
		return fmt.Errorf("systemd-nspawn (pid %d): %w", pid, waitErr)
	}
	return nil
}

// skipped starts the readResults value of a check that was skipped.
const skipped = "skipped: "

// readResults parses results.txt: name → "" for PASS, the detail for FAIL,
// skipped and the reason for SKIP; a name not among checks is an error.
func readResults(t *testing.T, path string, checks []string) map[string]string {
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
		switch {
		case strings.HasPrefix(line, "PASS "):
			got[strings.TrimPrefix(line, "PASS ")] = ""
		case strings.HasPrefix(line, "SKIP "):
			name, reason, _ := strings.Cut(strings.TrimPrefix(line, "SKIP "), ": ")
			got[name] = skipped + reason
		case strings.HasPrefix(line, "FAIL "):
			name, detail, _ := strings.Cut(strings.TrimPrefix(line, "FAIL "), ": ")
			if detail == "" {
				detail = "failed"
			}
			got[name] = detail
		case line != "":
			t.Errorf("results.txt: unexpected line %q", line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Errorf("read %s: %v", path, err)
	}
	for name := range got {
		known := false
		for _, c := range checks {
			known = known || c == name
		}
		if !known {
			t.Errorf("results.txt: unknown check %q: %s", name, got[name])
		}
	}
	return got
}

// logTail logs the last n lines of the file at path.
func logTail(t *testing.T, what, path string, n int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Logf("%s: %v", what, err)
		return
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	t.Logf("%s (last %d lines of %s):\n%s", what, len(lines), path, strings.Join(lines, "\n"))
}
