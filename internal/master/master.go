// Package master wires forkd's parts into the master process: it parses
// the command line, loads the config, takes or binds the sockets, starts
// the hook sinks (log, D-Bus, exec hooks, journal), runs the arbiter and
// keeps systemd informed.
//
// Run is what cmd/forkd's main calls:
//
//	forkd --config /etc/forkd/myapp.toml   # serve
//	forkd --check --config myapp.toml      # validate and exit 0/1
package master

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/forkd/forkd/activation"
	"github.com/forkd/forkd/cgroup"
	"github.com/forkd/forkd/cluster"
	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/hooks"
	"github.com/forkd/forkd/internal/orphans"
	"github.com/forkd/forkd/jobs/supervisor"
	"github.com/forkd/forkd/metrics"
	"github.com/forkd/forkd/systemd"
	"github.com/forkd/forkd/workers"
)

// ErrUsage marks command-line mistakes; main exits 2 for them. Its text
// is what forkd prints after "forkd: ".
var ErrUsage = errors.New("usage")

// Version is forkd's version, set at build time (make build: -ldflags
// "-X github.com/forkd/forkd/internal/master.Version=…"); when it is not,
// version reads the module's build information.
var Version string

// version returns what forkd --version prints after "forkd ".
func version() string {
	if Version != "" {
		return Version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev == "" {
		return "devel"
	}
	return "devel-" + rev + dirty
}

// options are the command-line flags.
type options struct {
	config    string
	check     bool
	bus       string
	socket    string
	logFormat string
	logLevel  string
	version   bool
	// exe is what an upgrade re-executes: the path forkd was started as,
	// so that a package upgrade's new binary is the one that runs.
	exe string
}

// executable returns the absolute path forkd was started as ("" if it
// cannot tell), not /proc/self/exe, which keeps naming the old binary
// after a package upgrade replaced it.
func executable() string {
	p := os.Args[0]
	if !strings.Contains(p, "/") {
		lp, err := exec.LookPath(p)
		if err != nil {
			return ""
		}
		p = lp
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return ""
	}
	return abs
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("forkd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.config, "config", "", "the instance's TOML config `file` (required)")
	fs.BoolVar(&o.check, "check", false, "validate the config and exit: 0 valid, 1 invalid")
	fs.BoolVar(&o.version, "version", false, "print forkd's version and exit")
	fs.StringVar(&o.bus, "bus", "", "D-Bus `address` for hook signals: \"\" = the system bus "+
		"(DBUS_SYSTEM_BUS_ADDRESS), \"session\", \"none\" to disable, or a D-Bus address")
	fs.StringVar(&o.socket, "control-socket", "", "`path` of the peer-to-peer D-Bus socket forkctl falls back to: "+
		"\"\" = bus.sock in the runtime directory ($RUNTIME_DIRECTORY, /run/forkd/NAME or $XDG_RUNTIME_DIR/forkd/NAME), "+
		"\"none\" to disable")
	fs.StringVar(&o.logFormat, "log-format", "auto", "log format: auto (text), text or json")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: forkd --config FILE [--check] [--bus ADDRESS] [--control-socket PATH] [--log-format auto|text|json] [--log-level LEVEL]\n"+
			"       forkd --version\n\n")
		printFlags(stderr, fs)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, fmt.Errorf("%w: %v", ErrUsage, err)
	}
	if o.version {
		return o, nil
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return o, fmt.Errorf("%w: unexpected argument %q", ErrUsage, fs.Arg(0))
	}
	if o.config == "" {
		fs.Usage()
		return o, fmt.Errorf("%w: --config is required", ErrUsage)
	}
	return o, nil
}

// printFlags lists fs's flags as the synopsis spells them, "--name".
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if name != "" {
			line += " " + name
		}
		if f.DefValue != "" && f.DefValue != "false" {
			usage += fmt.Sprintf(" (default %q)", f.DefValue)
		}
		fmt.Fprintf(w, "%s\n    \t%s\n", line, usage)
	})
}

// newLogger builds the master's logger.
func newLogger(o options, stderr io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, fmt.Errorf("%w: --log-level: %v", ErrUsage, err)
	}
	ho := &slog.HandlerOptions{Level: lvl}
	switch o.logFormat {
	case "auto", "text":
		if os.Getenv("JOURNAL_STREAM") != "" {
			// The journal timestamps every line itself.
			ho.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
				if len(groups) == 0 && a.Key == slog.TimeKey {
					return slog.Attr{}
				}
				return a
			}
		}
		return slog.New(slog.NewTextHandler(stderr, ho)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(stderr, ho)), nil
	}
	return nil, fmt.Errorf("%w: --log-format %q: want auto, text or json", ErrUsage, o.logFormat)
}

