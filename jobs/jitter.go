package jobs

import (
	"math/rand/v2"
	"time"
)

// Delay returns the random delay of one run for `jitter`, as systemd's
// RandomizedDelaySec=: uniform in [0, jitter), drawn from r (math/rand/v2's
// global source if r is nil); 0 when jitter is 0 or less. The run starts
// that long after its due time; the next due time does not move.
func Delay(jitter time.Duration, r *rand.Rand) time.Duration {
	if jitter <= 0 {
		return 0
	}
	if r == nil {
		return rand.N(jitter)
	}
	return time.Duration(r.Int64N(int64(jitter)))
}
