// Package metrics is forkd's observability: a Prometheus endpoint on a
// socket of the master's own, and the detailed status page behind forkctl
// status (package metrics/status).
//
// This package is the master's side and links no Prometheus library: the
// official client (client_golang, promhttp) lives in a sidecar,
// forkd-metrics (package metrics/exporter, cmd/forkd-metrics), that an
// Endpoint starts when [metrics] bind is set. The master binds the socket
// (Listen) and holds it; the sidecar accepts on it and asks the master
// once per scrape over a socket pair, in JSON lines (Scrape, Answer; see
// protocol.go); the master answers with its Page and its Go runtime's
// statistics (ReadRuntime). The sidecar exits at end of file on its
// socket; the Endpoint starts it again if it dies, and Pause stops it for
// an in-place upgrade, whose successor starts its own on the socket handed
// over.
//
// A Recorder is fed without blocking from the arbiter: hook events (worker
// starts and exits by reason, upgrades, schedule runs), reload outcomes
// and the workers' request reports (FORKD_REQUESTS, FORKD_REQUEST_STATS,
// FORKD_REQUEST_SUM_USEC, FORKD_REQUESTS_INFLIGHT; a malformed report is
// counted and ignored). A scrape or a page asks the arbiter once
// (workers.Pool.Snapshot), however many workers there are, and reads
// /proc and the listeners' accept queues (package listenq) itself.
//
//	[metrics]
//	bind = "tcp://127.0.0.1:9150"   # or "unix:/run/forkd/%i/metrics.sock"
//
// Families: forkd_build_info, forkd_state, forkd_generation,
// forkd_start_time_seconds, forkd_workers{state}, forkd_workers_activity,
// forkd_workers_target, forkd_workers_ready,
// forkd_worker_starts_total{reason}, forkd_worker_exits_total{reason},
// forkd_reloads_total{result}, forkd_upgrades_total{result}, per slot and
// generation forkd_worker_heartbeat_age_seconds,
// forkd_worker_resident_memory_bytes, forkd_worker_cpu_seconds_total,
// forkd_worker_start_time_seconds, forkd_worker_requests_total,
// forkd_worker_requests_inflight; per listener
// forkd_listener_queue_length and forkd_listener_backlog;
// forkd_request_duration_seconds (histogram),
// forkd_request_reports_malformed_total, forkd_hook_signals_dropped_total,
// forkd_metrics_events_lost_total, forkd_job_runs_total{job,result},
// forkd_job_last_success_timestamp_seconds{job}; and the library's
// process_* and go_*, both describing the master.
package metrics
