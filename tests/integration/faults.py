#!/usr/bin/env python3
"""Misbehaving peers for the fault-injection tests (faults_*.sh).

usage: faults.py COMMAND ARGS...

  proxy LISTEN TARGET MODEFILE
      A TCP proxy (for the xDS stream). MODEFILE holds the mode, read for
      every chunk and every new connection: "pass", "slow SECONDS" (each
      chunk waits that long, both ways), "junk" (new connections get bytes
      that are not HTTP/2 and are closed; the target is not called) or
      "to PORT" (new connections go to PORT instead of TARGET). SIGUSR1
      injects junk into every open connection, towards the client; SIGUSR2
      cuts them all. Prints "ready", then one line per event.
  fakegrpc PORT
      Speaks HTTP/2 and answers every gRPC call with a message that is not
      a protobuf. Prints "call N" for each call it answers.
  upstream PORT [CERT KEY]
      HTTP/1.1 upstream (TLS with CERT and KEY), misbehaving by path:
        /close      reads the request, closes without answering
        /rst        reads the request, resets the connection (RST)
        /halfclose  reads the request, shuts down its writing side, waits
        /eof        a response delimited by the close of the connection
        /stall      reads the request, never answers
        /stallbody  headers and 7 of 100 body bytes, then nothing
        /rstbody    headers and 1000 of 100000 body bytes, then RST
        /garbage    answers bytes that are not HTTP
        /badcl      two different Content-Length headers
        /hugehdr    a 100 KiB response header
        /slow       answers 200 after 1 s
        /big        200 with a 16 MiB body
        else        200 "ok <path>"
  rawup PORT MODE
      Accepts and then: "junk" answers the first bytes with junk; "rst"
      resets after the first bytes; "rstaccept" resets at once.
  disconnect PORT PROTO TRANSPORT [CA]
      PROTO h1|h2, TRANSPORT plain|tls. Clients that go away at every stage
      of a request, each by close (FIN) and by reset (RST); after each, a
      new client must get 200 from /healthz. Prints "ok STAGE/KIND" or
      "bad STAGE/KIND: why".
  fdhog PORT N SECONDS
      Opens up to N connections, each sending a request for /healthz, and
      classifies them for SECONDS: answered, refused (closed or reset
      without an answer) or waiting. Prints "answered A refused R waiting
      W", holds the answered ones open until stdin closes, then closes
      them and gives the waiting ones 5 s: "then answered L lost M".
  slowclients PORT N PID TIMEOUT
      N connections that send half a request head, one byte a second.
      Samples the VmRSS of PID. Prints JSON: opened, rss samples, how each
      connection ended (408, closed, still open) and when.
"""
import json
import os
import selectors
import signal
import socket
import ssl
import struct
import sys
import threading
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
JUNK = b"\xff\xff\xff\x00\xff\xff\xff\xff\xffthis is not HTTP/2\r\n" * 4


def listen(port, backlog=128):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(backlog)
    return s


