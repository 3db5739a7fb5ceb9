package master

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/forkd/forkd/activation"
	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/metrics"
	"github.com/forkd/forkd/workers"
)

// metricsSocketName names the metrics endpoint's socket among the sockets
// an upgrade hands over (workers.Options.Extra).
const metricsSocketName = "metrics"

// newMetrics makes the recorder behind the metrics and the status page,
// feeds it the hook events and serves the D-Bus Details method with it,
// and, when cfg has a [metrics] bind, binds the metrics endpoint now (or
// takes the one an upgrade handed over): an address in use fails the
// start, naming it, as does a missing forkd-metrics. A reload does not
// move the endpoint; a restart does.
func newMetrics(cfg *config.Config, socks []activation.Socket, s *sinks, adopt *workers.Handover,
	log *slog.Logger) (*metrics.Recorder, *metrics.Endpoint, *metrics.Socket, error) {
	opts := metrics.Options{Instance: cfg.Server.Name, Version: version(), Upgraded: adopt != nil, Logger: log}
	for _, sock := range socks {
		opts.Listeners = append(opts.Listeners, metrics.Listener{Name: sock.Name, Addr: sock.Addr, File: sock.File})
	}
	if s.bus != nil {
		opts.Dropped = s.bus.Dropped
	}
	rec := metrics.New(opts)
	s.metrics = rec
	s.ctl.metrics.Store(rec)
	sock := adoptMetricsSocket(cfg, adopt, log)
	if !cfg.Metrics.Enabled() {
		return rec, nil, nil, nil
	}
	if sock == nil {
		if adopt == nil {
			if _, err := metrics.FindExecutable(); err != nil {
				return nil, nil, nil, err
			}
		}
		var err error
		if sock, err = metrics.Listen(cfg.Metrics.Bind); err != nil {
			return nil, nil, nil, err
		}
	}
	log.Info("serving metrics", "bind", cfg.Metrics.Bind.Raw, "addr", sock.Addr, "by", metrics.Executable)
	ep := metrics.NewEndpoint(metrics.EndpointOptions{Recorder: rec, Socket: sock, Logger: log})
	return rec, ep, sock, nil
}

// adoptMetricsSocket returns the metrics socket that an upgrade handed
// over, if it is cfg's [metrics] bind; one that is not (the bind changed
// or went) is closed, its unix socket file removed.
func adoptMetricsSocket(cfg *config.Config, adopt *workers.Handover, log *slog.Logger) *metrics.Socket {
	if adopt == nil {
		return nil
	}
	var sock *metrics.Socket
	for _, s := range adopt.ExtraOf() {
		switch {
		case s.Name == metricsSocketName && sock == nil && cfg.Metrics.Enabled() && s.Addr == cfg.Metrics.Bind.Raw:
			sock = metrics.Adopt(cfg.Metrics.Bind, s.File)
		default:
			log.Info("upgraded in place: closing the metrics socket handed over, not the config's [metrics] bind now",
				"bind", s.Addr)
			metrics.Release(s.File)
		}
	}
	return sock
}

// pauseMetrics wraps the pool's Freeze and Thaw so that an upgrade stops
// forkd-metrics before the master re-executes itself (its successor starts
// its own on the same listening socket) and starts it again if the upgrade
// fails; and hands the socket over. The scrapes forkd-metrics answers as it
// stops get the pool as it was when the upgrade began (rec.Hold), since the
// pool answers nothing more.
func pauseMetrics(o *workers.Options, rec *metrics.Recorder, ep *metrics.Endpoint, sock *metrics.Socket, log *slog.Logger) {
	if ep == nil {
		return
	}
	o.Extra = append(o.Extra, activation.Socket{Name: metricsSocketName, Addr: sock.Bind.Raw, File: sock.File})
	o.Upgrading = rec.Hold
	freeze, thaw := o.Freeze, o.Thaw
	o.Freeze = func() (json.RawMessage, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if err := ep.Pause(ctx); err != nil {
			log.Warn("upgrade: forkd-metrics not stopped", "err", err)
		}
		if freeze == nil {
			return nil, nil
		}
		b, err := freeze()
		if err != nil {
			rec.Release()
			ep.Resume()
		}
		return b, err
	}
	o.Thaw = func() {
		if thaw != nil {
			thaw()
		}
		rec.Release()
		ep.Resume()
	}
}
