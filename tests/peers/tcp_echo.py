#!/usr/bin/env python3
"""A TCP (or mTLS) echo server for the tcp_proxy tests.

    tcp_echo.py PORT NAME [--tls CERT KEY CLIENT_CA] [--greet]

Each connection gets back every byte it sends. With --greet the server
first sends "hello <client certificate subject CN or -> at NAME\n". When the
client shuts down its write side, the server answers
"EOF after <n> bytes at NAME\n" and closes: what a proxy's half-close
handling must let through. --tls requires a client certificate signed by
CLIENT_CA (the cluster's client certificate, presented by legate).
"""
import socket
import ssl
import sys
import threading


def serve(conn, name, greet):
    total = 0
    try:
        if greet:
            cn = "-"
            if isinstance(conn, ssl.SSLSocket):
                cert = conn.getpeercert() or {}
                for rdn in cert.get("subject", ()):
                    for k, v in rdn:
                        if k == "commonName":
                            cn = v
            conn.sendall(("hello %s at %s\n" % (cn, name)).encode())
        while True:
            data = conn.recv(65536)
            if not data:
                break
            total += len(data)
            conn.sendall(data)
        conn.sendall(("EOF after %d bytes at %s\n" % (total, name)).encode())
    except (OSError, ssl.SSLError):
        pass
    finally:
        try:
            conn.close()
        except OSError:
            pass


def main():
    port, name = int(sys.argv[1]), sys.argv[2]
    args = sys.argv[3:]
    ctx = None
    if "--tls" in args:
        i = args.index("--tls")
        cert, key, ca = args[i + 1:i + 4]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.load_verify_locations(ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    greet = "--greet" in args
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(128)
    while True:
        c, _ = s.accept()
        if ctx is not None:
            def handshake(c=c):
                try:
                    t = ctx.wrap_socket(c, server_side=True)
                except (OSError, ssl.SSLError) as e:
                    print("handshake failed:", e, flush=True)
                    c.close()
                    return
                serve(t, name, greet)
            threading.Thread(target=handshake, daemon=True).start()
        else:
            threading.Thread(target=serve, args=(c, name, greet), daemon=True).start()


if __name__ == "__main__":
    main()
