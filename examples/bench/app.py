"""The most trivial WSGI app, for benchmarks side by side with Gunicorn.

    gunicorn -w 4 -b 127.0.0.1:8002 --chdir examples/bench app:app
"""


def app(environ, start_response):
    """Answer every request with 200 and b"ok"."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
