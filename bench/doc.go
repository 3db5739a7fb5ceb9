// Package bench measures forkd's arbiter side by side with Gunicorn's on the
// same machine in the same run, and reports every figure as a ratio.
//
// The benchmarks live in the package's test files and are meant to run once
// each:
//
//	go test -run '^$' -bench . -benchtime 1x ./bench/...
//
// (make bench does exactly that). They build forkd and the bench worker
// (bench/cmd/bench-worker, a standalone program: see package benchworker)
// into /tmp/forkd-bench with CGO_ENABLED=0 (see Build), run that worker under
// forkd and alone, run Debian's gunicorn with bench/gunicorn.conf.py and
// bench/app.py, and write a markdown table to stdout and to
// docs/BENCHMARKS.md. The run-once scenarios add forkd's [[schedule]]
// tables running bench/cmd/bench-run, a run that reports its own start and
// its FORKD_SCHEDULED_AT (ParseRun, TallyRuns), and the FastAPI app of
// examples/fastapi-scheduler under forkd and under Gunicorn with uvicorn
// workers (Example, ReadJobLog, WaitAnswering); that one skips when
// Debian's python3-uvicorn, python3-fastapi or python3-apscheduler is
// missing. The keep-alive scenarios (14–16) run wrk without
// "Connection: close": forkd with the demo worker (examples/demo) and an SDK
// worker (bench/cmd/sdk-worker) across HUPs and USR2s, and the FastAPI
// example beside Gunicorn with uvicorn workers. docs/BENCHMARKS.md is
// rewritten only after a run of every benchmark.
//
// Both sides are measured the same way: every worker sends "start PID NANOS"
// as the first thing it does and "ready PID NANOS" right before it tells its
// master it serves, as datagrams to the unixgram socket named by BENCH_PROBE
// (an Inbox); the master's own READY=1 arrives on another Inbox named by its
// NOTIFY_SOCKET. Process figures (context switches, VmRSS, Pss) come from
// /proc.
//
// The non-test files hold the harness those benchmarks are built from:
// Build, Inbox, Process, FreePort, the /proc readers, Sample statistics,
// the flood reports (ParseSent) and the Report table.
package bench
