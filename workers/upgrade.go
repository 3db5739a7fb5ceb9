package workers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/activation"
	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/hooks"
)

// An upgrade (USR2) re-executes the master's binary in place: same pid, so
// systemd's MainPID stays right, and the workers — children of that pid —
// keep serving. Before execve the pool writes its state (sockets, notify
// socket, workers) to a memfd whose number it passes in FORKD_UPGRADE_FD;
// the new master reads it with TakeHandover and adopts the workers (Options
// .Adopt). The execve runs on the arbiter's own thread, the one that forked
// the workers, so their parent-death signal does not fire. If execve fails
// the old master carries on.

// upgradeEnv names the environment variable carrying the handover memfd.
const upgradeEnv = "FORKD_UPGRADE_FD"

// beforeExecTimeout bounds Options.BeforeExec: how long an upgrade waits
// for what must reach others before the exec.
const beforeExecTimeout = time.Second

// Handover is what an upgrading master hands to its successor.
type Handover struct {
	Sockets    []HandoverSocket `json:"sockets"`
	NotifyFD   int              `json:"notify_fd"`
	NotifyDir  string           `json:"notify_dir"`
	NotifyPath string           `json:"notify_path"`
	NextGen    uint64           `json:"next_generation"`
	Current    uint64           `json:"current_generation"`
	Target     int              `json:"target"`
	EverReady  bool             `json:"ever_ready"`
	Workers    []HandoverWorker `json:"workers"`
	// Config is what the current generation runs with of the settings a
	// reload compares with its new config.
	Config HandoverConfig `json:"config"`
	// Failures are the current generation's consecutive failures per
	// slot, which backoff and max_failures count.
	Failures []int `json:"failures,omitempty"`
	// Jobs is what Options.Freeze returned: the state of the singletons
	// and schedules, for package jobs/supervisor.
	Jobs json.RawMessage `json:"jobs,omitempty"`
	// Extra are Options.Extra: the master's own listening sockets.
	Extra []HandoverSocket `json:"extra,omitempty"`
}

// HandoverConfig holds the settings of the old master's current generation
// that its successor keeps for the adopted workers: a reload after the
// upgrade compares the config with these, not with the file the new
// master read at its start, which may have changed meanwhile.
type HandoverConfig struct {
	// Workers is the generation's config's workers (not its target,
	// which TTIN and TTOU change).
	Workers int      `json:"workers"`
	Name    string   `json:"name"`
	Backlog int      `json:"backlog"`
	Bind    []string `json:"bind"`
}

// HandoverSocket is a listening socket kept open across the upgrade.
type HandoverSocket struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
	FD   int    `json:"fd"`
}

// HandoverWorker is a live worker the new master adopts.
type HandoverWorker struct {
	ID         int       `json:"id"`
	PID        int       `json:"pid"`
	Generation uint64    `json:"generation"`
	Phase      string    `json:"phase"`
	InSlot     bool      `json:"in_slot"`
	Started    time.Time `json:"started"`
	ReadyAt    time.Time `json:"ready_at"`
	Requests   uint64    `json:"requests"`
	Reason     string    `json:"reason,omitempty"`
	// Due is the worker's pending deadline (zero: none) and DueKind what
	// for: "boot", "ready_delay" or "kill".
	Due     time.Time `json:"due,omitempty"`
	DueKind string    `json:"due_kind,omitempty"`
}

// dueKinds names the worker deadlines a handover carries.
var dueKinds = map[timerKind]string{timerBoot: "boot", timerReadyDelay: "ready_delay", timerKill: "kill"}

// left is how much of the deadline of kind that hw carries is left (none
// left: 0), or def when hw carries no such deadline (from a master that
// did not hand deadlines over); it is never more than def.
func (hw HandoverWorker) left(kind string, def time.Duration) time.Duration {
	if hw.DueKind != kind || hw.Due.IsZero() {
		return def
	}
	return min(max(time.Until(hw.Due), 0), def)
}

