package master

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/forkd/forkd/internal/testkit"
)

// TestMaster_SignalWhileStarting: a TERM that comes while forkd starts —
// here from its on_starting hook, before any socket or worker exists — is
// caught, not fatal: forkd stops gracefully once its pool runs, exit 0.
func TestMaster_SignalWhileStarting(t *testing.T) {
	f := newForkd(t, setup{instance: "early", workers: 1})
	f.writeConfig("serve", "\n[[hooks.on_starting]]\nexec = [\"/bin/sh\", \"-c\", \"kill -TERM $PPID\"]\n")
	f.start()
	if code := f.wait(testTimeout); code != 0 {
		t.Fatalf("forkd exited with %d after a TERM from its on_starting hook, want 0 (a graceful stop)\n%s",
			code, f.log())
	}
}

// TestMaster_StopDuringUpgrade: a TERM that comes while an upgrade is
// prepared — here from its pre_exec hook — would be lost with the exec; it
// is obeyed instead: forkd re-executes nothing and stops gracefully, exit 0.
func TestMaster_StopDuringUpgrade(t *testing.T) {
	notify := testkit.ListenNotify(t)
	f := newForkd(t, setup{instance: "stopfirst", workers: 1, notify: notify.Path})
	// The hook runs on a while after the kill: the runtime hands a signal
	// to the master's channel on a goroutine of its own, and one not there
	// yet when the exec comes is lost with it.
	f.writeConfig("serve", "\n[[hooks.pre_exec]]\nexec = [\"/bin/sh\", \"-c\", \"kill -TERM $PPID; sleep 0.2\"]\n")
	f.start()
	notify.Wait("READY=1")
	f.signal(syscall.SIGUSR2)
	if code := f.wait(testTimeout); code != 0 {
		t.Fatalf("forkd exited with %d after a TERM during its upgrade, want 0 (a graceful stop)", code)
	}
	log := f.log()
	if strings.Contains(log, "upgrading: re-executing the master") || !strings.Contains(log, `"upgrade abandoned: the master stops instead" signal=SIGTERM`) {
		t.Errorf("the log does not say the TERM was obeyed instead of the exec:\n%s", log)
	}
}

// TestMaster_SignalsDuringUpgrade: the signals that ask for something
// other than a stop (USR2, HUP, USR1, TTIN, TTOU), sent again and again
// while the master re-executes itself, never end or stop it, though
// execve resets a caught signal to its default action: the master serves
// on and stops gracefully on TERM.
func TestMaster_SignalsDuringUpgrade(t *testing.T) {
	notify := testkit.ListenNotify(t)
	f := startForkd(t, setup{instance: "sigstorm", workers: 2, notify: notify.Path})
	notify.Wait("READY=1")
	others := []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGTTIN, syscall.SIGTTOU}
	end := time.Now().Add(time.Second)
	for i := 0; time.Now().Before(end); i++ {
		sig := syscall.SIGUSR2
		if i%2 == 1 {
			sig = others[(i/2)%len(others)]
		}
		if err := syscall.Kill(f.pid(), sig); err != nil {
			t.Fatalf("signal %d (%v): %v", i, sig, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if f.exited() {
		t.Fatalf("forkd ended during the upgrades: %v", f.cmd.ProcessState)
	}
	if n := strings.Count(f.log(), "upgrading: re-executing the master"); n < 2 {
		t.Fatalf("%d upgrades during the signals, want several", n)
	}
	f.askUntil("an answer after the signals", func(seen map[int]answer) bool { return len(seen) > 0 })
	// A TERM that comes while a new master starts has its default action,
	// which ends the process: stop once every upgrade is over.
	waitUpgradesDone(t, f)
	f.signal(syscall.SIGTERM)
	if code := f.wait(testTimeout); code != 0 {
		t.Fatalf("forkd exited with %d after TERM, want 0 (a graceful stop)", code)
	}
}

// waitUpgradesDone returns once the new master of every upgrade forkd
// logged adopted the workers, and no other began for a few checks in a row.
func waitUpgradesDone(t *testing.T, f *forkd) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for calm := 0; calm < 3; time.Sleep(50 * time.Millisecond) {
		l := f.log()
		begun := strings.Count(l, "upgrading: re-executing the master")
		if begun == strings.Count(l, "upgraded: adopted workers") {
			calm++
		} else {
			calm = 0
		}
		if time.Now().After(deadline) {
			t.Fatalf("upgrades still under way after %v", testTimeout)
		}
	}
}
