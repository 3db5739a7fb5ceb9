package packaging

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/hooks"
)

// nfpmModule is the nfpm the tests install when none is found. Later
// releases need modules the Go module proxy does not serve
// (go.digitalxero.dev), so they cannot be installed from it.
const nfpmModule = "github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2"

// testVersion is the VERSION the packages are built with.
const testVersion = "1.2.3"

// file is one file the packages install.
type file struct {
	path string      // where it is installed
	mode fs.FileMode // its permissions
	src  string      // its source, relative to the staging directory
	gz   bool        // src is gzipped into the package
}

// shipped lists every regular file the packages install, and nothing else.
var shipped = []file{
	{"/usr/bin/forkd", 0o755, "dist/bin/forkd", false},
	{"/usr/bin/forkctl", 0o755, "dist/bin/forkctl", false},
	{"/usr/lib/forkd/forkd-demo", 0o755, "dist/bin/forkd-demo", false},
	{"/usr/lib/forkd/forkd-cluster", 0o755, "dist/bin/forkd-cluster", false},
	{"/usr/lib/forkd/forkd-metrics", 0o755, "dist/bin/forkd-metrics", false},
	{"/usr/lib/systemd/system/forkd@.socket", 0o644, "systemd/forkd@.socket", false},
	{"/usr/lib/systemd/system/forkd@.service", 0o644, "systemd/forkd@.service", false},
	{"/usr/lib/sysusers.d/forkd.conf", 0o644, "systemd/sysusers.d/forkd.conf", false},
	{"/usr/share/dbus-1/system.d/io.github.forkd.conf", 0o644, "systemd/io.github.forkd.conf", false},
	{"/usr/share/dbus-1/interfaces/io.github.forkd.Manager1.xml", 0o644, "bus/io.github.forkd.Manager1.xml", false},
	{"/etc/forkd/example.toml.sample", 0o644, "packaging/example.toml.sample", false},
	{"/usr/share/man/man8/forkd.8.gz", 0o644, "packaging/man/forkd.8", true},
	{"/usr/share/man/man1/forkctl.1.gz", 0o644, "packaging/man/forkctl.1", true},
	{"/usr/share/man/man5/forkd.toml.5.gz", 0o644, "packaging/man/forkd.toml.5", true},
	{"/usr/share/doc/forkd/systemd.md", 0o644, "docs/systemd.md", false},
	{"/usr/share/doc/forkd/examples/demo.toml", 0o644, "examples/demo.toml", false},
	{"/usr/share/doc/forkd/examples/notify-reload/forkd@.service", 0o644, "systemd/notify-reload/forkd@.service", false},
}

// shippedDeb lists the files only the .deb installs: Debian's copyright
// file and lintian overrides, and the changelog nfpm writes (src "": it has
// no source file to compare with).
var shippedDeb = []file{
	{"/usr/share/doc/forkd/copyright", 0o644, "packaging/deb/copyright", false},
	{"/usr/share/lintian/overrides/forkd", 0o644, "packaging/deb/lintian-overrides", false},
	{"/usr/share/doc/forkd/changelog.Debian.gz", 0o644, "", true},
}

// shippedRPM lists the files only the .rpm installs: the license.
var shippedRPM = []file{
	{"/usr/share/licenses/forkd/LICENSE", 0o644, "LICENSE", false},
}

// shippedIn lists every regular file the package of format ("deb" or
// "rpm") installs.
func shippedIn(format string) []file {
	if format == "deb" {
		return slices.Concat(shipped, shippedDeb)
	}
	return slices.Concat(shipped, shippedRPM)
}

// ownedDirsIn lists the directories the package of format owns.
func ownedDirsIn(format string) []string {
	if format == "deb" {
		return ownedDirs
	}
	return append(slices.Clone(ownedDirs), "/usr/share/licenses/forkd")
}

// configDir is where instance configs live.
const configDir = "/etc/forkd"

// ownedDirs are the directories the packages own, all 0755.
var ownedDirs = []string{
	configDir,
	"/usr/lib/forkd",
	"/usr/share/doc/forkd",
	"/usr/share/doc/forkd/examples",
	"/usr/share/doc/forkd/examples/notify-reload",
}

// manPages are the man page sources in packaging/man.
var manPages = []string{"forkd.8", "forkctl.1", "forkd.toml.5"}

// scripts are the maintainer scripts and what each becomes in a .deb.
var scripts = map[string]string{
	"postinstall.sh": "postinst",
	"preremove.sh":   "prerm",
	"postremove.sh":  "postrm",
}

// packages are the .deb and .rpm built from a staging directory.
type packages struct {
	stage string // the staging directory nfpm ran in: bin/, dist/man/ and the repository's files
	deb   string
	rpm   string
}