// SocketsOf returns h's listening sockets as activation.Sockets.
func (h *Handover) SocketsOf() []activation.Socket {
	return socketsOf(h.Sockets)
}

// ExtraOf returns h's Extra sockets (the master's own) as
// activation.Sockets.
func (h *Handover) ExtraOf() []activation.Socket {
	return socketsOf(h.Extra)
}

// socketsOf returns hs as activation.Sockets, close-on-exec.
func socketsOf(hs []HandoverSocket) []activation.Socket {
	socks := make([]activation.Socket, 0, len(hs))
	for _, s := range hs {
		unix.CloseOnExec(s.FD)
		socks = append(socks, activation.Socket{Name: s.Name, Addr: s.Addr,
			File: os.NewFile(uintptr(s.FD), s.Addr)})
	}
	return socks
}

// TakeHandover returns the state an upgrading master left in
// FORKD_UPGRADE_FD, or nil when this process was not started by an
// upgrade. It unsets the variable so that no child inherits it.
func TakeHandover() (*Handover, error) {
	v, ok := os.LookupEnv(upgradeEnv)
	if !ok {
		return nil, nil
	}
	os.Unsetenv(upgradeEnv)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("workers: %s=%q is not a file descriptor", upgradeEnv, v)
	}
	f := os.NewFile(uintptr(fd), "forkd-upgrade")
	defer f.Close()
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("workers: read upgrade state: %w", err)
	}
	var h Handover
	if err := json.NewDecoder(f).Decode(&h); err != nil {
		return nil, fmt.Errorf("workers: read upgrade state: %w", err)
	}
	if err := h.check(); err != nil {
		return nil, fmt.Errorf("workers: read upgrade state: %w", err)
	}
	return &h, nil
}

// check reports a value in h that adopt or SocketsOf cannot take — a
// negative descriptor, worker slot or count, a target beyond
// config.MaxWorkers, a pid that is not one process's (kill(2) reads -1 as
// every process) — or returns nil.
func (h *Handover) check() error {
	if h.Target < 0 || h.Target > config.MaxWorkers {
		return fmt.Errorf("target %d out of range 0…%d", h.Target, config.MaxWorkers)
	}
	if h.Config.Workers < 0 || h.Config.Workers > config.MaxWorkers {
		return fmt.Errorf("config workers %d out of range 0…%d", h.Config.Workers, config.MaxWorkers)
	}
	if h.NotifyFD < 0 {
		return fmt.Errorf("notify socket fd %d", h.NotifyFD)
	}
	for _, s := range append(slices.Clip(h.Sockets), h.Extra...) {
		if s.FD < 0 {
			return fmt.Errorf("socket %s: fd %d", s.Addr, s.FD)
		}
	}
	for _, w := range h.Workers {
		if w.ID < 0 || w.PID <= 0 {
			return fmt.Errorf("worker %d: pid %d", w.ID, w.PID)
		}
	}
	return nil
}

// upgradeRefused logs why an upgrade did not happen and tells
// Options.UpgradeRefused.
func (p *Pool) upgradeRefused(err error) {
	if stop := (*stopFirst)(nil); errors.As(err, &stop) {
		p.log.Info("upgrade abandoned: the master stops instead", "signal", signalName(stop.sig))
	} else {
		p.log.Error("upgrade failed; the old master keeps running", "err", err)
	}
	if p.opts.UpgradeRefused != nil {
		p.opts.UpgradeRefused(err)
	}
}

// upgrade re-executes the master, for why (the pre_exec hook's reason);
// it returns only when that failed.
func (p *Pool) upgrade(why string) error {
	if err := p.prepareUpgrade(why); err != nil {
		return err
	}
	return p.execUpgrade()
}

