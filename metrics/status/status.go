// Package status is the detailed status of one forkd instance, as its
// master assembles it for the D-Bus Details method and its Prometheus
// metrics, and as forkctl status shows it: the instance, its listeners
// with their accept queues, and one entry per worker. It is plain data
// with JSON tags, the document forkctl status --json prints; the package
// links nothing but the standard library.
package status

import "time"

// Page is the status of one instance at one instant.
type Page struct {
	// Instance is the instance's name (server.name).
	Instance string `json:"instance"`
	// Version is the master's version.
	Version string `json:"version"`
	// State is the arbiter's state: starting, running, reloading or
	// stopping.
	State string `json:"state"`
	// Generation is the generation serving.
	Generation uint64 `json:"generation"`
	// Workers is the target worker count, ReadyWorkers how many of the
	// current generation serve.
	Workers      int `json:"workers"`
	ReadyWorkers int `json:"ready_workers"`
	// Started is when the master started (an upgraded master's own start).
	Started time.Time `json:"started"`
	// Uptime is how long the master has run, in seconds.
	Uptime float64 `json:"uptime_seconds"`
	// Reloads counts the reloads begun; LastReload is how the last one
	// ended (nil: none ended yet).
	Reloads    uint64  `json:"reloads"`
	LastReload *Reload `json:"last_reload,omitempty"`
	// Listeners are the sockets the workers accept on.
	Listeners []Listener `json:"listeners"`
	// WorkerList has one entry per live worker, by generation then slot.
	WorkerList []Worker `json:"worker_list"`
	// Counters are the instance's event counts since the master started.
	Counters Counters `json:"counters"`
	// Requests is the latency histogram of every request the workers
	// reported since the master started.
	Requests Histogram `json:"requests"`
}

// Reload is how a reload ended.
type Reload struct {
	// Result is ok, rejected (the config or the on_reload hook refused
	// it) or failed (its generation did not come up and was rolled back).
	Result string `json:"result"`
	// Error says why, for a reload that did not succeed.
	Error string `json:"error,omitempty"`
	// At is when it ended.
	At time.Time `json:"at"`
}

// Listener is one listening socket and its accept queue, as the kernel
// reports it (sock_diag).
type Listener struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	// Queue is the connections waiting to be accepted; Backlog, how many
	// may wait.
	Queue   uint32 `json:"queue"`
	Backlog uint32 `json:"backlog"`
	// Error says why the queue could not be read ("" when it was).
	Error string `json:"error,omitempty"`
}

// Worker is one live worker process.
type Worker struct {
	// Slot is the worker's FORKD_WORKER_ID.
	Slot       int    `json:"slot"`
	PID        int    `json:"pid"`
	Generation uint64 `json:"generation"`
	// State is starting, ready or stopping as the arbiter sees it; a ready
	// worker that reports its requests in progress is busy or idle.
	State string `json:"state"`
	// Age is how long the process has run, in seconds.
	Age float64 `json:"age_seconds"`
	// Requests is the worker's FORKD_REQUESTS; Inflight, its requests in
	// progress (-1: it does not report them).
	Requests uint64 `json:"requests"`
	Inflight int64  `json:"inflight"`
	// P50 and P99 are the latency quantiles, in seconds, of its requests
	// of the last minute (nil: none finished in that minute).
	P50 *float64 `json:"p50_seconds"`
	P99 *float64 `json:"p99_seconds"`
	// RSS is its resident memory in bytes, CPU its user+system time in
	// seconds (both 0 when /proc could not tell).
	RSS uint64  `json:"rss_bytes"`
	CPU float64 `json:"cpu_seconds"`
	// LastBeat is its latest heartbeat (or readiness) as the notify socket
	// timed it (zero: none), HeartbeatAge the seconds since (-1: none).
	LastBeat     time.Time `json:"last_heartbeat"`
	HeartbeatAge float64   `json:"heartbeat_age_seconds"`
}

// Counters are event counts since the master started, each map keyed by
// its reason or result.
type Counters struct {
	// Starts are worker starts by reason: initial, reload, scale, replace,
	// recycle.
	Starts map[string]uint64 `json:"worker_starts"`
	// Exits are worker exits by reason: crashed, timeout, boot_timeout,
	// recycled, memory, oom, reload, scale, autoscale, exited, stopped,
	// other.
	Exits map[string]uint64 `json:"worker_exits"`
	// Reloads are ended reloads by result: ok, rejected, failed.
	Reloads map[string]uint64 `json:"reloads"`
	// Upgrades are in-place upgrades by result: started (the old master
	// re-executes), ok (this master took over), refused.
	Upgrades map[string]uint64 `json:"upgrades"`
	// HookSignalsDropped counts the hook events the D-Bus sink dropped.
	HookSignalsDropped uint64 `json:"hook_signals_dropped"`
	// MalformedReports counts the FORKD_REQUEST_STATS values that could
	// not be parsed (and were ignored).
	MalformedReports uint64 `json:"malformed_request_reports"`
	// LostEvents counts the events and reports the metrics recorder could
	// not keep up with (its queue was full).
	LostEvents uint64 `json:"lost_events"`
	// Jobs are the schedules' finished runs.
	Jobs []Job `json:"jobs,omitempty"`
}

// Job is one schedule's finished runs.
type Job struct {
	Name string `json:"name"`
	// Runs are its finished runs by result (ok, failed, timeout,
	// skipped, replaced).
	Runs map[string]uint64 `json:"runs"`
	// LastSuccess is when its last ok run finished (zero: none).
	LastSuccess time.Time `json:"last_success"`
}

// Histogram is a latency histogram.
type Histogram struct {
	// Bounds are the buckets' upper bounds in seconds; Counts has one
	// more entry than Bounds, the last counting what was slower than
	// every bound. Counts are per bucket, not cumulative.
	Bounds []float64 `json:"bounds_seconds"`
	Counts []uint64  `json:"counts"`
	// Count is the sum of Counts; Sum the seconds the requests took (an
	// estimate from the bounds for reports that do not say).
	Count uint64  `json:"count"`
	Sum   float64 `json:"sum_seconds"`
}
