package bench

import (
	"math"
	"slices"
	"time"
)

// Sample is a set of measurements of one figure.
type Sample []float64

// Durations returns the durations as a Sample in milliseconds.
func Durations(ds []time.Duration) Sample {
	s := make(Sample, len(ds))
	for i, d := range ds {
		s[i] = float64(d) / float64(time.Millisecond)
	}
	return s
}

// Quantile returns the q-quantile (0 ≤ q ≤ 1) by the nearest-rank method:
// the smallest value with at least q of the sample at or below it. It
// returns NaN for an empty sample.
func (s Sample) Quantile(q float64) float64 {
	if len(s) == 0 {
		return math.NaN()
	}
	v := slices.Clone(s)
	slices.Sort(v)
	rank := int(math.Ceil(q * float64(len(v))))
	return v[min(max(rank-1, 0), len(v)-1)]
}

// Median returns the sample's median (the lower one for an even count).
func (s Sample) Median() float64 { return s.Quantile(0.5) }

// Max returns the largest value, NaN for an empty sample.
func (s Sample) Max() float64 { return s.Quantile(1) }