// Run runs forkd with the command-line args (without the program name)
// until it stops: after TERM, INT or QUIT (nil) or a fatal error.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if o.version {
		_, err := fmt.Fprintln(stdout, "forkd", version())
		return err
	}
	var sigs *signals
	if !o.check {
		// Signals first, so that none that arrives while we start is lost.
		sigs = listenSignals()
		defer sigs.stop()
	}
	o.exe = executable()
	cfg, err := config.Load(o.config)
	if err != nil {
		return err
	}
	if o.check {
		t, why := cgroup.Open()
		if err := checkLimits(cfg, t, why); err != nil {
			return err
		}
		if cfg.Cluster.Enabled() && cluster.HasJobs(cfg) {
			if _, err := cluster.FindExecutable(); err != nil {
				return fmt.Errorf("%s: %w", o.config, err)
			}
		}
		if cfg.Metrics.Enabled() {
			if _, err := metrics.FindExecutable(); err != nil {
				return fmt.Errorf("%s: %w", o.config, err)
			}
		}
		fmt.Fprintf(stdout, "%s: ok (instance %q, %s of %s)\n", o.config, cfg.Server.Name,
			config.Workers(cfg.Server.Workers), cfg.Worker.Command)
		return nil
	}
	log, err := newLogger(o, stderr)
	if err != nil {
		return err
	}
	notifier := systemd.NewNotifier()
	err = serve(ctx, o, cfg, log, notifier, sigs)
	if err != nil {
		_ = notifier.Errno(errnoOf(err), "failed: "+err.Error())
	}
	return err
}

// errnoOf is the errno in err's chain, or EINVAL.
func errnoOf(err error) int {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return int(errno)
	}
	return int(syscall.EINVAL)
}

