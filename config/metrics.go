package config

import "strings"

// Metrics is the [metrics] table: where forkd serves its Prometheus
// metrics.
//
//	[metrics]
//	bind = "tcp://127.0.0.1:9150"               # or "unix:/run/forkd/%i/metrics.sock"
type Metrics struct {
	// Bind is the address of the metrics endpoint, written as a
	// server.bind address (tcp:// or unix:, option mode= for a unix
	// socket); "%i" in a unix path stands for the instance name
	// (server.name). A zero Bind (no [metrics] table, or no bind in it)
	// serves no metrics.
	Bind Bind `toml:"bind"`
}

// Enabled reports whether m asks for a metrics endpoint.
func (m Metrics) Enabled() bool { return m.Bind.Network != "" }

// validateMetrics checks the [metrics] table and expands "%i" in its unix
// path to the instance name.
func (d *document) validateMetrics(c *Config) {
	b := &c.Metrics.Bind
	if !c.Metrics.Enabled() {
		return
	}
	if b.Name != "" {
		d.fail("metrics.bind", "%q: option name= names a socket handed to the workers; the metrics socket is forkd's own", b.Raw)
	}
	if b.Network == "unix" {
		b.Address = strings.ReplaceAll(b.Address, "%i", c.Server.Name)
		if len(b.Address) > maxUnixPath {
			d.fail("metrics.bind", "%q: the socket path is %d bytes once %%i is the instance name, the limit is %d",
				b.Raw, len(b.Address), maxUnixPath)
		}
	}
	for _, s := range c.Server.Bind {
		if s.Network == b.Network && s.Address == b.Address && !strings.HasSuffix(b.Address, ":0") {
			d.fail("metrics.bind", "%q listens on the same address as server.bind's %q: give the metrics an address of their own", b.Raw, s.Raw)
		}
	}
}
