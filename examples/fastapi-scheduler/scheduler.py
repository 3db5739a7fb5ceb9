"""The app's APScheduler, run as a process of its own.

Under forkd this is a [[singleton]]: exactly one per instance, supervised,
restarted when it dies, stopped with the instance. It runs jobs.cleanup
every $JOB_EVERY seconds (default 5).
"""

import os
import signal
import sys

from apscheduler.schedulers.blocking import BlockingScheduler

import jobs


def main():
    every = float(os.environ.get("JOB_EVERY", "5"))
    sched = BlockingScheduler()
    sched.add_job(jobs.cleanup, "interval", seconds=every, kwargs={"how": "apscheduler"})
    # TERM (forkd's graceful stop) ends the scheduler cleanly.
    signal.signal(signal.SIGTERM, lambda *_: sched.shutdown(wait=False))
    print(f"scheduler: every {every}s, pid {os.getpid()}", file=sys.stderr, flush=True)
    sched.start()


if __name__ == "__main__":
    main()
