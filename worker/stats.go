package worker

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// The two fields the SDK adds to sd_notify(3)'s vocabulary. Server.Run
// sends both in one datagram on NOTIFY_SOCKET, at most once per
// Server.ReportEvery and only when requests finished since the last report
// (plus one last report as it returns, for requests that finished since
// the last tick):
//
//	FORKD_REQUESTS=1234
//	FORKD_REQUEST_STATS=17;1000,5000,10000;9,5,2,1
//
// systemd ignores fields it does not know, so a worker using the SDK runs
// under plain systemd too.
const (
	// FieldRequests carries the number of requests the worker finished
	// since it started, in decimal. forkd recycles the worker once it
	// reaches max_requests.
	FieldRequests = "FORKD_REQUESTS"
	// FieldRequestStats carries the latency histogram of the requests
	// finished since the previous report, as written by Stats.String and
	// read by ParseRequestStats. forkd forwards it as a D-Bus RequestStats
	// signal.
	FieldRequestStats = "FORKD_REQUEST_STATS"
)

// ErrMalformedStats is wrapped by the errors ParseRequestStats returns.
var ErrMalformedStats = errors.New("worker: malformed request stats")

// DefaultBounds returns the latency bucket bounds a Server uses when its
// Bounds field is empty: 1ms, 5ms, 10ms, 25ms, 50ms, 100ms, 250ms, 500ms,
// 1s, 2.5s and 5s. Each call returns a new slice.
func DefaultBounds() []time.Duration {
	return []time.Duration{
		1 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond,
		25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond,
		250 * time.Millisecond, 500 * time.Millisecond,
		1 * time.Second, 2500 * time.Millisecond, 5 * time.Second,
	}
}

// Stats is one period's latency histogram: the value of a
// FORKD_REQUEST_STATS field.
type Stats struct {
	// Requests is how many requests finished in the period; it equals the
	// sum of Counts.
	Requests uint64
	// Bounds are the buckets' upper bounds, strictly increasing, each a
	// positive whole number of microseconds.
	Bounds []time.Duration
	// Counts has len(Bounds)+1 entries: Counts[i] requests took at most
	// Bounds[i] and more than Bounds[i-1] (more than 0 for i = 0); the
	// last entry counts the requests slower than every bound.
	Counts []uint64
}

// String formats s as the value of a FORKD_REQUEST_STATS field:
//
//	<Requests>;<bound1 µs>,…,<boundN µs>;<count1>,…,<countN+1>
//
// ParseRequestStats(s.String()) returns s when s is well-formed. Bounds
// are written in whole microseconds; a fraction of one is dropped.
func (s Stats) String() string {
	var b strings.Builder
	b.WriteString(strconv.FormatUint(s.Requests, 10))
	b.WriteByte(';')
	for i, bound := range s.Bounds {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(int64(bound/time.Microsecond), 10))
	}
	b.WriteByte(';')
	for i, c := range s.Counts {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatUint(c, 10))
	}
	return b.String()
}

// ParseRequestStats parses the value of a FORKD_REQUEST_STATS field (the
// text after "FORKD_REQUEST_STATS="), as Stats.String writes it. It
// returns an error wrapping ErrMalformedStats unless the value has three
// ';'-separated parts, every number is a decimal without sign that fits in
// 64 bits, the bounds are positive and strictly increasing, there is one
// count more than there are bounds, and the counts sum to the request
// count. The bounds may be empty ("3;;3": a single bucket).
func ParseRequestStats(value string) (Stats, error) {
	bad := func(format string, args ...any) (Stats, error) {
		return Stats{}, fmt.Errorf("%w %q: %s", ErrMalformedStats, value, fmt.Sprintf(format, args...))
	}
	parts := strings.Split(value, ";")
	if len(parts) != 3 {
		return bad("want 3 ';'-separated parts, got %d", len(parts))
	}
	requests, err := strconv.ParseUint(parts[0], 10, 64)
	if err != nil {
		return bad("request count %q is not a decimal number", parts[0])
	}
	var bounds []time.Duration
	if parts[1] != "" {
		for i, field := range strings.Split(parts[1], ",") {
			usec, err := strconv.ParseUint(field, 10, 64)
			if err != nil || usec > math.MaxInt64/uint64(time.Microsecond) {
				return bad("bound %d %q is not a number of microseconds", i+1, field)
			}
			bound := time.Duration(usec) * time.Microsecond
			if bound <= 0 {
				return bad("bound %d is 0", i+1)
			}
			if i > 0 && bound <= bounds[i-1] {
				return bad("bound %d (%v) is not above bound %d (%v)", i+1, bound, i, bounds[i-1])
			}
			bounds = append(bounds, bound)
		}
	}
	fields := strings.Split(parts[2], ",")
	if len(fields) != len(bounds)+1 {
		return bad("%d bounds need %d counts, got %d", len(bounds), len(bounds)+1, len(fields))
	}
	counts := make([]uint64, len(fields))
	var sum uint64
	for i, field := range fields {
		c, err := strconv.ParseUint(field, 10, 64)
		if err != nil {
			return bad("count %d %q is not a decimal number", i+1, field)
		}
		if sum+c < sum {
			return bad("counts overflow")
		}
		sum += c
		counts[i] = c
	}
	if sum != requests {
		return bad("counts sum to %d, not to the request count %d", sum, requests)
	}
	return Stats{Requests: requests, Bounds: bounds, Counts: counts}, nil
}

// checkBounds reports why bounds cannot be a Server's histogram bounds, or
// nil if they can.
func checkBounds(bounds []time.Duration) error {
	for i, b := range bounds {
		switch {
		case b <= 0:
			return fmt.Errorf("bound %d (%v) is not positive", i, b)
		case b%time.Microsecond != 0:
			return fmt.Errorf("bound %d (%v) is not a whole number of microseconds", i, b)
		case i > 0 && b <= bounds[i-1]:
			return fmt.Errorf("bound %d (%v) is not above bound %d (%v)", i, b, i-1, bounds[i-1])
		}
	}
	return nil
}

// recorder counts finished requests into latency buckets. observe is
// called by any number of request goroutines; take and the total belong to
// the one goroutine that reports.
type recorder struct {
	bounds []time.Duration
	counts []atomic.Uint64 // len(bounds)+1; reset by take
	total  uint64          // requests finished before the last take
}

func newRecorder(bounds []time.Duration) *recorder {
	return &recorder{bounds: bounds, counts: make([]atomic.Uint64, len(bounds)+1)}
}

// observe counts one request that took d.
func (r *recorder) observe(d time.Duration) {
	i := sort.Search(len(r.bounds), func(i int) bool { return d <= r.bounds[i] })
	r.counts[i].Add(1)
}

// take returns the notify message reporting the requests finished since
// the previous take (both fields, one per line), or "" if none did.
// Each request is reported by exactly one take.
func (r *recorder) take() string {
	period := Stats{Bounds: r.bounds, Counts: make([]uint64, len(r.counts))}
	for i := range r.counts {
		period.Counts[i] = r.counts[i].Swap(0)
		period.Requests += period.Counts[i]
	}
	if period.Requests == 0 {
		return ""
	}
	r.total += period.Requests
	return FieldRequests + "=" + strconv.FormatUint(r.total, 10) + "\n" +
		FieldRequestStats + "=" + period.String()
}
