package master

import (
	"context"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/internal/testkit"
)

// The tests' [cluster] lease_ttl and stop_margin: short, so that failovers
// take seconds.
const (
	clusterLease  = 2 * time.Second
	clusterMargin = time.Second
)

// clusterNode is one forkd of a test cluster, reaching etcd through a
// proxy of its own that the test can cut.
type clusterNode struct {
	name  string
	f     *forkd
	proxy *testkit.Proxy
}

// clusterRig is etcd, n forkd instances sharing [cluster] name "shop",
// and a tracker of the jobs' processes.
type clusterRig struct {
	etcd  *testkit.Etcd
	probe *testkit.Notify
	nodes []*clusterNode
	tr    *tracker
	// lease and margin are the [cluster] lease_ttl and stop_margin.
	lease, margin time.Duration
}

// newClusterRig starts etcd and n forkd instances whose configs have the
// tables jobs(probe) returns, with the tests' lease_ttl and stop_margin.
func newClusterRig(t *testing.T, n int, jobs func(probe *testkit.Notify) string) *clusterRig {
	t.Helper()
	return newClusterRigLease(t, n, clusterLease, clusterMargin, jobs)
}

// newClusterRigLease is newClusterRig with lease_ttl lease and
// stop_margin margin.
func newClusterRigLease(t *testing.T, n int, lease, margin time.Duration, jobs func(probe *testkit.Notify) string) *clusterRig {
	t.Helper()
	r := &clusterRig{etcd: testkit.StartEtcd(t), probe: testkit.ListenNotify(t), lease: lease, margin: margin}
	r.tr = track(t, r.probe)
	for i := range n {
		node := &clusterNode{name: fmt.Sprintf("node%d", i), proxy: testkit.StartProxy(t, r.etcd.Dial)}
		node.f = newForkd(t, setup{instance: node.name, workers: 1})
		node.f.writeConfig("serve", clusterTableLease("http://"+node.proxy.Addr, lease, margin)+jobs(r.probe))
		node.f.start()
		r.nodes = append(r.nodes, node)
	}
	return r
}

// clusterTable is the [cluster] table of the test clusters.
func clusterTable(endpoint string) string {
	return clusterTableLease(endpoint, clusterLease, clusterMargin)
}

// clusterTableLease is clusterTable with lease_ttl lease and stop_margin
// margin.
func clusterTableLease(endpoint string, lease, margin time.Duration) string {
	return fmt.Sprintf("\n[cluster]\nendpoints = [%q]\nname = \"shop\"\nlease_ttl = %q\nstop_margin = %q\n",
		endpoint, lease.String(), margin.String())
}

// node returns the node called name.
func (r *clusterRig) node(t *testing.T, name string) *clusterNode {
	t.Helper()
	for _, n := range r.nodes {
		if n.name == name {
			return n
		}
	}
	t.Fatalf("no node %q", name)
	return nil
}

// life is one job process as the tracker saw it: times are CLOCK_BOOTTIME,
// the start from the kernel's record of the process, the exit from its
// pidfd.
type life struct {
	pid         int
	instance    string
	singleton   string
	scheduledAt string
	token       int64
	start, exit time.Duration // exit 0: alive
	// overlapped are the singletons (pids) that had not exited yet when
	// this singleton said it had started.
	overlapped []int
	pidfd      int // -1: none
}

// tracker records every job process that reports to a probe.
type tracker struct {
	mu      sync.Mutex
	lives   []*life
	changed chan struct{} // closed and replaced on every change
}

// boottime is CLOCK_BOOTTIME now.
func boottime() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return time.Duration(ts.Nano())
}

