// Command bench-worker is the worker program forkd runs in the benchmarks
// of package bench (see package benchworker): a standalone Go HTTP server on
// the sockets it inherits, speaking sd_notify with go-systemd. The
// benchmarks build it themselves (CGO_ENABLED=0 go build, next to forkd in
// /tmp/forkd-bench) and time its boot alone as the reference for forkd's
// overheads. It exits 0 after a SIGTERM and 1, with the error on stderr,
// when it cannot serve.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/forkd/forkd/bench/benchworker"
)

func main() {
	if err := benchworker.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