// run runs name with args in dir (the current directory when ""), failing
// the test after a deadline, and returns its standard output and error.
func run(t *testing.T, dir string, env []string, name string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %s: still running after 5 minutes", name, strings.Join(args, " "))
	}
	return out.String(), errb.String(), err
}

// mustRun is run for commands that must succeed.
func mustRun(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	out, errs, err := run(t, dir, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, out, errs)
	}
	return out
}

// need skips the test when the program name is not installed.
func need(t *testing.T, name, why string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed (%s): %v", name, why, err)
	}
	return p
}

// repoRoot is the repository's root directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatalf("find the repository root: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("find the repository root: %v", err)
	}
	return root
}

// findNfpm returns nfpm's path, installing it with `go install` into
// GOPATH/bin when it is nowhere, and skips the test when that fails.
func findNfpm(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nfpm"); err == nil {
		return p
	}
	gopath := strings.TrimSpace(mustRun(t, "", nil, "go", "env", "GOPATH"))
	p := filepath.Join(strings.Split(gopath, string(filepath.ListSeparator))[0], "bin", "nfpm")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if testing.Short() {
		t.Skip("nfpm not installed, and -short: not installing it")
	}
	t.Logf("nfpm not found: go install %s", nfpmModule)
	out, errs, err := run(t, t.TempDir(), []string{"GOBIN=" + filepath.Dir(p)}, "go", "install", nfpmModule)
	if err != nil {
		t.Skipf("nfpm is not installed and could not be: go install %s: %v\n%s%s", nfpmModule, err, out, errs)
	}
	return p
}

