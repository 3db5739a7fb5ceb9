// Package exporter is forkd-metrics, the sidecar that serves forkd's
// Prometheus endpoint with the official client (client_golang's
// promhttp), so that the forkd master links none of it.
//
// The master binds [metrics] bind itself, starts forkd-metrics with the
// listening socket on fd 3 and a socket of its own on fd 4 (package
// metrics: Endpoint, and the protocol in its protocol.go), and answers
// each scrape's one request with its status page and its Go runtime's
// statistics. The sidecar turns that answer into forkd's families and
// go_* (the library's Go collector's families, with the master's values),
// and reads the master's process_* from /proc/PID itself: every family
// describes the master, as when the master served them.
//
// The sidecar exits when the master closes its socket (the master stops,
// dies, or re-executes itself in an upgrade); the master starts it again
// if it dies.
package exporter