// serve runs the master.
func serve(ctx context.Context, o options, cfg *config.Config, log *slog.Logger, notifier *systemd.Notifier,
	sigs *signals) error {
	// A master started by an upgrade (USR2) inherits the sockets and the
	// workers; on_starting ran once already, for this instance, whose name
	// (its D-Bus name, FORKD_INSTANCE) stays what it was.
	adopt, err := workers.TakeHandover()
	if err != nil {
		return err
	}
	if adopt != nil && adopt.Config.Name != "" && adopt.Config.Name != cfg.Server.Name {
		log.Warn("server.name cannot change on upgrade; keeping the old one", "name", adopt.Config.Name)
		cfg.Server.Name = adopt.Config.Name
	}
	// Before any child runs, so that whatever it leaves behind is ours.
	reapOrphans := orphans.Needed(cfg.Server.Subreaper)
	if cfg.Server.Subreaper {
		if err := orphans.BecomeSubreaper(); err != nil {
			return err
		}
	}
	sinks, err := newSinks(o, cfg, log)
	if err != nil {
		return err
	}
	sinkGroup := newGroup(context.Background())
	sinks.start(sinkGroup)
	defer func() {
		sinkGroup.cancel()
		_ = sinkGroup.Wait()
	}()

	cgTree, cgWhy := cgroups(log)
	if err := checkLimits(cfg, cgTree, cgWhy); err != nil {
		if adopt == nil {
			return err
		}
		// Failing now would take the adopted workers down with this
		// process (a master without delegation upgraded in place leaves
		// its workers in its own cgroup): serve on, and say why the
		// limits wait.
		log.Warn("upgraded in place without cgroup delegation: the config's cgroup limits apply from the next restart", "err", err)
	}

	var (
		socks     []activation.Socket
		activated bool
	)
	if adopt != nil {
		socks, activated = adopt.SocketsOf(), true
		log.Info("upgraded in place: adopting workers", "workers", len(adopt.Workers))
	} else {
		start := hooks.Event{Hook: hooks.OnStarting, Time: time.Now(), Instance: cfg.Server.Name, WorkerID: -1}
		sinks.Emit(start)
		if sinks.exec.Has(hooks.OnStarting) {
			sigs.wait() // before any child runs: it may signal its parent at once
		}
		if err := sinks.runHook(ctx, start); err != nil {
			return fmt.Errorf("on_starting hook: %w", err)
		}
		socks, activated, err = activation.Listen(cfg.Server.Bind, cfg.Server.Backlog, cfg.Server.Name)
		if err != nil {
			return err
		}
	}
	defer activation.Close(socks)
	for _, s := range socks {
		if adopt != nil {
			break
		}
		log.Info("listening", "addr", s.Addr, "name", s.Name, "from_systemd", activated)
		if !activated {
			// Kept by systemd's fd store (FileDescriptorStoreMax=), they come
			// back as LISTEN_FDS after a restart: no connection is refused.
			if err := notifier.StoreFDs(s.Name, s.File); err != nil {
				log.Warn("fd store", "addr", s.Addr, "err", err)
			}
		}
	}

	rec, mep, msock, err := newMetrics(cfg, socks, sinks, adopt, log)
	if err != nil {
		return err
	}
	if msock != nil {
		defer msock.Close()
	}
	status := newReporter(notifier, cfg, sinks.bus, log)
	sigs.wait() // registered meanwhile; the pool takes them over, and its workers may signal at once
	reloaded := func(err error) {
		sinks.reloaded(err)
		status.reloaded(err)
		rec.Reloaded(err)
	}
	once := newRunOnce(cfg, socks, sinks, log, adopt, sinks.journal != nil, cgTree, func(s *supervisor.Supervisor) { sinks.ctl.setJobs(s) })
	if cl := newCluster(cfg, log, sinks.bus, status, adopt); cl != nil {
		once.setCluster(cl, adopt)
	}
	staged := func(c *config.Config) {
		sinks.stage(c)
		if c.Metrics.Bind != cfg.Metrics.Bind {
			log.Warn("[metrics] bind changed: the endpoint moves at the next restart, not on reload",
				"bind", cfg.Metrics.Bind.Raw, "new", c.Metrics.Bind.Raw)
		}
	}
	popts := workers.Options{
		Config:  cfg,
		Sockets: socks,
		Load: func() (*config.Config, error) {
			c, err := config.Load(o.config)
			if err == nil {
				err = checkLimits(c, cgTree, cgWhy)
			}
			if err != nil {
				return nil, err
			}
			return c, nil
		},
		Cgroups:        cgTree,
		Staged:         staged,
		Signals:        sigs.c,
		Hooks:          sinks,
		Observe:        status.observe,
		Reloaded:       reloaded,
		UpgradeRefused: func(error) { rec.UpgradeRefused() },
		RunHook:        sinks.runHook,
		BeforeExec: func(ctx context.Context) func() {
			sinks.flush(ctx)
			return sigs.ignoreForExec()
		},
		RequestStats: func(gen uint64, id, pid int, v string) {
			sinks.requestStats(log, cfg.Server.Name, gen, id, pid, v)
		},
		Logger: log,
		Exe:    o.exe,
		Adopt:  adopt,
	}
	popts.Requests = rec.Requests
	once.options(&popts)
	pauseMetrics(&popts, rec, mep, msock, log)
	pool := workers.New(popts)
	once.start(pool, cfg, adopt)
	sinks.ctl.pool.Store(pool)
	rec.SetPool(pool)

	// The arbiter runs on this goroutine — the main one, locked to the
	// process's main thread by cmd/forkd — so that every worker's parent
	// thread lives as long as the process, across in-place upgrades too.
	g := newGroup(ctx)
	g.Go(func(ctx context.Context) error { return status.run(ctx) })
	g.Go(rec.Run)
	if mep != nil {
		g.Go(mep.Run)
	}
	if reapOrphans {
		var opts []orphans.Option
		if adopt != nil {
			opts = append(opts, orphans.Adopting(handedOver(adopt)))
		}
		reaper := orphans.New(log, opts...)
		log.Debug("reaping orphans", "pid1", os.Getpid() == 1, "subreaper", cfg.Server.Subreaper)
		g.Go(func(ctx context.Context) error {
			if err := reaper.Run(ctx); err != nil {
				// Not fatal: the workers serve; orphans stay zombies.
				log.Error("cannot reap orphans", "err", err)
			}
			<-ctx.Done()
			return nil
		})
	}
	g.Go(func(ctx context.Context) error {
		if err := notifier.Watchdog(ctx, pool.Healthy); err != nil {
			return err
		}
		<-ctx.Done() // no watchdog configured: nothing to do, but keep the group up
		return nil
	})
	err = pool.Run(g.ctx)
	g.cancel()
	if gerr := g.Wait(); err == nil {
		err = gerr
	}
	// The singletons stop after the workers.
	if serr := once.stop(); serr != nil {
		log.Error("singletons and schedules", "err", serr)
	}

	// on_exit comes after everything else: the exec hooks still queued
	// (the last workers' child_exit and worker_exit) run first.
	sinks.drainExec(cfg.Server.GracefulTimeout.Duration)
	exit := hooks.Event{Hook: hooks.OnExit, Time: time.Now(), Instance: cfg.Server.Name, WorkerID: -1,
		Generation: status.last().Generation, Reason: "stopped"}
	if err != nil {
		exit.Reason = err.Error()
	}
	sinks.Emit(exit)
	if herr := sinks.runHook(context.Background(), exit); herr != nil {
		log.Warn("on_exit hook", "err", herr)
	}
	return err
}
