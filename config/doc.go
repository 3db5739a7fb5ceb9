// Package config is forkd's TOML schema: the types a config file decodes
// into, strict decoding (an unknown key, a key in the wrong case or a wrong
// type is an error naming file:line:column), defaults and validation.
//
// Load reads a file and Parse decodes bytes; both return a *Config with
// every default applied and every value checked, or every problem found as
// *Error values (see Errors), in file order:
//
//	demo.toml:3:11: server.workers: must be between 1 and 4096, got 0
//	demo.toml:4:11: server.timeout: invalid duration "30 seconds" (write e.g. "30s")
//	demo.toml:7:1: server.wrokers: unknown key (did you mean "workers"?)
//
// A minimal config:
//
//	[server]
//	name = "myapp"
//	workers = 4
//	bind = ["tcp://127.0.0.1:8000"]
//
//	[worker]
//	command = "/usr/bin/myapp"
//	args = ["--fd", "3"]
//
// # Reference
//
// Durations are Go duration strings ("30s", "1m30s", "250ms", "0"), never
// negative. Names follow Gunicorn's where the meaning is the same.
//
// [server] — the master:
//
//	name              instance name: FORKD_INSTANCE, part of the D-Bus name;
//	                  1–64 characters of A–Z a–z 0–9 _ . @ -
//	                  (default: the file's base name without ".toml")
//	workers           worker processes, 1–4096 (default 1); with
//	                  [server.autoscale], the initial count within min…max
//	                  (default min, 0 allowed when min is 0)
//	min_ready         workers that must serve before the instance, or a new
//	                  generation, is ready; 0 means all, at most workers
//	                  (default: all)
//	bind              addresses forkd binds when systemd passed no sockets
//	                  (default ["tcp://127.0.0.1:8000"]); see ParseBind:
//	                  "tcp://127.0.0.1:8000", "tcp://[::]:8000",
//	                  "unix:/run/myapp.sock?mode=0660&name=web"
//	backlog           listen(2) backlog, 1–65535 (default 2048)
//	timeout           heartbeat timeout (WATCHDOG_USEC); "0" disables (default "30s")
//	graceful_timeout  how long a stopping worker may drain before KILL (default "30s")
//	boot_timeout      how long a worker may take to become ready, more than 0 (default "30s")
//	kill_timeout      wait between SIGABRT or a quick-stop signal and SIGKILL (default "5s")
//	max_surge         new-generation workers booting at once during a reload;
//	                  each that is ready retires an old one; 0 all, at most
//	                  4096 (default 0)
//	max_booting       workers booting at once (started, not yet ready); 0
//	                  paces boots by the CPUs: two per CPU, more while the
//	                  run queue is no longer than twice the CPUs; at most
//	                  4096 (default 0)
//	max_failures      stop the instance (exit 1) once a worker slot failed this
//	                  many times in a row; 0 retries forever (default 0)
//	reload_after_upgrade  after an in-place upgrade (USR2), replace the
//	                  adopted workers with a new generation (default false)
//	max_requests      recycle a worker after it reported this many requests
//	                  (FORKD_REQUESTS, from the worker SDK); 0 never (default 0)
//	max_requests_jitter  random 0…N added per worker (default 0)
//	max_lifetime      recycle a worker this long after it became ready; "0"
//	                  never (default "0")
//	max_lifetime_jitter  random 0…d added per worker (default "0")
//	                  Recycling starts the replacement first and stops the old
//	                  worker only once the replacement is ready.
//	master_slice      CPU time slice the master's threads ask the kernel for
//	                  (Linux ≥ 6.12), so that the master runs as soon as it
//	                  wakes; "0" (the kernel's default) or 100µs…100ms
//	                  (default "100us"); workers get the kernel's default
//	state_dir         where persistent schedules keep their last-run times;
//	                  an absolute path, created if missing (default: the
//	                  first directory of $STATE_DIRECTORY, which systemd's
//	                  StateDirectory= sets, else none)
//
// [server.autoscale] — automatic scaling from the listening sockets' accept
// queues (see Autoscale and package workers):
//
//	min               fewest workers, 0 (on demand) … max (default 1)
//	max               most workers, 1–4096; required
//	queue             accept-queue length above which the pool grows (default 4)
//	up_after          how long the queue must stay above queue (default "200ms")
//	down_after        how long every queue must stay empty before one worker
//	                  stops; more than 0 (default "30s")
//
// [worker] — the program forked N times:
//
//	command           required; an absolute path, a path relative to dir, or a
//	                  name looked up in PATH (worker.env's PATH if set, else
//	                  forkd's); must be an executable regular file
//	args              its arguments (default none)
//	env               table of string variables added to forkd's environment;
//	                  not those forkd sets per worker (WorkerVars)
//	dir               working directory, must exist (default: forkd's)
//	ready             "notify": the worker sends READY=1 and heartbeats with
//	                  WATCHDOG=1; "started": it is ready ready_delay after it
//	                  started and is not expected to heartbeat (default "notify")
//	ready_delay       the delay for ready = "started"; 0 with "notify"
//	                  (default "0")
//
// [[singleton]] — a program run as exactly one process per instance,
// however many workers there are (one table each):
//
//	name              required; 1–64 characters of a–z 0–9 _ -, unique among
//	                  singletons and schedules
//	command, args, env, dir
//	                  as in [worker]; env cannot set WorkerVars
//	ready             "started" (default): ready ready_delay after it
//	                  started; "notify": when it sends READY=1
//	ready_delay       the delay for ready = "started"; 0 with "notify"
//	                  (default "0")
//	start             "after_ready" (default): once the workers serve;
//	                  "before_workers": before the first worker starts
//	sockets           true: it inherits the listening sockets as a worker
//	                  does (default false)
//
// [[schedule]] — a program run once per period per instance (one table
// each); see package jobs for the timing rules:
//
//	name              required; 1–64 characters of a–z 0–9 _ -, unique among
//	                  singletons and schedules; FORKD_SCHEDULE of its runs
//	every             a period of at least "1s", on a grid set by the
//	                  schedule's name (jobs.Spread); exactly one of every
//	                  and cron
//	cron              five fields ("*/5 * * * *", "30 3 * * MON-FRI") or
//	                  @hourly, @daily, @midnight, @weekly, @monthly,
//	                  @yearly, @annually; exactly one of every and cron
//	timezone          the tz database zone cron is read in; only with cron
//	                  (default: the machine's)
//	command, args, env, dir
//	                  as in [worker]; env cannot set WorkerVars nor
//	                  FORKD_SCHEDULE, FORKD_RUN_ID, FORKD_SCHEDULED_AT
//	timeout           TERM a run after this long, KILL after kill_timeout,
//	                  and report it failed; "0" is no limit (default "0")
//	jitter            a random 0…d delay per run, as systemd's
//	                  RandomizedDelaySec=; with every, less than it
//	                  (default "0")
//	overlap           a run due while the last one runs: "skip" (default),
//	                  "queue" (one waits at most) or "replace" (stop the
//	                  last one)
//	persistent        a run missed while forkd was down runs once at start,
//	                  as systemd's Persistent=; needs state_dir (default
//	                  false)
//
// For example:
//
//	[[singleton]]
//	name = "scheduler"
//	command = "/usr/bin/python3"
//	args = ["-m", "app.scheduler"]
//
//	[[schedule]]
//	name = "cleanup"
//	cron = "*/5 * * * *"
//	timezone = "Asia/Seoul"
//	command = "/usr/bin/python3"
//	args = ["-m", "app.jobs.cleanup"]
//	timeout = "1m"
//
// [[hooks.NAME]] — commands the master runs when hook NAME fires (see package
// hooks for the names), with the event's fields in the environment; one
// table per command, run in file order. pre_request and post_request happen
// inside workers and cannot have commands.
//
//	exec              required; the command and its arguments
//	timeout           how long it may run, more than 0 (default "30s")
//	on_failure        "ignore" (default) or "abort": a failing command stops
//	                  what the hook precedes; only for on_starting, on_reload,
//	                  pre_fork and pre_exec
//
// For example:
//
//	[[hooks.on_starting]]
//	exec = ["/usr/local/bin/migrate-db"]
//	timeout = "2m"
//	on_failure = "abort"
package config
