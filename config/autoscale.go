package config

import "time"

// Autoscale is [server.autoscale]: the pool grows and shrinks between Min
// and Max workers, following the kernel's accept queue of the listening
// sockets (see package workers).
//
//	[server.autoscale]
//	min = 2             # 0 = on demand: no worker until a connection waits
//	max = 16
//	queue = 4           # scale up when an accept queue stays above this
//	up_after = "200ms"
//	down_after = "30s"  # then down one worker at a time, queues empty
type Autoscale struct {
	// On reports whether the file has a [server.autoscale] table; the
	// other fields mean nothing without it. It is not read from the file.
	On bool `toml:"-"`
	// Min is the fewest workers the scaler leaves; 0 means on demand: no
	// worker until the first connection waits in a listening socket's
	// accept queue. Default 1.
	Min int `toml:"min"`
	// Max is the most workers the scaler starts, at most MaxWorkers.
	// Required.
	Max int `toml:"max"`
	// Queue is the accept-queue length (connections the kernel accepted
	// that no worker took yet) above which the pool grows: when some
	// listening socket's queue stays above it for UpAfter. Default 4.
	Queue int `toml:"queue"`
	// UpAfter is how long a queue must stay above Queue before workers
	// are added. Default 200ms.
	UpAfter Duration `toml:"up_after"`
	// DownAfter is how long every queue must stay empty before one worker
	// is stopped (then another after as long again, down to Min); more
	// than 0. Default 30s.
	DownAfter Duration `toml:"down_after"`
}

// Defaults of [server.autoscale].
const (
	defaultAutoscaleMin       = 1
	defaultAutoscaleQueue     = 4
	defaultAutoscaleUpAfter   = 200 * time.Millisecond
	defaultAutoscaleDownAfter = 30 * time.Second
)

// autoscaleKeys are the keys of [server.autoscale].
var autoscaleKeys = []string{"min", "max", "queue", "up_after", "down_after"}

// applyAutoscaleDefaults settles Autoscale.On and the defaults of the keys
// d does not write; with autoscaling, workers defaults to min.
func applyAutoscaleDefaults(s *Server, d *document) {
	a := &s.Autoscale
	a.On = d.present("server.autoscale")
	for _, k := range autoscaleKeys {
		a.On = a.On || d.present("server.autoscale."+k)
	}
	if !a.On {
		return
	}
	if !d.present("server.autoscale.min") {
		a.Min = defaultAutoscaleMin
	}
	if !d.present("server.autoscale.queue") {
		a.Queue = defaultAutoscaleQueue
	}
	if !d.present("server.autoscale.up_after") {
		a.UpAfter = Duration{defaultAutoscaleUpAfter}
	}
	if !d.present("server.autoscale.down_after") {
		a.DownAfter = Duration{defaultAutoscaleDownAfter}
	}
	if !d.present("server.workers") && a.Min >= 0 {
		s.Workers = a.Min
	}
}

// minWorkers is the fewest workers server.workers may say: 0 with
// autoscale.min = 0, 1 otherwise.
func (s *Server) minWorkers() int {
	if s.Autoscale.On && s.Autoscale.Min == 0 {
		return 0
	}
	return 1
}

// validateAutoscale checks [server.autoscale] and that workers, the
// initial count, lies within it (unless workersOK says workers was found
// wrong already).
func (d *document) validateAutoscale(s *Server, workersOK bool) {
	a := s.Autoscale
	if !a.On {
		return
	}
	minOK := a.Min >= 0 && a.Min <= MaxWorkers && !d.isBad("server.autoscale.min")
	if !minOK {
		d.fail("server.autoscale.min", "must be between 0 (on demand) and %d, got %d", MaxWorkers, a.Min)
	}
	switch {
	case !d.present("server.autoscale.max") && !d.isBad("server.autoscale.max"):
		d.fail("server.autoscale", "max is required: the most workers autoscaling may start, e.g. max = 16")
	case a.Max < 1 || a.Max > MaxWorkers:
		d.fail("server.autoscale.max", "must be between 1 and %d, got %d", MaxWorkers, a.Max)
	case minOK && a.Min > a.Max:
		d.fail("server.autoscale.min", "must not exceed max (%d), got %d", a.Max, a.Min)
	case workersOK && d.present("server.workers") && (s.Workers < a.Min || s.Workers > a.Max):
		d.fail("server.workers", "is the initial worker count with [server.autoscale]: must be between min (%d) and max (%d), got %d",
			a.Min, a.Max, s.Workers)
	}
	if a.Queue < 0 {
		d.fail("server.autoscale.queue", "must be 0 (any waiting connection) or more, got %d", a.Queue)
	}
	if a.DownAfter.Duration == 0 {
		d.fail("server.autoscale.down_after", `must be more than 0s, e.g. "30s": the pool shrinks after its queues stayed empty this long`)
	}
}
