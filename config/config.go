package config

import (
	"strconv"
	"strings"
	"time"

	"github.com/forkd/forkd/jobs"
)

// Config is a forkd config file decoded. Load and Parse return it with
// every default applied and every value checked; Default returns the
// defaults alone. The toml tags are the file's spellings.
type Config struct {
	// Path is the file the config was read from ("" when parsed from memory).
	Path string `toml:"-"`
	// Server holds the master's settings.
	Server Server `toml:"server"`
	// Worker describes the program forked N times.
	Worker Worker `toml:"worker"`
	// Hooks maps a hook name (hooks.Hook, e.g. "on_starting") to the
	// commands the master runs when the hook fires, in file order. Written
	// as [[hooks.on_starting]] tables. pre_request and post_request cannot
	// have commands: they happen inside workers.
	Hooks map[string][]HookExec `toml:"hooks"`
	// Singletons are the [[singleton]] tables, in file order: programs run
	// as exactly one process per instance, however many workers there are.
	Singletons []Singleton `toml:"singleton"`
	// Schedules are the [[schedule]] tables, in file order: programs run
	// once per period per instance, however many workers there are.
	Schedules []Schedule `toml:"schedule"`
	// Metrics is the [metrics] table: the Prometheus endpoint (off when
	// absent).
	Metrics Metrics `toml:"metrics"`

	// cgroupKeys are where the file sets limits that need a cgroup
	// (see RefuseLimits).
	cgroupKeys []*Error
	// Cluster is the [cluster] table: the etcd through which jobs with
	// scope = "cluster" run once across instances. Optional.
	Cluster Cluster `toml:"cluster"`
}

// Server holds the master's settings; names follow Gunicorn's where the
// meaning is the same.
type Server struct {
	// Name is the instance name (FORKD_INSTANCE, D-Bus name): 1–64
	// characters of A–Z a–z 0–9 _ . @ -. Default: the config file's base
	// name without ".toml" ("forkd" when parsed from memory).
	Name string `toml:"name"`
	// Workers is the number of worker processes. Default 1, range 1…4096;
	// with [server.autoscale], the initial count, within its min…max.
	Workers int `toml:"workers"`
	// MinReady is how many workers must serve before the instance (or a
	// new generation on reload) counts as ready. 0 (the default) means all
	// of them, however many there are after scaling.
	MinReady int `toml:"min_ready"`
	// Bind lists the addresses forkd binds when systemd passed no sockets.
	// Default ["tcp://127.0.0.1:8000"]; never empty after Load or Parse.
	Bind []Bind `toml:"bind"`
	// Backlog is the listen(2) backlog of sockets forkd binds. Default
	// 2048, range 1…65535.
	Backlog int `toml:"backlog"`
	// Timeout is the worker heartbeat timeout (WATCHDOG_USEC); 0 disables.
	// Default 30s.
	Timeout Duration `toml:"timeout"`
	// GracefulTimeout is how long stopping workers may drain before KILL.
	// Default 30s.
	GracefulTimeout Duration `toml:"graceful_timeout"`
	// BootTimeout is how long a worker may take to become ready; always
	// more than 0. Default 30s.
	BootTimeout Duration `toml:"boot_timeout"`
	// KillTimeout is the wait between SIGABRT (or a quick-stop signal) and
	// SIGKILL. Default 5s.
	KillTimeout Duration `toml:"kill_timeout"`
	// MaxSurge is how many workers of a new generation may boot at once
	// during a reload; each one that becomes ready retires one old worker.
	// 0 (the default) starts the whole new generation at once.
	MaxSurge int `toml:"max_surge"`
	// MaxBooting is how many workers may boot at once (started, not yet
	// ready), across generations. 0 (the default) paces boots by the CPUs:
	// twice as many as there are CPUs always, more only while the
	// machine's run queue is no longer than twice the CPUs. Workers that
	// boot at once share the CPUs: beyond what they can take, each boot
	// only gets slower.
	MaxBooting int `toml:"max_booting"`
	// MaxFailures stops the instance, with an error, once a worker slot
	// failed this many times in a row (a worker that exits before it
	// served for a second, or cannot start), so that systemd's Restart=
	// takes over; 0 (the default) retries with backoff forever.
	MaxFailures int `toml:"max_failures"`
	// ReloadAfterUpgrade makes an in-place upgrade (USR2) replace the
	// adopted workers with a new generation, as a reload does, once the
	// new master runs. Default false: the workers keep running.
	ReloadAfterUpgrade bool `toml:"reload_after_upgrade"`
	// MaxRequests recycles a worker after it reported this many finished
	// requests (FORKD_REQUESTS, sent by the worker SDK); 0 disables.
	MaxRequests int `toml:"max_requests"`
	// MaxRequestsJitter adds a random 0…MaxRequestsJitter to each
	// worker's MaxRequests, so workers do not recycle all at once.
	MaxRequestsJitter int `toml:"max_requests_jitter"`
	// MaxLifetime recycles a worker this long after it became ready; 0
	// disables.
	MaxLifetime Duration `toml:"max_lifetime"`
	// MaxLifetimeJitter adds a random 0…MaxLifetimeJitter to each
	// worker's MaxLifetime.
	MaxLifetimeJitter Duration `toml:"max_lifetime_jitter"`
	// MasterSlice is the CPU time slice the master's threads ask the
	// kernel for (sched_setattr's sched_runtime, honoured by Linux ≥ 6.12):
	// a short one lets the master, once it wakes, run before busy workers
	// have used up their own slices. Its share of the CPU is unchanged, and
	// workers get the kernel's default slice. 0 leaves the kernel's
	// default; otherwise MinMasterSlice…MaxMasterSlice. Default 100µs.
	MasterSlice Duration `toml:"master_slice"`
	// StateDir is the directory where persistent schedules keep their
	// last-run times (see jobs.State); forkd creates it if it is missing.
	// An absolute path. Default: the first directory in $STATE_DIRECTORY
	// (set by systemd's StateDirectory=), else none, and then no schedule
	// may be persistent.
	StateDir string `toml:"state_dir"`
	// Autoscale is [server.autoscale]: automatic scaling between a min and
	// a max (Autoscale.On says it is configured). With it, Workers is the
	// initial count, by default Min, and may be 0 when Min is.
	Autoscale Autoscale `toml:"autoscale,omitempty"`

	// Subreaper makes forkd a child subreaper (PR_SET_CHILD_SUBREAPER):
	// the orphaned descendants of its workers, singletons and hooks become
	// its children, and it reaps them. forkd does so anyway when it is
	// PID 1. Read at start; a reload does not change it. Default false.
	Subreaper bool `toml:"subreaper"`
}

