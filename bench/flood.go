package bench

import (
	"strconv"
	"strings"
	"time"

	"github.com/forkd/forkd/bench/benchworker"
)

// Sent is a flood progress report: by then, PID had sent Count datagrams.
type Sent struct {
	// PID is the flooding worker.
	PID int
	// Count is how many flood datagrams the worker had sent in all.
	Count uint64
	// At is the worker's timestamp of the report.
	At time.Time
	// Final is set on the report sent when the flood was toggled off.
	Final bool
}

// ParseSent returns the flood reports ("sent PID COUNT UNIX-NANOS", or
// "flooded …" when toggled off) among msgs, in order.
func ParseSent(msgs []Message) []Sent {
	var out []Sent
	for _, m := range msgs {
		f := strings.Fields(m.Data)
		if len(f) != 4 || (f[0] != benchworker.KindSent && f[0] != benchworker.KindFlooded) {
			continue
		}
		pid, err1 := strconv.Atoi(f[1])
		n, err2 := strconv.ParseUint(f[2], 10, 64)
		ns, err3 := strconv.ParseInt(f[3], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil || pid <= 0 {
			continue
		}
		out = append(out, Sent{PID: pid, Count: n, At: time.Unix(0, ns), Final: f[0] == benchworker.KindFlooded})
	}
	return out
}

// FloodRate returns the datagrams per second the flood reports in sents
// show between from and to: for each pid, the count difference between its
// first and last report in the span over their time difference, summed.
func FloodRate(sents []Sent, from, to time.Time) float64 {
	type span struct{ first, last Sent }
	by := map[int]*span{}
	for _, s := range sents {
		if s.At.Before(from) || s.At.After(to) {
			continue
		}
		if sp, ok := by[s.PID]; ok {
			sp.last = s
		} else {
			by[s.PID] = &span{first: s, last: s}
		}
	}
	var rate float64
	for _, sp := range by {
		if d := sp.last.At.Sub(sp.first.At).Seconds(); d > 0 {
			rate += float64(sp.last.Count-sp.first.Count) / d
		}
	}
	return rate
}
