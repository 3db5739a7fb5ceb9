package bus

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/forkd/forkd/hooks"
	"github.com/forkd/forkd/jobs"
	"github.com/forkd/forkd/workers"
)

// busPolicyResult is what the unprivileged helper saw.
type busPolicyResult struct {
	Reload      string // D-Bus error name ("" = allowed)
	SetWorkers  string
	RunNow      string
	ListWorkers string
	ListJobs    string
	Jobs        int // how many ListJobs returned
	GetAll      string
	State       string
	Introspect  string
	Signal      string // the forkd signal it received
	Body        []any
}

const busPolicyHelperEnv = "FORKD_BUS_POLICY_HELPER"

// TestService_PolicyHelper is not a test: it is the unprivileged client that
// TestService_Policy runs as another user (the test binary re-executed).
func TestService_PolicyHelper(t *testing.T) {
	address := os.Getenv(busPolicyHelperEnv)
	if address == "" {
		t.Skip("helper process for TestService_Policy")
	}
	err := busPolicyHelper(address, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stdout, "ERROR", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// busPolicyPeer prefixes the helper's address when it is the path of a
// peer-to-peer socket rather than a bus's address.
const busPolicyPeer = "p2p:"

func busPolicyHelper(address string, out io.Writer) error {
	var (
		conn *dbus.Conn
		err  error
	)
	if path, ok := strings.CutPrefix(address, busPolicyPeer); ok {
		if conn, err = dbus.Dial(SocketAddress(path)); err == nil {
			if err = conn.Auth(nil); err != nil {
				conn.Close()
			}
		}
	} else {
		conn, err = dbus.Connect(address)
	}
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	signals := make(chan *dbus.Signal, 64)
	conn.Signal(signals)
	if err := conn.AddMatchSignal(dbus.WithMatchInterface(Interface)); err != nil {
		return fmt.Errorf("add match: %w", err)
	}
	obj := conn.Object(Name("policy"), ObjectPath)
	var r busPolicyResult
	r.Reload = dbusErrorName(obj.Call(Interface+".Reload", 0).Err)
	r.SetWorkers = dbusErrorName(obj.Call(Interface+".SetWorkers", 0, uint32(2)).Err)
	r.RunNow = dbusErrorName(obj.Call(Interface+".RunNow", 0, "cleanup").Err)
	var list []WorkerEntry
	if err := obj.Call(Interface+".ListWorkers", 0).Store(&list); err != nil {
		r.ListWorkers = dbusErrorName(err) + " " + err.Error()
	}
	var jobList []JobEntry
	if err := obj.Call(Interface+".ListJobs", 0).Store(&jobList); err != nil {
		r.ListJobs = dbusErrorName(err) + " " + err.Error()
	}
	r.Jobs = len(jobList)
	var all map[string]dbus.Variant
	if err := obj.Call("org.freedesktop.DBus.Properties.GetAll", 0, Interface).Store(&all); err != nil {
		r.GetAll = dbusErrorName(err) + " " + err.Error()
	} else if s, ok := all["State"].Value().(string); ok {
		r.State = s
	}
	var xmlText string
	if err := obj.Call("org.freedesktop.DBus.Introspectable.Introspect", 0).Store(&xmlText); err != nil {
		r.Introspect = dbusErrorName(err) + " " + err.Error()
	}
	fmt.Fprintln(out, "READY")
	deadline := time.After(busTestTimeout)
	for r.Signal == "" {
		select {
		case s := <-signals:
			if strings.HasPrefix(s.Name, Interface+".") { // not NameAcquired
				r.Signal, r.Body = s.Name, s.Body
			}
		case <-deadline:
			return fmt.Errorf("no forkd signal within %v", busTestTimeout)
		}
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "RESULT %s\n", b)
	return nil
}

// TestService_Policy runs a client as an unprivileged user against a bus with
// the shipped policy, and against the peer-to-peer socket, which enforces the
// same policy itself: it may read (ListWorkers, ListJobs, the properties) and
// listen but not Reload, SetWorkers or RunNow.
func TestService_Policy(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a client as uid 65534")
	}
	t.Run("bus", func(t *testing.T) { testPolicy(t, false) })
	t.Run("peer", func(t *testing.T) { testPolicy(t, true) })
}

func testPolicy(t *testing.T, peer bool) {
	dir := busTestDir(t)
	ctl := newBusTestController()
	ctl.status = workers.Status{State: "running", Generation: 1, Workers: 2, ReadyWorkers: 2}
	runner := &busTestJobs{busTestController: ctl, list: []jobs.Info{{Name: "cleanup", Kind: jobs.KindSchedule}}}
	var (
		b       *Service
		address string
	)
	if peer {
		socket := filepath.Join(dir, SocketName)
		b = New(Options{Instance: "policy", Address: "none", Socket: socket, Controller: runner})
		runBusTest(t, b)
		address = busPolicyPeer + socket
	} else {
		d := startBusTestDaemon(t, dir)
		b = New(Options{Instance: "policy", Address: d.Address, Controller: runner})
		runBusTest(t, b)
		dialBusTest(t, d.Address).waitOwned(t, b.Name())
		address = d.Address
	}

	// The test binary sits in a directory the other user cannot enter.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	helper := filepath.Join(dir, "helper.test")
	if err := copyBusTestFile(self, helper); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(helper, "-test.run=^TestService_PolicyHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), busPolicyHelperEnv+"="+address)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helper as uid 65534: %v", err)
	}
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var result *busPolicyResult
	deadline := time.After(busTestTimeout)
	for result == nil {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("helper exited without a result: %v", cmd.Wait())
			}
			switch {
			case line == "READY":
				b.Emit(hooks.Event{Hook: hooks.OnStarting, Generation: 1})
			case strings.HasPrefix(line, "RESULT "):
				result = new(busPolicyResult)
				if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "RESULT ")), result); err != nil {
					t.Fatalf("helper result %q: %v", line, err)
				}
			case strings.HasPrefix(line, "ERROR"):
				t.Fatalf("helper: %s", line)
			}
		case <-deadline:
			cmd.Process.Kill()
			t.Fatal("helper gave no result in time")
		}
	}
	for range lines {
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("helper: %v", err)
	}

	const denied = "org.freedesktop.DBus.Error.AccessDenied"
	if result.Reload != denied {
		t.Errorf("uid 65534 Reload: %q, want %s", result.Reload, denied)
	}
	if result.SetWorkers != denied {
		t.Errorf("uid 65534 SetWorkers: %q, want %s", result.SetWorkers, denied)
	}
	if result.RunNow != denied {
		t.Errorf("uid 65534 RunNow: %q, want %s", result.RunNow, denied)
	}
	if result.ListWorkers != "" || result.ListJobs != "" || result.GetAll != "" || result.Introspect != "" {
		t.Errorf("uid 65534 reading failed: ListWorkers %q, ListJobs %q, GetAll %q, Introspect %q",
			result.ListWorkers, result.ListJobs, result.GetAll, result.Introspect)
	}
	if result.Jobs != 1 {
		t.Errorf("uid 65534 ListJobs returned %d jobs, want 1", result.Jobs)
	}
	if result.State != "running" {
		t.Errorf("uid 65534 read State %q, want running", result.State)
	}
	if result.Signal != Interface+".OnStarting" || len(result.Body) != 2 || result.Body[0] != "policy" {
		t.Errorf("uid 65534 received %s %v, want OnStarting [policy 1]", result.Signal, result.Body)
	}
	if reloads, set := ctl.calls(); reloads != 0 || len(set) != 0 {
		t.Errorf("denied calls reached the controller: %d reloads, SetWorkers %v", reloads, set)
	}
	if ran := runner.runs(); len(ran) != 0 {
		t.Errorf("a denied RunNow reached the runner: %v", ran)
	}
}

func copyBusTestFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
