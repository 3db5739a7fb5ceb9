"""Times examples/fastapi-scheduler/forkd_stats.py in-process.

Usage: python3 stats_middleware.py EXAMPLE_DIR

Calls a trivial ASGI app directly and through ForkdStats (reporting to a
datagram socket of its own, as NOTIFY_SOCKET), 200,000 requests a round,
best of 5 rounds each, and prints the nanoseconds per request of both:
"RAW WRAPPED".
"""

import asyncio
import os
import socket
import sys
import tempfile
import time

tmp = tempfile.mkdtemp()
path = os.path.join(tmp, "notify")
rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
rx.bind(path)
os.environ["NOTIFY_SOCKET"] = path
sys.path.insert(0, sys.argv[1])
from forkd_stats import ForkdStats  # noqa: E402


async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def receive():
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(msg):
    pass


async def run(a, n):
    scope = {"type": "http"}
    t0 = time.perf_counter_ns()
    for _ in range(n):
        await a(scope, receive, send)
    return (time.perf_counter_ns() - t0) / n


async def main():
    n = 200000
    wrapped = ForkdStats(app)
    raw = best = float("inf")
    for _ in range(5):
        raw = min(raw, await run(app, n))
        best = min(best, await run(wrapped, n))
    print("%.1f %.1f" % (raw, best))
    os.unlink(path)
    os.rmdir(tmp)


asyncio.run(main())
