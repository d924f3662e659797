#!/usr/bin/python3
"""A gRPC peer on Python's grpcio (Debian's python3-grpcio, gRPC's C core),
with no protobuf code generation: the service legate.test.Echo moves raw
bytes. Server and client; the twin of grpc_node.js (same protocol, same
scenarios, same output), so any client can be pointed at any server.

Run it with /usr/bin/python3: a python3 earlier on PATH may lack grpc.

  grpc_py.py server --name NAME --port PORT [--tls-port PORT --cert PEM --key PEM]
  grpc_py.py client --target HOST:PORT [--ca PEM --server-name NAME]
             --upstream VALUE --expect-server NAME --scenarios a,b,c [--kill-pid PID]

The server prints "ready" once listening. The client runs each scenario in
order on one channel and prints one JSON line per scenario, starting with
{"scenario":"NAME","ok":true|false,...} and listing what did not match in
"problems"; it exits 0 only when every scenario is ok.

Note: gRPC's C core server refuses a request without `te: trailers`.
"""
import hashlib
import json
import os
import queue
import signal
import struct
import sys
import threading
import time
from concurrent import futures

import grpc

# --- PROTOCOL (keep in step with grpc_node.js) --------------------------------------
SERVICE = "legate.test.Echo"
HDR_BIN = bytes([0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF, 0x0A, 0x0D])  # x-bin-bin
TRL_BIN = bytes([0xFF, 0x00, 0x10, 0x20, 0xC3, 0xBC, 0x00, 0x01])  # x-trailer-bin
REQ_BIN = bytes([0xDE, 0xAD, 0xBE, 0xEF, 0x00, 0xFF])  # x-req-bin
REQ_TEXT = "hello legate"  # x-req
ERR_BEFORE = (grpc.StatusCode.NOT_FOUND, "no such thing")  # 5
ERR_AFTER = (grpc.StatusCode.FAILED_PRECONDITION, "gone after 3 messages (100% sûr)")  # 9
MAX_MSG = 16 * 1024 * 1024
STREAM_FOREVER_MAX = 200  # messages, one every 50 ms
# -------------------------------------------------------------------------------------

OPTS = [
    ("grpc.max_receive_message_length", MAX_MSG),
    ("grpc.max_send_message_length", MAX_MSG),
]


def parse_args(argv):
    o = {}
    i = 0
    while i < len(argv):
        if argv[i].startswith("--"):
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                o[argv[i][2:]] = argv[i + 1]
                i += 1
            else:
                o[argv[i][2:]] = "true"
        i += 1
    return o


def u32(i):
    return struct.pack(">I", i)


