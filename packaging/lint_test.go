package packaging

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// lintDir copies the files into a new directory that an unprivileged user
// can read and write (t.TempDir's parents are private to root), and
// returns it; a cleanup removes it.
func lintDir(t *testing.T, files ...string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "forkd-lint-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// runUnprivileged runs name with args in dir, as the user nobody when the
// test runs as root (setpriv), with HOME=dir and PATH=path, and returns
// its output and error. Linters unpack what they check; as root, rpmlint's
// `cpio -id` of nfpm's absolute member names would write over /.
func runUnprivileged(t *testing.T, dir, path, name string, args ...string) (string, error) {
	t.Helper()
	env := []string{"HOME=" + dir, "PATH=" + path, "LC_ALL=C.UTF-8", "TMPDIR=" + dir}
	argv := append([]string{name}, args...)
	if os.Getuid() == 0 {
		setpriv := need(t, "setpriv", "to run the linters as nobody")
		argv = append([]string{setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestPackages_Lint builds the packages and runs Debian's lintian on the
// .deb and rpmlint on the .rpm, both unprivileged: an error from either
// fails, with the linter's explanation; warnings are logged. The overrides
// and filters the packages carry (packaging/deb/lintian-overrides,
// packaging/rpmlint.toml) each say why.
func TestPackages_Lint(t *testing.T) {
	need(t, "dpkg-deb", "to read the .deb")
	lintian := need(t, "lintian", "apt-get install lintian")
	rpmlint := need(t, "rpmlint", "apt-get install rpmlint")
	need(t, "rpm2cpio", "rpmlint unpacks with it; apt-get install rpm")
	cpio := need(t, "cpio", "rpmlint unpacks with it; apt-get install cpio")
	pk := buildPackages(t)

	t.Run("lintian", func(t *testing.T) {
		dir := lintDir(t, pk.deb)
		out, err := runUnprivileged(t, dir, "/usr/sbin:/usr/bin:/sbin:/bin", lintian,
			"--fail-on", "error", "--no-tag-display-limit", "--info", filepath.Join(dir, filepath.Base(pk.deb)))
		errors := regexp.MustCompile(`(?m)^E: .*$`).FindAllString(out, -1)
		if err != nil || len(errors) > 0 {
			t.Errorf("lintian %s: %v; errors:\n%s\n\nfull output:\n%s", filepath.Base(pk.deb), err, strings.Join(errors, "\n"), out)
		}
		if w := regexp.MustCompile(`(?m)^W: .*$`).FindAllString(out, -1); len(w) > 0 {
			t.Logf("lintian warnings:\n%s", strings.Join(w, "\n"))
		}
	})

	t.Run("rpmlint", func(t *testing.T) {
		dir := lintDir(t, pk.rpm, filepath.Join(repoRoot(t), "packaging", "rpmlint.toml"))
		// rpmlint runs `rpm2cpio | cpio -id` in a directory of its own:
		// without --no-absolute-filenames cpio would try / for nfpm's
		// absolute member names (and, as nobody, fail, leaving rpmlint
		// nothing to check).
		bin := filepath.Join(dir, "bin")
		if err := os.Mkdir(bin, 0o755); err != nil {
			t.Fatal(err)
		}
		wrapper := "#!/bin/sh\nexec " + cpio + " --no-absolute-filenames \"$@\"\n"
		if err := os.WriteFile(filepath.Join(bin, "cpio"), []byte(wrapper), 0o755); err != nil {
			t.Fatal(err)
		}
		out, err := runUnprivileged(t, dir, bin+":/usr/sbin:/usr/bin:/sbin:/bin", rpmlint,
			"-c", filepath.Join(dir, "rpmlint.toml"), filepath.Join(dir, filepath.Base(pk.rpm)))
		errors := regexp.MustCompile(`(?m)^\S+: E: .*$`).FindAllString(out, -1)
		if err != nil || len(errors) > 0 || !regexp.MustCompile(` 0 errors`).MatchString(out) {
			t.Errorf("rpmlint %s: %v; errors:\n%s\n\nfull output:\n%s", filepath.Base(pk.rpm), err, strings.Join(errors, "\n"), out)
		}
		// rpmlint would say no-binary if it had unpacked nothing.
		if strings.Contains(out, "no-binary") {
			t.Errorf("rpmlint did not see the package's files:\n%s", out)
		}
		if w := regexp.MustCompile(`(?m)^\S+: W: .*$`).FindAllString(out, -1); len(w) > 0 {
			t.Logf("rpmlint warnings:\n%s", strings.Join(w, "\n"))
		}
	})

	t.Run("stripped", func(t *testing.T) {
		// The packaged programs carry no symbol table or DWARF.
		root := t.TempDir()
		mustRun(t, "", nil, "dpkg-deb", "-x", pk.deb, root)
		for _, p := range []string{"usr/bin/forkd", "usr/bin/forkctl", "usr/lib/forkd/forkd-demo"} {
			f, err := elf.Open(filepath.Join(root, p))
			if err != nil {
				t.Fatal(err)
			}
			for _, sec := range []string{".symtab", ".debug_info"} {
				if f.Section(sec) != nil {
					t.Errorf("%s has a %s section: not stripped", p, sec)
				}
			}
			f.Close()
		}
	})

	t.Run("changelog", func(t *testing.T) {
		// changelog.Debian.gz and the rpm's %changelog: the version built
		// first.
		root := t.TempDir()
		mustRun(t, "", nil, "dpkg-deb", "-x", pk.deb, root)
		data, err := os.ReadFile(filepath.Join(root, "usr/share/doc/forkd/changelog.Debian.gz"))
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("changelog.Debian.gz: %v", err)
		}
		text, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(text), "forkd ("+testVersion+"-1) unstable; urgency=medium\n") {
			t.Errorf("changelog.Debian.gz does not start with version %s-1:\n%s", testVersion, text)
		}
		if dpkg, err := exec.LookPath("dpkg-parsechangelog"); err == nil {
			plain := filepath.Join(t.TempDir(), "changelog")
			if err := os.WriteFile(plain, text, 0o644); err != nil {
				t.Fatal(err)
			}
			if v := strings.TrimSpace(mustRun(t, "", nil, dpkg, "-l", plain, "-S", "Version")); v != testVersion+"-1" {
				t.Errorf("dpkg-parsechangelog: version %q, want %s-1", v, testVersion)
			}
		}
		need(t, "rpm", "to read the rpm's changelog")
		log := mustRun(t, "", nil, "rpm", "--dbpath="+t.TempDir(), "-qp", "--changelog", pk.rpm)
		if !regexp.MustCompile(`^\* \w{3} \w{3} \d+ \d{4} forkd test <forkd@example.org> - ` + regexp.QuoteMeta(testVersion) + `-1\n`).MatchString(log) {
			t.Errorf("rpm --changelog:\n%s", log)
		}
		if lic := mustRun(t, "", nil, "rpm", "--dbpath="+t.TempDir(), "-qp", "--qf", "%{LICENSE}", pk.rpm); lic != "Apache-2.0" {
			t.Errorf("rpm License: %q, want Apache-2.0", lic)
		}
	})
}

// TestChangelog_FromTags runs changelog.sh in a new repository with two
// release tags and commits after them: an entry for the version being
// built, then one per tag, newest first, each with the commits since the
// previous tag.
func TestChangelog_FromTags(t *testing.T) {
	need(t, "git", "to make a repository")
	dir := t.TempDir()
	git := func(args ...string) {
		t.Helper()
		mustRun(t, dir, []string{"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.org",
			"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.org"}, "git", args...)
	}
	git("init", "-q")
	commit := func(msg string) { git("commit", "-q", "--allow-empty", "-m", msg) }
	commit("first: it's a start")
	commit("second")
	git("tag", "v0.1.0")
	commit("third")
	git("tag", "-a", "-m", "release", "v0.2.0")
	commit("fourth " + strings.Repeat("long ", 30))

	script := filepath.Join(repoRoot(t), "packaging", "changelog.sh")
	out := mustRun(t, dir, nil, script, "0.2.1", "1", "P <p@example.org>")
	versions := regexp.MustCompile(`(?m)^- semver: '([^']+)'$`).FindAllStringSubmatch(out, -1)
	var got []string
	for _, v := range versions {
		got = append(got, v[1])
	}
	if want := []string{"0.2.1-1", "0.2.0-1", "0.1.0-1"}; !slices.Equal(got, want) {
		t.Fatalf("versions %q, want %q:\n%s", got, want, out)
	}
	notes := regexp.MustCompile(`(?m)^      note: '(.*)'$`).FindAllStringSubmatch(out, -1)
	var n []string
	for _, m := range notes {
		n = append(n, m[1])
	}
	want := []string{"fourth long long long long long long long long long long long long...", "third", "second", "first: it''s a start"}
	if !slices.Equal(n, want) {
		t.Errorf("notes %q, want %q:\n%s", n, want, out)
	}

	// Built at a tag: no entry of its own.
	out = mustRun(t, dir, nil, script, "0.2.0", "1", "P <p@example.org>")
	if v := regexp.MustCompile(`(?m)^- semver: '([^']+)'$`).FindStringSubmatch(out); v == nil || v[1] != "0.2.0-1" {
		t.Errorf("at v0.2.0 the first entry is %v:\n%s", v, out)
	}
}

// TestScripts_PurgeForgetsInstances runs postremove.sh purge against a
// root ($DPKG_ROOT) where instances were enabled and masked with
// systemctl and deb-systemd-helper: every link and record of a forkd@
// unit goes, with the directories it leaves empty, and /var/lib/forkd;
// everything else stays. A plain remove forgets nothing.
func TestScripts_PurgeForgetsInstances(t *testing.T) {
	script := filepath.Join(repoRoot(t), "packaging", "scripts", "postremove.sh")
	links := map[string]string{
		"etc/systemd/system/sockets.target.wants/forkd@demo.socket":                         "/usr/lib/systemd/system/forkd@.socket",
		"etc/systemd/system/multi-user.target.wants/forkd@api.service":                      "/usr/lib/systemd/system/forkd@.service",
		"etc/systemd/system/forkd@store.socket":                                             "/dev/null",
		"var/lib/systemd/deb-systemd-helper-enabled/sockets.target.wants/forkd@demo.socket": "/usr/lib/systemd/system/forkd@.socket",
		"var/lib/systemd/deb-systemd-helper-masked/forkd@store.socket":                      "/dev/null",
	}
	kept := map[string]string{
		"etc/systemd/system/sockets.target.wants/other.socket": "/usr/lib/systemd/system/other.socket",
		"etc/systemd/system/forkd@linked.service":              "/srv/forkd@linked.service",
	}
	files := map[string]string{
		"var/lib/systemd/deb-systemd-helper-enabled/forkd@demo.socket.dsh-also": "/etc/systemd/system/sockets.target.wants/forkd@demo.socket\n",
		"var/lib/forkd/demo/schedules.json":                                     "{}\n",
	}
	keptFiles := map[string]string{
		"etc/forkd/demo.toml":                             "[server]\n",
		"etc/systemd/system/forkd@demo.socket.d/tcp.conf": "[Socket]\n",
	}
	setup := func(t *testing.T) string {
		root := t.TempDir()
		for _, m := range []map[string]string{links, kept} {
			for p, target := range m {
				if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(target, filepath.Join(root, p)); err != nil {
					t.Fatal(err)
				}
			}
		}
		for _, m := range []map[string]string{files, keptFiles} {
			for p, content := range m {
				if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(root, p), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		return root
	}
	// PATH without systemctl, and no /run/systemd/system needed: with
	// systemd running the script would only add daemon-reload.
	env := func(root string) []string {
		return []string{"DPKG_ROOT=" + root, "PATH=" + t.TempDir() + ":/usr/bin:/bin"}
	}

	t.Run("purge", func(t *testing.T) {
		root := setup(t)
		runScript(t, script, env(root), "purge")
		for p := range links {
			if _, err := os.Lstat(filepath.Join(root, p)); err == nil {
				t.Errorf("%s: still there after purge", p)
			}
		}
		for p := range files {
			if _, err := os.Lstat(filepath.Join(root, p)); err == nil {
				t.Errorf("%s: still there after purge", p)
			}
		}
		for _, d := range []string{"var/lib/forkd", "etc/systemd/system/multi-user.target.wants"} {
			if _, err := os.Lstat(filepath.Join(root, d)); err == nil {
				t.Errorf("%s: still there after purge", d)
			}
		}
		for _, m := range []map[string]string{kept, keptFiles} {
			for p := range m {
				if _, err := os.Lstat(filepath.Join(root, p)); err != nil {
					t.Errorf("%s: gone after purge, want it kept: %v", p, err)
				}
			}
		}
	})

	t.Run("remove", func(t *testing.T) {
		root := setup(t)
		runScript(t, script, env(root), "remove")
		for _, m := range []map[string]string{links, kept, files, keptFiles} {
			for p := range m {
				if _, err := os.Lstat(filepath.Join(root, p)); err != nil {
					t.Errorf("%s: gone after remove: %v", p, err)
				}
			}
		}
	})
}

// runScript runs the maintainer script with env and args, in a private
// mount namespace with an empty /run when it can, so that it talks to no
// systemd; directly when no systemd runs here; and skips otherwise.
func runScript(t *testing.T, script string, env []string, args ...string) {
	t.Helper()
	if why := canFakeRun(t); why != "" {
		if _, err := os.Stat("/run/systemd/system"); err == nil {
			t.Skipf("systemd runs here, and the script must not talk to it, but %s", why)
		}
		mustRun(t, "", env, "sh", append([]string{script}, args...)...)
		return
	}
	mustRun(t, "", env, "unshare", append([]string{"--mount", "--propagation", "private", "/bin/sh", "-c",
		`mount -t tmpfs forkd-test /run && exec /bin/sh "$@"`, "sh", script}, args...)...)
}
