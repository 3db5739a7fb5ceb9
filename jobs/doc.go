// Package jobs holds what forkd's schedules are made of, apart from
// processes: when runs are due, what to do with a run that comes due while
// the last one still runs, the catch-up run of a persistent schedule, the
// random delay of each run, the state file of last-run times, and the
// identity of a run. Work that must happen once per instance rather than
// once per worker is configured like this:
//
//	[[singleton]]                 # exactly one process per instance
//	name = "scheduler"
//	command = "/usr/bin/python3"
//	args = ["-m", "app.scheduler"]
//
//	[[schedule]]
//	name = "cleanup"
//	every = "5m"                  # or: cron = "*/5 * * * *"
//	command = "/usr/bin/python3"
//	args = ["-m", "app.jobs.cleanup"]
//	timeout = "1m"
//	jitter = "10s"
//	overlap = "skip"              # "skip" | "queue" | "replace"
//	persistent = true             # a run missed while forkd was down runs once at start
//
// (see package config for every key). The pieces, for the supervisor that
// runs them:
//
//   - Timing says when runs are due: Every for `every`, a grid anchored at
//     Spread's instant for the schedule's name; Cron (ParseCron) for `cron` in a time zone,
//     through github.com/netresearch/go-cron, with cron(8)'s daylight
//     saving rules. A run's next due time comes from the Timing, never from
//     when the last run ended.
//   - Delay is a run's random delay within `jitter`.
//   - Decide applies the `overlap` policy (Overlap) to a run that came due.
//   - Missed says whether a persistent schedule owes a run at start, from
//     the last run recorded in a State (OpenState, Save: one JSON file,
//     replaced atomically).
//   - Run and IDs name a run: FORKD_SCHEDULE, FORKD_RUN_ID (a UUIDv7) and
//     FORKD_SCHEDULED_AT in its environment (Run.Env).
//
// Nothing here starts processes, goroutines or timers; every function is
// given the time it works from.
package jobs
