#!/usr/bin/env python3
"""A plaintext HTTP/1.1 upstream with misbehaviours on demand, for tests.

usage: upstream.py PORT NAME

  /chunked/...   200, body sent with Transfer-Encoding: chunked in 3 chunks
  /garbage/...   answers bytes that are not HTTP
  /reset/...     closes the connection without answering
  /slowbody/...  sends headers and half the body, then closes
  /framing/...   200 "te=<Transfer-Encoding> cl=<Content-Length> bytes=<n>" ("-": absent)
  /server/...    200 with "Server: upstream-py", body "via=<Via>" ("-": absent)
  anything else  200 "NAME METHOD PATH bytes=<request body length>"
Keep-alive is honoured; every connection has its own thread.
"""
import socket
import sys
import threading


def read_request(f):
    line = f.readline()
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers = {}
    while True:
        h = f.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, v = h.decode("latin-1").split(":", 1)
        headers[k.strip().lower()] = v.strip()
    body = b""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int(f.readline().split(b";")[0], 16)
            if size == 0:
                while f.readline() not in (b"\r\n", b""):
                    pass
                break
            body += f.read(size)
            f.readline()
    elif "content-length" in headers:
        body = f.read(int(headers["content-length"]))
    return method, path, headers, body


def serve(conn, name):
    f = conn.makefile("rb")
    try:
        while True:
            req = read_request(f)
            if req is None:
                return
            method, path, headers, body = req
            if path.startswith("/garbage"):
                conn.sendall(b"this is not HTTP\r\n\r\n")
                return
            if path.startswith("/reset"):
                return
            if path.startswith("/slowbody"):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf")
                return
            if path.startswith("/framing"):
                out = ("te=%s cl=%s bytes=%d\n" % (headers.get("transfer-encoding", "-"),
                                                  headers.get("content-length", "-"), len(body))).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(out), out))
                continue
            if path.startswith("/server"):
                out = ("via=%s\n" % headers.get("via", "-")).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nServer: upstream-py\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(out), out))
                continue
            if path.startswith("/chunked"):
                conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for part in (b"one,", b"two,", b"three\n"):
                    conn.sendall(b"%x\r\n%s\r\n" % (len(part), part))
                conn.sendall(b"0\r\n\r\n")
                continue
            out = ("%s %s %s bytes=%d\n" % (name, method, path, len(body))).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(out), out))
    except (ConnectionError, ValueError):
        pass
    finally:
        try:
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        conn.close()


def main():
    port, name = int(sys.argv[1]), sys.argv[2]
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(128)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c, name), daemon=True).start()


if __name__ == "__main__":
    main()
