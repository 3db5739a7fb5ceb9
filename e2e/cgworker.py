#!/usr/bin/python3
"""cgworker.py: the worker of inside.sh's cgroup check, run by forkd with
ready = "started". It serves HTTP on the socket forkd passes (fd 3):

  GET /            "ok PID"
  GET /grow?mb=N   keeps N MiB more memory (touched), answers "grown N"
  GET /bomb        forks children (each sleeps) until fork fails, answers
                   "forked N"; pids_max stops it. Then it ends 4 of them,
                   so that it can start threads to serve again
  SIGTERM          stops accepting, finishes what it serves, exits 0
"""
import http.server
import os
import signal
import socket
import sys
import threading
import time
import urllib.parse

ballast = []


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        if url.path == "/grow":
            mb = int(urllib.parse.parse_qs(url.query).get("mb", ["0"])[0])
            block = bytearray(mb << 20)
            for i in range(0, len(block), 4096):
                block[i] = 1
            ballast.append(block)
            body = "grown %d\n" % mb
        elif url.path == "/bomb":
            children = []
            while True:
                try:
                    pid = os.fork()
                except OSError:
                    break
                if pid == 0:
                    time.sleep(600)
                    os._exit(0)
                children.append(pid)
            for pid in children[:4]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            body = "forked %d\n" % len(children)
        else:
            body = "ok %d\n" % os.getpid()
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    """Serves on a listening socket it shares with the other workers: its
    accept does not block (another worker may have taken the connection
    that woke it), the connections it accepts do."""

    def get_request(self):
        conn, addr = self.socket.accept()
        conn.setblocking(True)
        return conn, addr


def main():
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        print("cgworker: want one socket from forkd (LISTEN_FDS)", file=sys.stderr)
        return 2
    sock = socket.socket(fileno=3)
    sock.setblocking(False)
    server = Server(sock.getsockname(), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    server.daemon_threads = False
    server.block_on_close = True
    signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=server.shutdown).start())
    server.serve_forever(poll_interval=0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main())