// procStart returns when pid started, CLOCK_BOOTTIME to the kernel's
// tick (/proc/PID/stat's starttime, in USER_HZ = 100 ticks a second).
func procStart(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 20 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ticks, err := strconv.ParseInt(fields[19], 10, 64)
	if err != nil {
		return 0, err
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// track starts recording the processes that report "EVENT=start" to probe,
// until the test ends.
func track(t *testing.T, probe *testkit.Notify) *tracker {
	tr := &tracker{changed: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			n, ok := probe.Within(100 * time.Millisecond)
			if !ok || !n.Has("EVENT=start") {
				continue
			}
			l := &life{pid: int(n.PID)}
			l.instance, _ = n.Field("INSTANCE")
			l.singleton, _ = n.Field("SINGLETON")
			l.scheduledAt, _ = n.Field("SCHEDULED_AT")
			tok, _ := n.Field("TOKEN")
			l.token, _ = strconv.ParseInt(tok, 10, 64)
			exited := testkit.Exited(t, l.pid)
			l.pidfd = pidfd(t, l.pid)
			start, err := procStart(l.pid)
			if err != nil {
				start = boottime()
			}
			l.start = start
			tr.update(func() {
				if l.singleton != "" {
					l.overlapped = tr.running(l.singleton)
				}
				tr.lives = append(tr.lives, l)
			})
			go func() {
				select {
				case <-exited:
					at := boottime()
					tr.update(func() { l.exit = at })
				case <-ctx.Done():
				}
			}()
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return tr
}

// pidfd opens a pidfd of pid, closed when the test ends; -1 when pid has
// gone already.
func pidfd(t *testing.T, pid int) int {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// running returns the processes of singleton recorded so far that have
// not exited, as their pidfds say now (not as the exit watchers have seen
// yet); the caller holds tr.mu.
func (tr *tracker) running(singleton string) []int {
	var pids []int
	for _, l := range tr.lives {
		if l.singleton != singleton || l.pidfd < 0 {
			continue
		}
		if n, err := unix.Poll([]unix.PollFd{{Fd: int32(l.pidfd), Events: unix.POLLIN}}, 0); err == nil && n == 0 {
			pids = append(pids, l.pid)
		}
	}
	return pids
}

// update changes the record under the lock and wakes the waiters.
func (tr *tracker) update(fn func()) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	fn()
	close(tr.changed)
	tr.changed = make(chan struct{})
}

// snapshot returns copies of the lives recorded so far.
func (tr *tracker) snapshot() []life {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	out := make([]life, len(tr.lives))
	for i, l := range tr.lives {
		out[i] = *l
	}
	return out
}

// waitFor waits until cond holds of the lives, failing the test after d.
func (tr *tracker) waitFor(t *testing.T, what string, d time.Duration, cond func([]life) bool) []life {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		tr.mu.Lock()
		changed := tr.changed
		tr.mu.Unlock()
		if lives := tr.snapshot(); cond(lives) {
			return lives
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("not within %v: %s; processes seen: %+v", d, what, tr.snapshot())
		}
	}
}

// aliveSingletons returns the singleton processes alive in lives.
func aliveSingletons(lives []life) []life {
	var alive []life
	for _, l := range lives {
		if l.singleton != "" && l.exit == 0 {
			alive = append(alive, l)
		}
	}
	return alive
}

// waitHolder waits until exactly one singleton process runs, on a node
// other than not, and returns it.
func (tr *tracker) waitHolder(t *testing.T, not string, d time.Duration) life {
	t.Helper()
	lives := tr.waitFor(t, "one singleton on a node other than "+strconv.Quote(not), d, func(lives []life) bool {
		alive := aliveSingletons(lives)
		return len(alive) == 1 && alive[0].instance != not
	})
	return aliveSingletons(lives)[0]
}

// checkOneAtATime fails the test if two singleton processes ever ran at
// once: when a singleton says it has started, every one before it must
// have exited, as its pidfd tells then. (The exit times the watchers
// record come later than the exits by however long they took to be
// scheduled, so comparing them with start times could only guess.)
func (tr *tracker) checkOneAtATime(t *testing.T) {
	t.Helper()
	var ls []life
	for _, l := range tr.snapshot() {
		if l.singleton != "" {
			ls = append(ls, l)
		}
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i].start < ls[j].start })
	for i, cur := range ls {
		for _, pid := range cur.overlapped {
			t.Errorf("two singletons at once: pid %d on %s (start %v) started while pid %d still ran: %+v",
				cur.pid, cur.instance, cur.start, pid, ls)
		}
		if i == 0 {
			continue
		}
		prev := ls[i-1]
		if cur.token <= prev.token {
			t.Errorf("fencing token went from %d (pid %d on %s) to %d (pid %d on %s): it must grow",
				prev.token, prev.pid, prev.instance, cur.token, cur.pid, cur.instance)
		}
	}
}

// waitLog waits until one line of f's log holds every one of subs.
func (f *forkd) waitLog(t *testing.T, subs ...string) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		for line := range strings.Lines(f.log()) {
			if all(line, subs) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("forkd did not log a line with %q", subs)
		}
		<-time.After(20 * time.Millisecond)
	}
}

