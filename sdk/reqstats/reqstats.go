// Package reqstats is the wire format of the request counts and latency
// histograms a worker reports to forkd: the FORKD_REQUESTS and
// FORKD_REQUEST_STATS fields of its sd_notify messages. The worker SDK
// (package sdk) writes them and forkd's master reads them; the package
// needs nothing beyond strings and numbers, so the master links none of
// the SDK's HTTP code.
package reqstats

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// The fields forkd adds to sd_notify(3)'s vocabulary. A worker sends them
// in one datagram on NOTIFY_SOCKET, at most once a second and only when
// something changed since the last report (requests finished, or the count
// in progress):
//
//	FORKD_REQUESTS=1234
//	FORKD_REQUEST_STATS=17;1000,5000,10000;9,5,2,1
//	FORKD_REQUEST_SUM_USEC=41230
//	FORKD_REQUESTS_INFLIGHT=2
//
// The last two are optional, and FieldInflight may come alone. systemd
// ignores fields it does not know, so a worker that sends them runs under
// plain systemd too; so do older forkd versions with the last two. Any
// language may send them: this is the protocol (README, forkd.toml(5)).
const (
	// FieldRequests carries the number of requests the worker finished
	// since it started, in decimal. forkd recycles the worker once it
	// reaches max_requests.
	FieldRequests = "FORKD_REQUESTS"
	// FieldRequestStats carries the latency histogram of the requests
	// finished since the previous report, as written by Stats.String and
	// read by Parse. forkd forwards it as a D-Bus RequestStats signal.
	FieldRequestStats = "FORKD_REQUEST_STATS"
	// FieldSum carries the total time the requests FieldRequestStats
	// counts took, in whole microseconds (decimal): the sum of a
	// Prometheus histogram. Optional: without it forkd's metrics estimate
	// the sum from the buckets' bounds.
	FieldSum = "FORKD_REQUEST_SUM_USEC"
	// FieldInflight carries how many requests the worker has in progress
	// as it sends the message (decimal): 0 is an idle worker, more a busy
	// one. Optional; it may come alone, in a message without the other
	// fields, when only the count in progress changed.
	FieldInflight = "FORKD_REQUESTS_INFLIGHT"
)

// ErrMalformed is wrapped by the errors Parse returns.
var ErrMalformed = errors.New("reqstats: malformed request stats")

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
// Parse(s.String()) returns s when s is well-formed. Bounds
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

// Parse parses the value of a FORKD_REQUEST_STATS field (the
// text after "FORKD_REQUEST_STATS="), as Stats.String writes it. It
// returns an error wrapping ErrMalformed unless the value has three
// ';'-separated parts, every number is a decimal without sign that fits in
// 64 bits, the bounds are positive and strictly increasing, there is one
// count more than there are bounds, and the counts sum to the request
// count. The bounds may be empty ("3;;3": a single bucket).
func Parse(value string) (Stats, error) {
	bad := func(format string, args ...any) (Stats, error) {
		return Stats{}, fmt.Errorf("%w %q: %s", ErrMalformed, value, fmt.Sprintf(format, args...))
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
