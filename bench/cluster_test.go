package bench

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/forkd/forkd/bench/benchworker"
	"github.com/forkd/forkd/internal/testkit"
)

// clusterDoc describes scenario 21 in docs/BENCHMARKS.md.
const clusterDoc = `- **21 cluster** (forkd only). A one-member etcd (Debian's etcd-server)
  on a unix socket in a temporary directory, reached over loopback TCP.
  Failover: 3 forkd (1 bench worker each, ` + "`[cluster]`" + ` lease_ttl 2 s and
  stop_margin 1 s) with one ` + "`[[singleton]]`" + ` of ` + "`scope = \"cluster\"`" + ` (the bench
  worker, on the sockets, reporting to its own probe socket); SIGKILL the
  forkd whose child the running singleton is, and time the kill → the next
  singleton's "start" probe (its first clock reading), 10 times (the killed
  forkd is started again between kills). Idle etcd load: one forkd with 64
  ` + "`[[schedule]]`" + ` tables of ` + "`scope = \"cluster\"`" + ` every 1 s (bench-run),
  and etcd's own /metrics (grpc_server_msg_received_total: every unary
  request and every message on a stream) read 10 s apart once the schedules
  run: requests per second, all of them and the lease keep-alives alone
  (one stream, so one LeaseKeepAlive stream started).
`

// Scenario 21's shape.
const (
	clusterLease   = 2 * time.Second
	clusterMargin  = time.Second
	clusterKills   = 10
	clusterWindow  = 10 * time.Second
	clusterMembers = 3
)

// clusterTOML is the [cluster] table of scenario 21.
func clusterTOML(endpoint string) string {
	return fmt.Sprintf("\n[cluster]\nendpoints = [%q]\nname = \"bench\"\nlease_ttl = %q\nstop_margin = %q\n",
		endpoint, clusterLease.String(), clusterMargin.String())
}

// parentPID returns pid's parent, from /proc.
func parentPID(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 2 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	return strconv.Atoi(fields[1])
}

// BenchmarkCluster is scenario 21 (forkd only): the failover time of a
// cluster singleton after SIGKILL of its holder's forkd, against
// lease_ttl, and the etcd requests per second of an idle forkd with 64
// cluster schedules.
func BenchmarkCluster(b *testing.B) {
	s := env(b)
	etcd := testkit.StartEtcd(b)
	const sc = "21 cluster, etcd on loopback (forkd only)"
	one := func(v float64) pair { return pair{v, math.NaN()} }

	failover := clusterFailover(b, s, etcd)
	b.Logf("failover after SIGKILL (lease_ttl %v): median %.0f ms, max %.0f ms over %d", clusterLease,
		failover.Median(), failover.Max(), len(failover))
	report.Add(row(sc, fmt.Sprintf("SIGKILL of the holder's forkd → the next singleton started, median of %d", clusterKills),
		"ms", Goal{Text: fmt.Sprintf("≤ lease_ttl + 1 s = %v", clusterLease+time.Second),
			Limit: ms(clusterLease + time.Second)}, one(failover.Median())))
	report.Add(row(sc, "the same, max", "ms", Goal{Text: fmt.Sprintf("≤ %v", clusterLease+time.Second),
		Limit: ms(clusterLease + time.Second)}, one(failover.Max())))
	report.Add(row(sc, "failover median / lease_ttl", "", Goal{}, one(failover.Median()/ms(clusterLease))))

	total, keep, streams := clusterIdle(b, s, etcd)
	b.Logf("etcd load of a forkd with %d cluster schedules every 1s: %.1f requests/s, %.2f of them lease keep-alives, %.0f keep-alive streams",
		schedulesCount, total, keep, streams)
	report.Add(row(sc, fmt.Sprintf("etcd requests per second, one forkd with %d cluster schedules every 1 s", schedulesCount),
		"/s", Goal{}, one(total)))
	report.Add(row(sc, "of which lease keep-alives", "/s", Goal{}, one(keep)))
	report.Add(row(sc, "LeaseKeepAlive streams that forkd opened", "", Goal{Text: "1", Limit: 1}, one(streams)))
}

