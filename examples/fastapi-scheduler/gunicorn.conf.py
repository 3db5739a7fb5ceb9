"""Gunicorn's way, for comparison: the scheduler started once, in the master.

    cd examples/fastapi-scheduler
    gunicorn -c gunicorn.conf.py app:app

is `gunicorn -w 4 -k uvicorn.workers.UvicornWorker app:app` plus the
on_starting hook below. on_starting runs once, in the arbiter, before any
worker forks; the APScheduler it starts is a thread of the master, which
nobody restarts when it dies and which stops only with the master.

With START_SCHEDULER_IN_APP=1 the hook starts nothing and the app starts a
scheduler in each worker instead: the deployment before the fix, every job
run once per worker.
"""

import os

bind = os.environ.get("BIND", "127.0.0.1:8002")
workers = 4
worker_class = "uvicorn.workers.UvicornWorker"


def on_starting(server):
    if os.environ.get("START_SCHEDULER_IN_APP") == "1":
        return
    from apscheduler.schedulers.background import BackgroundScheduler

    import jobs

    sched = BackgroundScheduler()
    jobs.schedule(sched, "on_starting")
    sched.start()
    server.log.info("scheduler started in the master (pid %d)", os.getpid())