// Program is what to run, as [worker], [[singleton]] and [[schedule]]
// tables all say it: the keys command, args, env and dir.
type Program struct {
	// Command is the program: an absolute path, a path relative to Dir, or
	// a name looked up in PATH (env's PATH if it sets one, else the
	// master's). Required; it must be an executable regular file.
	Command string `toml:"command"`
	// Path is Command resolved when the config was loaded: an absolute,
	// cleaned path to the executable. It is not read from the file.
	Path string `toml:"-"`
	// Args are the program's arguments (argv[1:]).
	Args []string `toml:"args"`
	// Env is added to the master's environment for the program. Keys are
	// non-empty, contain no '=' and are none of WorkerVars.
	Env map[string]string `toml:"env"`
	// Dir is the working directory; if set, it must be an existing
	// directory. Default: the master's.
	Dir string `toml:"dir"`
}

// Worker describes the program forked N times.
type Worker struct {
	Program
	// Ready says when a worker counts as serving: ReadyNotify (it sends
	// READY=1) or ReadyStarted (ReadyDelay after it started). Default notify.
	Ready ReadyMode `toml:"ready"`
	// ReadyDelay is the delay for ReadyStarted; it must be 0 with
	// ReadyNotify. Default 0.
	ReadyDelay Duration `toml:"ready_delay"`
	// Limits are each worker's cgroup settings (memory_max, …).
	Limits
}

// Singleton is one [[singleton]] table: a program of which exactly one
// process runs per instance, supervised (restarted with backoff when it
// exits).
type Singleton struct {
	// Name identifies it in signals, logs and forkctl: 1–64 characters of
	// a–z 0–9 _ -, unique among singletons and schedules. Required.
	Name string `toml:"name"`
	Program
	// Ready says when it counts as started: ReadyStarted (ReadyDelay after
	// it started; the default) or ReadyNotify (it sends READY=1).
	Ready ReadyMode `toml:"ready"`
	// ReadyDelay is the delay for ReadyStarted; it must be 0 with
	// ReadyNotify. Default 0.
	ReadyDelay Duration `toml:"ready_delay"`
	// Start says when it starts: StartAfterReady (the default) or
	// StartBeforeWorkers.
	Start StartMode `toml:"start"`
	// Sockets hands it the listening sockets as a worker gets them
	// (LISTEN_FDS). Default false.
	Sockets bool `toml:"sockets"`
	// Limits are its cgroup settings (memory_max, …).
	Limits

	// Scope is ScopeInstance (one process per instance, the default) or
	// ScopeCluster (one across the instances of cluster.name, each run
	// with FORKD_FENCING_TOKEN).
	Scope Scope `toml:"scope"`
}

