package etcd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/cluster"
	"github.com/forkd/forkd/cluster/etcd"
	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/internal/libexec"
	"github.com/forkd/forkd/internal/testkit"
)

// TestMain lets the test binary be forkd-cluster (role "forkd-cluster").
func TestMain(m *testing.M) {
	testkit.Main(m, testkit.Roles{cluster.Executable: func([]string) int { return etcd.Main() }})
}

// sidecarPath writes a forkd-cluster that runs this test binary in its
// role, and returns its path.
func sidecarPath(t *testing.T) string {
	t.Helper()
	exe := testkit.Executable(t)
	path := filepath.Join(t.TempDir(), cluster.Executable)
	script := fmt.Sprintf("#!/bin/sh\n%s=%s exec %q \"$@\"\n", testkit.RoleEnv, cluster.Executable, exe)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// client is one master's side of a cluster, with its own sidecar.
type client struct {
	c       *cluster.Cluster
	events  chan cluster.Event
	signals chan cluster.Event // what OnLeadership got
	stop    func()
}

// newClient runs a cluster.Cluster named name reaching etcd at endpoint
// through a forkd-cluster at path.
func newClient(t *testing.T, path, endpoint, name string, ttl time.Duration) *client {
	t.Helper()
	cfg := config.Default()
	cfg.Server.Name = name
	cfg.Cluster = config.Cluster{Endpoints: []string{endpoint}, Name: "shop", LeaseTTL: config.Duration{Duration: ttl}}
	cl := &client{events: make(chan cluster.Event, 16), signals: make(chan cluster.Event, 16)}
	c, err := cluster.New(cluster.Options{Config: cfg, Member: name, Path: path,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		OnLeadership: func(ev cluster.Event) {
			select {
			case cl.signals <- ev:
			default:
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	cl.c = c
	cl.stop = testkit.Run(t, c.Run)
	return cl
}

// wait returns the next event on ch, failing after testTimeout.
func wait(t *testing.T, ch <-chan cluster.Event, what string) cluster.Event {
	t.Helper()
	select {
	case ev := <-ch:
		return ev
	case <-time.After(testTimeout):
		t.Fatalf("no %s", what)
		return cluster.Event{}
	}
}

// ready waits for c's first etcd session.
func ready(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	select {
	case <-c.Ready():
	case <-time.After(testTimeout):
		t.Fatal("no etcd session through forkd-cluster")
	}
}

// TestSidecar_LeadClaimStop: the master's Cluster through forkd-cluster
// leads, claims, reads the holder and the last period; when it stops,
// its sidecar revokes the lease and the other member takes over at once
// (well within the 10 s lease).
func TestSidecar_LeadClaimStop(t *testing.T) {
	path := sidecarPath(t)
	srv := testkit.StartEtcd(t)
	proxy := testkit.StartProxy(t, srv.Dial)
	ep := "http://" + proxy.Addr
	a := newClient(t, path, ep, "a", 10*time.Second)
	a.c.Lead("scheduler", a.events)
	first := wait(t, a.events, "leadership for a")
	if !first.Acquired || first.Token <= 0 {
		t.Fatalf("a's first event %+v, want acquired with a token", first)
	}
	if ev := wait(t, a.signals, "OnLeadership for a"); !ev.Acquired || ev.Token != first.Token {
		t.Fatalf("OnLeadership got %+v, want %+v", ev, first)
	}
	b := newClient(t, path, ep, "b", 10*time.Second)
	b.c.Lead("scheduler", b.events)
	ready(t, b.c)
	ctx := context.Background()
	if h, err := b.c.Holder(ctx, "scheduler"); err != nil || h != "a" {
		t.Fatalf("Holder = %q, %v; want a", h, err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)
	won, err := a.c.Claim(ctx, "cleanup", at)
	if err != nil || !won.Won || won.Holder != "a" || won.Token <= 0 {
		t.Fatalf("a's claim: %+v, %v; want won", won, err)
	}
	if lost, err := b.c.Claim(ctx, "cleanup", at); err != nil || lost.Won || lost.Holder != "a" {
		t.Fatalf("b's claim of the same period: %+v, %v; want lost to a", lost, err)
	}
	if last, who, err := b.c.Last(ctx, "cleanup"); err != nil || !last.Equal(at) || who != "a" {
		t.Fatalf("Last = %v %q %v, want %v a", last, who, err, at)
	}
	if id, renewed := a.c.Lease(); id == 0 || renewed.IsZero() {
		t.Errorf("Lease = %x, %v; want the session's", id, renewed)
	}
	a.stop()
	if ev := wait(t, a.signals, "OnLeadership for a's stop"); ev.Acquired || ev.Reason != "stopped" {
		t.Errorf("OnLeadership at stop got %+v, want lost, stopped", ev)
	}
	second := wait(t, b.events, "leadership for b")
	if !second.Acquired || second.Token <= first.Token {
		t.Fatalf("b's event %+v, want acquired with a token above %d", second, first.Token)
	}
}

// TestSidecar_Dies: when forkd-cluster dies, the master's Cluster loses
// its leaderships with KillBy at the lease's stop deadline, starts a new
// sidecar, and leads again once the old lease has expired.
func TestSidecar_Dies(t *testing.T) {
	path := sidecarPath(t)
	srv := testkit.StartEtcd(t)
	proxy := testkit.StartProxy(t, srv.Dial)
	a := newClient(t, path, "http://"+proxy.Addr, "a", 2*time.Second)
	a.c.Lead("scheduler", a.events)
	if ev := wait(t, a.events, "leadership"); !ev.Acquired {
		t.Fatalf("first event %+v, want acquired", ev)
	}
	pids := sidecars(t)
	if len(pids) != 1 {
		t.Fatalf("the test has children %v, want one forkd-cluster", pids)
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	lost := wait(t, a.events, "lost leadership")
	if lost.Acquired || lost.Reason != "forkd-cluster exited" || lost.KillBy.IsZero() {
		t.Fatalf("event %+v, want lost (forkd-cluster exited) with a KillBy", lost)
	}
	if again := wait(t, a.events, "leadership again"); !again.Acquired {
		t.Fatalf("event %+v, want acquired again", again)
	}
}

// sidecars lists this process's children that run this test binary: its
// forkd-cluster sidecars.
func sidecars(t *testing.T) []int {
	t.Helper()
	self := testkit.Executable(t)
	tasks, err := filepath.Glob("/proc/self/task/*/children")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, w := range strings.Fields(string(b)) {
			pid, err := strconv.Atoi(w)
			if err != nil {
				continue
			}
			if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && exe == self {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// TestSidecar_HandoverResume: Handover detaches the sidecar and keeps its
// socket open across execve; Resume (the upgrade failed) talks to it
// again, and the leadership and the session are still there.
func TestSidecar_HandoverResume(t *testing.T) {
	path := sidecarPath(t)
	srv := testkit.StartEtcd(t)
	proxy := testkit.StartProxy(t, srv.Dial)
	a := newClient(t, path, "http://"+proxy.Addr, "a", 10*time.Second)
	a.c.Lead("scheduler", a.events)
	first := wait(t, a.events, "leadership")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	agent, err := a.c.Handover(ctx)
	if err != nil || agent == nil {
		t.Fatalf("Handover = %+v, %v", agent, err)
	}
	if pids := sidecars(t); len(pids) != 1 || pids[0] != agent.PID {
		t.Errorf("Handover names pid %d, the sidecars are %v", agent.PID, pids)
	}
	if flags, err := unix.FcntlInt(uintptr(agent.FD), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC != 0 {
		t.Errorf("the handed-over socket's fd flags %#x, %v: want it kept across execve", flags, err)
	}
	if _, err := a.c.Holder(ctx, "scheduler"); err == nil {
		t.Error("Holder answered while the sidecar is handed over")
	}
	a.c.Resume()
	if h, err := a.c.Holder(ctx, "scheduler"); err != nil || h != "a" {
		t.Fatalf("after Resume Holder = %q, %v; want a", h, err)
	}
	if flags, err := unix.FcntlInt(uintptr(agent.FD), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("after Resume the socket's fd flags %#x, %v: want close-on-exec", flags, err)
	}
	if id, _ := a.c.Lease(); id == 0 {
		t.Error("after Resume no lease")
	}
	select {
	case ev := <-a.events:
		if !ev.Acquired || ev.Token != first.Token {
			t.Errorf("after Resume event %+v, want the leadership replayed (token %d)", ev, first.Token)
		}
	case <-time.After(testTimeout):
		t.Fatal("after Resume the leadership was not replayed")
	}
}

// deadMaster is a master's side of forkd-cluster spoken by hand, so that
// the test can end it as a dead master would: its socket closed without
// "stop".
type deadMaster struct {
	conn *os.File
	enc  *json.Encoder
	dec  *json.Decoder
	exit <-chan error
}

// newDeadMaster starts a forkd-cluster at path as member name, leads job
// and waits until it holds it.
func newDeadMaster(t *testing.T, path, endpoint, name, job string, ttl time.Duration) *deadMaster {
	t.Helper()
	proc, conn, _, err := libexec.Start(path)
	if err != nil {
		t.Fatal(err)
	}
	m := &deadMaster{conn: conn, enc: json.NewEncoder(conn), dec: json.NewDecoder(conn), exit: libexec.Exited(proc)}
	t.Cleanup(func() {
		conn.Close()
		_ = proc.Kill()
		<-m.exit
	})
	cc := config.Cluster{Endpoints: []string{endpoint}, Name: "shop", LeaseTTL: config.Duration{Duration: ttl}}
	m.send(t, cluster.Request{Op: cluster.OpHello, Hello: &cluster.Hello{Cluster: cc, ServerName: name, Member: name}})
	m.send(t, cluster.Request{Op: cluster.OpLead, Job: job})
	_ = conn.SetReadDeadline(time.Now().Add(testTimeout))
	for {
		var msg cluster.Message
		if err := m.dec.Decode(&msg); err != nil {
			t.Fatalf("%s's forkd-cluster: %v before leading %s", name, err, job)
		}
		if msg.Kind == cluster.KindEvent && msg.Event.Acquired {
			return m
		}
	}
}

func (m *deadMaster) send(t *testing.T, r cluster.Request) {
	t.Helper()
	if err := m.enc.Encode(r); err != nil {
		t.Fatal(err)
	}
}

// startSleep starts a process that stands for a singleton, killed when
// the test ends.
func startSleep(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// masterDies makes member a lead "scheduler" with a singleton process
// named by "running", member b campaign for it too, and then a's master
// die; it returns b and a's singleton, still running.
func masterDies(t *testing.T, ttl time.Duration) (*client, *exec.Cmd) {
	t.Helper()
	path := sidecarPath(t)
	srv := testkit.StartEtcd(t)
	proxy := testkit.StartProxy(t, srv.Dial)
	ep := "http://" + proxy.Addr
	a := newDeadMaster(t, path, ep, "a", "scheduler", ttl)
	sg := startSleep(t)
	a.send(t, cluster.Request{Op: cluster.OpRunning, Job: "scheduler", PID: sg.Process.Pid})
	b := newClient(t, path, ep, "b", ttl)
	b.c.Lead("scheduler", b.events)
	ready(t, b.c)
	a.conn.Close()
	return b, sg
}

// TestSidecar_MasterDiedWaitsForSingleton: when the master dies (its
// socket ends without "stop"), its sidecar revokes the lease only once
// the singleton process named by "running" has exited: the other member
// does not lead while that process lives, and leads at once after it
// exits, long before the 10 s lease could expire.
func TestSidecar_MasterDiedWaitsForSingleton(t *testing.T) {
	b, sg := masterDies(t, 10*time.Second)
	select {
	case ev := <-b.events:
		t.Fatalf("b got %+v while a's singleton still ran", ev)
	case <-time.After(2500 * time.Millisecond): // the master's own wait is a second
	}
	_ = sg.Process.Kill()
	_ = sg.Wait()
	killed := time.Now()
	if ev := wait(t, b.events, "leadership for b"); !ev.Acquired {
		t.Fatalf("b's event %+v, want acquired", ev)
	}
	if d := time.Since(killed); d > 5*time.Second {
		t.Errorf("b led %v after a's singleton exited: a's lease was not revoked", d)
	}
}

// TestSidecar_MasterDiedSingletonStuck: a singleton that outlives its
// master does not keep the lease past lease_ttl after the master died:
// the sidecar revokes it anyway, and the other member leads.
func TestSidecar_MasterDiedSingletonStuck(t *testing.T) {
	b, sg := masterDies(t, 2*time.Second)
	if ev := wait(t, b.events, "leadership for b while a's singleton still runs"); !ev.Acquired {
		t.Fatalf("b's event %+v, want acquired", ev)
	}
	if err := sg.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("a's singleton is gone already (%v): the test proves nothing", err)
	}
}