def rst(sock):
    """Closes with a TCP RST instead of a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def read_frames(buf):
    """Splits complete frames off buf: returns ([(type, flags, stream, payload)], rest)."""
    out = []
    while len(buf) >= 9:
        ln = int.from_bytes(buf[:3], "big")
        if len(buf) < 9 + ln:
            break
        out.append((buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF, buf[9:9 + ln]))
        buf = buf[9 + ln:]
    return out, buf


def log(*a):
    print(*a, flush=True)


# ---- proxy -----------------------------------------------------------------------

def cmd_proxy(listen_port, target_port, modefile):
    conns = []
    lock = threading.Lock()

    def mode():
        try:
            with open(modefile) as f:
                return f.read().split()
        except OSError:
            return ["pass"]

    def pump(src, dst, c):
        try:
            while True:
                d = src.recv(65536)
                if not d:
                    break
                m = mode()
                if m and m[0] == "slow":
                    time.sleep(float(m[1]))
                with c["lock"]:
                    dst.sendall(d)
        except OSError:
            pass
        c["dead"] = True
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def inject(signum, frm):
        with lock:
            for c in conns:
                if c.get("dead"):
                    continue
                try:
                    with c["lock"]:
                        c["client"].sendall(JUNK)
                    log("injected junk into connection", c["n"])
                except OSError:
                    pass

    def cut(signum, frm):
        with lock:
            for c in conns:
                if c.get("dead"):
                    continue
                try:
                    c["client"].shutdown(socket.SHUT_RDWR)
                    log("cut connection", c["n"])
                except OSError:
                    pass

    signal.signal(signal.SIGUSR1, inject)
    signal.signal(signal.SIGUSR2, cut)
    ls = listen(listen_port)
    log("ready")
    n = 0
    while True:
        try:
            cl, _ = ls.accept()
        except InterruptedError:
            continue
        n += 1
        m = mode()
        if m and m[0] == "junk":
            log("connection", n, "answered with junk")
            try:
                cl.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" + JUNK)
            except OSError:
                pass
            cl.close()
            continue
        port = int(m[1]) if m and m[0] == "to" else target_port
        try:
            up = socket.create_connection(("127.0.0.1", port), timeout=2)
            up.settimeout(None)
        except OSError as e:
            log("connection", n, "target unreachable:", e)
            cl.close()
            continue
        c = {"n": n, "client": cl, "lock": threading.Lock()}
        with lock:
            conns[:] = [x for x in conns if not x.get("dead")] + [c]
        log("connection", n, "opened to", port)
        threading.Thread(target=pump, args=(cl, up, c), daemon=True).start()
        threading.Thread(target=pump, args=(up, cl, c), daemon=True).start()


# ---- fake gRPC server ------------------------------------------------------------

def cmd_fakegrpc(port):
    calls = [0]

    def serve(c):
        buf = b""
        got_preface = False
        c.sendall(frame(4, 0, 0))  # our SETTINGS
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
                if not got_preface:
                    if len(buf) < len(PREFACE):
                        continue
                    buf = buf[len(PREFACE):]
                    got_preface = True
                frames, buf = read_frames(buf)
                for ftype, flags, sid, payload in frames:
                    if ftype == 4 and not flags & 1:
                        c.sendall(frame(4, 1, 0))  # SETTINGS ACK
                    elif ftype == 6 and not flags & 1:
                        c.sendall(frame(6, 1, 0, payload))  # PING ACK
                    elif ftype == 7:
                        return
                    elif ftype == 1:
                        # :status 200, content-type: application/grpc (literal, indexed name 31)
                        block = b"\x88" + b"\x0f\x10" + bytes([16]) + b"application/grpc"
                        # field 1, length-delimited, length far beyond the data
                        msg = b"\x0a\xff\xff\xff\x0f\x01\x02\x03"
                        data = b"\x00" + struct.pack(">I", len(msg)) + msg
                        c.sendall(frame(1, 4, sid, block) + frame(0, 0, sid, data))
                        calls[0] += 1
                        log("call", calls[0])
        except OSError:
            pass
        finally:
            c.close()

    ls = listen(port)
    log("ready")
    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


# ---- upstream --------------------------------------------------------------------

def read_head(f):
    line = f.readline()
    if not line:
        return None
    path = line.decode("latin-1").split(" ")[1]
    length = 0
    while True:
        h = f.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, v = h.decode("latin-1").split(":", 1)
        if k.strip().lower() == "content-length":
            length = int(v)
    if length:
        f.read(length)
    return path


def wait_eof(conn):
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass


def upstream_conn(conn, tls):
    try:
        if tls:
            conn = tls.wrap_socket(conn, server_side=True)
        f = conn.makefile("rb")
        while True:
            path = read_head(f)
            if path is None:
                return
            if path.startswith("/close"):
                conn.close()
                return
            if path.startswith("/rst"):
                if path.startswith("/rstbody"):
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"r" * 1000)
                    time.sleep(0.2)
                rst(conn)
                return
            if path.startswith("/halfclose"):
                conn.shutdown(socket.SHUT_WR)
                wait_eof(conn)
                return
            if path.startswith("/eof"):
                conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"e" * 5000 + b"\n")
                conn.shutdown(socket.SHUT_WR)
                wait_eof(conn)
                return
            if path.startswith("/stallbody"):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
                wait_eof(conn)
                return
            if path.startswith("/stall"):
                wait_eof(conn)
                return
            if path.startswith("/garbage"):
                conn.sendall(b"this is not HTTP\r\n\r\n")
                wait_eof(conn)
                return
            if path.startswith("/badcl"):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd")
                wait_eof(conn)
                return
            if path.startswith("/hugehdr"):
                conn.sendall(b"HTTP/1.1 200 OK\r\nx-huge: " + b"h" * 102400 + b"\r\nContent-Length: 2\r\n\r\nok")
                wait_eof(conn)
                return
            if path.startswith("/slow"):
                time.sleep(1)
            if path.startswith("/big"):
                size = 16 << 20
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
                chunk = b"b" * 65536
                for _ in range(size // len(chunk)):
                    conn.sendall(chunk)
                continue
            body = ("ok %s\n" % path).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    except (OSError, ValueError, IndexError, ssl.SSLError):
        pass
    finally:
        try:
            conn.close()
        except OSError:
            pass


def cmd_upstream(port, cert=None, key=None):
    tls = None
    if cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert, key)
    ls = listen(port)
    log("ready")
    while True:
        c, _ = ls.accept()
        threading.Thread(target=upstream_conn, args=(c, tls), daemon=True).start()


def cmd_rawup(port, mode):
    def serve(c):
        try:
            if mode == "rstaccept":
                rst(c)
                return
            if not c.recv(65536):
                return
            if mode == "rst":
                rst(c)
                return
            c.sendall(JUNK)
            wait_eof(c)
        except OSError:
            pass
        finally:
            c.close()

    ls = listen(port)
    log("ready")
    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


# ---- clients that go away ---------------------------------------------------------

class Client:
    def __init__(self, port, proto, transport, ca):
        self.port, self.proto, self.transport, self.ca = port, proto, transport, ca

    def connect(self, handshake=True):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        if self.transport == "tls" and handshake:
            ctx = ssl.create_default_context(cafile=self.ca)
            ctx.set_alpn_protocols(["h2"] if self.proto == "h2" else ["http/1.1"])
            s = ctx.wrap_socket(s, server_hostname="localhost")
        return s

    def client_hello(self):
        """The first flight of a TLS client, without a socket."""
        ctx = ssl.create_default_context(cafile=self.ca)
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        o = ctx.wrap_bio(inc, out, server_hostname="localhost")
        try:
            o.do_handshake()
        except ssl.SSLWantReadError:
            pass
        return out.read()


def h2_headers(sid, path, end_stream=True, method=b"\x82", extra=b"", end_headers=True, scheme=b"\x86"):
    block = method + scheme + b"\x04" + bytes([len(path)]) + path + b"\x01\x09localhost" + extra
    flags = (1 if end_stream else 0) | (4 if end_headers else 0)
    return frame(1, flags, sid, block)


def h2_status(s, sid, deadline):
    """Reads frames until the response HEADERS of stream sid: its status, or a reason."""
    buf = b""
    while time.time() < deadline:
        try:
            d = s.recv(65536)
        except socket.timeout:
            return "timeout"
        if not d:
            return "closed"
        buf += d
        frames, buf = read_frames(buf)
        for ftype, flags, fsid, payload in frames:
            if ftype == 4 and not flags & 1:
                s.sendall(frame(4, 1, 0))
            if ftype == 1 and fsid == sid:
                return {0x88: "200", 0x89: "204", 0x8d: "404", 0x8e: "500"}.get(payload[0], "other")
            if ftype == 3 and fsid == sid:
                return "rst"
            if ftype == 7:
                return "goaway"
    return "timeout"


def h1_status(s):
    data = b""
    while b"\r\n" not in data:
        d = s.recv(4096)
        if not d:
            return "closed"
        data += d
    return data.split(b" ", 2)[1].decode()


def healthy(cl):
    """A new client gets 200 from /healthz within 3 s."""
    try:
        s = cl.connect()
        s.settimeout(3)
        scheme = b"\x87" if cl.transport == "tls" else b"\x86"
        if cl.proto == "h2":
            s.sendall(PREFACE + frame(4, 0, 0) + h2_headers(1, b"/healthz", scheme=scheme))
            st = h2_status(s, 1, time.time() + 3)
        else:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            st = h1_status(s)
        s.close()
        return st
    except OSError as e:
        return "error %s" % e


def h1_stages(cl):
    def send_then(data, after=None):
        def run(kind):
            s = cl.connect()
            s.sendall(data)
            if after:
                after(s)
            return s
        return run

    def read_some(n):
        def f(s):
            got = 0
            s.settimeout(5)
            while got < n:
                d = s.recv(65536)
                if not d:
                    raise OSError("closed before %d bytes" % n)
                got += len(d)
        return f

    stages = [
        ("connect-only", lambda kind: cl.connect()),
        ("partial-headers", send_then(b"GET /up/a HTTP/1.1\r\nHost: x\r\nX-Partial: ab")),
        ("headers-before-body", send_then(b"POST /up/b HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")),
        ("mid-body", send_then(b"POST /up/c HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 300)),
        ("waiting-for-upstream", send_then(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n", lambda s: time.sleep(0.3))),
        ("mid-response-body", send_then(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n", read_some(100000))),
    ]
    if cl.transport == "tls":
        hello = cl.client_hello()

        def partial_hello(kind):
            s = cl.connect(handshake=False)
            s.sendall(hello[:len(hello) // 2])
            return s

        def mid_handshake(kind):
            s = cl.connect(handshake=False)
            s.sendall(hello)
            s.settimeout(5)
            if not s.recv(100):  # the server's first flight has begun
                raise OSError("closed during the handshake")
            return s

        stages = [("tls-partial-client-hello", partial_hello), ("tls-mid-handshake", mid_handshake)] + stages
    return stages


def h2_stages(cl):
    scheme = b"\x87" if cl.transport == "tls" else b"\x86"
    cl_1000 = b"\x0f\x0d\x041000"  # content-length: 1000 (indexed name 28)

    def send(data, after=None, preface=True):
        def run(kind):
            s = cl.connect()
            s.sendall((PREFACE + frame(4, 0, 0) if preface else b"") + data)
            if after:
                after(s)
            return s
        return run

    def read_data(n):
        def f(s):
            got, buf = 0, b""
            s.settimeout(5)
            while got < n:
                d = s.recv(65536)
                if not d:
                    raise OSError("closed before %d bytes" % n)
                buf += d
                frames, buf = read_frames(buf)
                got += sum(len(p) for t, _, _, p in frames if t == 0)
        return f

    stages = [
        ("connect-only", lambda kind: cl.connect()),
        ("partial-preface", send(PREFACE[:10], preface=False)),
        ("preface-and-settings", send(b"")),
        ("headers-without-end-headers", send(h2_headers(1, b"/up/a", end_headers=False, scheme=scheme))),
        ("headers-before-body", send(h2_headers(1, b"/up/b", False, b"\x83", cl_1000, scheme=scheme))),
        ("mid-body", send(h2_headers(1, b"/up/c", False, b"\x83", cl_1000, scheme=scheme) + frame(0, 0, 1, b"x" * 300))),
        ("waiting-for-upstream", send(h2_headers(1, b"/slow", scheme=scheme), lambda s: time.sleep(0.3))),
        ("mid-response-body", send(h2_headers(1, b"/big", scheme=scheme), read_data(30000))),
    ]
    return stages


def h2_stream_cancel(cl):
    """RST_STREAM while the upstream works, then a request on the same connection."""
    scheme = b"\x87" if cl.transport == "tls" else b"\x86"
    s = cl.connect()
    s.settimeout(3)
    s.sendall(PREFACE + frame(4, 0, 0) + h2_headers(1, b"/slow", scheme=scheme))
    time.sleep(0.3)
    s.sendall(frame(3, 0, 1, struct.pack(">I", 8)) + h2_headers(3, b"/healthz", scheme=scheme))
    st = h2_status(s, 3, time.time() + 3)
    s.close()
    return st


def cmd_disconnect(port, proto, transport, ca=None):
    cl = Client(port, proto, transport, ca)
    stages = h2_stages(cl) if proto == "h2" else h1_stages(cl)
    for name, run in stages:
        for kind in ("fin", "rst"):
            try:
                s = run(kind)
                if kind == "rst":
                    rst(s)
                else:
                    s.close()
            except OSError as e:
                log("bad %s/%s: the stage did not happen: %s" % (name, kind, e))
                continue
            st = healthy(cl)
            log(("ok %s/%s" if st == "200" else "bad %s/%s: then /healthz gave " + st) % (name, kind))
    if proto == "h2":
        st = h2_stream_cancel(cl)
        log(("ok %s/%s" if st == "200" else "bad %s/%s: then /healthz gave " + st) % ("rst-stream-waiting", "same-connection"))


# ---- file descriptor exhaustion ------------------------------------------------------

def cmd_fdhog(port, n, seconds):
    sel = selectors.DefaultSelector()
    state = {}
    for i in range(n):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            continue
        state[s] = "connecting"
        sel.register(s, selectors.EVENT_WRITE)
    end = time.time() + seconds
    while time.time() < end and any(v in ("connecting", "waiting") for v in state.values()):
        for key, ev in sel.select(0.05):
            s = key.fileobj
            if state[s] == "connecting":
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    state[s] = "refused"
                    sel.unregister(s)
                    continue
                try:
                    s.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                except OSError:
                    state[s] = "refused"
                    sel.unregister(s)
                    continue
                state[s] = "waiting"
                sel.modify(s, selectors.EVENT_READ)
                continue
            try:
                d = s.recv(4096)
            except OSError:
                d = b""
            state[s] = "answered" if d.startswith(b"HTTP/1.1 200") else "refused"
            sel.unregister(s)
    counts = {k: sum(1 for v in state.values() if v == k) for k in ("answered", "refused", "waiting", "connecting")}
    log("answered %d refused %d waiting %d" % (counts["answered"], counts["refused"], counts["waiting"] + counts["connecting"]))
    sys.stdin.read()  # hold everything until told to go
    # Let the answered ones go: the waiting ones must be served now.
    for s, v in state.items():
        if v == "answered":
            s.close()
    later = 0
    end = time.time() + 5
    while time.time() < end and any(v in ("connecting", "waiting") for v in state.values()):
        for key, ev in sel.select(0.05):
            s = key.fileobj
            if state[s] == "connecting":  # connected at last: it sends its request now
                state[s] = "waiting"
                s.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                sel.modify(s, selectors.EVENT_READ)
                continue
            try:
                d = s.recv(4096)
            except OSError:
                d = b""
            state[s] = "later" if d.startswith(b"HTTP/1.1 200") else "lost"
            later += state[s] == "later"
            sel.unregister(s)
    left = sum(1 for v in state.values() if v in ("connecting", "waiting", "lost"))
    log("then answered %d lost %d" % (later, left))
    for s in state:
        s.close()


# ---- many slow clients -------------------------------------------------------------

def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cmd_slowclients(port, n, pid, timeout):
    """Opens n slow clients, waits until legate ends them all or timeout+10 s."""
    sel = selectors.DefaultSelector()
    t0 = time.time()
    conns = {}
    head = b"GET /slow-client HTTP/1.1\r\nHost: x\r\nX-Slow: "
    rss = [(0.0, rss_kb(pid))]
    batch = 500
    i = 0
    while i < n:
        for _ in range(min(batch, n - i)):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            conns[s] = {"state": "connecting", "t": time.time()}
            sel.register(s, selectors.EVENT_WRITE)
            i += 1
        # let the connects of this batch complete before the next one
        deadline = time.time() + 2
        while time.time() < deadline and any(c["state"] == "connecting" for c in conns.values()):
            for key, ev in sel.select(0.05):
                s = key.fileobj
                c = conns[s]
                if c["state"] != "connecting":
                    continue
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    c["state"] = "failed"
                    sel.unregister(s)
                    continue
                try:
                    s.send(head)
                    c["state"] = "open"
                    c["t"] = time.time()
                    sel.modify(s, selectors.EVENT_READ)
                except OSError:
                    c["state"] = "failed"
                    sel.unregister(s)
    opened = sum(1 for c in conns.values() if c["state"] == "open")
    t_open = time.time() - t0
    rss.append((t_open, rss_kb(pid)))
    print(json.dumps({"event": "opened", "n": opened, "t": round(t_open, 2)}), flush=True)
    ends = {"408": 0, "other": 0, "closed": 0}
    last_drip = last_rss = time.time()
    end_t = None
    deadline = time.time() + timeout + 10
    while time.time() < deadline:
        for key, ev in sel.select(0.1):
            s = key.fileobj
            c = conns[s]
            try:
                d = s.recv(4096)
            except OSError:
                d = b""
            if d.startswith(b"HTTP/1.1 408"):
                ends["408"] += 1
            elif d:
                ends["other"] += 1
            else:
                ends["closed"] += 1
            c["state"] = "done"
            c["end"] = time.time() - c["t"]
            sel.unregister(s)
            s.close()
        now = time.time()
        if now - last_rss >= 0.25:
            rss.append((round(now - t0, 2), rss_kb(pid)))
            last_rss = now
        if now - last_drip >= 1:
            # one more byte of the header value from each open client
            for s, c in conns.items():
                if c["state"] == "open":
                    try:
                        s.send(b"x")
                    except OSError:
                        pass
            last_drip = now
        if not any(c["state"] == "open" for c in conns.values()):
            end_t = now - t0
            break
    still = sum(1 for c in conns.values() if c["state"] == "open")
    lifetimes = sorted(c["end"] for c in conns.values() if "end" in c)
    time.sleep(0.5)
    rss.append((round(time.time() - t0, 2), rss_kb(pid)))
    print(json.dumps({"event": "done", "opened": opened, "ends": ends, "still_open": still,
                      "t_all_closed": end_t and round(end_t, 2),
                      "min_life": lifetimes and round(lifetimes[0], 2),
                      "max_life": lifetimes and round(lifetimes[-1], 2),
                      "rss_kb": rss}), flush=True)
    for s in conns:
        s.close()


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "proxy":
        cmd_proxy(int(args[0]), int(args[1]), args[2])
    elif cmd == "fakegrpc":
        cmd_fakegrpc(int(args[0]))
    elif cmd == "upstream":
        cmd_upstream(int(args[0]), *args[1:3])
    elif cmd == "rawup":
        cmd_rawup(int(args[0]), args[1])
    elif cmd == "disconnect":
        cmd_disconnect(int(args[0]), args[1], args[2], *args[3:4])
    elif cmd == "fdhog":
        cmd_fdhog(int(args[0]), int(args[1]), float(args[2]))
    elif cmd == "slowclients":
        cmd_slowclients(int(args[0]), int(args[1]), int(args[2]), float(args[3]))
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()
