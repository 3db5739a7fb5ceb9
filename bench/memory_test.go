package bench

import (
	"fmt"
	"math"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/bench/benchworker"
)

// memoryDoc describes scenario 20 in docs/BENCHMARKS.md.
const memoryDoc = `- **20 max_memory** (forkd only). One bench worker under ` + "`max_memory = \"64M\"`" + `;
  GET /grow?mb=96 makes it keep 96 MiB more, touched; the figure is the time
  from the answer to that request (the worker is past max_memory by then) to
  its replacement's "start" probe, five times (each round waits for the
  replacement to serve and the grown worker to stop). make bench runs forkd
  outside a unit with ` + "`Delegate=`" + `, so forkd measures the worker's resident
  memory, sampled every 250 ms (` + "`cgroup.SamplePeriod`" + `); under systemd it reads
  the worker's cgroup on the same period, and at once on its memory events.
`

// BenchmarkMaxMemory is scenario 20 (forkd only): a worker that grows past
// max_memory = 64M (GET /grow?mb=96 on the only worker), five times; the
// figure is the time from the answer to the request that makes it grow
// (the worker is past max_memory by then) to its replacement's "start"
// probe. Outside a unit with Delegate= (as make bench runs)
// forkd measures the worker's resident memory every cgroup.SamplePeriod;
// under systemd it reads the cgroup's memory.current on the same period,
// and at once on memory.high/memory.max events.
func BenchmarkMaxMemory(b *testing.B) {
	s := env(b)
	spec := s.forkdSpec(1, 30*time.Second)
	spec.MaxMemory = "64M"
	m := s.start(b, false, spec)
	if _, err := m.WaitReady(1, 30*time.Second); err != nil {
		b.Fatalf("%v\n%s", err, m.Output())
	}
	var delays []time.Duration
	for round := range 5 {
		from := time.Now()
		body, err := m.Get("/grow?mb=96")
		if err != nil {
			b.Fatalf("round %d: %v (%s)\n%s", round, err, body, m.Output())
		}
		grown := time.Now() // the worker is past max_memory by now
		var mb, pid int
		if _, err := fmt.Sscanf(body, "grown %d %d", &mb, &pid); err != nil {
			b.Fatalf("round %d: answer %q, want \"grown MB PID\"", round, body)
		}
		pidfd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			b.Fatalf("round %d: pidfd_open of the grown worker %d: %v", round, pid, err)
		}
		var succ Event
		if _, err := m.Probe.WaitEvents(10*time.Second, "the replacement of the worker past max_memory", func(evs []Event) bool {
			for _, ev := range evs {
				if ev.Kind == benchworker.KindStart && ev.PID != pid && !ev.At.Before(from) {
					succ = ev
					return true
				}
			}
			return false
		}); err != nil {
			b.Fatalf("round %d: %v\n%s", round, err, m.Output())
		}
		delays = append(delays, succ.At.Sub(grown))
		// The grown worker has exited, and its replacement serves, before
		// the next round grows the one worker left.
		_, err = waitPidfd(pidfd, 30*time.Second)
		unix.Close(pidfd)
		if err != nil {
			b.Fatalf("round %d: the grown worker %d: %v\n%s", round, pid, err, m.Output())
		}
		if _, err := m.Probe.WaitEvents(30*time.Second, "the replacement ready", func(evs []Event) bool {
			return !ReadyPIDs(evs)[succ.PID].IsZero()
		}); err != nil {
			b.Fatalf("round %d: %v\n%s", round, err, m.Output())
		}
	}
	assertServes(b, m, m.Probe.Events())
	closeMaster(b, m)

	d := Durations(delays)
	b.Logf("max_memory crossing → replacement started: %v", delays)
	b.ReportMetric(d.Median(), "ms-median")
	b.ReportMetric(d.Max(), "ms-max")
	const sc = "20 max_memory = 64M, a worker growing by 96 MiB (forkd only, RSS sampled without Delegate=)"
	one := func(v float64) pair { return pair{v, math.NaN()} }
	report.Add(row(sc, "crossing → replacement started, median of 5", "ms", Goal{Text: "≤ 1000", Limit: 1000}, one(d.Median())))
	report.Add(row(sc, "crossing → replacement started, slowest of 5", "ms", Goal{Text: "≤ 1000", Limit: 1000}, one(d.Max())))
}
