"""Request stats for forkd from any ASGI app: standard library only.

Wrap the app and each uvicorn worker reports its requests to forkd as the
Go worker SDK does, so that forkd's metrics, ``forkctl status`` and
``max_requests`` recycling see them:

    from fastapi import FastAPI
    from forkd_stats import ForkdStats

    app = FastAPI()
    app.add_middleware(ForkdStats)       # or: app = ForkdStats(app)

It sends forkd's request fields (forkd.toml(5), "REQUEST STATS") in one
datagram on $NOTIFY_SOCKET, at most once a second and only when something
changed: FORKD_REQUESTS (requests finished since the worker started),
FORKD_REQUEST_STATS (the latency histogram of those finished since the last
report), FORKD_REQUEST_SUM_USEC (their total time) and
FORKD_REQUESTS_INFLIGHT (requests in progress: busy or idle). Without
$NOTIFY_SOCKET (not under forkd or systemd) it does nothing. A report the
socket cannot take at once is kept and sent with the next one: a request
never waits for forkd.
"""

import asyncio
import bisect
import os
import socket
import time

# The buckets' upper bounds in microseconds: the Go SDK's defaults (1ms …
# 5s), so that every worker's histogram lines up.
DEFAULT_BOUNDS_USEC = (1000, 5000, 10000, 25000, 50000, 100000, 250000,
                       500000, 1000000, 2500000, 5000000)


class ForkdStats:
    """ASGI middleware that reports the app's requests to forkd."""

    def __init__(self, app, every=1.0, bounds_usec=DEFAULT_BOUNDS_USEC):
        self.app = app
        self.every = every
        self.bounds = tuple(bounds_usec)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum_usec = 0
        self.total = 0          # requests finished and reported or pending
        self.inflight = 0
        self.sent_inflight = 0
        self.last_sent = 0.0    # time.monotonic() of the last report
        self.timer = None       # a pending report, on the event loop
        self.sock = None
        self.addr = _notify_address(os.environ.get("NOTIFY_SOCKET", ""))
        if self.addr is not None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self.sock.setblocking(False)
            # Idle from the start: forkd shows the worker idle, not merely
            # ready, before its first request.
            try:
                self.sock.sendto(b"FORKD_REQUESTS_INFLIGHT=0", self.addr)
            except OSError:
                pass

    async def __call__(self, scope, receive, send):
        if self.sock is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.inflight += 1
        start = time.perf_counter_ns()
        try:
            await self.app(scope, receive, send)
        finally:
            usec = (time.perf_counter_ns() - start) // 1000
            self.inflight -= 1
            self.counts[bisect.bisect_left(self.bounds, usec)] += 1
            self.sum_usec += usec
            self._changed()

    def _changed(self):
        """Report now if the last report is a second old, else soon."""
        if self.timer is not None:
            return
        wait = self.last_sent + self.every - time.monotonic()
        if wait <= 0:
            self._report()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self.timer = loop.call_later(wait, self._report)

    def _report(self):
        """Send what changed since the last report, if anything did."""
        self.timer = None
        finished = sum(self.counts)
        if finished == 0 and self.inflight == self.sent_inflight:
            return
        lines = []
        if finished:
            stats = "%d;%s;%s" % (finished, ",".join(map(str, self.bounds)),
                                  ",".join(map(str, self.counts)))
            lines += ["FORKD_REQUESTS=%d" % (self.total + finished),
                      "FORKD_REQUEST_STATS=" + stats,
                      "FORKD_REQUEST_SUM_USEC=%d" % self.sum_usec]
        lines.append("FORKD_REQUESTS_INFLIGHT=%d" % self.inflight)
        try:
            self.sock.sendto("\n".join(lines).encode(), self.addr)
        except OSError:
            # The queue is full or forkd is away: keep the counts for the
            # next report.
            self.last_sent = time.monotonic()
            self._changed()
            return
        self.total += finished
        self.counts = [0] * len(self.counts)
        self.sum_usec = 0
        self.sent_inflight = self.inflight
        self.last_sent = time.monotonic()


def _notify_address(value):
    """The address $NOTIFY_SOCKET names (sd_notify(3)), or None."""
    if value.startswith("/"):
        return value
    if value.startswith("@"):
        return "\0" + value[1:]
    return None