// gzipTo writes src gzipped to dst, as `gzip -9n` does: no name, no time.
func gzipTo(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	zw, err := gzip.NewWriterLevel(&b, gzip.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// buildPackages builds the binaries for this machine's architecture and
// runs nfpm with packaging/nfpm.yaml for deb and rpm, as buildPackagesFor.
func buildPackages(t *testing.T) packages {
	t.Helper()
	return buildPackagesFor(t, runtime.GOARCH)
}

// buildPackagesFor builds the binaries for GOARCH arch and runs nfpm with
// packaging/nfpm.yaml for deb and rpm, the way `make deb rpm ARCH=arch`
// does from the repository root: in
// a staging directory that links the repository's directories and holds
// the freshly built bin/ and dist/man/.
func buildPackagesFor(t *testing.T, arch string) packages {
	t.Helper()
	need(t, "go", "to build the binaries")
	nfpm := findNfpm(t)
	root := repoRoot(t)
	stage := t.TempDir()
	for _, dir := range []string{"systemd", "bus", "examples", "docs", "packaging", "LICENSE"} {
		if err := os.Symlink(filepath.Join(root, dir), filepath.Join(stage, dir)); err != nil {
			t.Fatal(err)
		}
	}
	// Stripped, as make deb builds them.
	for name, pkg := range map[string]string{"forkd": "./cmd/forkd", "forkctl": "./cmd/forkctl", "forkd-demo": "./examples/demo",
		"forkd-cluster": "./cmd/forkd-cluster", "forkd-metrics": "./cmd/forkd-metrics"} {
		mustRun(t, root, []string{"CGO_ENABLED=0", "GOARCH=" + arch}, "go", "build", "-trimpath", "-ldflags", "-s -w",
			"-o", filepath.Join(stage, "dist", "bin", name), pkg)
	}
	man := filepath.Join(stage, "dist", "man")
	if err := os.MkdirAll(man, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, page := range manPages {
		gzipTo(t, filepath.Join(root, "packaging", "man", page), filepath.Join(man, page+".gz"))
	}
	need(t, "git", "to write the changelog from the tags")
	changelog := mustRun(t, root, nil, filepath.Join(root, "packaging", "changelog.sh"), testVersion, "1", "forkd test <forkd@example.org>")
	if err := os.WriteFile(filepath.Join(stage, "dist", "changelog.yml"), []byte(changelog), 0o644); err != nil {
		t.Fatal(err)
	}
	pk := packages{stage: stage}
	for _, format := range []string{"deb", "rpm"} {
		out := filepath.Join(t.TempDir(), format)
		if err := os.Mkdir(out, 0o755); err != nil {
			t.Fatal(err)
		}
		mustRun(t, stage, []string{"VERSION=" + testVersion, "ARCH=" + arch}, nfpm,
			"package", "--config", "packaging/nfpm.yaml", "--packager", format, "--target", out+"/")
		built, err := filepath.Glob(filepath.Join(out, "*."+format))
		if err != nil || len(built) != 1 {
			t.Fatalf("nfpm %s: want one .%s in %s, got %v (%v)", format, format, out, built, err)
		}
		if format == "deb" {
			pk.deb = built[0]
		} else {
			pk.rpm = built[0]
		}
	}
	return pk
}

// listing is one entry of a package's file list.
type listing struct {
	mode  fs.FileMode // permissions and fs.ModeDir
	owner string      // user/group
}

// parsePerms parses an ls-style permission string such as -rwxr-xr-x.
func parsePerms(s string) (fs.FileMode, error) {
	if len(s) != 10 {
		return 0, fmt.Errorf("permissions %q: want 10 characters", s)
	}
	var m fs.FileMode
	switch s[0] {
	case '-':
	case 'd':
		m |= fs.ModeDir
	case 'l':
		m |= fs.ModeSymlink
	default:
		return 0, fmt.Errorf("permissions %q: unknown type %q", s, s[0])
	}
	for i, c := range []byte(s[1:]) {
		switch {
		case c == '-':
		case c == "rwxrwxrwx"[i]:
			m |= 1 << (8 - i)
		default:
			return 0, fmt.Errorf("permissions %q: unexpected %q", s, c)
		}
	}
	return m, nil
}

// parseListing parses lines of "PERMS OWNER … PATH", PATH in field
// pathField, into a map from the absolute path (without a trailing slash).
func parseListing(t *testing.T, out string, ownerField, pathField int) map[string]listing {
	t.Helper()
	files := map[string]listing{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) <= pathField {
			t.Fatalf("listing line %q: want at least %d fields", sc.Text(), pathField+1)
		}
		mode, err := parsePerms(f[0])
		if err != nil {
			t.Fatalf("listing line %q: %v", sc.Text(), err)
		}
		p := strings.TrimSuffix(strings.TrimPrefix(f[pathField], "."), "/")
		if p == "" {
			continue // "./", the root
		}
		owner := f[ownerField]
		if owner == "0/0" {
			owner = "root/root" // nfpm writes the changelog with ids only
		}
		files[p] = listing{mode: mode, owner: owner}
	}
	return files
}

// checkListing checks that files holds every shipped file with its mode,
// owned by root, and no other file; and that it holds ownedDirs, and when
// onlyOwnedDirs no other directory (an rpm must not own /usr/bin).
func checkListing(t *testing.T, files map[string]listing, format, rootOwner string, onlyOwnedDirs bool) {
	t.Helper()
	shipped, ownedDirs := shippedIn(format), ownedDirsIn(format)
	for _, f := range shipped {
		got, ok := files[f.path]
		if !ok {
			t.Errorf("%s: not in the package", f.path)
			continue
		}
		if got.mode != f.mode {
			t.Errorf("%s: mode %v, want %v", f.path, got.mode, f.mode)
		}
		if got.owner != rootOwner {
			t.Errorf("%s: owned by %s, want %s", f.path, got.owner, rootOwner)
		}
	}
	for _, d := range ownedDirs {
		if got, ok := files[d]; !ok || got.mode != fs.ModeDir|0o755 || got.owner != rootOwner {
			t.Errorf("%s: %v %s (listed: %v), want a directory with mode 0755 owned by %s", d, got.mode, got.owner, ok, rootOwner)
		}
	}
	for p, l := range files {
		if l.mode.IsDir() {
			if onlyOwnedDirs && !slices.Contains(ownedDirs, p) {
				t.Errorf("%s: the package owns this directory, and should not", p)
			}
			continue
		}
		if !slices.ContainsFunc(shipped, func(f file) bool { return f.path == p }) {
			t.Errorf("%s: in the package but not expected (mode %v)", p, l.mode)
		}
	}
}

func TestPackages(t *testing.T) {
	need(t, "dpkg-deb", "to read the .deb")
	pk := buildPackages(t)

	t.Run("deb/contents", func(t *testing.T) {
		// -rwxr-xr-x root/root   123 2024-01-01 00:00 ./usr/bin/forkd
		files := parseListing(t, mustRun(t, "", nil, "dpkg-deb", "-c", pk.deb), 1, 5)
		checkListing(t, files, "deb", "root/root", false)
	})

	t.Run("deb/control", func(t *testing.T) {
		info := mustRun(t, "", nil, "dpkg-deb", "-I", pk.deb)
		fields := map[string]string{}
		for _, f := range []string{"Package", "Version", "Architecture", "Depends", "Recommends", "Section"} {
			fields[f] = strings.TrimSpace(mustRun(t, "", nil, "dpkg-deb", "--field", pk.deb, f))
		}
		want := map[string]string{"Package": "forkd", "Version": testVersion + "-1", "Depends": "systemd",
			"Recommends": "dbus", "Section": "admin"}
		if a := map[string]string{"amd64": "amd64", "arm64": "arm64"}[runtime.GOARCH]; a != "" {
			want["Architecture"] = a
		}
		for f, w := range want {
			if fields[f] != w {
				t.Errorf("%s: %q, want %q\ndpkg-deb -I:\n%s", f, fields[f], w, info)
			}
		}
		for _, member := range []string{"postinst", "prerm", "postrm", "conffiles", "control"} {
			if !regexp.MustCompile(`(?m)^\s+\d+ bytes,\s+\d+ lines\s+\*?\s*` + member + `\b`).MatchString(info) {
				t.Errorf("dpkg-deb -I lists no %s:\n%s", member, info)
			}
		}
		if strings.Contains(info, " preinst") {
			t.Errorf("dpkg-deb -I lists a preinst, which the package should not have:\n%s", info)
		}

		ctl := t.TempDir()
		mustRun(t, "", nil, "dpkg-deb", "-e", pk.deb, ctl)
		for src, member := range scripts {
			want, err := os.ReadFile(filepath.Join(repoRoot(t), "packaging", "scripts", src))
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(ctl, member)
			got, err := os.ReadFile(p)
			if err != nil {
				t.Errorf("control member %s: %v", member, err)
				continue
			}
			if !bytes.Equal(got, want) {
				t.Errorf("control member %s differs from packaging/scripts/%s:\n%s", member, src, got)
			}
			if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o755 {
				t.Errorf("control member %s: mode %v (%v), want 0755", member, st.Mode(), err)
			}
			if out, errs, err := run(t, "", nil, "sh", "-n", p); err != nil {
				t.Errorf("sh -n %s: %v\n%s%s", member, err, out, errs)
			}
		}
		conffiles, err := os.ReadFile(filepath.Join(ctl, "conffiles"))
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Fields(string(conffiles)); !slices.Equal(got, []string{"/etc/forkd/example.toml.sample"}) {
			t.Errorf("conffiles: %q, want only /etc/forkd/example.toml.sample", got)
		}
	})

	t.Run("deb/extract", func(t *testing.T) {
		// dpkg -i is not allowed on the host: unpack into a throwaway root.
		root := t.TempDir()
		mustRun(t, "", nil, "dpkg-deb", "-x", pk.deb, root)
		checkExtracted(t, pk.stage, root)
	})

	t.Run("rpm", func(t *testing.T) {
		need(t, "rpm", "to query the .rpm; apt-get install rpm")
		// Only queries, never an install; a private, empty database.
		db := "--dbpath=" + t.TempDir()
		q := func(args ...string) string {
			return mustRun(t, "", nil, "rpm", append([]string{db, "-qp"}, append(args, pk.rpm)...)...)
		}
		// -rwxr-xr-x root:root /usr/bin/forkd
		files := parseListing(t, q("--qf", `[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILENAMES}\n]`), 1, 2)
		checkListing(t, files, "rpm", "root:root", true)
		if got := strings.Fields(q("--qf", "%{NAME} %{VERSION} %{RELEASE}")); !slices.Equal(got, []string{"forkd", testVersion, "1"}) {
			t.Errorf("name version release: %q, want forkd %s 1", got, testVersion)
		}
		list := strings.Fields(q("-l"))
		for _, f := range shippedIn("rpm") {
			if !slices.Contains(list, f.path) {
				t.Errorf("rpm -qlp does not list %s", f.path)
			}
		}
		if !slices.Contains(strings.Fields(q("--requires")), "systemd") {
			t.Errorf("rpm requires no systemd:\n%s", q("--requires"))
		}
		if !slices.Contains(strings.Fields(q("--recommends")), "dbus") {
			t.Errorf("rpm recommends no dbus:\n%s", q("--recommends"))
		}
		flags := q("--qf", `[%{FILEFLAGS:fflags} %{FILENAMES}\n]`)
		if !regexp.MustCompile(`(?m)^c\S*n\S* /etc/forkd/example.toml.sample$`).MatchString(flags) {
			t.Errorf("example.toml.sample is not %%config(noreplace):\n%s", flags)
		}
		// Each scriptlet carries its script: %post the postinstall, …
		sections := map[string]string{}
		var cur string
		for _, line := range strings.SplitAfter(q("--scripts"), "\n") {
			if m := regexp.MustCompile(`^(\w+) scriptlet \(using /bin/sh\):`).FindStringSubmatch(line); m != nil {
				cur = m[1]
				continue
			}
			sections[cur] += line
		}
		for src, section := range map[string]string{"postinstall.sh": "postinstall", "preremove.sh": "preuninstall", "postremove.sh": "postuninstall"} {
			want, err := os.ReadFile(filepath.Join(repoRoot(t), "packaging", "scripts", src))
			if err != nil {
				t.Fatal(err)
			}
			if strings.TrimSpace(sections[section]) != strings.TrimSpace(string(want)) {
				t.Errorf("rpm %s scriptlet is not packaging/scripts/%s:\n%s", section, src, sections[section])
			}
		}
		if _, ok := sections["preinstall"]; ok {
			t.Errorf("rpm has a preinstall scriptlet, which it should not")
		}
	})

	t.Run("man/accurate", func(t *testing.T) {
		checkManAccurate(t, pk.stage)
	})
}

// checkExtracted checks the files of a package unpacked into root against
// their sources in stage, and that they work together.
func checkExtracted(t *testing.T, stage, root string) {
	t.Helper()
	for _, f := range shippedIn("deb") {
		p := filepath.Join(root, f.path)
		st, err := os.Lstat(p)
		if err != nil {
			t.Errorf("%s: %v", f.path, err)
			continue
		}
		if !st.Mode().IsRegular() || st.Mode().Perm() != f.mode {
			t.Errorf("%s: mode %v, want a regular file with %v", f.path, st.Mode(), f.mode)
		}
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if f.src == "" {
			continue // generated by nfpm: checked by its own test
		}
		if f.gz {
			zr, err := gzip.NewReader(bytes.NewReader(got))
			if err != nil {
				t.Errorf("%s: not gzip: %v", f.path, err)
				continue
			}
			if got, err = io.ReadAll(zr); err != nil {
				t.Errorf("%s: %v", f.path, err)
				continue
			}
		}
		want, err := os.ReadFile(filepath.Join(stage, f.src))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: differs from %s", f.path, f.src)
		}
	}
	if st, err := os.Stat(filepath.Join(root, configDir)); err != nil || !st.IsDir() {
		t.Errorf("%s: not a directory (%v)", configDir, err)
	} else if entries, _ := filepath.Glob(filepath.Join(root, configDir, "*.toml")); len(entries) != 0 {
		t.Errorf("%s holds instance configs, want none: %v", configDir, entries)
	}

	t.Run("units", func(t *testing.T) {
		// Every program the units run is in the package, executable.
		execLine := regexp.MustCompile(`(?m)^Exec\w+=[-@:+!]*(\S+)`)
		for _, unit := range []string{"forkd@.service", "forkd@.socket"} {
			data, err := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system", unit))
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range execLine.FindAllStringSubmatch(string(data), -1) {
				st, err := os.Stat(filepath.Join(root, m[1]))
				if err != nil || st.Mode().Perm()&0o111 == 0 {
					t.Errorf("%s runs %s, which the package does not install as a program (%v)", unit, m[1], err)
				}
			}
			// The user the service runs as is the one sysusers.d creates.
			for _, m := range regexp.MustCompile(`(?m)^(?:User|Group|SocketGroup)=(\S+)`).FindAllStringSubmatch(string(data), -1) {
				if m[1] != "forkd" {
					t.Errorf("%s: %s, want forkd", unit, m[0])
				}
			}
		}
		sysusers, err := os.ReadFile(filepath.Join(root, "usr/lib/sysusers.d/forkd.conf"))
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`(?m)^u\s+forkd\s`).Match(sysusers) {
			t.Errorf("sysusers.d/forkd.conf creates no user forkd:\n%s", sysusers)
		}
	})

	t.Run("sysusers", func(t *testing.T) {
		// What postinstall runs, against the unpacked root instead of /:
		// the user the units run as is created, as a system user.
		need(t, "systemd-sysusers", "to create the forkd user in the unpacked root")
		if os.Getuid() != 0 {
			t.Skip("not root: systemd-sysusers --root writes root-owned files")
		}
		mustRun(t, "", nil, "systemd-sysusers", "--root="+root)
		passwd, err := os.ReadFile(filepath.Join(root, "etc/passwd"))
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`(?m)^forkd:x:(\d+):(\d+):[^:]*:[^:]*:(\S*)$`).FindSubmatch(passwd)
		if m == nil {
			t.Fatalf("no forkd user in the unpacked root's /etc/passwd:\n%s", passwd)
		}
		uid, err := strconv.Atoi(string(m[1]))
		if err != nil || uid == 0 || uid >= 1000 || !strings.HasSuffix(string(m[3]), "nologin") {
			t.Errorf("forkd user: uid %s, shell %s; want a system uid (1…999) and nologin", m[1], m[3])
		}
	})

	t.Run("sample", func(t *testing.T) {
		// The sample, copied to an instance config as its comments say,
		// passes the packaged forkd's and forkctl's checks once its worker
		// command points into the unpacked root.
		data, err := os.ReadFile(filepath.Join(root, "etc/forkd/example.toml.sample"))
		if err != nil {
			t.Fatal(err)
		}
		const demo = `"/usr/lib/forkd/forkd-demo"`
		if !bytes.Contains(data, []byte(demo)) {
			t.Fatalf("example.toml.sample does not run %s", demo)
		}
		inst := filepath.Join(t.TempDir(), "demo.toml")
		data = bytes.ReplaceAll(data, []byte(demo), []byte(`"`+filepath.Join(root, "usr/lib/forkd/forkd-demo")+`"`))
		if err := os.WriteFile(inst, data, 0o644); err != nil {
			t.Fatal(err)
		}
		out := mustRun(t, "", nil, filepath.Join(root, "usr/bin/forkd"), "--check", "--config", inst)
		if !strings.Contains(out, `ok (instance "demo", 2 workers`) {
			t.Errorf("forkd --check: %q, want instance demo with 2 workers", out)
		}
		out = mustRun(t, "", nil, filepath.Join(root, "usr/bin/forkctl"), "check", inst)
		if !strings.Contains(out, ": ok: ") {
			t.Errorf("forkctl check: %q", out)
		}
	})

	t.Run("man", func(t *testing.T) {
		need(t, "man", "to render the installed man pages")
		for _, f := range shipped {
			if !f.gz {
				continue
			}
			out, errs, err := run(t, "", []string{"MANWIDTH=80", "MANPAGER=cat", "PAGER=cat", "LC_ALL=C.UTF-8"},
				"man", "--warnings", "-l", filepath.Join(root, f.path))
			if err != nil || errs != "" {
				t.Errorf("man -l %s: %v\n%s", f.path, err, errs)
			}
			name := strings.ToUpper(strings.TrimSuffix(filepath.Base(f.src), filepath.Ext(f.src)))
			if !strings.Contains(out, "NAME") || !strings.Contains(out, name+"(") {
				t.Errorf("man -l %s: no NAME section or %s( header:\n%s", f.path, name, out)
			}
		}
	})
}

