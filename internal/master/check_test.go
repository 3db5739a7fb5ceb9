package master

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

func TestMaster_Check(t *testing.T) {
	f := newForkd(t, setup{instance: "checked", workers: 3})

	t.Run("valid", func(t *testing.T) {
		code, stdout, stderr := runCommand(t, "--check", "--config", f.cfgPath)
		if code != 0 {
			t.Fatalf("forkd --check on a valid config: exit %d, stderr %q; want 0", code, stderr)
		}
		want := fmt.Sprintf("%s: ok (instance \"checked\", 3 workers of ", f.cfgPath)
		if !strings.HasPrefix(stdout, want) {
			t.Errorf("stdout %q, want it to start with %q", stdout, want)
		}
	})

	t.Run("invalid", func(t *testing.T) {
		g := newForkd(t, setup{instance: "broken", workers: 2})
		g.writeConfig("serve", "bogus_key = 1\n")
		code, stdout, stderr := runCommand(t, "--check", "--config", g.cfgPath)
		if code != 1 {
			t.Fatalf("forkd --check on an invalid config: exit %d; want 1", code)
		}
		// The unknown key is on the line after the ones writeConfig wrote
		// for [server], at column 1.
		where := fmt.Sprintf("%s:%d:1: server.bogus_key", g.cfgPath, g.cfgLines+1)
		if !strings.Contains(stderr, where) || stdout != "" {
			t.Errorf("stdout %q, stderr %q; want an error naming %s on stderr", stdout, stderr, where)
		}
	})

	t.Run("limits without delegation", func(t *testing.T) {
		// forkd run by a test shares the test's cgroup: it has no
		// delegated subtree, and refuses the limits that need one, at
		// their place in the file, saying what is needed. max_memory
		// alone needs none.
		g := newForkd(t, setup{instance: "limited", workers: 1})
		g.writeConfig("serve", "\n[[singleton]]\nname = \"s\"\ncommand = \"/bin/sleep\"\nmax_memory = \"1G\"\npids_max = 10\n")
		code, stdout, stderr := runCommand(t, "--check", "--config", g.cfgPath)
		if code != 1 {
			t.Fatalf("forkd --check with pids_max and no delegation: exit %d, stdout %q; want 1", code, stdout)
		}
		where := fmt.Sprintf("%s:%d:12: singleton[0].pids_max: needs a delegated cgroup v2 subtree", g.cfgPath, g.cfgLines+6)
		if !strings.Contains(stderr, where) || !strings.Contains(stderr, "Delegate=yes") || strings.Contains(stderr, "max_memory") {
			t.Errorf("stderr %q; want an error naming %s that says what is needed, and none for max_memory", stderr, where)
		}
	})

	t.Run("version and help", func(t *testing.T) {
		code, stdout, stderr := runCommand(t, "--version")
		if code != 0 || !strings.HasPrefix(stdout, "forkd ") || len(strings.TrimSpace(stdout)) <= len("forkd") {
			t.Errorf("forkd --version: exit %d, stdout %q, stderr %q; want 0 and \"forkd VERSION\"", code, stdout, stderr)
		}
		code, _, stderr = runCommand(t, "--help")
		if code != 0 || !strings.Contains(stderr, "\n  --config file\n") || strings.Contains(stderr, "\n  -config") {
			t.Errorf("forkd --help: exit %d, stderr %q; want the flags spelled --name", code, stderr)
		}
		_, _, stderr = runCommand(t, "--bogus")
		if strings.Contains(stderr, "master:") {
			t.Errorf("forkd --bogus: stderr %q names a Go package", stderr)
		}
	})

	t.Run("usage", func(t *testing.T) {
		for _, args := range [][]string{{"--check"}, {}, {"--config", f.cfgPath, "extra"}, {"--bogus"}} {
			code, stdout, stderr := runCommand(t, args...)
			if code != 2 {
				t.Errorf("forkd %q: exit %d; want 2 (usage)", args, code)
			}
			if !strings.Contains(stderr, "usage: forkd --config FILE") || stdout != "" {
				t.Errorf("forkd %q: stdout %q, stderr %q; want the usage on stderr", args, stdout, stderr)
			}
		}
		// In process, the error says it is a usage error.
		var out, errOut bytes.Buffer
		err := Run(context.Background(), []string{"--check"}, &out, &errOut)
		if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "--config is required") {
			t.Errorf("Run(--check) = %v; want ErrUsage saying --config is required", err)
		}
	})
}

// TestMaster_AddressInUse starts forkd on a port something else listens
// on: it must give up at once, naming the address.
func TestMaster_AddressInUse(t *testing.T) {
	f := newForkd(t, setup{instance: "clash", workers: 2})
	l, err := net.Listen("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	start := time.Now()
	f.start()
	code := f.wait(10 * time.Second)
	if code == 0 {
		t.Fatalf("forkd exited 0 with %s in use", f.addr)
	}
	want := fmt.Sprintf("bind tcp://%s: address already in use", f.addr)
	if log := f.log(); !strings.Contains(log, want) {
		t.Errorf("forkd's output lacks %q:\n%s", want, log)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("forkd took %v to give up; want it prompt", d)
	}
	if strings.Contains(f.log(), "spawned worker") {
		t.Error("forkd spawned workers without its socket")
	}
}
