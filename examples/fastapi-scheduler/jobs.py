"""The periodic job of the example, and where it records its runs.

cleanup() is the work itself. Each run appends one line to the file named by
$JOB_LOG (nothing when it is unset):

    <unix time> <pid> <how> [<scheduled at>]

where <how> says what started it: "singleton" (scheduler.py, forkd's
[[singleton]]), "schedule" (forkd's [[schedule]], which also gives the due
time it ran for, $FORKD_SCHEDULED_AT), "in-app" (a scheduler in every
worker: the bug) or "on_starting" (Gunicorn's master). Counting the lines per
period shows how many times the job ran. When $JOB_PROBE names a Unix
datagram socket, the same line is also sent there once it is in the log, so
that a test can wait for runs instead of polling the file.
"""

import os
import socket
import sys
import time


def cleanup(how):
    """Do the periodic work once and record the run as started by `how`."""
    line = f"{time.time():.3f} {os.getpid()} {how}"
    scheduled_at = os.environ.get("FORKD_SCHEDULED_AT")
    if how == "schedule" and scheduled_at:
        line += f" {scheduled_at}"
    line += "\n"
    path = os.environ.get("JOB_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
    probe = os.environ.get("JOB_PROBE")
    if probe:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto(line.encode(), probe)
        except OSError as e:
            print(f"cleanup: JOB_PROBE {probe}: {e}", file=sys.stderr, flush=True)
    print(f"cleanup ran ({how}, pid {os.getpid()})", file=sys.stderr, flush=True)


def every():
    """The period in seconds the in-process schedulers use: $JOB_EVERY, default 5."""
    return float(os.environ.get("JOB_EVERY", "5"))


def schedule(scheduler, how):
    """Add cleanup to an APScheduler scheduler, every() seconds apart.

    A run that comes late (a busy machine) still runs, once, instead of being
    dropped after APScheduler's default one-second grace time.
    """
    scheduler.add_job(cleanup, "interval", seconds=every(), kwargs={"how": how},
                      coalesce=True, misfire_grace_time=None)


if __name__ == "__main__":
    # `python3 jobs.py`: one run, as forkd's [[schedule]] starts it.
    cleanup("schedule" if os.environ.get("FORKD_SCHEDULE") else "by-hand")