func TestManPages_Render(t *testing.T) {
	need(t, "groff", "to render the man pages")
	dir := filepath.Join(repoRoot(t), "packaging", "man")
	for _, page := range manPages {
		t.Run(page, func(t *testing.T) {
			// -ww: every warning; -z: no output, only the diagnostics.
			out, errs, err := run(t, "", []string{"LC_ALL=C.UTF-8"}, "groff", "-man", "-Tutf8", "-ww", "-z", filepath.Join(dir, page))
			if err != nil || errs != "" || out != "" {
				t.Errorf("groff -man -ww %s: %v\n%s%s", page, err, out, errs)
			}
			text := mustRun(t, "", []string{"LC_ALL=C.UTF-8"}, "groff", "-man", "-Tutf8", "-P", "-cbou", filepath.Join(dir, page))
			for _, section := range []string{"NAME", "SYNOPSIS", "DESCRIPTION", "SEE ALSO"} {
				if !regexp.MustCompile(`(?m)^` + section + `$`).MatchString(text) {
					t.Errorf("%s has no %s section", page, section)
				}
			}
		})
	}
}

// manSource reads packaging/man/page.
func manSource(t *testing.T, page string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "packaging", "man", page))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// roffBold reports whether the roff source src sets word in bold at the
// start of a line (.B word, .BR word …, .BI word …), the way the man pages
// introduce options, commands, keys and hooks.
func roffBold(src, word string) bool {
	esc := strings.ReplaceAll(word, "-", `\-`)
	return regexp.MustCompile(`(?m)^\.B[IR]? (?:\\-)*` + regexp.QuoteMeta(esc) + `(?:\s|$)`).MatchString(src)
}

