"""A small HTTP server for the remote-file tests (helper-http.R starts it).

    python3 range-server.py ROOT LOG

Serves the files under ROOT on 127.0.0.1 (a free port, printed as the
first line of standard output) with single-range requests, and writes one
JSON line per response to LOG, before its body: the path, Host, Range and
Authorization headers, any X-* headers, the status and the body's bytes. Only the
standard library is used.

A path may start with /m/MODES/, MODES being modes joined by "+", to make
the server misbehave on purpose (the rest of the path is the file):

  norange      ignore Range: 200 and the whole file
  short        send half the range's bytes, no Content-Length, then close
  long         send 10 bytes more than the range, no Content-Length
  drop<N>      the first N requests for the path send half the body and
               drop the connection (Content-Length announces it all)
  flaky<N>     the first N requests for the path get 503
  shift        a Content-Range one byte off from the bytes sent
  total<T>     a Content-Range that says the file has T bytes
  status<C>    answer with status C and a short body
  to-<HOST>    redirect (302) to the same path on HOST (same port), without
               this mode
  relative     redirect (302) with a relative Location: the same path
               without this mode
  loop         redirect to itself
  slow         send the body in 64 KiB pieces, 0.2 s apart
  hang         wait 60 s before answering
"""

import json
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.realpath(sys.argv[1])
LOG = sys.argv[2]
lock = threading.Lock()
counts = {}


def log(entry):
    with lock:
        with open(LOG, "a") as f:
            f.write(json.dumps(entry) + "\n")


def count(key):
    with lock:
        counts[key] = counts.get(key, 0) + 1
        return counts[key]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def entry(self, status, sent):
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower().startswith("x-")}
        log({
            "path": self.path,
            "host": self.headers.get("Host"),
            "range": self.headers.get("Range"),
            "auth": self.headers.get("Authorization"),
            "headers": headers,
            "status": status,
            "sent": sent,
        })

    def simple(self, status, body=b"", extra=()):
        self.entry(status, len(body))
        self.send_response(status)
        for k, v in extra:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        modes = []
        m = re.match(r"^/m/([^/]+)(/.*)$", path)
        if m:
            modes = m.group(1).split("+")
            rest = m.group(2)
        else:
            rest = path
        others = "+".join(x for x in modes if not (x.startswith("to-") or x == "relative"))
        stripped = ("/m/" + others if others else "") + rest
        for mode in modes:
            if mode.startswith("to-"):
                host = mode[3:]
                port = self.server.server_address[1]
                return self.simple(302, extra=[("Location", "http://%s:%d%s" % (host, port, stripped))])
            if mode == "relative":
                return self.simple(302, extra=[("Location", stripped)])
            if mode == "loop":
                return self.simple(302, extra=[("Location", self.path)])
            if mode.startswith("status"):
                return self.simple(int(mode[6:]), b"no")
            if mode.startswith("flaky") and count(("flaky", self.path)) <= int(mode[5:]):
                return self.simple(503, b"busy")
            if mode == "hang":
                time.sleep(60)
                return self.simple(503, b"late")
        file = os.path.realpath(os.path.join(ROOT, rest.lstrip("/")))
        if not file.startswith(ROOT + os.sep) or not os.path.isfile(file):
            return self.simple(404, b"not found")
        with open(file, "rb") as f:
            data = f.read()
        total = len(data)
        rng = self.headers.get("Range")
        status = 200
        start, end = 0, total - 1
        if rng and "norange" not in modes:
            m = re.match(r"^bytes=(\d*)-(\d*)$", rng.strip())
            if not m or (m.group(1) == "" and m.group(2) == ""):
                return self.simple(400, b"bad range")
            if m.group(1) == "":
                start, end = max(0, total - int(m.group(2))), total - 1
            else:
                start = int(m.group(1))
                end = min(int(m.group(2)), total - 1) if m.group(2) else total - 1
            if start >= total or start > end:
                return self.simple(416, extra=[("Content-Range", "bytes */%d" % total)])
            status = 206
        body = data[start:end + 1]
        say_total = total
        say_start, say_end = start, end
        for mode in modes:
            if mode.startswith("total"):
                say_total = int(mode[5:])
            if mode == "shift":
                say_start, say_end = start + 1, end + 1
        drop = any(x.startswith("drop") and count(("drop", self.path)) <= int(x[4:]) for x in modes)
        if "short" in modes:
            body = body[: len(body) // 2]
        elif "long" in modes:
            body = body + b"0123456789"
        sent = body[: len(body) // 2] if drop else body
        # Logged before the response goes out, so that a client that has
        # read it finds the entry.
        self.entry(status, len(sent))
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (say_start, say_end, say_total))
        self.send_header("Accept-Ranges", "bytes")
        if "short" in modes or "long" in modes:
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if drop:
            body = sent
            self.close_connection = True
        try:
            if "slow" in modes:
                for i in range(0, len(body), 65536):
                    self.wfile.write(body[i:i + 65536])
                    self.wfile.flush()
                    time.sleep(0.2)
            else:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


if __name__ == "__main__":
    server = Server(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    # Stop when the parent goes away (standard input closes).
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sys.stdin.read()
    except KeyboardInterrupt:
        pass
    server.shutdown()
