"""Gunicorn config for the bench: probes at the same moments as the Go worker.

post_fork runs first thing in a new worker (Gunicorn forks, it does not exec):
it sends "start <pid> <unix-nanos>". post_worker_init runs when the worker has
loaded the app and is about to serve: "ready <pid> <unix-nanos>". Both go to
the unixgram socket named by BENCH_PROBE, as the Go bench worker's do. Bind,
workers and timeout come from the command line.
"""

import os
import socket
import time

worker_class = "sync"
loglevel = "warning"
graceful_timeout = 5


def _probe(kind, pid):
    now = time.time_ns()
    path = os.environ.get("BENCH_PROBE")
    if not path:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(("%s %d %d" % (kind, pid, now)).encode(), path)


def post_fork(server, worker):
    _probe("start", os.getpid())


def post_worker_init(worker):
    _probe("ready", os.getpid())
