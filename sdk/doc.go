// Package sdk is forkd's worker SDK for Go: it turns an http.Handler
// into a forkd worker in one call.
//
// forkd is to its workers what systemd is to a service, and a worker
// written against plain go-systemd (socket activation and sd_notify) works
// under forkd unchanged. This package makes such a worker short and adds
// what only forkd uses:
//
//   - Listeners returns the inherited sockets (LISTEN_FDS, LISTEN_PID).
//   - Ready, Status and Stopping send sd_notify(3) messages to
//     NOTIFY_SOCKET, and do nothing when it is unset.
//   - ID, Generation and Instance read the worker's identity
//     (FORKD_WORKER_ID, FORKD_GENERATION, FORKD_INSTANCE).
//   - Server.Run (or Serve) serves a handler on every inherited socket,
//     sends READY=1 once it serves and WATCHDOG=1 heartbeats at half of
//     WATCHDOG_USEC, runs the pre_request and post_request Hooks around
//     each request, reports request counts and latencies (FieldRequests,
//     FieldRequestStats) at most once a second, and gives signals
//     Gunicorn's meanings: TERM drains (package httpdrain: in-flight
//     requests are answered, and a keep-alive connection's next request is
//     answered with Connection: close until shortly before the graceful
//     timeout), INT and QUIT exit at once.
//   - ParseRequestStats reads the latency report on forkd's side (the
//     wire format itself is package reqstats, which forkd's master uses).
//
// forkd uses FORKD_REQUESTS for max_requests recycling and forwards
// FORKD_REQUEST_STATS as an aggregated D-Bus RequestStats signal: there is
// never one bus message per request. FORKD_REQUEST_SUM_USEC and
// FORKD_REQUESTS_INFLIGHT (busy or idle) feed forkd's metrics and forkctl
// status. systemd ignores these fields, so the same binary also runs
// socket-activated under plain systemd.
//
// A complete worker:
//
//	package main
//
//	import (
//		"context"
//		"fmt"
//		"log/slog"
//		"net/http"
//		"os"
//		"time"
//
//		"github.com/forkd/forkd/sdk"
//	)
//
//	func main() {
//		log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("worker_id", sdk.ID())
//		mux := http.NewServeMux()
//		mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
//			fmt.Fprintf(w, "hello from worker %d of %s, generation %d\n",
//				sdk.ID(), sdk.Instance(), sdk.Generation())
//		})
//		srv := &sdk.Server{
//			Handler: mux,
//			Hooks: sdk.Hooks{
//				PostRequest: func(r *http.Request, status int, d time.Duration) {
//					log.Info("request", "path", r.URL.Path, "status", status, "took", d)
//				},
//			},
//			GracefulTimeout: 20 * time.Second,
//			Logger:          log,
//		}
//		if err := srv.Run(context.Background()); err != nil {
//			log.Error("worker failed", "err", err)
//			os.Exit(1)
//		}
//	}
//
// and the forkd config that runs four of it, recycling each after about
// 10000 requests:
//
//	# /etc/forkd/myapp.toml
//	[server]
//	workers = 4
//	bind = ["tcp://127.0.0.1:8000"]
//	timeout = "30s"           # WATCHDOG_USEC: the SDK heartbeats every 15s
//	graceful_timeout = "30s"
//	max_requests = 10000
//	max_requests_jitter = 500
//
//	[worker]
//	command = "/usr/local/bin/myapp"
//	ready = "notify"          # the SDK sends READY=1 once it serves
//
// Run under forkd with `systemctl enable --now forkd@myapp.socket`, or alone
// with `forkd --config /etc/forkd/myapp.toml`. Without forkd, systemd's
// `systemd-socket-activate -l 127.0.0.1:8000 ./myapp` starts it the same
// way. Started with no inherited socket at all, Run returns
// ErrNoListeners.
package sdk
