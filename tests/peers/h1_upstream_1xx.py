#!/usr/bin/python3
"""A raw-socket HTTP/1.1 upstream that sends informational (1xx) responses.

usage: h1_upstream_1xx.py PORT

  /early...   "HTTP/1.1 103 Early Hints" with a Link header, a short pause,
              then 200 with BODY (below) and a Content-Length
  /expect...  with "Expect: 100-continue": "HTTP/1.1 100 Continue" carrying
              "X-Upstream-100: yes", then reads the body; answers 200
              "expect=<Expect header or -> bytes=<body length>"
  anything    200 "plain <path>"
BODY is "%05d\\n" for 0..2999 (18000 bytes; `seq -f %05g 0 2999` prints it).
Every request is logged on stdout: "request METHOD PATH VERSION expect=<value or ->".
Keep-alive is honoured; every connection has its own thread.
"""
import socket
import sys
import threading
import time

BODY = b"".join(b"%05d\n" % i for i in range(3000))
LINK = b"</style.css>; rel=preload; as=style"


def log(line):
    print(line, flush=True)


def read_request(f):
    line = f.readline()
    if not line.strip():
        return None
    method, path, version = line.decode("latin-1").split()
    headers = {}
    while True:
        h = f.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, v = h.decode("latin-1").split(":", 1)
        headers[k.strip().lower()] = v.strip()
    return method, path, version, headers


def read_body(f, headers):
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int(f.readline().split(b";")[0], 16)
            if size == 0:
                while f.readline() not in (b"\r\n", b""):
                    pass
                return body
            body += f.read(size)
            f.readline()
    return f.read(int(headers.get("content-length", "0")))


def respond(conn, status, body, extra=b""):
    conn.sendall(b"HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n%s"
                 % (status, len(body), extra, body))


def serve(conn):
    f = conn.makefile("rb")
    try:
        while True:
            req = read_request(f)
            if req is None:
                return
            method, path, version, headers = req
            expect = headers.get("expect", "-")
            log("request %s %s %s expect=%s" % (method, path, version, expect))
            if path.startswith("/expect"):
                if expect.lower() == "100-continue":
                    conn.sendall(b"HTTP/1.1 100 Continue\r\nX-Upstream-100: yes\r\n\r\n")
                body = read_body(f, headers)
                respond(conn, b"200 OK", ("expect=%s bytes=%d\n" % (expect, len(body))).encode())
                continue
            read_body(f, headers)
            if path.startswith("/early"):
                conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: " + LINK + b"\r\n\r\n")
                time.sleep(0.2)
                respond(conn, b"200 OK", BODY)
                continue
            respond(conn, b"200 OK", ("plain %s\n" % path).encode())
    except (OSError, ValueError):
        pass
    finally:
        conn.close()


def main():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(sys.argv[1])))
    s.listen(64)
    log("listening %s" % sys.argv[1])
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


if __name__ == "__main__":
    main()