// Schedule is one [[schedule]] table: a program run once per period per
// instance.
type Schedule struct {
	// Name identifies it in signals, logs, forkctl, the state file and
	// FORKD_SCHEDULE: 1–64 characters of a–z 0–9 _ -, unique among
	// singletons and schedules. Required.
	Name string `toml:"name"`
	Program
	// Every is the period of an interval schedule: at least 1s. Exactly
	// one of Every and Cron is set.
	Every Duration `toml:"every"`
	// Cron is a five-field cron expression or a descriptor such as
	// "@daily" (see jobs.ParseCron). Exactly one of Every and Cron is set.
	Cron string `toml:"cron"`
	// Timezone is the tz database zone Cron is read in ("Asia/Seoul");
	// only with Cron. Default: the machine's (time.Local).
	Timezone string `toml:"timezone"`
	// CronTiming is Cron parsed in its zone when the config was loaded;
	// nil with Every. It is not read from the file.
	CronTiming *jobs.Cron `toml:"-"`
	// Timeout is how long a run may take: then it gets TERM, KILL after
	// server.kill_timeout, and counts as failed. 0 (the default) is no
	// limit.
	Timeout Duration `toml:"timeout"`
	// Jitter delays each run by a random 0…Jitter (jobs.Delay), as
	// systemd's RandomizedDelaySec=; with Every, less than Every.
	// Default 0.
	Jitter Duration `toml:"jitter"`
	// Overlap says what happens to a run that comes due while the last one
	// still runs (jobs.Decide). Default jobs.OverlapSkip.
	Overlap jobs.Overlap `toml:"overlap"`
	// Persistent makes a run missed while forkd was down run once at
	// start (jobs.Missed), as systemd's Persistent=; it needs
	// server.state_dir. Default false.
	Persistent bool `toml:"persistent"`
	// Scope is ScopeInstance (each period runs once per instance, the
	// default) or ScopeCluster (once across the instances of
	// cluster.name, claimed in etcd; Persistent then keeps the last run
	// in etcd and needs no state_dir).
	Scope Scope `toml:"scope"`
}

// Timing returns when the schedule's runs are due: its CronTiming, or for
// Every a grid through anchor (see jobs.Every).
func (s *Schedule) Timing(anchor time.Time) jobs.Timing {
	if s.CronTiming != nil {
		return s.CronTiming
	}
	return jobs.Every{Period: s.Every.Duration, Anchor: anchor}
}

// HookExec is one [[hooks.NAME]] table: a command the master runs when
// hook NAME fires.
type HookExec struct {
	// Exec is the command and its arguments (argv); required, and argv[0]
	// is not empty.
	Exec []string `toml:"exec"`
	// Timeout is how long the command may run before it is killed; more
	// than 0. Default 30s.
	Timeout Duration `toml:"timeout"`
	// OnFailure says what a failed or timed-out command does: OnFailureIgnore
	// (the default) or OnFailureAbort, which stops what the hook precedes
	// and is allowed only for on_starting, on_reload, pre_fork and pre_exec.
	OnFailure string `toml:"on_failure"`
}

const (
	// OnFailureIgnore: a failing command is logged and otherwise ignored.
	OnFailureIgnore = "ignore"
	// OnFailureAbort: a failing command aborts what the hook precedes
	// (starting, reloading, forking a worker, re-executing the master).
	OnFailureAbort = "abort"
)

// Duration is a duration written as a Go duration string ("30s", "1m30s",
// "0"); it must not be negative.
type Duration struct{ time.Duration }

// Bind is one listening address of server.bind, parsed by ParseBind.
type Bind struct {
	// Raw is the string as written.
	Raw string
	// Network is "tcp" or "unix".
	Network string
	// Address is host:port for tcp (IPv6 hosts in brackets), the path for
	// unix.
	Address string
	// Mode is the unix socket file's permission bits (0 = leave the umask's).
	Mode uint32
	// Name is the socket's name in LISTEN_FDNAMES ("" = the instance name).
	Name string
	// Nagle keeps Nagle's algorithm on a tcp socket (nodelay=false); by
	// default forkd sets TCP_NODELAY on it, which the connections the
	// workers accept inherit.
	Nagle bool
}

// Workers says n workers in English: "1 worker", "4 workers".
func Workers(n int) string {
	if n == 1 {
		return "1 worker"
	}
	return strconv.Itoa(n) + " workers"
}

// WorkerVars are the environment variables forkd sets for every worker
// itself, with what they carry; worker.env cannot set them.
var WorkerVars = map[string]string{
	"LISTEN_FDS":        "the number of sockets handed over",
	"LISTEN_FDNAMES":    "the sockets' names",
	"LISTEN_PID":        "the worker's own pid",
	"NOTIFY_SOCKET":     "the master's notify socket",
	"WATCHDOG_USEC":     "the heartbeat interval, from server.timeout",
	"WATCHDOG_PID":      "the worker's own pid",
	"FORKD_WORKER_ID":   "the worker's slot",
	"FORKD_GENERATION":  "the worker's generation",
	"FORKD_INSTANCE":    "server.name",
	"FORKD_SHIM_PARENT": "the master's pid, for the exec-shim",
}

// Environ returns the environment p's process starts with: environ (the
// master's, as os.Environ gives it) less the variables forkd sets itself
// (WorkerVars) and those p.Env sets, then p.Env. Its order is environ's,
// then p.Env's in no particular order.
func (p *Program) Environ(environ []string) []string {
	env := make([]string, 0, len(environ)+len(p.Env))
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if _, ours := WorkerVars[k]; ours {
			continue
		}
		if _, set := p.Env[k]; set {
			continue
		}
		env = append(env, kv)
	}
	for k, v := range p.Env {
		env = append(env, k+"="+v)
	}
	return env
}
