package testkit

import (
	"bufio"
	"bytes"
	_ "embed" // the bus config template
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"
)

// BusStartTimeout bounds how long StartBus and Bus.Restart wait for a
// dbus-daemon to print its address.
const BusStartTimeout = 10 * time.Second

// ModulePath is the module whose root holds the shipped policy.
const ModulePath = "github.com/forkd/forkd"

// policyRel is the shipped policy, relative to the module root.
const policyRel = "systemd/io.github.forkd.conf"

// ErrNoPolicy is returned by PolicyPath when the shipped policy cannot be
// found.
var ErrNoPolicy = errors.New("testkit: shipped D-Bus policy not found")

//go:embed bus.conf.tmpl
var configTemplate string

var busConfig = template.Must(template.New("bus.conf").Parse(configTemplate))

// BusOption changes how StartBus sets a daemon up.
type BusOption func(*busOptions)

type busOptions struct {
	dir string
}

// BusDir makes the daemon keep its socket ("bus"), config and log in dir,
// which must exist, instead of a fresh directory. Tests that start a
// client as another user pass a directory that user may enter; StartBus's
// own directory is mode 0755.
func BusDir(dir string) BusOption {
	return func(o *busOptions) { o.dir = dir }
}

// Bus is a running private dbus-daemon.
type Bus struct {
	// Address is the bus's D-Bus address, "unix:path=DIR/bus", without a
	// guid: a daemon started again by Restart answers at the same address.
	Address string
	// Dir holds the socket, the daemon's config and its log
	// (dbus-daemon.log).
	Dir string

	t       testing.TB
	bin     string
	conf    string
	logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has been waited for
}

// StartBus starts a dbus-daemon for the test and returns once it accepts
// connections. It skips the test when dbus-daemon is not installed and
// fails it when the daemon does not come up. The daemon is stopped when
// the test ends; its log is printed if the test failed.
func StartBus(t testing.TB, opts ...BusOption) *Bus {
	t.Helper()
	var o busOptions
	for _, opt := range opts {
		opt(&o)
	}
	bin, err := exec.LookPath("dbus-daemon")
	if err != nil {
		t.Skip("dbus-daemon not installed (apt-get install dbus-daemon): skipping the real-bus test")
	}
	policy, err := PolicyPath()
	if err != nil {
		t.Fatal(err)
	}
	dir := o.dir
	if dir == "" {
		// Short (sockets' paths are limited to 107 bytes) and enterable by
		// every user.
		dir, err = os.MkdirTemp("", "testkit-bus-")
		if err != nil {
			t.Fatalf("testkit: %v", err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatalf("testkit: %v", err)
		}
	}
	socket := filepath.Join(dir, "bus")
	d := &Bus{
		Address: "unix:path=" + socket,
		Dir:     dir,
		t:       t,
		bin:     bin,
		conf:    filepath.Join(dir, "bus.conf"),
		logPath: filepath.Join(dir, "dbus-daemon.log"),
	}
	if err := writeConfig(d.conf, "unix:path="+socket, policy); err != nil {
		t.Fatalf("testkit: write bus config: %v", err)
	}
	t.Cleanup(func() {
		d.Stop()
		if t.Failed() {
			if b, err := os.ReadFile(d.logPath); err == nil && len(b) > 0 {
				t.Logf("dbus-daemon log (%s):\n%s", d.logPath, b)
			}
		}
	})
	if err := d.launch(); err != nil {
		t.Fatal(err)
	}
	return d
}

// Stop kills the daemon and waits for it to exit; clients see their
// connections close. It is idempotent, and safe to call from any goroutine.
func (d *Bus) Stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopLocked()
}

func (d *Bus) stopLocked() {
	if d.cmd == nil {
		return
	}
	_ = d.cmd.Process.Kill()
	<-d.done
	d.cmd, d.done = nil, nil
}

// Pause stops the daemon with SIGSTOP: a bus that no longer answers. Its
// socket still accepts connections (the kernel queues them) and takes
// writes until its buffers are full, but nothing is read or answered until
// Resume. Stop and Restart kill a paused daemon as they do a running one.
func (d *Bus) Pause() {
	d.t.Helper()
	d.signal(syscall.SIGSTOP)
}

