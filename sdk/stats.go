package sdk

import (
	"fmt"
	"sort"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/forkd/forkd/sdk/reqstats"
)

// The fields the SDK adds to sd_notify(3)'s vocabulary (see package
// reqstats for their format). Server.Run sends them in one datagram on
// NOTIFY_SOCKET, at most once per Server.ReportEvery and only when
// requests finished or the count in progress changed since the last
// report (plus one last report as it returns), with
// FORKD_REQUEST_SUM_USEC and FORKD_REQUESTS_INFLIGHT
// (reqstats.FieldSum, reqstats.FieldInflight). systemd ignores fields it does not know, so a worker using the
// SDK runs under plain systemd too.
const (
	// FieldRequests carries the number of requests the worker finished
	// since it started; forkd recycles the worker once it reaches
	// max_requests.
	FieldRequests = reqstats.FieldRequests
	// FieldRequestStats carries the latency histogram of the requests
	// finished since the previous report; forkd forwards it as a D-Bus
	// RequestStats signal.
	FieldRequestStats = reqstats.FieldRequestStats
)

// ErrMalformedStats is wrapped by the errors ParseRequestStats returns.
var ErrMalformedStats = reqstats.ErrMalformed

// Stats is one period's latency histogram: the value of a
// FORKD_REQUEST_STATS field (see reqstats.Stats).
type Stats = reqstats.Stats

// ParseRequestStats parses the value of a FORKD_REQUEST_STATS field, as
// Stats.String writes it; see reqstats.Parse for what it accepts.
func ParseRequestStats(value string) (Stats, error) {
	return reqstats.Parse(value)
}

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
	sum    atomic.Uint64   // microseconds the counted requests took; reset by take
	total  uint64          // requests finished before the last take
	// inflight is the requests in progress; sentInflight, what the last
	// report said of it (0 before the first).
	inflight     atomic.Int64
	sentInflight int64
}

func newRecorder(bounds []time.Duration) *recorder {
	return &recorder{bounds: bounds, counts: make([]atomic.Uint64, len(bounds)+1)}
}

// begin counts a request in progress, until observe counts it finished.
func (r *recorder) begin() { r.inflight.Add(1) }

// observe counts one request that took d and is no longer in progress.
func (r *recorder) observe(d time.Duration) {
	i := sort.Search(len(r.bounds), func(i int) bool { return d <= r.bounds[i] })
	r.counts[i].Add(1)
	r.sum.Add(uint64(d / time.Microsecond))
	r.inflight.Add(-1)
}

// take returns the notify message reporting the requests finished since
// the previous take (FORKD_REQUESTS, FORKD_REQUEST_STATS and
// FORKD_REQUEST_SUM_USEC, one per line) and the requests in progress
// (FORKD_REQUESTS_INFLIGHT), or "" if no request finished and the count in
// progress is what the previous report said. Each request is reported by
// exactly one take.
func (r *recorder) take() string {
	period := Stats{Bounds: r.bounds, Counts: make([]uint64, len(r.counts))}
	for i := range r.counts {
		period.Counts[i] = r.counts[i].Swap(0)
		period.Requests += period.Counts[i]
	}
	sum := r.sum.Swap(0)
	inflight := max(r.inflight.Load(), 0)
	if period.Requests == 0 && inflight == r.sentInflight {
		return ""
	}
	r.sentInflight = inflight
	msg := reqstats.FieldInflight + "=" + strconv.FormatInt(inflight, 10)
	if period.Requests == 0 {
		return msg
	}
	r.total += period.Requests
	return FieldRequests + "=" + strconv.FormatUint(r.total, 10) + "\n" +
		FieldRequestStats + "=" + period.String() + "\n" +
		reqstats.FieldSum + "=" + strconv.FormatUint(sum, 10) + "\n" + msg
}