def repeat_to(seed, size):
    if not seed:
        return bytes(size)
    return (seed * (size // len(seed) + 1))[:size]


def md_get(md, key):
    for k, v in md or ():
        if k == key:
            return v
    return None


# ================================ server ===============================================
def server(o):
    name = o.get("name", "python")
    cancelled = set()
    lock = threading.Lock()

    def headers(ctx):
        md = ctx.invocation_metadata()
        h = [("x-server", name)]
        r = md_get(md, "x-req")
        if r is not None:
            h.append(("x-echo-req", r))
        rb = md_get(md, "x-req-bin")
        if rb is not None:
            h.append(("x-echo-req-bin", rb))
        h.append(("x-bin-bin", HDR_BIN))
        return h

    def trailers(ctx):
        ctx.set_trailing_metadata([("x-trailer", "done"), ("x-trailer-bin", TRL_BIN)])

    def mode(ctx):
        return md_get(ctx.invocation_metadata(), "x-mode") or "ok"

    def watch(ctx):
        """Records the call's x-call-id as cancelled if the call ends before
        the handler finished it (the peer reset the stream). Returns a function
        the handler calls once it has given its answer."""
        cid = md_get(ctx.invocation_metadata(), "x-call-id")
        state = {"finished": False}

        def ended():
            if cid and not state["finished"]:
                with lock:
                    cancelled.add(cid)

        ctx.add_callback(ended)
        return lambda: state.update(finished=True)

    def fail(ctx, err):
        trailers(ctx)
        ctx.set_code(err[0])
        ctx.set_details(err[1])

    def unary(req, ctx):
        m = mode(ctx)
        finished = watch(ctx)
        if m.startswith("query-"):
            ctx.send_initial_metadata(headers(ctx))
            trailers(ctx)
            with lock:
                seen = m[6:] in cancelled
            finished()
            return json.dumps({"cancelled": seen}).encode()
        if m == "error-before":
            fail(ctx, ERR_BEFORE)
            finished()
            return b""
        if m.startswith("sleep-"):
            end = time.monotonic() + int(m[6:]) / 1000
            while time.monotonic() < end and ctx.is_active():
                time.sleep(0.01)
            if not ctx.is_active():
                return b""
        resp = req
        if m == "big":
            resp = repeat_to(req, int(md_get(ctx.invocation_metadata(), "x-size") or 0))
        elif m == "sha":
            resp = hashlib.sha256(req).digest()
        ctx.send_initial_metadata(headers(ctx))
        trailers(ctx)
        finished()
        return resp

    def server_stream(req, ctx):
        m = mode(ctx)
        finished = watch(ctx)
        if m == "error-before":
            fail(ctx, ERR_BEFORE)
            finished()
            return
        ctx.send_initial_metadata(headers(ctx))
        if m == "stream-forever":
            for i in range(STREAM_FOREVER_MAX):
                if not ctx.is_active():
                    return
                yield req + u32(i)
                time.sleep(0.05)
            trailers(ctx)
            finished()
            return
        count = int(md_get(ctx.invocation_metadata(), "x-count") or 100)
        for i in range(count):
            yield req + u32(i)
        if m == "error-after":
            fail(ctx, ERR_AFTER)
        else:
            trailers(ctx)
        finished()

    def client_stream(it, ctx):
        h = hashlib.sha256()
        n = 0
        for m in it:
            h.update(m)
            n += 1
        ctx.send_initial_metadata(headers(ctx))
        trailers(ctx)
        return h.digest() + u32(n)

    def bidi(it, ctx):
        ctx.send_initial_metadata(headers(ctx))
        for m in it:
            yield m
        trailers(ctx)

    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    })
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=128), handlers=[handler],
                      options=OPTS + [("grpc.so_reuseport", 0)], maximum_concurrent_rpcs=None)
    if srv.add_insecure_port("127.0.0.1:%s" % o["port"]) == 0:
        sys.exit("cannot bind %s" % o["port"])
    if o.get("tls-port"):
        with open(o["key"], "rb") as k, open(o["cert"], "rb") as c:
            creds = grpc.ssl_server_credentials([(k.read(), c.read())])
        if srv.add_secure_port("127.0.0.1:%s" % o["tls-port"], creds) == 0:
            sys.exit("cannot bind %s" % o["tls-port"])
    srv.start()
    print("ready", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: srv.stop(0))
    srv.wait_for_termination()


# ================================ client ===============================================
class R:
    """What one call gave: status, metadata, messages."""

    def __init__(self):
        self.code = None
        self.details = None
        self.headers = None
        self.trailers = None
        self.msgs = []
        self.ms = None
        self.sha256 = None
        self.codes = None
        self.t0 = time.monotonic()

    def done(self, call):
        try:
            self.code = call.code().value[0]
            self.details = call.details()
            self.headers = call.initial_metadata()
            self.trailers = call.trailing_metadata()
        except Exception as e:  # a call that never started
            self.code = -1
            self.details = "no status: %r" % e
        self.ms = int((time.monotonic() - self.t0) * 1000)
        return self


def md_obj(md):
    out = {}
    for k, v in md or ():
        if k.startswith("x-"):
            out[k] = "hex:" + v.hex() if isinstance(v, bytes) else v
    return out


SYNTHETIC = ("Received HTTP status code", "http2 header with status", "RST_STREAM", "Protocol error",
             "Stream removed", "No connection established", "without trailers")


