package master

import (
	"log/slog"

	"github.com/forkd/forkd/activation"
	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/metrics"
)

// newMetrics makes the recorder behind the metrics and the status page,
// feeds it the hook events and serves the D-Bus Details method with it,
// and, when cfg has a [metrics] bind, binds the metrics endpoint now: an
// address in use fails the start, naming it. A reload does not move the
// endpoint; a restart does.
func newMetrics(cfg *config.Config, socks []activation.Socket, s *sinks, upgraded bool,
	log *slog.Logger) (*metrics.Recorder, *metrics.Server, error) {
	opts := metrics.Options{Instance: cfg.Server.Name, Version: version(), Upgraded: upgraded, Logger: log}
	for _, sock := range socks {
		opts.Listeners = append(opts.Listeners, metrics.Listener{Name: sock.Name, Addr: sock.Addr, File: sock.File})
	}
	if s.bus != nil {
		opts.Dropped = s.bus.Dropped
	}
	rec := metrics.New(opts)
	s.metrics = rec
	s.ctl.metrics.Store(rec)
	if !cfg.Metrics.Enabled() {
		return rec, nil, nil
	}
	srv, err := metrics.Listen(cfg.Metrics.Bind, rec.Registry())
	if err != nil {
		return nil, nil, err
	}
	log.Info("serving metrics", "bind", cfg.Metrics.Bind.Raw, "addr", srv.Addr().String())
	return rec, srv, nil
}
