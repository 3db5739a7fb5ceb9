package metrics

import (
	"math"
	"time"
)

// Bounds are the upper bounds, in seconds, of the buckets of
// forkd_request_duration_seconds: the Go SDK's default bounds. A worker's
// report with other bounds is re-bucketed: each of its buckets counts in
// the first bucket whose bound is at least its own.
var Bounds = []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

// window is one worker's latency reports over the last minute, in
// Bounds' buckets, for its p50 and p99.
type window struct {
	periods []period
}

// period is one report: when it came and its counts (len(Bounds)+1).
type period struct {
	at     time.Time
	counts []uint64
}

// windowSpan is how far back a worker's latency quantiles look.
const windowSpan = time.Minute

// add records counts, reported at at, and forgets what is older than the
// span.
func (w *window) add(at time.Time, counts []uint64) {
	w.periods = append(w.periods, period{at: at, counts: counts})
	w.trim(at)
}

// trim forgets the periods older than windowSpan before now.
func (w *window) trim(now time.Time) {
	i := 0
	for i < len(w.periods) && now.Sub(w.periods[i].at) > windowSpan {
		i++
	}
	w.periods = w.periods[i:]
}

// quantile returns the q-quantile (0 < q < 1) of the latencies of the last
// minute before now, in seconds, interpolated within its bucket as
// Prometheus' histogram_quantile does; ok is false when no request
// finished in that minute.
func (w *window) quantile(now time.Time, q float64) (seconds float64, ok bool) {
	w.trim(now)
	total := make([]uint64, len(Bounds)+1)
	var n uint64
	for _, p := range w.periods {
		for i, c := range p.counts {
			total[i] += c
			n += c
		}
	}
	if n == 0 {
		return 0, false
	}
	rank := q * float64(n)
	var cum uint64
	for i, c := range total {
		if float64(cum+c) >= rank && c > 0 {
			if i == len(Bounds) {
				return Bounds[len(Bounds)-1], true // slower than every bound: its lowest possible value
			}
			lo := 0.0
			if i > 0 {
				lo = Bounds[i-1]
			}
			return lo + (Bounds[i]-lo)*(rank-float64(cum))/float64(c), true
		}
		cum += c
	}
	return Bounds[len(Bounds)-1], true
}

// rebucket maps a report's counts, with its bounds, to Bounds' buckets.
func rebucket(bounds []time.Duration, counts []uint64) []uint64 {
	out := make([]uint64, len(Bounds)+1)
	for i, c := range counts {
		if c == 0 {
			continue
		}
		j := len(Bounds) // the worker's last bucket: slower than its every bound
		if i < len(bounds) {
			b := bounds[i].Seconds()
			j = len(Bounds)
			for k, mb := range Bounds {
				if b <= mb*(1+1e-9) {
					j = k
					break
				}
			}
		}
		out[j] += c
	}
	return out
}

// estimateSum is the time, in seconds, that counts (in Bounds' buckets)
// took at most by their bounds: the histogram's sum for reports without
// FORKD_REQUEST_SUM_USEC. The last bucket counts at the last bound.
func estimateSum(counts []uint64) float64 {
	s := 0.0
	for i, c := range counts {
		b := Bounds[min(i, len(Bounds)-1)]
		s += float64(c) * b
	}
	if math.IsNaN(s) {
		return 0
	}
	return s
}