// checkManAccurate checks the man pages against the built binaries' usage
// and the config schema: every flag, command, key and hook is documented.
func checkManAccurate(t *testing.T, stage string) {
	t.Helper()
	forkd8, forkctl1, toml5 := manSource(t, "forkd.8"), manSource(t, "forkctl.1"), manSource(t, "forkd.toml.5")

	// forkd -h lists its flags as "  --config file".
	_, usage, _ := run(t, "", nil, filepath.Join(stage, "dist/bin/forkd"), "-h")
	flags := regexp.MustCompile(`(?m)^  --([a-z][a-z-]*)`).FindAllStringSubmatch(usage, -1)
	if len(flags) < 3 {
		t.Fatalf("forkd -h lists %d flags, want at least 3:\n%s", len(flags), usage)
	}
	for _, f := range flags {
		if !roffBold(forkd8, "--"+f[1]) {
			t.Errorf("forkd(8) does not document --%s", f[1])
		}
	}

	// forkctl --help: the "Commands:" and "Options:" blocks.
	help := mustRun(t, "", nil, filepath.Join(stage, "dist/bin/forkctl"), "--help")
	block := func(title string) []string {
		_, rest, ok := strings.Cut(help, title+":\n")
		if !ok {
			t.Fatalf("forkctl --help has no %s:\n%s", title, help)
		}
		body, _, _ := strings.Cut(rest, "\n\n")
		var words []string
		for _, m := range regexp.MustCompile(`(?m)^  (-?-?[a-z][a-z-]*)`).FindAllStringSubmatch(body, -1) {
			words = append(words, m[1])
		}
		return words
	}
	commands, options := block("Commands"), block("Options")
	if len(commands) < 6 {
		t.Fatalf("forkctl --help lists commands %q, want at least 6", commands)
	}
	for _, c := range append(commands, options...) {
		if !roffBold(forkctl1, c) {
			t.Errorf("forkctl(1) does not document %s", c)
		}
	}

	// forkd.toml(5): every key of the schema.
	for _, table := range []struct {
		name string
		typ  reflect.Type
	}{
		{"[server]", reflect.TypeFor[config.Server]()},
		{"[worker]", reflect.TypeFor[config.Worker]()},
		{"[[hooks.NAME]]", reflect.TypeFor[config.HookExec]()},
		{"[[singleton]]", reflect.TypeFor[config.Singleton]()},
		{"[[schedule]]", reflect.TypeFor[config.Schedule]()},
		{"[metrics]", reflect.TypeFor[config.Metrics]()},
		{"[server.autoscale]", reflect.TypeFor[config.Autoscale]()},
		{"[cluster]", reflect.TypeFor[config.Cluster]()},
	} {
		if !strings.Contains(toml5, ".SH "+table.name+"\n") {
			t.Errorf("forkd.toml(5) has no %s section", table.name)
		}
		for i := range table.typ.NumField() {
			key, _, _ := strings.Cut(table.typ.Field(i).Tag.Get("toml"), ",")
			if key == "" || key == "-" {
				continue
			}
			// A sub-table has a section of its own, checked as a table.
			sub := strings.TrimSuffix(table.name, "]") + "." + key + "]"
			if !roffBold(toml5, key) && !strings.Contains(toml5, ".SH "+sub+"\n") {
				t.Errorf("forkd.toml(5) does not document %s %s", table.name, key)
			}
		}
	}

	// forkd(8): every hook.
	for _, h := range hooks.All {
		if !roffBold(forkd8, string(h)) {
			t.Errorf("forkd(8) does not list hook %s", h)
		}
	}
}

