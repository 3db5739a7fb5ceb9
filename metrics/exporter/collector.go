package exporter

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/forkd/forkd/metrics"
	"github.com/forkd/forkd/metrics/status"
	"github.com/forkd/forkd/workers"
)

// Metric descriptions: every family forkd exports besides process_* and
// go_*. Labels are bounded: slot and generation, never pid.
var (
	descBuildInfo = prometheus.NewDesc("forkd_build_info",
		"forkd's version and Go version, and the instance's name; always 1.",
		[]string{"version", "goversion", "name"}, nil)
	descState = prometheus.NewDesc("forkd_state",
		"The arbiter's state: 1 for the current one of starting, running, reloading, stopping.",
		[]string{"state"}, nil)
	descGeneration = prometheus.NewDesc("forkd_generation",
		"The generation of workers serving.", nil, nil)
	descUptime = prometheus.NewDesc("forkd_start_time_seconds",
		"When the master started, in seconds since the Unix epoch.", nil, nil)
	descWorkers = prometheus.NewDesc("forkd_workers",
		"Live worker processes by state (starting, ready, stopping), every generation.",
		[]string{"state"}, nil)
	descWorkersActivity = prometheus.NewDesc("forkd_workers_activity",
		"Ready workers that report their requests in progress, by activity (busy, idle).",
		[]string{"activity"}, nil)
	descTarget = prometheus.NewDesc("forkd_workers_target",
		"The target worker count of the current generation.", nil, nil)
	descReady = prometheus.NewDesc("forkd_workers_ready",
		"Workers of the current generation that serve.", nil, nil)
	descStarts = prometheus.NewDesc("forkd_worker_starts_total",
		"Worker processes started, by reason (initial, reload, scale, replace, recycle).",
		[]string{"reason"}, nil)
	descExits = prometheus.NewDesc("forkd_worker_exits_total",
		"Worker processes that exited, by reason (crashed, timeout, boot_timeout, recycled, memory, oom, "+
			"reload, scale, autoscale, exited, stopped, other).",
		[]string{"reason"}, nil)
	descReloads = prometheus.NewDesc("forkd_reloads_total",
		"Reloads that ended, by result (ok, rejected, failed).", []string{"result"}, nil)
	descUpgrades = prometheus.NewDesc("forkd_upgrades_total",
		"In-place upgrades, by result (started: this master re-executes; ok: this master took over; refused).",
		[]string{"result"}, nil)
	descBeatAge = prometheus.NewDesc("forkd_worker_heartbeat_age_seconds",
		"Seconds since the worker's latest heartbeat (or readiness).", []string{"slot", "generation"}, nil)
	descRSS = prometheus.NewDesc("forkd_worker_resident_memory_bytes",
		"The worker's resident memory.", []string{"slot", "generation"}, nil)
	descCPU = prometheus.NewDesc("forkd_worker_cpu_seconds_total",
		"The worker process's user and system CPU time.", []string{"slot", "generation"}, nil)
	descWorkerStart = prometheus.NewDesc("forkd_worker_start_time_seconds",
		"When the worker process started, in seconds since the Unix epoch.", []string{"slot", "generation"}, nil)
	descWorkerRequests = prometheus.NewDesc("forkd_worker_requests_total",
		"Requests the worker process reported finished (FORKD_REQUESTS).", []string{"slot", "generation"}, nil)
	descWorkerInflight = prometheus.NewDesc("forkd_worker_requests_inflight",
		"Requests the worker last reported in progress (FORKD_REQUESTS_INFLIGHT).",
		[]string{"slot", "generation"}, nil)
	descQueue = prometheus.NewDesc("forkd_listener_queue_length",
		"Connections waiting in the listening socket's accept queue (the kernel's, through sock_diag).",
		[]string{"name", "address"}, nil)
	descBacklog = prometheus.NewDesc("forkd_listener_backlog",
		"The listening socket's accept queue limit.", []string{"name", "address"}, nil)
	descRequests = prometheus.NewDesc("forkd_request_duration_seconds",
		"Latency of the requests the workers reported (FORKD_REQUEST_STATS).", nil, nil)
	descMalformed = prometheus.NewDesc("forkd_request_reports_malformed_total",
		"FORKD_REQUEST_STATS values that could not be parsed and were ignored.", nil, nil)
	descDropped = prometheus.NewDesc("forkd_hook_signals_dropped_total",
		"Hook events the D-Bus sink dropped (queue full, bus away).", nil, nil)
	descLost = prometheus.NewDesc("forkd_metrics_events_lost_total",
		"Events and request reports the metrics recorder could not keep up with.", nil, nil)
	descJobRuns = prometheus.NewDesc("forkd_job_runs_total",
		"Finished runs of a [[schedule]], by result (ok, failed, timeout, skipped, replaced).",
		[]string{"job", "result"}, nil)
	descJobSuccess = prometheus.NewDesc("forkd_job_last_success_timestamp_seconds",
		"When the schedule's last ok run finished, in seconds since the Unix epoch.", []string{"job"}, nil)
)

