package bench

import (
	"sort"
	"strconv"
	"strings"
	"time"
)

// KindRun is the first word of the datagram a schedule run of
// bench/cmd/bench-run sends: "run PID START-UNIX-NANOS SCHEDULE
// SCHEDULED-AT RUN-ID", SCHEDULED-AT in RFC 3339, an empty value as "-".
const KindRun = "run"

// RunReport is what one schedule run reported about itself.
type RunReport struct {
	// PID is the run's pid.
	PID int
	// Started is the run's own first clock reading.
	Started time.Time
	// Schedule is its FORKD_SCHEDULE.
	Schedule string
	// ScheduledAt is its FORKD_SCHEDULED_AT: the due time forkd started
	// it for.
	ScheduledAt time.Time
	// RunID is its FORKD_RUN_ID.
	RunID string
}

// Delay is how late the run started: Started − ScheduledAt.
func (r RunReport) Delay() time.Duration { return r.Started.Sub(r.ScheduledAt) }

// ParseRun parses a run's datagram and reports whether data was one.
func ParseRun(data string) (RunReport, bool) {
	f := strings.Fields(data)
	if len(f) != 6 || f[0] != KindRun {
		return RunReport{}, false
	}
	pid, err1 := strconv.Atoi(f[1])
	ns, err2 := strconv.ParseInt(f[2], 10, 64)
	at, err3 := time.Parse(time.RFC3339Nano, f[4])
	if err1 != nil || err2 != nil || err3 != nil || pid <= 0 || f[3] == "-" {
		return RunReport{}, false
	}
	return RunReport{PID: pid, Started: time.Unix(0, ns), Schedule: f[3], ScheduledAt: at, RunID: f[5]}, true
}

// ParseRuns returns the run reports among msgs, in order.
func ParseRuns(msgs []Message) []RunReport {
	var out []RunReport
	for _, m := range msgs {
		if r, ok := ParseRun(m.Data); ok {
			out = append(out, r)
		}
	}
	return out
}

// RunTally is how the runs of some schedules kept to their due times over
// a window.
type RunTally struct {
	// Due is the number of due times in the window, over all schedules.
	Due int
	// Runs are the runs due in the window, one per (schedule, due time):
	// the first that reported.
	Runs []RunReport
	// Missed counts due times in the window with no run.
	Missed int
	// Doubled counts the runs beyond the first for one schedule and due
	// time.
	Doubled int
	// OffGrid counts runs due in the window at a time that is not one of
	// their schedule's due times.
	OffGrid int
}

// Delays returns the runs' start delays (RunReport.Delay) in ms.
func (t RunTally) Delays() Sample {
	s := make(Sample, len(t.Runs))
	for i, r := range t.Runs {
		s[i] = float64(r.Delay()) / float64(time.Millisecond)
	}
	return s
}

// TallyRuns checks the runs of the schedules named in names against their
// due times in [from, to), each due every period on a grid through the due
// time of its earliest run (a schedule without any run: through
// from.Truncate(period)). Runs of other schedules are left out.
func TallyRuns(runs []RunReport, names []string, period time.Duration, from, to time.Time) RunTally {
	var t RunTally
	type key struct {
		name string
		at   int64
	}
	seen := map[key]bool{}
	anchor := map[string]time.Time{}
	for _, name := range names {
		anchor[name] = time.Time{}
	}
	for _, r := range runs {
		if a, ok := anchor[r.Schedule]; ok && (a.IsZero() || r.ScheduledAt.Before(a)) {
			anchor[r.Schedule] = r.ScheduledAt
		}
	}
	for _, r := range runs {
		if _, ok := anchor[r.Schedule]; !ok || r.ScheduledAt.Before(from) || !r.ScheduledAt.Before(to) {
			continue
		}
		if r.ScheduledAt.Sub(anchor[r.Schedule])%period != 0 {
			t.OffGrid++
			continue
		}
		k := key{r.Schedule, r.ScheduledAt.UnixNano()}
		if seen[k] {
			t.Doubled++
			continue
		}
		seen[k] = true
		t.Runs = append(t.Runs, r)
	}
	for _, name := range names {
		a := anchor[name]
		if a.IsZero() {
			a = from.Truncate(period)
		}
		// The first grid point at or after from.
		d := a.Add(from.Sub(a) / period * period)
		if d.Before(from) {
			d = d.Add(period)
		}
		for ; d.Before(to); d = d.Add(period) {
			t.Due++
			if !seen[key{name, d.UnixNano()}] {
				t.Missed++
			}
		}
	}
	sort.Slice(t.Runs, func(i, j int) bool { return t.Runs[i].Started.Before(t.Runs[j].Started) })
	return t
}
