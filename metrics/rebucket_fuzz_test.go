package metrics

import (
	"testing"
	"time"

	"github.com/forkd/forkd/sdk/reqstats"
)

// FuzzRebucket feeds the recorder's path for a worker's report any
// FORKD_REQUEST_STATS value: one that parses is folded into Bounds'
// buckets without losing or adding a request, and its quantiles stay
// within the bounds.
func FuzzRebucket(f *testing.F) {
	for _, seed := range []string{"3;1000,5000;1,1,1", "5;;5", "2;7,900000000;0,1,1", "1;1000;x", "0;1;0,0"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, value string) {
		st, err := reqstats.Parse(value)
		if err != nil {
			return
		}
		counts := rebucket(st.Bounds, st.Counts)
		if len(counts) != len(Bounds)+1 {
			t.Fatalf("rebucket(%q) has %d buckets", value, len(counts))
		}
		var sum uint64
		for _, c := range counts {
			sum += c
		}
		if sum != st.Requests {
			t.Fatalf("rebucket(%q) holds %d requests, want %d", value, sum, st.Requests)
		}
		var w window
		now := time.Now()
		w.add(now, counts)
		for _, q := range []float64{0.5, 0.99} {
			v, ok := w.quantile(now, q)
			if ok != (sum > 0) || v < 0 || v > Bounds[len(Bounds)-1] {
				t.Fatalf("quantile %v of %q = %v, %v", q, value, v, ok)
			}
		}
	})
}
