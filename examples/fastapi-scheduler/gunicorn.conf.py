"""Gunicorn's way, for comparison: the scheduler started once, in the master.

    cd examples/fastapi-scheduler
    gunicorn -c gunicorn.conf.py app:app

on_starting runs once in the arbiter, before any worker forks; the
scheduler it starts is a thread of the master, which nobody restarts when
it dies and which stops only with the master.
"""

import os

bind = os.environ.get("BIND", "127.0.0.1:8002")
workers = 4
worker_class = "uvicorn.workers.UvicornWorker"


def on_starting(server):
    from apscheduler.schedulers.background import BackgroundScheduler

    import jobs

    sched = BackgroundScheduler()
    sched.add_job(jobs.cleanup, "interval", seconds=float(os.environ.get("JOB_EVERY", "5")),
                  kwargs={"how": "on_starting"})
    sched.start()
    server.log.info("scheduler started in the master")
