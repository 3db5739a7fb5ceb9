package metrics

import "github.com/forkd/forkd/metrics/status"

// The master and forkd-metrics talk over a connected stream socket (the
// sidecar's fd 4; its fd 3 is the listening socket of [metrics] bind, which
// the master bound) in JSON lines, one Scrape per line from the sidecar,
// one Answer per line from the master, in order:
//
//   - Each HTTP scrape of the sidecar sends one Scrape and waits for the
//     Answer with the same ID: one request to the master per scrape,
//     however many workers there are.
//   - End of file on the socket (the master stops, dies or is about to
//     re-execute itself in an upgrade): the sidecar stops accepting,
//     answers the scrapes in progress as it can and exits. The listening
//     socket stays open in the master, so connections arriving meanwhile
//     wait in its queue for the next sidecar.

// Scrape is one line from forkd-metrics to the master: a scrape asks for
// the master's numbers.
type Scrape struct {
	// ID names the scrape in its Answer.
	ID int64 `json:"id"`
}

// Answer is one line from the master to forkd-metrics.
type Answer struct {
	// ID is the Scrape's.
	ID int64 `json:"id"`
	// Page is the instance's status (Recorder.Page); Err says why it is
	// incomplete ("" when it is whole).
	Page status.Page `json:"page"`
	Err  string      `json:"err,omitempty"`
	// Runtime is the master's Go runtime, for the go_* families.
	Runtime Runtime `json:"runtime"`
}

// Runtime is a Go program's runtime statistics as the go_* families of
// Prometheus' client (its default Go collector) export them.
type Runtime struct {
	// GoVersion is runtime.Version(): go_info's version label, and
	// forkd_build_info's goversion.
	GoVersion string `json:"go_version"`
	// Values holds the families that are one sample without labels, by
	// family name (go_goroutines, go_memstats_heap_alloc_bytes, …).
	Values map[string]float64 `json:"values"`
	// GCPauses are the quantiles 0, 0.25, 0.5, 0.75 and 1 of the recent
	// stop-the-world GC pauses in seconds, GCCount the collections so far
	// and GCPauseTotal their pauses' total, in seconds:
	// go_gc_duration_seconds.
	GCPauses     []float64 `json:"gc_pauses"`
	GCCount      uint64    `json:"gc_count"`
	GCPauseTotal float64   `json:"gc_pause_total"`
}

// GCQuantiles are the quantiles of Runtime.GCPauses.
var GCQuantiles = []float64{0, 0.25, 0.5, 0.75, 1}
