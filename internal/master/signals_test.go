package master

import "testing"

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