// stubs writes fake systemctl and systemd-sysusers programs into a new
// directory, beside links to the real rm, rmdir and readlink: each fake appends its name and arguments to $STUB_LOG and
// succeeds, except `systemctl is-active`, which succeeds only when
// $STUB_DBUS_ACTIVE is 1, and any command named in $STUB_FAIL.
func stubs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"systemctl", "systemd-sysusers"} {
		script := `#!/bin/sh
echo "` + name + ` $*" >>"$STUB_LOG"
case " $STUB_FAIL " in *" ` + name + ` "*) exit 1 ;; esac
if [ "` + name + `" = systemctl ] && [ "$1" = is-active ]; then
	[ "$STUB_DBUS_ACTIVE" = 1 ]
	exit
fi
exit 0
`
		if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The file tools postremove's purge uses, as they are.
	for _, name := range []string{"rm", "rmdir", "readlink"} {
		p, err := exec.LookPath(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := os.Symlink(p, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// canFakeRun reports why the maintainer scripts cannot run in a private
// mount namespace with a fake /run, or "" when they can.
func canFakeRun(t *testing.T) string {
	t.Helper()
	if os.Getuid() != 0 {
		return "not root: a private /run needs a mount namespace"
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		return "no unshare (util-linux)"
	}
	if out, errs, err := run(t, "", nil, "unshare", "--mount", "--propagation", "private", "true"); err != nil {
		return fmt.Sprintf("unshare --mount: %v %s%s", err, out, errs)
	}
	return ""
}

func TestScripts_Syntax(t *testing.T) {
	for src := range scripts {
		p := filepath.Join(repoRoot(t), "packaging", "scripts", src)
		if out, errs, err := run(t, "", nil, "sh", "-n", p); err != nil {
			t.Errorf("sh -n %s: %v\n%s%s", src, err, out, errs)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(data, []byte("#!/bin/sh\n")) {
			t.Errorf("%s does not start with #!/bin/sh", src)
		}
	}
}

// TestScripts_Run runs the maintainer scripts with Debian's and RPM's
// arguments, with and without a running systemd, and checks what they ask
// systemctl and systemd-sysusers to do. Each runs in a private mount
// namespace whose /run is an empty tmpfs (plus /run/systemd/system when
// systemd is meant to be running), with PATH holding only the stubs: a
// script cannot reach the host's systemd or users.
func TestScripts_Run(t *testing.T) {
	if why := canFakeRun(t); why != "" {
		t.Skip(why)
	}
	const (
		sysusers   = "systemd-sysusers /usr/lib/sysusers.d/forkd.conf"
		daemonRel  = "systemctl daemon-reload"
		isActive   = "systemctl is-active --quiet dbus.service"
		reloadDBus = "systemctl reload dbus.service"
		stopAll    = "systemctl stop forkd@*.socket forkd@*.service"
	)
	tests := []struct {
		script  string
		args    []string
		systemd bool
		dbus    bool
		fail    string // stubs that fail
		want    []string
		wantErr bool
	}{
		// postinstall: Debian postinst, RPM %post.
		{"postinstall.sh", []string{"configure", ""}, false, false, "", []string{sysusers}, false},
		{"postinstall.sh", []string{"configure", ""}, true, true, "", []string{sysusers, daemonRel, isActive, reloadDBus}, false},
		{"postinstall.sh", []string{"configure", "1.0.0-1"}, true, false, "", []string{sysusers, daemonRel, isActive}, false},
		{"postinstall.sh", []string{"abort-upgrade", "1.3.0-1"}, true, true, "", []string{sysusers, daemonRel, isActive, reloadDBus}, false},
		{"postinstall.sh", []string{"1"}, true, true, "", []string{sysusers, daemonRel, isActive, reloadDBus}, false},
		{"postinstall.sh", []string{"2"}, false, false, "", []string{sysusers}, false},
		{"postinstall.sh", []string{"triggered", "x"}, true, true, "", nil, false},
		// A systemctl that fails does not fail the installation…
		{"postinstall.sh", []string{"configure", ""}, true, true, "systemctl", []string{sysusers, daemonRel, isActive}, false},
		// … a user that cannot be created does: the service could not run.
		{"postinstall.sh", []string{"configure", ""}, true, true, "systemd-sysusers", []string{sysusers}, true},

		// preremove: Debian prerm, RPM %preun. Only a real removal stops.
		{"preremove.sh", []string{"remove"}, true, false, "", []string{stopAll}, false},
		{"preremove.sh", []string{"0"}, true, false, "", []string{stopAll}, false},
		{"preremove.sh", []string{"remove"}, false, false, "", nil, false},
		{"preremove.sh", []string{"remove"}, true, false, "systemctl", []string{stopAll}, false},
		{"preremove.sh", []string{"upgrade", "1.3.0-1"}, true, false, "", nil, false},
		{"preremove.sh", []string{"failed-upgrade", "1.3.0-1"}, true, false, "", nil, false},
		{"preremove.sh", []string{"deconfigure", "in-favour", "other", "1.0"}, true, false, "", nil, false},
		{"preremove.sh", []string{"1"}, true, false, "", nil, false},

		// postremove: Debian postrm, RPM %postun.
		{"postremove.sh", []string{"remove"}, true, true, "", []string{daemonRel, isActive, reloadDBus}, false},
		{"postremove.sh", []string{"purge"}, true, false, "", []string{daemonRel, isActive}, false},
		{"postremove.sh", []string{"0"}, true, true, "", []string{daemonRel, isActive, reloadDBus}, false},
		{"postremove.sh", []string{"purge"}, false, true, "", nil, false},
		{"postremove.sh", []string{"1"}, true, true, "", []string{daemonRel}, false},
		{"postremove.sh", []string{"upgrade", "1.3.0-1"}, true, true, "", nil, false},
		{"postremove.sh", []string{"abort-install"}, true, true, "", nil, false},
	}
	dir := filepath.Join(repoRoot(t), "packaging", "scripts")
	stubDir := stubs(t)
	// Inside the namespace: an empty /run, /run/systemd/system when asked,
	// then the script with only the stubs on PATH.
	const inner = `mount -t tmpfs forkd-test /run || exit 97
if [ "$FAKE_SYSTEMD" = 1 ]; then mkdir -p /run/systemd/system || exit 97; fi
PATH="$STUB_PATH" exec /bin/sh "$@"`
	for _, tt := range tests {
		name := fmt.Sprintf("%s %s systemd=%v dbus=%v fail=%s", tt.script, strings.Join(tt.args, " "), tt.systemd, tt.dbus, tt.fail)
		t.Run(name, func(t *testing.T) {
			log := filepath.Join(t.TempDir(), "calls")
			// DPKG_ROOT: a purge forgets instances under it, not the host's.
			env := []string{"STUB_LOG=" + log, "STUB_PATH=" + stubDir, "STUB_FAIL=" + tt.fail, "DPKG_ROOT=" + t.TempDir(),
				"FAKE_SYSTEMD=" + map[bool]string{true: "1"}[tt.systemd],
				"STUB_DBUS_ACTIVE=" + map[bool]string{true: "1"}[tt.dbus]}
			args := append([]string{"--mount", "--propagation", "private", "/bin/sh", "-c", inner, "sh",
				filepath.Join(dir, tt.script)}, tt.args...)
			out, errs, err := run(t, "", env, "unshare", args...)
			var exit *exec.ExitError
			if errors.As(err, &exit) && exit.ExitCode() == 97 {
				t.Fatalf("could not fake /run: %s", errs)
			}
			if (err != nil) != tt.wantErr {
				t.Errorf("exit: %v, want error %v\nstdout:\n%s\nstderr:\n%s", err, tt.wantErr, out, errs)
			}
			data, rerr := os.ReadFile(log)
			if rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
				t.Fatal(rerr)
			}
			var got []string
			if s := strings.TrimSpace(string(data)); s != "" {
				got = strings.Split(s, "\n")
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("calls:\n  %s\nwant:\n  %s\nstderr:\n%s", strings.Join(got, "\n  "), strings.Join(tt.want, "\n  "), errs)
			}
		})
	}
}