// Resume continues a daemon stopped by Pause (SIGCONT).
func (d *Bus) Resume() {
	d.t.Helper()
	d.signal(syscall.SIGCONT)
}

// signal sends sig to the running daemon, failing the test when there is
// none.
func (d *Bus) signal(sig syscall.Signal) {
	d.t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		d.t.Fatalf("testkit: %v: the daemon is not running", sig)
	}
	if err := d.cmd.Process.Signal(sig); err != nil {
		d.t.Fatalf("testkit: %v to dbus-daemon: %v", sig, err)
	}
}

// Restart kills the daemon and starts a new one on the same socket, so
// Address stays valid: a bus that went away and came back, with none of
// the old connections, names or match rules. It fails the test when the
// new daemon does not come up, so call it from the test's goroutine.
func (d *Bus) Restart() {
	d.t.Helper()
	d.mu.Lock()
	d.stopLocked()
	d.mu.Unlock()
	if err := d.launch(); err != nil {
		d.t.Fatal(err)
	}
}

// launch starts a daemon on d's socket and waits until it printed its
// address, which it does once it listens.
func (d *Bus) launch() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	socket := strings.TrimPrefix(d.Address, "unix:path=")
	os.Remove(socket) // a killed daemon leaves its socket behind

	logFile, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("testkit: open daemon log: %w", err)
	}
	defer logFile.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("testkit: %w", err)
	}
	cmd := exec.Command(d.bin, "--config-file="+d.conf, "--print-address=1", "--nofork", "--nopidfile")
	cmd.Stdout = w
	cmd.Stderr = logFile
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		return fmt.Errorf("testkit: start dbus-daemon: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	printed := make(chan string, 1)
	go func() {
		br := bufio.NewReader(r)
		line, _ := br.ReadString('\n')
		printed <- strings.TrimSpace(line)
		_, _ = io.Copy(io.Discard, br) // never let the daemon block on a full pipe
		r.Close()
	}()
	fail := func(format string, args ...any) error {
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("testkit: "+format+" (log: %s)", append(args, d.logPath)...)
	}
	timer := time.NewTimer(BusStartTimeout)
	defer timer.Stop()
	select {
	case line := <-printed:
		if line != d.Address && !strings.HasPrefix(line, d.Address+",") {
			return fail("dbus-daemon printed address %q, want %s", line, d.Address)
		}
	case <-done:
		return fmt.Errorf("testkit: dbus-daemon exited before printing its address (log: %s)", d.logPath)
	case <-timer.C:
		return fail("dbus-daemon did not print its address within %v", BusStartTimeout)
	}
	d.cmd, d.done = cmd, done
	return nil
}

// writeConfig writes the bus config: listening on listen, including the
// policy file; a non-root user running the tests gets the forkd user's
// rights.
func writeConfig(path, listen, policy string) error {
	data := struct{ Listen, Policy, User string }{Listen: listen, Policy: policy}
	if os.Getuid() != 0 {
		u, err := user.Current()
		if err != nil {
			return fmt.Errorf("current user: %w", err)
		}
		data.User = u.Username
	}
	var b bytes.Buffer
	if err := busConfig.Execute(&b, data); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// PolicyPath returns the absolute path of the shipped D-Bus policy,
// systemd/io.github.forkd.conf under the module root. The root is found by
// walking up from this source file (as compiled) or, failing that (a
// -trimpath build), from the working directory, to the go.mod of
// ModulePath.
func PolicyPath() (string, error) {
	var starts []string
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	for _, start := range starts {
		root, ok := moduleRoot(start)
		if !ok {
			continue
		}
		p := filepath.Join(root, policyRel)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
		return "", fmt.Errorf("%w: %s is missing", ErrNoPolicy, p)
	}
	return "", fmt.Errorf("%w: no go.mod of %s above %s", ErrNoPolicy, ModulePath, strings.Join(starts, " or "))
}

// moduleRoot returns the directory at or above dir whose go.mod declares
// ModulePath.
func moduleRoot(dir string) (string, bool) {
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && declares(b, ModulePath) {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

// declares reports whether the go.mod text gomod declares module path.
func declares(gomod []byte, path string) bool {
	for _, line := range strings.Split(string(gomod), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "module" && strings.Trim(f[1], `"`) == path {
			return true
		}
	}
	return false
}
