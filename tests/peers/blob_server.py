#!/usr/bin/env python3
"""An HTTP/1.1 upstream for large-body tests (keep-alive, a thread per
connection).

usage: blob_server.py PORT DIR

  GET /files/NAME   the file DIR/NAME, with Content-Length (sent with sendfile)
  POST, PUT *       reads the body (Content-Length or chunked) and answers
                    "sha256=<hex> bytes=<n>\\n"
  any request with x-sample-held gets it back as x-seen-held
"""
import hashlib
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root = "."

    def log_message(self, *args):
        pass

    def send_head(self, code, length, ctype="application/octet-stream"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        # What a filter added to the request head (tests/integration/filter_api.sh).
        if self.headers.get("x-sample-held"):
            self.send_header("x-seen-held", self.headers["x-sample-held"])
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def do_GET(self):
        if self.path.startswith("/files/"):
            name = os.path.basename(self.path[len("/files/"):].split("?")[0])
            path = os.path.join(self.root, name)
            if not os.path.isfile(path):
                return self.text(404, "no such file\n")
            size = os.path.getsize(path)
            self.send_head(200, size)
            self.wfile.flush()
            with open(path, "rb") as f:
                self.connection.sendfile(f)
            return
        self.text(404, "not found\n")

    def text(self, code, body):
        b = body.encode()
        self.send_head(code, len(b), "text/plain")
        self.wfile.write(b)

    def do_POST(self):
        h = hashlib.sha256()
        n = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                left = size
                while left:
                    d = self.rfile.read(min(left, 1 << 16))
                    if not d:
                        return
                    h.update(d)
                    n += len(d)
                    left -= len(d)
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length", "0"))
            while left:
                d = self.rfile.read(min(left, 1 << 16))
                if not d:
                    return
                h.update(d)
                n += len(d)
                left -= len(d)
        self.text(200, "sha256=%s bytes=%d\n" % (h.hexdigest(), n))

    do_PUT = do_POST


if __name__ == "__main__":
    Handler.root = sys.argv[2] if len(sys.argv) > 2 else "."
    ThreadingHTTPServer.daemon_threads = True
    srv = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    srv.serve_forever()