// clusterFailover runs the failover part of scenario 21 and returns the
// kill → next start times, in ms.
func clusterFailover(b *testing.B, s *setup, etcd *testkit.Etcd) Sample {
	singletons, err := ListenInbox(filepath.Join(b.TempDir(), "singletons"))
	if err != nil {
		b.Fatal(err)
	}
	defer singletons.Close()
	proxy := testkit.StartProxy(b, etcd.Dial)
	spec := s.forkdSpec(1, 30*time.Second)
	start := func(i int) *Master {
		m, err := StartForkdWith(s.forkd, func(m *Master) string {
			cfg := strings.Replace(spec.TOML(m.Port, m.Probe.Path()), `name = "bench"`, fmt.Sprintf(`name = "bench%d"`, i), 1)
			return cfg + clusterTOML("http://"+proxy.Addr) + fmt.Sprintf(
				"\n[[singleton]]\nname = \"leader\"\nscope = \"cluster\"\nsockets = true\ncommand = %q\nenv = { %s = %q }\n",
				s.worker, benchworker.EnvProbe, singletons.Path())
		}, nil, "")
		if err != nil {
			b.Fatal(err)
		}
		return m
	}
	members := make([]*Master, clusterMembers)
	for i := range members {
		members[i] = start(i)
	}
	defer func() { // before the idle part, whose etcd load is one forkd's
		for _, m := range members {
			closeMaster(b, m)
		}
	}()
	// holder waits for a singleton started after since and returns its
	// start and the index of the forkd that runs it.
	holder := func(since time.Time) (time.Time, int) {
		evs, err := singletons.WaitEvents(20*time.Second, "a singleton started", func(evs []Event) bool {
			for _, e := range evs {
				if e.Kind == benchworker.KindStart && e.At.After(since) {
					return true
				}
			}
			return false
		})
		if err != nil {
			b.Fatal(err)
		}
		for _, e := range evs {
			if e.Kind != benchworker.KindStart || !e.At.After(since) {
				continue
			}
			ppid, err := parentPID(e.PID)
			if err != nil {
				b.Fatalf("the singleton %d: %v", e.PID, err)
			}
			for i, m := range members {
				if m.PID() == ppid {
					return e.At, i
				}
			}
			b.Fatalf("the singleton %d's parent %d is none of the forkd", e.PID, ppid)
		}
		panic("unreachable")
	}
	var times Sample
	_, h := holder(time.Time{})
	for range clusterKills {
		killed := time.Now()
		if err := syscall.Kill(members[h].PID(), syscall.SIGKILL); err != nil {
			b.Fatal(err)
		}
		at, next := holder(killed)
		times = append(times, ms(at.Sub(killed)))
		closeMaster(b, members[h])
		members[h] = start(h)
		h = next
	}
	return times
}

// clusterIdle runs the idle-load part of scenario 21 and returns etcd's
// requests per second, those of the lease keep-alives, and the
// LeaseKeepAlive streams started.
func clusterIdle(b *testing.B, s *setup, etcd *testkit.Etcd) (total, keep, streams float64) {
	run, err := runBinary.build()
	if err != nil {
		b.Fatal(err)
	}
	proxy := testkit.StartProxy(b, etcd.Dial)
	spec := s.forkdSpec(1, 30*time.Second)
	ctx := context.Background()
	streams0, err := etcd.Metrics(ctx, "grpc_server_started_total", `grpc_method="LeaseKeepAlive"`)
	if err != nil {
		b.Fatal(err)
	}
	m, err := StartForkdWith(s.forkd, func(m *Master) string {
		tables, _ := schedulesTOML(run, m.Probe.Path())
		tables = strings.ReplaceAll(tables, "\n[[schedule]]\n", "\n[[schedule]]\nscope = \"cluster\"\n")
		return spec.TOML(m.Port, m.Probe.Path()) + clusterTOML("http://"+proxy.Addr) + tables
	}, nil, "")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { closeMaster(b, m) })
	if _, err := m.Probe.Wait(20*time.Second, "cluster schedules running", func(ms []Message) bool {
		return len(ParseRuns(ms)) >= 2*schedulesCount
	}); err != nil {
		b.Fatalf("%v\n%s", err, m.Output())
	}
	read := func() (float64, float64) {
		all, err := etcd.Metrics(ctx, "grpc_server_msg_received_total")
		if err != nil {
			b.Fatal(err)
		}
		ka, err := etcd.Metrics(ctx, "grpc_server_msg_received_total", `grpc_method="LeaseKeepAlive"`)
		if err != nil {
			b.Fatal(err)
		}
		return all, ka
	}
	all0, ka0 := read()
	t0 := time.Now()
	<-time.After(clusterWindow) // the window is a span of time
	all1, ka1 := read()
	secs := time.Since(t0).Seconds()
	streams1, err := etcd.Metrics(ctx, "grpc_server_started_total", `grpc_method="LeaseKeepAlive"`)
	if err != nil {
		b.Fatal(err)
	}
	// The two /metrics reads are plain HTTP, not gRPC: they count nothing.
	return (all1 - all0) / secs, (ka1 - ka0) / secs, streams1 - streams0
}