// Every label value these families always export, 0 until counted, so
// that rate() sees a series from the start.
var (
	allStates   = []string{workers.StateStarting, workers.StateRunning, workers.StateReloading, workers.StateStopping}
	allPhases   = []string{"starting", "ready", "stopping"}
	allStarts   = []string{metrics.StartInitial, metrics.StartReload, metrics.StartScale, metrics.StartReplace, metrics.StartRecycle}
	allExits    = []string{metrics.ExitCrashed, metrics.ExitTimeout, metrics.ExitBootTimeout, metrics.ExitRecycled, metrics.ExitMemory, metrics.ExitOOM, metrics.ExitReload, metrics.ExitScale, metrics.ExitAutoscale, metrics.ExitExited, metrics.ExitStopped, metrics.ExitOther}
	allReloads  = []string{"ok", "rejected", "failed"}
	allUpgrades = []string{"started", "ok", "refused"}
)

// collector asks the master once per Collect and exports its Answer:
// forkd's families from its Page, the go_* families (those of gos) from
// its Runtime. It describes nothing (an unchecked collector): the go_*
// families are whichever the library's Go collector exports.
type collector struct {
	ask func(context.Context) (metrics.Answer, error)
	gos []goFamily
}

func (c collector) Describe(chan<- *prometheus.Desc) {}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	a, err := c.ask(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descBuildInfo, err)
		return
	}
	p := a.Page
	ch <- prometheus.MustNewConstMetric(descBuildInfo, prometheus.GaugeValue, 1, p.Version, a.Runtime.GoVersion,
		p.Instance)
	exportGo(ch, c.gos, a.Runtime)
	if a.Err != "" {
		ch <- prometheus.NewInvalidMetric(descState, errors.New(a.Err))
		return
	}
	export(ch, p)
}

// export sends the metrics of p.
func export(ch chan<- prometheus.Metric, p status.Page) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	for _, s := range allStates {
		gauge(descState, b2f(p.State == s), s)
	}
	gauge(descGeneration, float64(p.Generation))
	gauge(descUptime, float64(p.Started.UnixNano())/1e9)
	gauge(descTarget, float64(p.Workers))
	gauge(descReady, float64(p.ReadyWorkers))

	phases := map[string]int{}
	activity := map[string]int{}
	// One series per slot and generation: while a recycled worker's
	// successor boots, the slot's series describe the successor.
	newest := map[[2]string]status.Worker{}
	var order [][2]string
	for _, w := range p.WorkerList {
		switch w.State {
		case "busy", "idle":
			phases["ready"]++
			activity[w.State]++
		default:
			phases[w.State]++
		}
		key := [2]string{strconv.Itoa(w.Slot), strconv.FormatUint(w.Generation, 10)}
		old, seen := newest[key]
		if !seen {
			order = append(order, key)
		}
		if !seen || w.Age < old.Age {
			newest[key] = w
		}
	}
	for _, s := range allPhases {
		gauge(descWorkers, float64(phases[s]), s)
	}
	for _, a := range []string{"busy", "idle"} {
		gauge(descWorkersActivity, float64(activity[a]), a)
	}
	now := float64(time.Now().UnixNano()) / 1e9
	for _, key := range order {
		w := newest[key]
		if w.HeartbeatAge >= 0 {
			gauge(descBeatAge, w.HeartbeatAge, key[0], key[1])
		}
		gauge(descRSS, float64(w.RSS), key[0], key[1])
		counter(descCPU, w.CPU, key[0], key[1])
		gauge(descWorkerStart, now-w.Age, key[0], key[1])
		counter(descWorkerRequests, float64(w.Requests), key[0], key[1])
		if w.Inflight >= 0 {
			gauge(descWorkerInflight, float64(w.Inflight), key[0], key[1])
		}
	}
	counts := func(d *prometheus.Desc, all []string, m map[string]uint64) {
		for _, k := range all {
			counter(d, float64(m[k]), k)
		}
		for k, v := range m {
			if !contains(all, k) {
				counter(d, float64(v), k)
			}
		}
	}
	counts(descStarts, allStarts, p.Counters.Starts)
	counts(descExits, allExits, p.Counters.Exits)
	counts(descReloads, allReloads, p.Counters.Reloads)
	counts(descUpgrades, allUpgrades, p.Counters.Upgrades)
	for _, l := range p.Listeners {
		if l.Error != "" {
			continue
		}
		gauge(descQueue, float64(l.Queue), l.Name, l.Address)
		gauge(descBacklog, float64(l.Backlog), l.Name, l.Address)
	}
	buckets := make(map[float64]uint64, len(p.Requests.Bounds))
	var cum uint64
	for i, b := range p.Requests.Bounds {
		cum += p.Requests.Counts[i]
		buckets[b] = cum
	}
	ch <- prometheus.MustNewConstHistogram(descRequests, p.Requests.Count, p.Requests.Sum, buckets)
	counter(descMalformed, float64(p.Counters.MalformedReports))
	counter(descDropped, float64(p.Counters.HookSignalsDropped))
	counter(descLost, float64(p.Counters.LostEvents))
	for _, j := range p.Counters.Jobs {
		for result, n := range j.Runs {
			counter(descJobRuns, float64(n), j.Name, result)
		}
		if !j.LastSuccess.IsZero() {
			gauge(descJobSuccess, float64(j.LastSuccess.UnixNano())/1e9, j.Name)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