// prepareUpgrade says whether an upgrade may go ahead: it can start now,
// the config loads (the new master reads it first thing and would exit,
// taking every worker with it, if it did not), and the pre_exec hook
// agrees.
func (p *Pool) prepareUpgrade(why string) error {
	if err := p.canUpgrade(); err != nil {
		return err
	}
	if p.opts.Load != nil {
		if _, err := p.opts.Load(); err != nil {
			return fmt.Errorf("upgrade refused: the new master could not start with this config: %w", err)
		}
	}
	ev := hooks.Event{Hook: hooks.PreExec, Generation: p.current.id, Reason: why}
	p.emit(ev)
	if err := p.runHook(ev); err != nil {
		return fmt.Errorf("upgrade aborted by pre_exec hook: %w", err)
	}
	return nil
}

// execUpgrade hands the pool over and re-executes the master (after
// prepareUpgrade); it returns only when that failed. The notify socket is
// suspended first, and what the workers sent until then applied, so that
// the handover is the pool's last word: what they send afterwards waits in
// the socket for the new master.
func (p *Pool) execUpgrade() error {
	if err := p.canUpgrade(); err != nil {
		return err
	}
	sus, err := p.nc.Suspend(context.Background())
	if err != nil {
		return fmt.Errorf("workers: upgrade: suspend the notify socket: %w", err)
	}
	p.takeBatches()
	p.handleBatch(sus.Pending)
	if err := p.execHandover(sus.FD); err != nil {
		if rerr := p.nc.Resume(); rerr != nil {
			p.log.Error("upgrade: cannot resume the notify socket", "err", rerr)
		}
		var stop *stopFirst
		if errors.As(err, &stop) {
			p.handleSignal(stop.sig)
		}
		return err
	}
	return nil
}

// execHandover writes the handover, with notifyFD for the notify socket,
// and re-executes the master; it returns only when that failed.
func (p *Pool) execHandover(notifyFD int) error {
	if err := p.canUpgrade(); err != nil {
		return err // the messages just applied may have changed the pool
	}
	h, keep, err := p.handover()
	if err != nil {
		return fmt.Errorf("workers: upgrade: %w", err)
	}
	h.NotifyFD = notifyFD
	if p.opts.Upgrading != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		p.opts.Upgrading(p.withBeats(ctx, p.snapshot()))
		cancel()
	}
	if h.Jobs, err = p.freeze(); err != nil {
		return fmt.Errorf("workers: upgrade: %w", err)
	}
	defer p.thaw() // reached only when the exec failed
	memfd, err := unix.MemfdCreate("forkd-upgrade", 0)
	if err != nil {
		return fmt.Errorf("workers: upgrade: memfd: %w", err)
	}
	defer unix.Close(memfd)
	b, _ := json.Marshal(h)
	if _, err := unix.Write(memfd, b); err != nil {
		return fmt.Errorf("workers: upgrade: write state: %w", err)
	}
	for _, fd := range keep {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			restoreCloexec(keep)
			return fmt.Errorf("workers: upgrade: keep fd %d: %w", fd, err)
		}
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, upgradeEnv+"=") {
			env = append(env, kv)
		}
	}
	env = append(env, upgradeEnv+"="+strconv.Itoa(memfd))
	var undo func()
	if p.opts.BeforeExec != nil {
		ctx, cancel := context.WithTimeout(context.Background(), beforeExecTimeout)
		undo = p.opts.BeforeExec(ctx)
		cancel()
	}
	if sig := p.stopPending(); sig != nil {
		if undo != nil {
			undo()
		}
		restoreCloexec(keep)
		return &stopFirst{sig}
	}
	p.log.Info("upgrading: re-executing the master", "exe", p.opts.Exe, "workers", len(h.Workers))
	err = syscall.Exec(p.opts.Exe, p.args(), env)
	if undo != nil {
		undo()
	}
	restoreCloexec(keep)
	return fmt.Errorf("workers: upgrade: exec %s: %w", p.opts.Exe, err)
}

// stopFirst is why an upgrade did not re-execute the master: a signal
// asking for a stop came while it was prepared.
type stopFirst struct{ sig os.Signal }

