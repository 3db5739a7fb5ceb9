package testkit

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// RoleEnv is the environment variable that starts the test binary in a
// role: its value is the role's name, optionally followed by
// space-separated words passed to the role before the process's own
// arguments ("worker serve").
//
// The environment is inherited, so a process started in one role starts
// its children in the same one unless it sets RoleEnv for them: a master
// sets it in its workers' environment (config's [worker.env]).
const RoleEnv = "FORKD_TEST_ROLE"

// Role is a part the test binary plays instead of running tests: it gets
// its arguments and returns the process's exit code.
type Role func(args []string) int

// Roles names the parts a test binary can play.
type Roles map[string]Role

// Main is a TestMain's body. When the process was started in one of roles
// it plays it and exits with its code; otherwise it runs the tests and
// exits with their result. The role is, first, the one named by the first
// argument (which gets the arguments after it), as forkd re-executes
// itself as the exec shim (activation.ShimArg) and as tests start a
// worker by name; else the one RoleEnv names. RoleEnv naming no role is an
// error: the process exits with 2.
func Main(m *testing.M, roles Roles) {
	if len(os.Args) > 1 {
		if role, ok := roles[os.Args[1]]; ok {
			os.Exit(role(os.Args[2:]))
		}
	}
	if v := os.Getenv(RoleEnv); v != "" {
		words := strings.Fields(v)
		role, ok := roles[words[0]]
		if !ok {
			fmt.Fprintf(os.Stderr, "testkit: %s=%q names no role of this test binary\n", RoleEnv, v)
			os.Exit(2)
		}
		os.Exit(role(append(words[1:], os.Args[1:]...)))
	}
	os.Exit(m.Run())
}

// Executable returns the path of the running test binary, failing the
// test when it cannot be found.
func Executable(t testing.TB) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("testkit: the test binary: %v", err)
	}
	return exe
}

// Command returns a command that runs the test binary in role (RoleEnv)
// with args, in CleanEnv.
func Command(t testing.TB, role string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(Executable(t), args...)
	cmd.Env = append(CleanEnv(), RoleEnv+"="+role)
	return cmd
}

// CleanEnv is the test's environment without what a service manager
// around the test run, or a test binary playing a role, may have set: the
// systemd protocols' variables (LISTEN_*, NOTIFY_SOCKET, WATCHDOG_*,
// JOURNAL_STREAM) and every FORKD_* variable, RoleEnv among them. It adds
// GORACE=atexit_sleep_ms=0 (with the test's other GORACE options): a
// race-enabled binary otherwise sleeps a second before it exits.
func CleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "LISTEN_FDS", k == "LISTEN_PID", k == "LISTEN_FDNAMES", k == "NOTIFY_SOCKET",
			k == "WATCHDOG_USEC", k == "WATCHDOG_PID", k == "JOURNAL_STREAM", k == "GORACE",
			strings.HasPrefix(k, "FORKD_"):
		default:
			env = append(env, kv)
		}
	}
	return append(env, "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
}
