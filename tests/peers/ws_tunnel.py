#!/usr/bin/python3
"""Raw TCP peers for the CONNECT tunnel tests.

usage:
  ws_tunnel.py echo-server PORT
      a TCP echo server; logs "accept" and, when the client's side ends,
      "eof bytes=N" (N: bytes it echoed on that connection)
  ws_tunnel.py connect PORT AUTHORITY
      "CONNECT AUTHORITY HTTP/1.1" on 127.0.0.1:PORT, then bytes through the
      tunnel. Prints "ok STEP" or "FAIL STEP: why" for the steps
      status echo echo-64k end, and stops at the first failure; prints
      "info head ..." with the response's status line, "info sent N" with
      the bytes it sent through the tunnel.
"""
import os
import socket
import sys
import threading
import time

T = 5.0


def echo_server(port):
    def serve(c):
        n = 0
        print("accept", flush=True)
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d)
                n += len(d)
        except OSError as e:
            print("error %s" % e, flush=True)
        print("eof bytes=%d" % n, flush=True)
        c.close()

    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(64)
    print("listening %d" % port, flush=True)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


class Failed(Exception):
    pass


def recv_exactly(s, n, what):
    buf = b""
    end = time.monotonic() + T
    while len(buf) < n:
        s.settimeout(max(0.01, end - time.monotonic()))
        try:
            d = s.recv(n - len(buf))
        except socket.timeout:
            raise Failed("%s: %d of %d bytes within %.0f s" % (what, len(buf), n, T))
        except OSError as e:
            raise Failed("%s: %s" % (what, e))
        if not d:
            raise Failed("%s: the connection ended after %d of %d bytes" % (what, len(buf), n))
        buf += d
    return buf


def connect(port, authority):
    step = "status"
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=T)
        s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (authority, authority)).encode())
        head = b""
        end = time.monotonic() + T
        while b"\r\n\r\n" not in head:
            s.settimeout(max(0.01, end - time.monotonic()))
            try:
                d = s.recv(1)
            except socket.timeout:
                raise Failed("no complete response head within %.0f s (got %r)" % (T, head[:80]))
            if not d:
                raise Failed("the connection ended (got %r)" % head[:80])
            head += d
        status = head.split(b"\r\n", 1)[0].decode("latin-1")
        print("info head %s" % status, flush=True)
        if status.split(" ")[1:2] != ["200"]:
            raise Failed("answered %r" % status)
        print("ok status", flush=True)
        sent = 0
        for step, payload in (("echo", b"hello through a CONNECT tunnel\n"), ("echo-64k", os.urandom(65536))):
            s.sendall(payload)
            sent += len(payload)
            got = recv_exactly(s, len(payload), "the echo")
            if got != payload:
                raise Failed("echo differs")
            print("ok %s" % step, flush=True)
        print("info sent %d" % sent, flush=True)
        step = "end"
        s.shutdown(socket.SHUT_WR)
        s.settimeout(T)
        try:
            extra = s.recv(65536)
        except socket.timeout:
            raise Failed("the tunnel was still open %.0f s after this client ended its side" % T)
        except ConnectionResetError:
            extra = b""
        if extra:
            raise Failed("unexpected bytes after the end: %r" % extra[:40])
        print("ok end", flush=True)
    except Failed as e:
        print("FAIL %s: %s" % (step, e), flush=True)
        sys.exit(1)
    except OSError as e:
        print("FAIL %s: %s" % (step, e), flush=True)
        sys.exit(1)


if __name__ == "__main__":
    if sys.argv[1] == "echo-server":
        echo_server(int(sys.argv[2]))
    elif sys.argv[1] == "connect":
        connect(int(sys.argv[2]), sys.argv[3])
    else:
        raise SystemExit("unknown mode " + sys.argv[1])