// all reports whether s contains every one of subs.
func all(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// singletonJob is a cluster singleton that runs until TERM.
func singletonJob(probe *testkit.Notify) string {
	return jobTable("singleton", "scheduler", "wait", probe, `scope = "cluster"`)
}

// TestCluster_SingletonFailover: of three forkd, one runs the cluster
// singleton and has told its sidecar the process; SIGKILL its forkd and
// another's runs within lease_ttl + 1s, with a larger fencing token;
// never two at once.
func TestCluster_SingletonFailover(t *testing.T) {
	t.Parallel()
	r := newClusterRig(t, 3, singletonJob)
	first := r.tr.waitHolder(t, "", testTimeout)
	if first.token <= 0 {
		t.Errorf("FORKD_FENCING_TOKEN = %d, want a positive token", first.token)
	}
	holder := r.node(t, first.instance)
	holder.f.waitLog(t, "watching the singleton's process", fmt.Sprintf("pid=%d", first.pid))
	holder.f.signal(syscall.SIGKILL)
	second := r.tr.waitHolder(t, first.instance, clusterLease+time.Second)
	if second.token <= first.token {
		t.Errorf("the new holder's token %d is not above the old one's %d", second.token, first.token)
	}
	r.tr.checkOneAtATime(t)
}

// TestCluster_Partition: the holder cut off from etcd while its forkd
// runs on stops its singleton before another forkd starts one (overlap 0,
// from the processes' start and exit times), says so once in its log, and
// its workers keep serving. Its stop_margin is most of the lease, so that
// a machine that stalls the processes for a second (a loaded CI host)
// does not eat the margin: what a longer stall breaks, only the fencing
// token can catch.
func TestCluster_Partition(t *testing.T) {
	t.Parallel()
	r := newClusterRigLease(t, 3, 4*time.Second, 3*time.Second, singletonJob)
	first := r.tr.waitHolder(t, "", testTimeout)
	holder := r.node(t, first.instance)
	holder.proxy.Cut()
	second := r.tr.waitHolder(t, first.instance, testTimeout)
	var old life
	for _, l := range r.tr.snapshot() {
		if l.pid == first.pid {
			old = l
		}
	}
	if old.exit == 0 || second.start < old.exit {
		t.Errorf("the cut-off holder's singleton exited at %v, the new one started at %v: they overlapped",
			old.exit, second.start)
	}
	r.tr.checkOneAtATime(t)
	if holder.f.exited() {
		t.Fatal("the cut-off forkd exited")
	}
	if _, err := holder.f.ask(); err != nil {
		t.Errorf("the cut-off forkd's workers do not serve: %v", err)
	}
	if n := strings.Count(holder.f.log(), "etcd unreachable: cluster jobs wait"); n != 1 {
		t.Errorf("the cut-off forkd logged \"etcd unreachable\" %d times, want once", n)
	}
}

// TestCluster_EtcdRestart: etcd stopped, every singleton stops; etcd back,
// one runs again.
func TestCluster_EtcdRestart(t *testing.T) {
	t.Parallel()
	r := newClusterRig(t, 3, singletonJob)
	r.tr.waitHolder(t, "", testTimeout)
	r.etcd.Stop()
	r.tr.waitFor(t, "no singleton while etcd is down", clusterLease+time.Second, func(lives []life) bool {
		return len(aliveSingletons(lives)) == 0
	})
	r.etcd.Start()
	r.tr.waitHolder(t, "", testTimeout)
	<-time.After(2 * clusterLease) // a second one would have started by now
	if alive := aliveSingletons(r.tr.snapshot()); len(alive) != 1 {
		t.Errorf("%d singletons run after etcd came back, want 1: %+v", len(alive), alive)
	}
	r.tr.checkOneAtATime(t)
}

// TestCluster_EtcdUnreachable: a forkd whose etcd cannot be reached
// serves, logs it once, and says it in STATUS=; the cluster singleton
// waits.
func TestCluster_EtcdUnreachable(t *testing.T) {
	t.Parallel()
	notify := testkit.ListenNotify(t)
	probe := testkit.ListenNotify(t)
	nowhere := testkit.StartProxy(t, func() (net.Conn, error) {
		return nil, fmt.Errorf("no etcd here")
	})
	f := newForkd(t, setup{instance: "lonely", workers: 1, notify: notify.Path})
	f.writeConfig("serve", clusterTable("http://"+nowhere.Addr)+singletonJob(probe))
	f.start()
	notify.Until("STATUS= saying cluster jobs wait", func(n testkit.Note) bool {
		s, _ := n.Field("STATUS")
		return strings.Contains(s, "cluster jobs wait: etcd unreachable")
	})
	if _, err := f.ask(); err != nil {
		t.Errorf("workers do not serve without etcd: %v", err)
	}
	if notes := probe.Flush(); len(notes) > 0 {
		t.Errorf("the cluster singleton ran without etcd: %q", texts(notes))
	}
	if n := strings.Count(f.log(), "etcd unreachable: cluster jobs wait"); n != 1 {
		t.Errorf("logged \"etcd unreachable\" %d times, want once", n)
	}
}

// TestCluster_Schedule: a 1s cluster schedule over 20s on three forkd, the
// one that ran the latest run SIGKILLed midway: one run per period, none
// doubled, at most the periods of the failover window missed. Then every
// forkd stopped for a few periods and one started again: persistent
// brings one missed run back.
func TestCluster_Schedule(t *testing.T) {
	t.Parallel()
	r := newClusterRig(t, 3, func(probe *testkit.Notify) string {
		return jobTable("schedule", "tick", "once", probe, "scope = \"cluster\"\nevery = \"1s\"\npersistent = true")
	})
	runs := func(lives []life) []life {
		var out []life
		for _, l := range lives {
			if l.scheduledAt != "" {
				out = append(out, l)
			}
		}
		return out
	}
	lives := r.tr.waitFor(t, "8 runs", testTimeout, func(lives []life) bool { return len(runs(lives)) >= 8 })
	last := runs(lives)[len(runs(lives))-1]
	r.node(t, last.instance).f.signal(syscall.SIGKILL)
	killedAt := time.Now()
	r.tr.waitFor(t, "20 runs", 2*testTimeout, func(lives []life) bool { return len(runs(lives)) >= 20 })

	for _, n := range r.nodes {
		if n.name != last.instance {
			n.f.stop()
		}
	}
	stoppedAt := time.Now()
	before := runs(r.tr.snapshot())
	seen := map[time.Time]int{}
	var periods []time.Time
	for _, l := range before {
		at, err := time.Parse(time.RFC3339Nano, l.scheduledAt)
		if err != nil {
			t.Fatalf("FORKD_SCHEDULED_AT %q: %v", l.scheduledAt, err)
		}
		if seen[at]++; seen[at] == 2 {
			t.Errorf("period %v ran twice", at)
		}
		if l.token <= 0 {
			t.Errorf("run for %v has FORKD_FENCING_TOKEN %d", at, l.token)
		}
		periods = append(periods, at)
	}
	sort.Slice(periods, func(i, j int) bool { return periods[i].Before(periods[j]) })
	span := periods[len(periods)-1].Sub(periods[0])/time.Second + 1
	missed := int(span) - len(seen)
	window := int((clusterLease + time.Second) / time.Second)
	t.Logf("%d periods from %v to %v: %d ran, %d missed (forkd killed at %v)", span, periods[0],
		periods[len(periods)-1], len(seen), missed, killedAt.Format(time.RFC3339Nano))
	if missed > window {
		t.Errorf("%d periods missed, more than the %d of the failover window", missed, window)
	}

	<-time.After(3 * time.Second) // periods pass with no forkd running
	restart := r.node(t, r.nodes[0].name)
	if restart.name == last.instance {
		restart = r.nodes[1]
	}
	restartAt := time.Now()
	restart.f.start()
	r.tr.waitFor(t, "a catch-up run for a period while every forkd was down", testTimeout, func(lives []life) bool {
		for _, l := range runs(lives) {
			at, _ := time.Parse(time.RFC3339Nano, l.scheduledAt)
			if at.After(stoppedAt) && at.Before(restartAt) {
				return true
			}
		}
		return false
	})
}

// TestCluster_Upgrade: an in-place upgrade of the holder hands its
// forkd-cluster sidecar (its etcd session and lease) over with the
// singleton: the same process runs on, with no other
// forkd starting one, and the new master holds the leadership.
func TestCluster_Upgrade(t *testing.T) {
	t.Parallel()
	etcd := testkit.StartEtcd(t)
	probe := testkit.ListenNotify(t)
	manager := testkit.ListenNotify(t)
	tr := track(t, probe)
	var nodes []*forkd
	for i, notify := range []string{manager.Path, ""} {
		proxy := testkit.StartProxy(t, etcd.Dial)
		f := newForkd(t, setup{instance: fmt.Sprintf("up%d", i), workers: 1, notify: notify})
		f.writeConfig("serve", clusterTable("http://"+proxy.Addr)+singletonJob(probe))
		f.start()
		nodes = append(nodes, f)
		if i == 0 {
			if first := tr.waitHolder(t, "", testTimeout); first.instance != "up0" {
				t.Fatalf("the singleton runs on %s, want up0, the only forkd yet", first.instance)
			}
		}
	}
	first := aliveSingletons(tr.snapshot())[0]
	manager.Wait("READY=1")
	nodes[0].signal(syscall.SIGUSR2)
	manager.Wait("READY=1")        // the new master's
	<-time.After(2 * clusterLease) // the old lease would have expired by now
	alive := aliveSingletons(tr.snapshot())
	if len(alive) != 1 || alive[0].pid != first.pid {
		t.Errorf("after the upgrade the singletons alive are %+v, want the adopted pid %d alone", alive, first.pid)
	}
	tr.checkOneAtATime(t)
	if log := nodes[0].log(); !strings.Contains(log, "adopted forkd-cluster handed over by the upgrade") ||
		!strings.Contains(log, fmt.Sprintf("leadership acquired\" job=scheduler token=%d", first.token)) {
		t.Errorf("the upgraded master did not take the lease and the leadership (token %d) over", first.token)
	}
}

// TestCluster_ReloadResigns: a reload that removes the cluster singleton
// from the holder's config stops its process, then gives the leadership
// up, and another forkd takes over at once (well before the lease would
// expire).
func TestCluster_ReloadResigns(t *testing.T) {
	t.Parallel()
	r := newClusterRigLease(t, 2, 10*time.Second, 5*time.Second, singletonJob)
	first := r.tr.waitHolder(t, "", testTimeout)
	holder := r.node(t, first.instance)
	holder.f.writeConfig("serve", clusterTableLease("http://"+holder.proxy.Addr, 10*time.Second, 5*time.Second))
	holder.f.signal(syscall.SIGHUP)
	r.tr.waitHolder(t, first.instance, 5*time.Second) // the lease is 10s: only a resign is this quick
	r.tr.checkOneAtATime(t)
}

// TestCluster_SidecarOnlyForClusterJobs: forkd-cluster runs only while
// the config has [cluster] and cluster jobs: not for a config with
// [cluster] and instance jobs alone, but once a reload adds a cluster
// job; an upgrade keeps the one running (the same pid); an upgrade to a
// config without [cluster] ends it.
func TestCluster_SidecarOnlyForClusterJobs(t *testing.T) {
	t.Parallel()
	etcd := testkit.StartEtcd(t)
	probe := testkit.ListenNotify(t)
	manager := testkit.ListenNotify(t)
	proxy := testkit.StartProxy(t, etcd.Dial)
	f := newForkd(t, setup{instance: "side", workers: 1, notify: manager.Path})
	f.writeConfig("serve", clusterTable("http://"+proxy.Addr)+
		jobTable("singleton", "local", "wait", probe, `scope = "instance"`))
	f.start()
	manager.Wait("READY=1")
	probe.Wait("SINGLETON=local")
	if pids := sidecarsOf(f.pid()); len(pids) != 0 {
		t.Fatalf("forkd-cluster runs (pids %v) without cluster jobs", pids)
	}

	f.writeConfig("serve", clusterTable("http://"+proxy.Addr)+singletonJob(probe))
	f.signal(syscall.SIGHUP)
	manager.Wait("READY=1")           // the reload's: the next is the new master's
	probe.Wait("SINGLETON=scheduler") // elected: the sidecar runs
	first := sidecarsOf(f.pid())
	if len(first) != 1 {
		t.Fatalf("forkd-cluster pids %v after a reload that adds a cluster job, want one", first)
	}
	f.signal(syscall.SIGUSR2)
	manager.Wait("READY=1")
	if again := sidecarsOf(f.pid()); len(again) != 1 || again[0] != first[0] {
		t.Errorf("forkd-cluster pids %v after an upgrade, want the adopted %d", again, first[0])
	}

	f.writeConfig("serve", "")
	f.signal(syscall.SIGUSR2)
	manager.Wait("READY=1")
	gone := testkit.Exited(t, first[0])
	select {
	case <-gone:
	case <-time.After(testTimeout):
		t.Fatalf("forkd-cluster %d still runs after an upgrade to a config without [cluster]", first[0])
	}
	if !strings.Contains(f.log(), "forkd-cluster handed over by the upgrade ends") {
		t.Error("the log does not say the sidecar ended")
	}
}

// sidecarsOf lists the children of pid that run as forkd-cluster.
func sidecarsOf(pid int) []int { return childrenAs(pid, "forkd-cluster") }

// childrenAs lists the children of pid that the test binary runs as role.
func childrenAs(pid int, role string) []int {
	var out []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		if err != nil {
			continue
		}
		for _, w := range strings.Fields(string(b)) {
			env, err := os.ReadFile("/proc/" + w + "/environ")
			if err != nil || !strings.Contains("\x00"+string(env)+"\x00", "\x00"+testkit.RoleEnv+"="+role+"\x00") {
				continue
			}
			if child, err := strconv.Atoi(w); err == nil {
				out = append(out, child)
			}
		}
	}
	return out
}
