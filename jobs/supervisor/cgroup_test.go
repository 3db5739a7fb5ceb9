package supervisor

import (
	"os"
	"time"

	"testing"

	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/hooks"
)

// TestSupervisor_SingletonMaxMemory: a singleton whose memory passes
// max_memory is stopped and started again, its exit reported with reason
// "memory" (measured on its resident memory: no cgroup here).
func TestSupervisor_SingletonMaxMemory(t *testing.T) {
	cfg := config.Default()
	cfg.Server.GracefulTimeout.Duration = 5 * time.Second
	// A perl that holds a 64 MiB string (perl-base is in every Debian).
	const perl = "/usr/bin/perl"
	if _, err := os.Stat(perl); err != nil {
		t.Skipf("%s: %v", perl, err)
	}
	cfg.Singletons = []config.Singleton{{
		Name:    "grower",
		Program: config.Program{Command: perl, Path: perl, Args: []string{"-e", `$x = "x" x (64 << 20); sleep 600`}},
		Ready:   config.ReadyStarted,
		Start:   config.StartBeforeWorkers,
		Limits:  config.Limits{MaxMemory: 32 << 20},
	}}
	_, ev := runSupervisor(t, cfg)
	first := ev.next(t, hooks.SingletonStarted)
	exit := ev.next(t, hooks.SingletonExited)
	if exit.PID != first.PID || exit.Reason != reasonMemory {
		t.Errorf("exit %+v, want pid %d with reason %q", exit, first.PID, reasonMemory)
	}
	if again := ev.next(t, hooks.SingletonStarted); again.PID == first.PID {
		t.Errorf("restarted as pid %d, the same", again.PID)
	}
}
