"""The FastAPI app of the example, served by uvicorn workers.

It does not start the scheduler at import: with 4 workers, every worker
would run every job (the bug this example is about). Set
START_SCHEDULER_IN_APP=1 to see that bug: each worker then starts its own
APScheduler, as the app once did.
"""

import os

from fastapi import FastAPI

from forkd_stats import ForkdStats

app = FastAPI()
# Report requests to forkd (metrics, forkctl status, max_requests), as Go
# workers using forkd's SDK do. Set FORKD_STATS=0 to leave it out.
if os.environ.get("FORKD_STATS", "1") != "0":
    app.add_middleware(ForkdStats)

if os.environ.get("START_SCHEDULER_IN_APP") == "1":
    from apscheduler.schedulers.background import BackgroundScheduler

    import jobs

    _sched = BackgroundScheduler()
    jobs.schedule(_sched, "in-app")
    _sched.start()


@app.get("/")
def hello():
    """Say which worker answered."""
    return {"pid": os.getpid(), "worker_id": os.environ.get("FORKD_WORKER_ID")}