def client(o):
    target = o["target"]
    upstream = o.get("upstream", "")
    expect_server = o.get("expect-server", "")
    opts = OPTS + [("grpc.enable_http_proxy", 0)]
    if o.get("ca"):
        with open(o["ca"], "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        if o.get("server-name"):
            opts.append(("grpc.ssl_target_name_override", o["server-name"]))
        ch = grpc.secure_channel(target, creds, options=opts)
    else:
        ch = grpc.insecure_channel(target, options=opts)

    def P(n):
        return "/%s/%s" % (SERVICE, n)

    def meta(extra=None, up=None):
        up = upstream if up is None else up
        md = []
        if up:
            md.append(("x-upstream", up))
        md += [("x-req", REQ_TEXT), ("x-req-bin", REQ_BIN)]
        md += list((extra or {}).items())
        return md

    def unary(path, req, md, timeout):
        r = R()
        try:
            resp, call = ch.unary_unary(path).with_call(req, metadata=md, timeout=timeout)
            r.msgs = [resp]
        except grpc.RpcError as e:
            call = e
        return r.done(call)

    def server_stream(req, md, timeout, on_msg=None):
        r = R()
        call = ch.unary_stream(P("ServerStream"))(req, metadata=md, timeout=timeout)
        try:
            for m in call:
                r.msgs.append(m)
                if on_msg:
                    on_msg(call, r)
        except grpc.RpcError:
            pass
        return r.done(call)

    def check_headers(r, pr, server=None):
        server = expect_server if server is None else server
        h = r.headers
        if not h:
            pr.append("no initial metadata")
            return
        if server and md_get(h, "x-server") != server:
            pr.append("x-server=%s want %s" % (md_get(h, "x-server"), server))
        if md_get(h, "x-echo-req") != REQ_TEXT:
            pr.append("x-echo-req=%s" % md_get(h, "x-echo-req"))
        if md_get(h, "x-echo-req-bin") != REQ_BIN:
            pr.append("x-echo-req-bin=%r" % md_get(h, "x-echo-req-bin"))
        if md_get(h, "x-bin-bin") != HDR_BIN:
            pr.append("x-bin-bin=%r" % md_get(h, "x-bin-bin"))

    def check_trailers(r, pr):
        if md_get(r.trailers, "x-trailer") != "done":
            pr.append("trailer x-trailer=%s" % md_get(r.trailers, "x-trailer"))
        if md_get(r.trailers, "x-trailer-bin") != TRL_BIN:
            pr.append("trailer x-trailer-bin=%r" % md_get(r.trailers, "x-trailer-bin"))

    def check_status(r, pr, code, details=None):
        if r.code != code or (details is not None and r.details != details):
            pr.append('status %s "%s" want %s%s' % (r.code, r.details, code,
                                                   ' "%s"' % details if details is not None else ""))

    def check_local(r, pr, code, want=None):
        if r.code != code:
            pr.append('status %s "%s" want %s' % (r.code, r.details, code))
        elif not r.details:
            pr.append("no grpc-message")
        elif any(s.lower() in r.details.lower() for s in SYNTHETIC):
            pr.append('details "%s" look made up by the client, not a grpc-message' % r.details)
        elif want and want not in r.details:
            pr.append('details "%s" want "%s"' % (r.details, want))

    def s_unary():
        pr = []
        req = os.urandom(1024)
        r = unary(P("Unary"), req, meta(), 5)
        check_status(r, pr, 0)
        if r.code == 0:
            if r.msgs != [req]:
                pr.append("response is not the request echoed")
            check_headers(r, pr)
            check_trailers(r, pr)
        return r, pr

    def s_server_stream():
        pr = []
        req = os.urandom(64)
        r = server_stream(req, meta({"x-count": "100"}), 5)
        check_status(r, pr, 0)
        if len(r.msgs) != 100:
            pr.append("%d messages want 100" % len(r.msgs))
        elif any(m != req + u32(i) for i, m in enumerate(r.msgs)):
            pr.append("messages out of order or corrupted")
        if r.code == 0:
            check_headers(r, pr)
            check_trailers(r, pr)
        return r, pr

    def s_client_stream():
        pr = []
        msgs = [os.urandom(1000 + i) for i in range(50)]
        want = hashlib.sha256(b"".join(msgs)).digest() + u32(50)
        r = R()
        try:
            resp, call = ch.stream_unary(P("ClientStream")).with_call(iter(msgs), metadata=meta(), timeout=5)
            r.msgs = [resp]
        except grpc.RpcError as e:
            call = e
        r.done(call)
        check_status(r, pr, 0)
        if r.code == 0:
            if r.msgs != [want]:
                pr.append("server saw other bytes: %s want %s" % (r.msgs[0].hex(), want.hex()))
            check_headers(r, pr)
            check_trailers(r, pr)
        return r, pr

    def s_bidi():
        # Ping-pong: each message waits for the echo of the one before.
        pr = []
        sent = []
        turn = queue.Queue()

        def gen():
            for i in range(20):
                m = os.urandom(100 + i)
                sent.append(m)
                yield m
                if turn.get() is None:
                    return

        r = R()
        call = ch.stream_stream(P("Bidi"))(gen(), metadata=meta(), timeout=5)
        bad = 0
        try:
            for m in call:
                if m != sent[len(r.msgs)]:
                    bad += 1
                r.msgs.append(m)
                turn.put(True)
        except grpc.RpcError:
            pass
        turn.put(None)
        r.done(call)
        check_status(r, pr, 0)
        if len(r.msgs) != 20:
            pr.append("%d echoes of 20 (%d sent)" % (len(r.msgs), len(sent)))
        if bad:
            pr.append("%d echoes differ" % bad)
        if r.code == 0:
            check_headers(r, pr)
            check_trailers(r, pr)
        return r, pr

    def s_error_before():
        pr = []
        r = unary(P("Unary"), b"x", meta({"x-mode": "error-before"}), 5)
        check_status(r, pr, ERR_BEFORE[0].value[0], ERR_BEFORE[1])
        if r.msgs:
            pr.append("a message arrived")
        check_trailers(r, pr)
        return r, pr

    def s_error_before_stream():
        pr = []
        r = server_stream(b"x", meta({"x-mode": "error-before"}), 5)
        check_status(r, pr, ERR_BEFORE[0].value[0], ERR_BEFORE[1])
        if r.msgs:
            pr.append("%d messages arrived" % len(r.msgs))
        check_trailers(r, pr)
        return r, pr

    def s_error_after():
        pr = []
        req = b"abc"
        r = server_stream(req, meta({"x-mode": "error-after", "x-count": "3"}), 5)
        check_status(r, pr, ERR_AFTER[0].value[0], ERR_AFTER[1])
        if len(r.msgs) != 3:
            pr.append("%d messages want 3" % len(r.msgs))
        elif any(m != req + u32(i) for i, m in enumerate(r.msgs)):
            pr.append("messages corrupted")
        check_headers(r, pr)
        check_trailers(r, pr)
        return r, pr

    def s_deadline():
        pr = []
        r = unary(P("Unary"), b"zzz", meta({"x-mode": "sleep-3000"}), 0.5)
        check_status(r, pr, 4)
        if r.ms > 2500:
            pr.append("took %d ms for a 500 ms deadline" % r.ms)
        return r, pr

    def s_cancel():
        # Cancels a server stream after 3 messages, then asks the server
        # whether it saw the cancel: only if the proxy reset the upstream
        # stream (the call's own deadline is 10 s away).
        pr = []
        cid = os.urandom(8).hex()

        def on_msg(call, r):
            if len(r.msgs) == 3:
                call.cancel()

        r = server_stream(b"c", meta({"x-mode": "stream-forever", "x-call-id": cid}), 10, on_msg)
        check_status(r, pr, 1)
        if len(r.msgs) < 3:
            pr.append("%d messages before the cancel" % len(r.msgs))
        seen, last = False, ""
        for _ in range(30):
            q = unary(P("Unary"), b"", meta({"x-mode": "query-" + cid}), 3)
            if q.code == 0:
                last = q.msgs[0].decode()
                seen = json.loads(last)["cancelled"] is True
            else:
                last = "status %s %s" % (q.code, q.details)
            if seen:
                break
            time.sleep(0.1)
        if not seen:
            pr.append("the server never saw the cancel (%s)" % last)
        return r, pr

    def s_big_upload():
        pr = []
        req = os.urandom(4 * 1024 * 1024)
        r = unary(P("Unary"), req, meta({"x-mode": "sha"}), 15)
        check_status(r, pr, 0)
        if r.code == 0 and r.msgs != [hashlib.sha256(req).digest()]:
            pr.append("the server got other bytes")
        r.sha256 = hashlib.sha256(req).hexdigest()
        return r, pr

    def s_big_download():
        pr = []
        seed = os.urandom(4099)
        size = 4 * 1024 * 1024
        r = unary(P("Unary"), seed, meta({"x-mode": "big", "x-size": str(size)}), 15)
        check_status(r, pr, 0)
        want = repeat_to(seed, size)
        if r.code == 0 and r.msgs != [want]:
            pr.append("response differs (%d bytes)" % (len(r.msgs[0]) if r.msgs else 0))
        if r.code == 0:
            check_trailers(r, pr)
        r.sha256 = hashlib.sha256(want).hexdigest()
        return r, pr

    def s_big_echo():
        pr = []
        req = os.urandom(4 * 1024 * 1024)
        r = unary(P("Unary"), req, meta(), 15)
        check_status(r, pr, 0)
        if r.code == 0 and r.msgs != [req]:
            pr.append("the echo differs")
        r.sha256 = hashlib.sha256(req).hexdigest()
        return r, pr

    def s_concurrent():
        pr = []
        reqs = [os.urandom(16384) for _ in range(50)]
        r = R()
        fn = ch.unary_unary(P("Unary"))
        futs = [fn.future(q, metadata=meta(), timeout=10) for q in reqs]
        codes = {}
        r.details = ""
        for i, f in enumerate(futs):
            x = R()
            try:
                x.msgs = [f.result()]
            except grpc.RpcError:
                pass
            x.done(f)
            codes[x.code] = codes.get(x.code, 0) + 1
            if x.code == 0:
                p2 = []
                if x.msgs != [reqs[i]]:
                    p2.append("echo differs")
                check_headers(x, p2)
                check_trailers(x, p2)
                if p2:
                    pr.append("call %d: %s" % (i, p2[0]))
            elif not r.details:
                r.details = "%s %s" % (x.code, x.details)
        r.code = 0
        r.ms = int((time.monotonic() - r.t0) * 1000)
        if codes.get(0, 0) != 50:
            pr.append("status codes %s, want 50 OK" % json.dumps(codes))
        r.codes = codes
        return r, pr[:5]

    def s_kill_midstream():
        pr = []
        pid = int(o.get("kill-pid", "0"))
        if not pid:
            return R(), ["--kill-pid missing"]

        def on_msg(call, r):
            if len(r.msgs) == 5:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError as e:
                    pr.append("kill: %s" % e)

        r = server_stream(b"k", meta({"x-mode": "stream-forever"}), 8, on_msg)
        if len(r.msgs) < 5:
            pr.append("%d messages before the kill" % len(r.msgs))
        if r.code not in (13, 14):
            pr.append('status %s "%s" want 13 or 14' % (r.code, r.details))
        return r, pr

    def s_no_route():
        pr = []
        r = unary("/legate.test.Missing/Unary", b"x", meta(), 5)
        check_local(r, pr, 12)
        return r, pr

    def s_no_endpoints():
        pr = []
        r = unary(P("Unary"), b"x", meta(up="empty"), 5)
        check_local(r, pr, 14, "no healthy upstream")
        return r, pr

    def s_refused():
        pr = []
        r = unary(P("Unary"), b"x", meta(up="refused"), 5)
        check_local(r, pr, 14, "upstream connect error")
        return r, pr

    def s_route_timeout():
        pr = []
        r = unary(P("Unary"), b"x", meta({"x-mode": "sleep-3000"}, up="slow"), 8)
        check_local(r, pr, 14, "upstream request timeout")
        if r.ms > 2900:
            pr.append("took %d ms: the 0.5 s route timeout did not fire" % r.ms)
        return r, pr

    scenarios = {k[2:]: v for k, v in locals().items() if k.startswith("s_")}
    all_ok = True
    for name in filter(None, o.get("scenarios", "").split(",")):
        try:
            if name not in scenarios:
                raise KeyError("unknown scenario %s" % name)
            r, pr = scenarios[name]()
        except Exception as e:
            import traceback
            r, pr = R(), ["exception: %s" % traceback.format_exc(limit=3)]
        ok = not pr
        all_ok = all_ok and ok
        line = {"scenario": name, "ok": ok, "problems": pr, "code": r.code, "details": r.details, "ms": r.ms,
                "count": len(r.msgs), "sha256": r.sha256, "codes": r.codes,
                "headers": md_obj(r.headers), "trailers": md_obj(r.trailers)}
        print(json.dumps({k: v for k, v in line.items() if v is not None}, ensure_ascii=False, separators=(",", ":")), flush=True)
    ch.close()
    sys.exit(0 if all_ok else 1)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("server", "client"):
        sys.exit("usage: grpc_py.py server|client ...")
    (server if sys.argv[1] == "server" else client)(parse_args(sys.argv[2:]))
