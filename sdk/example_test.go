package sdk_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/forkd/forkd/sdk"
)

// The shortest worker: serve a handler on the inherited sockets until
// forkd (or systemd) stops it.
func ExampleServe() {
	http.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from worker %d\n", sdk.ID())
	})
	if err := sdk.Serve(nil); err != nil { // nil: http.DefaultServeMux
		log.Fatal(err)
	}
}

// A worker with request hooks, its own latency buckets and a context of
// its own: cancelling it drains the server like SIGTERM does.
func ExampleServer() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("worker_id", sdk.ID())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGHUP)
	defer stop()
	srv := &sdk.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "ok\n")
		}),
		Hooks: sdk.Hooks{
			PreRequest: func(r *http.Request) {
				r.Header.Set("X-Forkd-Worker", fmt.Sprint(sdk.ID()))
			},
			PostRequest: func(r *http.Request, status int, d time.Duration) {
				logger.Info("request", "method", r.Method, "path", r.URL.Path, "status", status, "took", d)
			},
		},
		Bounds:          []time.Duration{10 * time.Millisecond, 100 * time.Millisecond, time.Second},
		GracefulTimeout: 10 * time.Second,
		Logger:          logger,
	}
	if err := srv.Run(ctx); err != nil {
		logger.Error("worker failed", "err", err)
		os.Exit(1)
	}
}

// The master side: read a worker's latency report.
func ExampleParseRequestStats() {
	st, err := sdk.ParseRequestStats("7;1000,5000,25000;3,2,1,1")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(st.Requests, "requests")
	for i, c := range st.Counts {
		if i < len(st.Bounds) {
			fmt.Printf("≤ %v: %d\n", st.Bounds[i], c)
		} else {
			fmt.Printf("> %v: %d\n", st.Bounds[i-1], c)
		}
	}

	_, err = sdk.ParseRequestStats("7;1000;3,2")
	fmt.Println(err)
	// Output:
	// 7 requests
	// ≤ 1ms: 3
	// ≤ 5ms: 2
	// ≤ 25ms: 1
	// > 25ms: 1
	// reqstats: malformed request stats "7;1000;3,2": counts sum to 5, not to the request count 7
}

// Status sends one line of text that forkd shows for the worker; without
// NOTIFY_SOCKET it does nothing.
func ExampleStatus() {
	os.Unsetenv("NOTIFY_SOCKET")
	fmt.Println(sdk.Status("warming caches"))
	// Output: <nil>
}

func ExampleStats_String() {
	st := sdk.Stats{
		Requests: 4,
		Bounds:   []time.Duration{time.Millisecond, 2500 * time.Millisecond},
		Counts:   []uint64{1, 2, 1},
	}
	fmt.Println(sdk.FieldRequestStats + "=" + st.String())
	// Output: FORKD_REQUEST_STATS=4;1000,2500000;1,2,1
}
