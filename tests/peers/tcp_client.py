#!/usr/bin/env python3
"""Clients for the tcp_proxy tests (the server is tcp_echo.py).

    tcp_client.py echo PORT NBYTES [--stall S] [--greet] [--tls CA CERT KEY]
        sends NBYTES random bytes while reading the echo (with --stall, a
        reader that reads nothing for S seconds while the writer goes on),
        checks it is the same; without TLS then half-closes and prints the
        server's last line (Python cannot half-close a TLS connection)
    tcp_client.py halfclose PORT       sends "ping", shuts down its write
        side, prints everything it then reads until EOF
    tcp_client.py idle PORT            one echo, then how long until the
        proxy closes the quiet connection
    tcp_client.py who PORT N           N connections; counts which server
        (the NAME of tcp_echo.py) answered each; "failed" for a connection
        closed without an answer
"""
import hashlib
import os
import socket
import ssl
import sys
import threading
import time


def connect(port, tls=None):
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    if tls:
        ca, cert, key = tls
        ctx = ssl.create_default_context(cafile=ca)
        ctx.load_cert_chain(cert, key)
        s = ctx.wrap_socket(s, server_hostname="localhost")
    return s


def read_line(s):
    buf = b""
    while not buf.endswith(b"\n"):
        d = s.recv(1)
        if not d:
            break
        buf += d
    return buf.decode(errors="replace").strip()


def echo(port, n, stall, greet, tls):
    s = connect(port, tls)
    if greet:
        print("greeting:", read_line(s))
    data = os.urandom(n)
    sent_digest = hashlib.sha256(data).hexdigest()

    def writer():
        view = memoryview(data)
        while view:
            k = s.send(view[:65536])
            view = view[k:]

    got = 0
    h = hashlib.sha256()

    def read(upto):
        nonlocal got
        while got < upto:
            d = s.recv(min(65536, upto - got))
            if not d:
                return False
            h.update(d)
            got += len(d)
        return True

    if tls:
        # An SSL object must not be read and written from two threads at
        # once: chunk by chunk in one thread.
        for off in range(0, n, 65536):
            s.sendall(data[off:off + 65536])
            if not read(min(off + 65536, n)):
                break
    else:
        t = threading.Thread(target=writer)
        t.start()
        time.sleep(stall)
        read(n)
        t.join()
    print("echo", "ok" if got == n and h.hexdigest() == sent_digest else "mismatch", got)
    if tls:
        s.close()
        return
    s.shutdown(socket.SHUT_WR)
    print("last:", read_line(s))


def send_and_half_close(port, data):
    """Sends data, shuts down the write side, returns all read until EOF."""
    s = connect(port)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    buf = b""
    while True:
        d = s.recv(4096)
        if not d:
            break
        buf += d
    s.close()
    return buf.decode(errors="replace")


def halfclose(port):
    print("read:", send_and_half_close(port, b"ping").replace("\n", "|"))


def idle(port):
    s = connect(port)
    s.sendall(b"hi")
    print("echo:", s.recv(10).decode())
    t0 = time.time()
    try:
        d = s.recv(10)
    except ConnectionResetError:
        d = b""
    print("closed after %.1f s%s" % (time.time() - t0, "" if not d else " (got %r)" % d))


def who(port, n):
    counts = {}
    for _ in range(n):
        try:
            text = send_and_half_close(port, b"x").strip()
            name = text.split()[-1] if text.startswith("xEOF after 1 bytes at ") else "failed"
        except OSError:
            name = "failed"
        counts[name] = counts.get(name, 0) + 1
    for k in sorted(counts):
        print("%s %d" % (k, counts[k]))


def main():
    cmd, port = sys.argv[1], int(sys.argv[2])
    args = sys.argv[3:]
    if cmd == "echo":
        tls = None
        if "--tls" in args:
            i = args.index("--tls")
            tls = args[i + 1:i + 4]
        stall = float(args[args.index("--stall") + 1]) if "--stall" in args else 0
        echo(port, int(args[0]), stall, "--greet" in args, tls)
    elif cmd == "halfclose":
        halfclose(port)
    elif cmd == "idle":
        idle(port)
    elif cmd == "who":
        who(port, int(args[0]))


if __name__ == "__main__":
    main()
