package systemd

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// maxExposure is the highest `systemd-analyze security` exposure the
// shipped service units may have.
const maxExposure = 2.5

// systemdVersion returns the major version of the systemd tools installed.
func systemdVersion(t *testing.T, analyze string) int {
	t.Helper()
	out, err := exec.Command(analyze, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", analyze, err)
	}
	m := regexp.MustCompile(`^systemd (\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("%s --version: cannot read a version from %q", analyze, out)
	}
	v, _ := strconv.Atoi(string(m[1]))
	return v
}

func lookAnalyze(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (package systemd): cannot check the unit files")
	}
	return path
}

// unitRoot builds a root directory for `systemd-analyze verify --root`: the
// host's own units (for sysinit.target and the like), service and socket
// under /etc/systemd/system, and executable stand-ins for the binaries the
// units run, so verify checks the units and not this machine's install.
func unitRoot(t *testing.T, service string, mutate func(string) string) string {
	t.Helper()
	root := t.TempDir()
	var hostUnits string
	for _, dir := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
			hostUnits = dir
			break
		}
	}
	if hostUnits == "" {
		t.Skip("no /usr/lib/systemd/system on this machine: cannot resolve the units' dependencies")
	}
	if err := os.MkdirAll(filepath.Join(root, "usr/lib/systemd"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", hostUnits, filepath.Join(root, "usr/lib/systemd/system")).CombinedOutput(); err != nil {
		t.Fatalf("copy %s: %v: %s", hostUnits, err, out)
	}
	etc := filepath.Join(root, "etc/systemd/system")
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	for dst, src := range map[string]string{"forkd@.service": service, "forkd@.socket": "forkd@.socket"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		if mutate != nil && dst == "forkd@.service" {
			s = mutate(s)
		}
		if err := os.WriteFile(filepath.Join(etc, dst), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(root, "usr/bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"forkd", "forkctl"} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// verify runs `systemd-analyze verify` on the instance "demo" of the units
// in root and returns its findings (its output) and whether it succeeded.
func verify(t *testing.T, analyze, root string) (string, bool) {
	t.Helper()
	cmd := exec.Command(analyze, "verify", "--man=no", "--root="+root, "forkd@demo.service", "forkd@demo.socket")
	out, err := cmd.CombinedOutput()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("run systemd-analyze verify: %v", err)
		}
	}
	return strings.TrimSpace(string(out)), err == nil
}

func TestUnits_Verify(t *testing.T) {
	analyze := lookAnalyze(t)
	services := map[string]int{
		"forkd@.service":               0,
		"notify-reload/forkd@.service": 253, // Type=notify-reload is unknown before 253
	}
	version := systemdVersion(t, analyze)
	for service, since := range services {
		t.Run(service, func(t *testing.T) {
			if version < since {
				t.Skipf("systemd %d is older than %d, which %s needs", version, since, service)
			}
			out, ok := verify(t, analyze, unitRoot(t, service, nil))
			if !ok || out != "" {
				t.Errorf("systemd-analyze verify found problems (ok=%v):\n%s", ok, out)
			}
		})
	}

	// The check can fail: a unit with a typo is reported.
	t.Run("catches a typo", func(t *testing.T) {
		root := unitRoot(t, "forkd@.service", func(s string) string {
			return strings.Replace(s, "KillMode=mixed", "KillMode=mixed\nKilMode=mixed", 1)
		})
		if out, _ := verify(t, analyze, root); !strings.Contains(out, "KilMode") {
			t.Errorf("verify did not report the unknown key KilMode; output:\n%s", out)
		}
	})
	t.Run("catches a missing binary", func(t *testing.T) {
		root := unitRoot(t, "forkd@.service", nil)
		if err := os.Remove(filepath.Join(root, "usr/bin/forkctl")); err != nil {
			t.Fatal(err)
		}
		if out, ok := verify(t, analyze, root); ok || !strings.Contains(out, "/usr/bin/forkctl") {
			t.Errorf("verify did not report the missing /usr/bin/forkctl (ok=%v); output:\n%s", ok, out)
		}
	})
}

var exposureRE = regexp.MustCompile(`Overall exposure level for \S+: (\d+\.\d+)`)

// security runs `systemd-analyze security --offline=true` on unit with the
// given threshold (exposure × 10) and returns the exposure it reported and
// whether it exited zero.
func security(t *testing.T, analyze, unit string, threshold int) (float64, bool, string) {
	t.Helper()
	cmd := exec.Command(analyze, "security", "--offline=true", "--no-pager", "--threshold="+strconv.Itoa(threshold), unit)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("run systemd-analyze security: %v", err)
		}
	}
	m := exposureRE.FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security printed no exposure level:\n%s", out)
	}
	exposure, err2 := strconv.ParseFloat(string(m[1]), 64)
	if err2 != nil {
		t.Fatal(err2)
	}
	return exposure, err == nil, string(out)
}

func TestUnits_Security(t *testing.T) {
	analyze := lookAnalyze(t)
	for _, unit := range []string{"forkd@.service", "notify-reload/forkd@.service"} {
		t.Run(unit, func(t *testing.T) {
			threshold := int(maxExposure * 10)
			exposure, ok, out := security(t, analyze, unit, threshold)
			if !ok || exposure > maxExposure {
				t.Errorf("exposure %.1f (threshold exit ok=%v), want at most %.1f:\n%s", exposure, ok, maxExposure, out)
			}
			t.Logf("%s: exposure %.1f", unit, exposure)
			// The threshold really is enforced: just below the measured
			// level, the command fails.
			if below := int(exposure*10+0.5) - 1; below >= 0 {
				if _, ok, _ := security(t, analyze, unit, below); ok {
					t.Errorf("--threshold=%d did not fail for exposure %.1f", below, exposure)
				}
			}
		})
	}
}

func TestUnits_Sysusers(t *testing.T) {
	sysusers, err := exec.LookPath("systemd-sysusers")
	if err != nil {
		t.Skip("systemd-sysusers is not installed: cannot check sysusers.d/forkd.conf")
	}
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	conf, err := filepath.Abs("sysusers.d/forkd.conf")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(sysusers, "--root="+root, conf).CombinedOutput(); err != nil {
		t.Fatalf("systemd-sysusers: %v\n%s", err, out)
	}
	passwd, err := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if err != nil {
		t.Fatal(err)
	}
	group, err := os.ReadFile(filepath.Join(root, "etc/group"))
	if err != nil {
		t.Fatal(err)
	}
	user := regexp.MustCompile(`(?m)^forkd:x:(\d+):(\d+):[^:]*:[^:]*:(\S*)$`).FindSubmatch(passwd)
	if user == nil {
		t.Fatalf("no forkd user in passwd:\n%s", passwd)
	}
	if uid, _ := strconv.Atoi(string(user[1])); uid == 0 || uid >= 1000 {
		t.Errorf("forkd uid %d, want a system uid (1…999)", uid)
	}
	if shell := string(user[3]); !strings.HasSuffix(shell, "nologin") {
		t.Errorf("forkd shell %q, want nologin", shell)
	}
	if !regexp.MustCompile(`(?m)^forkd:x:` + string(user[2]) + `:`).Match(group) {
		t.Errorf("no forkd group with gid %s:\n%s", user[2], group)
	}
}

func TestUnits_Paths(t *testing.T) {
	// The socket's path and the service's RuntimeDirectory share /run/forkd
	// without overlapping: /run/forkd/%i.sock beside /run/forkd/%i/.
	service, err := os.ReadFile("forkd@.service")
	if err != nil {
		t.Fatal(err)
	}
	socket, err := os.ReadFile("forkd@.socket")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"RuntimeDirectory=forkd/%i\n", "ExecStart=/usr/bin/forkd --config /etc/forkd/%i.toml\n", "ExecStartPre=/usr/bin/forkd --check --config /etc/forkd/%i.toml\n", "ExecReload=/usr/bin/forkctl reload %i\n"} {
		if !strings.Contains(string(service), want) {
			t.Errorf("forkd@.service lacks %q", strings.TrimSpace(want))
		}
	}
	if !strings.Contains(string(socket), "ListenStream=/run/forkd/%i.sock\n") {
		t.Error("forkd@.socket does not listen on /run/forkd/%i.sock")
	}
	reload, err := os.ReadFile("notify-reload/forkd@.service")
	if err != nil {
		t.Fatal(err)
	}
	// The two service variants differ only in how they reload.
	strip := func(b []byte) string {
		var keep []string
		for _, l := range strings.Split(string(b), "\n") {
			if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, "Type=") ||
				strings.HasPrefix(l, "ExecReload=") || strings.HasPrefix(l, "ReloadSignal=") {
				continue
			}
			keep = append(keep, l)
		}
		return strings.Join(keep, "\n")
	}
	if strip(service) != strip(reload) {
		t.Error("forkd@.service and notify-reload/forkd@.service differ in more than Type=, ExecReload= and ReloadSignal=; keep them in step")
	}
}

func TestUnits_Delegate(t *testing.T) {
	// forkd makes a cgroup per worker under the unit's: the unit delegates
	// the controllers the limits need, and ProtectControlGroups= leaves
	// the unit's own cgroup writable.
	service, err := os.ReadFile("forkd@.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Delegate=cpu memory pids\n",
		"ProtectControlGroups=yes\n",
		"ReadWritePaths=-/sys/fs/cgroup/system.slice/system-forkd.slice/%n\n",
	} {
		if !strings.Contains(string(service), want) {
			t.Errorf("forkd@.service lacks %q", strings.TrimSpace(want))
		}
	}
}
