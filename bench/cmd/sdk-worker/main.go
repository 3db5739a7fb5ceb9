// Command sdk-worker is the Go worker SDK's smallest worker (package sdk's
// Server), run by forkd in the keep-alive benchmarks of package bench: it
// answers every request with "ok PID" and drains on SIGTERM for at most
// -graceful-timeout, as sdk.Server does. It exits 0 after a drain and 1,
// with the error on stderr, when it cannot serve.
//
//	sdk-worker -graceful-timeout 5s
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"

	"github.com/forkd/forkd/sdk"
)

func main() {
	fs := flag.NewFlagSet("sdk-worker", flag.ContinueOnError)
	grace := fs.Duration("graceful-timeout", sdk.DefaultGracefulTimeout, "longest drain after SIGTERM")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	body := fmt.Sprintf("ok %d\n", os.Getpid())
	srv := &sdk.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprint(w, body)
		}),
		GracefulTimeout: *grace,
	}
	if err := srv.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "sdk-worker:", err)
		os.Exit(1)
	}
}
