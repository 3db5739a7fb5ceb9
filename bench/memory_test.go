package bench

import (
	"math"
	"testing"
	"time"

	"github.com/forkd/forkd/bench/benchworker"
)

// BenchmarkMaxMemory is scenario 11 (forkd only): a worker that grows past
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
	evs, err := m.WaitReady(1, 30*time.Second)
	if err != nil {
		b.Fatalf("%v\n%s", err, m.Output())
	}
	seen := ReadyPIDs(evs)
	var delays []time.Duration
	for round := range 5 {
		from := time.Now()
		body, err := m.Get("/grow?mb=96")
		if err != nil {
			b.Fatalf("round %d: %v (%s)\n%s", round, err, body, m.Output())
		}
		grown := time.Now() // the worker is past max_memory by now
		b.Logf("round %d: %s", round, body)
		var succ Event
		if _, err := m.Probe.WaitEvents(10*time.Second, "the replacement of the worker past max_memory", func(evs []Event) bool {
			for _, ev := range evs {
				if ev.Kind == benchworker.KindStart && seen[ev.PID].IsZero() && !ev.At.Before(from) {
					succ = ev
					return true
				}
			}
			return false
		}); err != nil {
			b.Fatalf("round %d: %v\n%s", round, err, m.Output())
		}
		delays = append(delays, succ.At.Sub(grown))
		// The replacement serves, and the grown worker has stopped,
		// before the next round grows the one worker left.
		if _, err := m.Probe.WaitEvents(30*time.Second, "the replacement ready, the grown worker stopped", func(evs []Event) bool {
			stopped := false
			for _, ev := range evs {
				stopped = stopped || ev.Kind == benchworker.KindStop && !seen[ev.PID].IsZero() && !ev.At.Before(from)
			}
			return stopped && !ReadyPIDs(evs)[succ.PID].IsZero()
		}); err != nil {
			b.Fatalf("round %d: %v\n%s", round, err, m.Output())
		}
		seen = ReadyPIDs(m.Probe.Events())
	}
	assertServes(b, m, m.Probe.Events())
	closeMaster(b, m)

	d := Durations(delays)
	b.Logf("max_memory crossing → replacement started: %v", delays)
	b.ReportMetric(d.Median(), "ms-median")
	b.ReportMetric(d.Max(), "ms-max")
	const sc = "11 max_memory = 64M, a worker growing by 96 MiB (forkd only, RSS sampled without Delegate=)"
	one := func(v float64) pair { return pair{v, math.NaN()} }
	report.Add(row(sc, "crossing → replacement started, median of 5", "ms", Goal{Text: "≤ 1000", Limit: 1000}, one(d.Median())))
	report.Add(row(sc, "crossing → replacement started, slowest of 5", "ms", Goal{Text: "≤ 1000", Limit: 1000}, one(d.Max())))
}
