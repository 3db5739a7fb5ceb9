"""The app's APScheduler, run as a process of its own.

Under forkd this is a [[singleton]]: exactly one process per instance
however many workers serve, restarted when it dies, stopped after the
workers. It runs jobs.cleanup every $JOB_EVERY seconds (default 5) until
SIGTERM.
"""

import os
import signal
import sys

from apscheduler.schedulers.blocking import BlockingScheduler

import jobs


def main():
    sched = BlockingScheduler()
    jobs.schedule(sched, "singleton")
    # TERM (forkd's graceful stop) stops the scheduler; a run in progress
    # finishes before Python exits.
    signal.signal(signal.SIGTERM, lambda *_: sched.shutdown(wait=False))
    print(f"scheduler: every {jobs.every()}s, pid {os.getpid()}", file=sys.stderr, flush=True)
    sched.start()


if __name__ == "__main__":
    main()
