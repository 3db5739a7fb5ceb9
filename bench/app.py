"""The bench's WSGI app for Gunicorn: the counterpart of the Go bench worker.

GET /      -> 200 "ok <pid>"
GET /hang  -> reports "hang <pid> <unix-nanos>" to the BENCH_PROBE socket, then
              never answers (a hung sync worker: no heartbeat either).

BENCH_BOOT_DELAY_MS, when set, is slept at import: the app's boot time. Gunicorn
(without --preload, as the bench runs it) imports the app in each worker after
the fork, between post_fork ("start") and post_worker_init ("ready"), which is
where the Go bench worker spends the same delay.

Run by bench_test.go as:

    gunicorn --config bench/gunicorn.conf.py --chdir bench -w 4 -b 127.0.0.1:PORT app:app
"""

import os
import socket
import time

_boot_ms = int(os.environ.get("BENCH_BOOT_DELAY_MS") or 0)
if _boot_ms > 0:
    time.sleep(_boot_ms / 1000.0)


def _probe(kind):
    """Send "<kind> <pid> <unix-nanos>" to the probe socket, if there is one."""
    now = time.time_ns()
    path = os.environ.get("BENCH_PROBE")
    if not path:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(("%s %d %d" % (kind, os.getpid(), now)).encode(), path)


def app(environ, start_response):
    """Answer "ok <pid>"; hang forever on /hang."""
    if environ.get("PATH_INFO") == "/hang":
        _probe("hang")
        while True:
            time.sleep(3600)
    body = ("ok %d\n" % os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
