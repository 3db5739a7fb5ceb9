package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// ErrWrkOutput is wrapped by ParseWrk's errors about output it cannot read.
var ErrWrkOutput = errors.New("bench: unexpected wrk output")

// Wrk is a load generator run: wrk (github.com/wg/wrk, Debian's package)
// with Threads threads holding Conns connections for Duration, with
// --latency and each of Headers as -H.
type Wrk struct {
	// Path is the wrk program.
	Path string
	// Threads and Conns are -t and -c.
	Threads, Conns int
	// Duration is -d: how long the run lasts.
	Duration time.Duration
	// Headers are sent with every request ("Connection: close").
	Headers []string
}

// Load is what a wrk run measured.
type Load struct {
	// Requests is the number of requests completed ("N requests in …"),
	// whatever their status.
	Requests int64
	// Took is the run's length as wrk reports it.
	Took time.Duration
	// Non2xx counts responses with a status ≥ 400 (wrk's "Non-2xx or 3xx
	// responses").
	Non2xx int64
	// Connect, Read, Write and Timeout are wrk's socket errors.
	Connect, Read, Write, Timeout int64
	// P50, P90 and P99 are wrk's latency percentiles (--latency), over the
	// requests that completed.
	P50, P90, P99 time.Duration
}

// Failed returns the requests that failed: socket errors plus non-2xx
// responses.
func (l Load) Failed() int64 {
	return l.Non2xx + l.Connect + l.Read + l.Write + l.Timeout
}

// Rate returns the completed requests per second.
func (l Load) Rate() float64 {
	if l.Took <= 0 {
		return 0
	}
	return float64(l.Requests) / l.Took.Seconds()
}

// String summarizes l on one line.
func (l Load) String() string {
	return fmt.Sprintf("%d requests in %v (%.0f/s), p50 %v p99 %v, non-2xx %d, socket errors connect %d read %d write %d timeout %d",
		l.Requests, l.Took, l.Rate(), l.P50, l.P99, l.Non2xx, l.Connect, l.Read, l.Write, l.Timeout)
}

// Run runs wrk against url and parses its report. Cancelling ctx kills
// wrk and returns an error.
func (w Wrk) Run(ctx context.Context, url string) (Load, error) {
	args := []string{"-t", strconv.Itoa(w.Threads), "-c", strconv.Itoa(w.Conns),
		"-d", fmt.Sprintf("%ds", int(w.Duration.Round(time.Second)/time.Second)), "--latency"}
	for _, h := range w.Headers {
		args = append(args, "-H", h)
	}
	args = append(args, url)
	out, err := exec.CommandContext(ctx, w.Path, args...).CombinedOutput()
	if err != nil {
		return Load{}, fmt.Errorf("run %s %s: %w\n%s", w.Path, strings.Join(args, " "), err, out)
	}
	l, err := ParseWrk(string(out))
	if err != nil {
		return Load{}, fmt.Errorf("run %s %s: %w", w.Path, strings.Join(args, " "), err)
	}
	return l, nil
}

var (
	wrkRequests = regexp.MustCompile(`^(\d+) requests in ([0-9.]+[a-z]+),`)
	wrkSocket   = regexp.MustCompile(`^Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)$`)
	wrkNon2xx   = regexp.MustCompile(`^Non-2xx or 3xx responses: (\d+)$`)
	wrkQuantile = regexp.MustCompile(`^(50|75|90|99)%\s+([0-9.]+[a-z]+)$`)
)

// ParseWrk parses the report wrk 4 prints with --latency. The socket error
// and non-2xx lines are optional (wrk leaves them out when they are zero);
// the request count and the latency distribution are not.
func ParseWrk(out string) (Load, error) {
	var l Load
	var haveRequests bool
	quantiles := map[string]time.Duration{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if m := wrkRequests.FindStringSubmatch(line); m != nil {
			n, _ := strconv.ParseInt(m[1], 10, 64)
			took, err := parseWrkDuration(m[2])
			if err != nil {
				return Load{}, err
			}
			l.Requests, l.Took, haveRequests = n, took, true
		} else if m := wrkSocket.FindStringSubmatch(line); m != nil {
			v := make([]int64, 4)
			for i := range v {
				v[i], _ = strconv.ParseInt(m[i+1], 10, 64)
			}
			l.Connect, l.Read, l.Write, l.Timeout = v[0], v[1], v[2], v[3]
		} else if m := wrkNon2xx.FindStringSubmatch(line); m != nil {
			l.Non2xx, _ = strconv.ParseInt(m[1], 10, 64)
		} else if m := wrkQuantile.FindStringSubmatch(line); m != nil {
			d, err := parseWrkDuration(m[2])
			if err != nil {
				return Load{}, err
			}
			quantiles[m[1]] = d
		}
	}
	if !haveRequests {
		return Load{}, fmt.Errorf("%w: no \"N requests in T\" line in:\n%s", ErrWrkOutput, out)
	}
	for _, q := range []string{"50", "90", "99"} {
		if _, ok := quantiles[q]; !ok {
			return Load{}, fmt.Errorf("%w: no %s%% latency line (run with --latency) in:\n%s", ErrWrkOutput, q, out)
		}
	}
	l.P50, l.P90, l.P99 = quantiles["50"], quantiles["90"], quantiles["99"]
	return l, nil
}

// parseWrkDuration parses wrk's times: a number and us, ms, s, m or h.
func parseWrkDuration(s string) (time.Duration, error) {
	i := strings.IndexFunc(s, func(r rune) bool { return r >= 'a' && r <= 'z' })
	if i <= 0 {
		return 0, fmt.Errorf("%w: time %q", ErrWrkOutput, s)
	}
	v, err := strconv.ParseFloat(s[:i], 64)
	if err != nil {
		return 0, fmt.Errorf("%w: time %q", ErrWrkOutput, s)
	}
	unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second,
		"m": time.Minute, "h": time.Hour}[s[i:]]
	if unit == 0 {
		return 0, fmt.Errorf("%w: time unit in %q", ErrWrkOutput, s)
	}
	return time.Duration(v * float64(unit)), nil
}
