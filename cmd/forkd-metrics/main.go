// Command forkd-metrics is forkd's sidecar for the Prometheus endpoint of
// [metrics] bind: it serves /metrics on the socket the forkd master bound
// (fd 3) with the numbers the master answers on the socket of fd 4 (see
// package metrics/exporter). forkd starts it only when its config has a
// [metrics] bind; it is not meant to be run by hand.
package main

import (
	"os"

	"github.com/forkd/forkd/metrics/exporter"
)

func main() { os.Exit(exporter.Main()) }