func (e *stopFirst) Error() string {
	return fmt.Sprintf("workers: upgrade: %s came first: the master stops instead", signalName(e.sig))
}

// stopPending takes the master's signals that came while an upgrade was
// prepared (those in Options.Signals by now), which the exec would lose,
// and returns the first that asks for
// a stop (TERM, INT, QUIT), if any. The others are dropped and logged: what
// they ask for, the upgrade does or refuses (another upgrade, a reload: the
// new master reads the config file) or the new master does (USR1).
func (p *Pool) stopPending() os.Signal {
	for {
		select {
		case sig := <-p.opts.Signals:
			switch sig {
			case syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT:
				return sig
			}
			p.log.Warn("signal ignored: an upgrade is under way", "signal", signalName(sig))
		default:
			return nil
		}
	}
}

// canUpgrade says why an upgrade cannot start now (nil: it can).
func (p *Pool) canUpgrade() error {
	switch {
	case p.opts.Exe == "":
		return errors.New("workers: upgrade: no executable configured")
	case p.stopping:
		return ErrStopping
	case p.pending != nil:
		return ErrReloading
	case p.upgradeAck != nil:
		return errors.New("workers: upgrade: one is under way already")
	case unix.Gettid() != unix.Getpid():
		// execve from another thread would end the main thread, and with
		// it the parent-death signal of every worker it forked.
		return errors.New("workers: upgrade: the arbiter must run on the main thread (runtime.LockOSThread in init)")
	}
	return nil
}

// args is the new master's argv.
func (p *Pool) args() []string {
	if p.opts.Args != nil {
		return p.opts.Args
	}
	return os.Args
}

func restoreCloexec(fds []int) {
	for _, fd := range fds {
		unix.CloseOnExec(fd)
	}
}

// handover describes the pool for its successor and lists the fds that
// must survive execve, but for the notify socket's (see execUpgrade).
func (p *Pool) handover() (*Handover, []int, error) {
	srv := p.current.cfg.Server
	h := &Handover{NextGen: p.nextGen, Current: p.current.id, Target: p.current.target,
		EverReady: p.everReady, NotifyDir: p.notifyDir, NotifyPath: p.notifyAdr,
		Config: HandoverConfig{Workers: srv.Workers, Name: srv.Name, Backlog: srv.Backlog}}
	for _, b := range srv.Bind {
		h.Config.Bind = append(h.Config.Bind, b.Raw)
	}
	var keep []int
	for _, s := range p.opts.Sockets {
		fd, err := rawFD(s.File)
		if err != nil {
			return nil, nil, fmt.Errorf("socket %s: %w", s.Addr, err)
		}
		h.Sockets = append(h.Sockets, HandoverSocket{Name: s.Name, Addr: s.Addr, FD: fd})
		keep = append(keep, fd)
	}
	for _, s := range p.opts.Extra {
		fd, err := rawFD(s.File)
		if err != nil {
			return nil, nil, fmt.Errorf("socket %s: %w", s.Addr, err)
		}
		h.Extra = append(h.Extra, HandoverSocket{Name: s.Name, Addr: s.Addr, FD: fd})
		keep = append(keep, fd)
	}
	h.Failures = append([]int(nil), p.current.failures...)
	for _, w := range p.byPID {
		hw := HandoverWorker{ID: w.id, PID: w.pid, Generation: w.gen.id,
			Phase: w.phase.String(), InSlot: w.inSlot, Started: w.started, ReadyAt: w.readyAt,
			Requests: w.requests, Reason: w.reason}
		if kind, ok := dueKinds[w.dueKind]; ok && !w.due.IsZero() {
			hw.Due, hw.DueKind = w.due, kind
		}
		h.Workers = append(h.Workers, hw)
	}
	return h, keep, nil
}

// rawFD returns f's descriptor without switching it to blocking mode.
func rawFD(f syscall.Conn) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(u uintptr) { fd = int(u) }); err != nil {
		return -1, err
	}
	return fd, nil
}

