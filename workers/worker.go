package workers

import (
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/forkd/forkd/activation"
	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/internal/process"
)

// phase is where a worker is in its life.
type phase int

const (
	phaseStarting phase = iota // spawned, not yet ready
	phaseReady                 // serving
	phaseStopping              // asked to stop (or aborted); waiting for its exit
)

func (ph phase) String() string {
	switch ph {
	case phaseStarting:
		return "starting"
	case phaseReady:
		return "ready"
	default:
		return "stopping"
	}
}

// worker is one worker process. Only the arbiter goroutine touches its
// mutable fields; the reaper goroutine uses proc only.
type worker struct {
	id      int
	gen     *generation
	pid     int
	proc    *process.Process
	phase   phase
	started time.Time
	readyAt time.Time
	// beats says the notify socket times the worker's heartbeats (see
	// watchBeats).
	beats  bool
	status string
	// inSlot reports whether the worker still occupies gen.slots[id];
	// retired, aborted and scaled-down workers do not.
	inSlot bool
	// timer is the worker's one pending deadline (boot, ready
	// delay or kill); seq invalidates deadlines that were re-armed.
	timer *time.Timer
	seq   uint64
	// due is when timer fires (zero: no deadline) and dueKind what for:
	// an upgrade hands both over (Handover), so that a deadline does not
	// start again in the new master.
	due     time.Time
	dueKind timerKind
	// reason is why the worker is being stopped ("" when it is not).
	reason string
	// requests is the worker's FORKD_REQUESTS; maxRequests (0 = none) is
	// its recycling threshold, max_requests plus this worker's jitter.
	requests, maxRequests uint64
	// inflight is the worker's FORKD_REQUESTS_INFLIGHT, once hasInflight.
	inflight    uint64
	hasInflight bool
	// lifetime fires when the worker has lived max_lifetime (+ jitter).
	lifetime *time.Timer
}

// generation is the set of workers started from one config.
type generation struct {
	id       uint64
	cfg      *config.Config
	target   int
	minReady int
	slots    []*worker // index = worker id; nil = empty
	// predecessor[id] is a recycled worker that keeps serving until the
	// slot's new worker is ready.
	predecessor []*worker
	failures    []int // consecutive failures per slot
	respawn     []*time.Timer
	command     string   // resolved path of the worker command
	env         []string // environment shared by the generation's workers
	pidEnv      []string // variables of env a worker gets its own pid in
	whenDone    []chan error
	// announced reports whether when_ready fired for this generation.
	announced bool
}

// readyCount is the number of the generation's slots that serve: by
// their worker, or by a recycled predecessor until its successor is ready.
func (g *generation) readyCount() int {
	n := 0
	for id, w := range g.slots {
		switch {
		case w != nil && w.phase == phaseReady:
			n++
		case g.predecessor[id] != nil && g.predecessor[id].phase == phaseReady:
			n++
		}
	}
	return n
}

// baseEnv is the environment every worker of a generation shares: the
// master's, less what describes the master itself, plus the config's env,
// the sockets and the notify socket.
func baseEnv(cfg *config.Config, socks []activation.Socket, notify string) []string {
	env := cfg.Worker.Environ(os.Environ())
	env = append(env, activation.Env(socks)...)
	env = append(env,
		"NOTIFY_SOCKET="+notify,
		"FORKD_INSTANCE="+cfg.Server.Name,
	)
	if cfg.Worker.Ready != config.ReadyStarted && cfg.Server.Timeout.Duration > 0 {
		env = append(env, "WATCHDOG_USEC="+strconv.FormatInt(cfg.Server.Timeout.Microseconds(), 10))
	}
	return env
}

// pidEnv names the variables of env that must hold the worker's own pid:
// LISTEN_PID with LISTEN_FDS, WATCHDOG_PID with WATCHDOG_USEC.
func pidEnv(env []string) []string {
	var names []string
	for _, kv := range env {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "LISTEN_FDS":
			names = append(names, "LISTEN_PID")
		case "WATCHDOG_USEC":
			names = append(names, "WATCHDOG_PID")
		}
	}
	return names
}