// adoptedConfig is the config for the adopted generation: cfg, the one
// this master read, with the settings of h that its workers were started
// with and that a reload compares (see HandoverConfig). A name or sockets
// that changed cannot apply to a running instance, as on reload: the
// difference is logged.
func (p *Pool) adoptedConfig(cfg *config.Config, h HandoverConfig) *config.Config {
	if h.Name == "" {
		return cfg // from a master that did not hand its config over
	}
	c := *cfg
	if c.Server.Name != h.Name {
		p.log.Warn("server.name cannot change on upgrade; keeping the old one", "name", h.Name)
		c.Server.Name = h.Name
	}
	var binds []config.Bind
	for _, raw := range h.Bind {
		b, err := config.ParseBind(raw)
		if err != nil {
			p.log.Warn("upgrade: the old master's bind does not parse", "bind", raw, "err", err)
			return cfg
		}
		binds = append(binds, b)
	}
	c.Server.Bind, c.Server.Backlog = binds, h.Backlog
	if !sameSockets(&c, cfg) {
		p.log.Warn("server.bind and server.backlog apply at start only; the adopted sockets stay; restart forkd to change them")
	}
	c.Server.Workers = h.Workers
	return &c
}

// adopt takes over the workers of the master this one replaced.
func (p *Pool) adopt(h *Handover) {
	p.opts.Config = p.adoptedConfig(p.opts.Config, h.Config)
	p.nextGen = h.Current
	g := p.newGeneration(p.opts.Config, h.Target)
	p.nextGen = max(h.NextGen, g.id+1)
	p.current = g
	p.everReady = h.EverReady
	copy(g.failures, h.Failures)
	older := map[uint64]*generation{}
	for _, hw := range h.Workers {
		wg := g
		if hw.Generation != g.id {
			if older[hw.Generation] == nil {
				older[hw.Generation] = &generation{id: hw.Generation, cfg: g.cfg}
			}
			wg = older[hw.Generation]
		}
		w := &worker{id: hw.ID, gen: wg, pid: hw.PID, started: hw.Started, readyAt: hw.ReadyAt,
			requests: hw.Requests, reason: hw.Reason}
		if err := p.watchAdopted(w); err != nil {
			p.log.Warn("upgrade: cannot adopt worker", "worker_id", hw.ID, "pid", hw.PID, "err", err)
			continue
		}
		p.byPID[w.pid] = w
		switch {
		case hw.Phase == phaseStopping.String() || !hw.InSlot || wg != g || hw.ID >= g.target:
			w.phase = phaseStopping
			p.retiring[w] = true
			p.arm(w, hw.left("kill", g.cfg.Server.GracefulTimeout.Duration), timerKill)
		case hw.Phase == phaseReady.String():
			w.phase, w.inSlot = phaseReady, true
			g.slots[w.id] = w
			p.watchBeats(w, time.Now())
			p.armRecycling(w)
		case g.cfg.Worker.Ready == config.ReadyStarted:
			w.phase, w.inSlot = phaseStarting, true
			g.slots[w.id] = w
			p.arm(w, hw.left("ready_delay", g.cfg.Worker.ReadyDelay.Duration), timerReadyDelay)
		default:
			w.phase, w.inSlot = phaseStarting, true
			g.slots[w.id] = w
			p.arm(w, hw.left("boot", g.cfg.Server.BootTimeout.Duration), timerBoot)
		}
	}
	g.announced = g.readyCount() >= g.minReady
	if g.announced {
		p.state = StateRunning
	}
	p.log.Info("upgraded: adopted workers", "workers", len(p.byPID), "generation", g.id)
	if g.announced {
		// The new master serves: say so, as after a reload (an adopted
		// generation still booting says so once it is ready).
		p.emit(hooks.Event{Hook: hooks.WhenReady, Generation: g.id, Workers: g.target})
	}
}
