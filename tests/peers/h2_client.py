#!/usr/bin/python3
"""An HTTP/2 (h2c, prior knowledge) client on python3-h2, for the upgrade and
informational tests. Every wait has a timeout, so a proxy that hangs fails in
seconds.

usage:
  h2_client.py PORT settings
      prints "enable_connect_protocol=N" from the server's first SETTINGS
      (N is 0 when the setting is absent)
  h2_client.py PORT ws PATH
      WebSocket over HTTP/2 extended CONNECT (RFC 8441): :method CONNECT,
      :protocol websocket, masked frames from websockets' sans-I/O
      Connection. Steps: settings status text binary big seq100 ping close
  h2_client.py PORT connect AUTHORITY
      classic CONNECT (only :authority) to a TCP echo server.
      Steps: status echo echo-64k end
  h2_client.py PORT request METHOD PATH [BODY_BYTES [expect]]
      one request; prints what came back, one line each, in order:
        info STATUS name=value...   an informational (1xx) HEADERS
        response STATUS name=value...
        body LENGTH SHA256
        text BODY                   (a body of 200 bytes or less, without its last newline)
        end | reset CODE | timeout
      With "expect" the request carries expect: 100-continue and the body
      waits for a :status 100 (2 s at most): prints "continue" when it
      came, "no-continue" when it did not (the body is sent then anyway).

The ws and connect modes print "ok STEP" or "FAIL STEP: why" and stop at the
first failure.
"""
import hashlib
import os
import select
import socket
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.settings

T = 5.0


class Failed(Exception):
    pass


STEP = ["start"]


def begin(step):
    STEP[0] = step


def ok(step):
    print("ok %s" % step, flush=True)


class Stream:
    def __init__(self):
        self.informational = []   # header lists of 1xx HEADERS, in order
        self.response = None      # header list of the final HEADERS
        self.data = bytearray()
        self.trailers = None
        self.ended = False
        self.reset = None         # error code of a RST_STREAM


class Client:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=T)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                        validate_outbound_headers=False)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 4 << 20})
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(16 << 20)
        self.streams = {}
        self.remote_settings = None
        self.closed = False
        self.goaway = None
        self.on_data = None  # callback(stream_id, bytes) for tunnels
        self.flush()

    def flush(self):
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def pump(self, until, timeout, what):
        """Reads and handles frames until until() is true; Failed after timeout."""
        end = time.monotonic() + timeout
        while not until():
            left = end - time.monotonic()
            if left <= 0:
                raise Failed("%s: nothing within %.0f s" % (what, timeout))
            if self.closed:
                raise Failed("%s: the connection closed (GOAWAY %s)" % (what, self.goaway))
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                continue
            try:
                data = self.sock.recv(1 << 16)
            except OSError as e:
                data = b""
                self.goaway = self.goaway or str(e)
            if not data:
                self.closed = True
                continue
            for ev in self.conn.receive_data(data):
                self.handle(ev)
            self.flush()

    def handle(self, ev):
        st = self.streams.get(getattr(ev, "stream_id", None) or 0)
        if isinstance(ev, h2.events.RemoteSettingsChanged):
            if self.remote_settings is None:
                self.remote_settings = {int(k): v.new_value for k, v in ev.changed_settings.items()}
        elif isinstance(ev, h2.events.InformationalResponseReceived):
            st.informational.append(ev.headers)
        elif isinstance(ev, h2.events.ResponseReceived):
            st.response = ev.headers
        elif isinstance(ev, h2.events.DataReceived):
            self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            if self.on_data:
                self.on_data(ev.stream_id, ev.data)
            else:
                st.data += ev.data
        elif isinstance(ev, h2.events.TrailersReceived):
            st.trailers = ev.headers
        elif isinstance(ev, h2.events.StreamEnded):
            st.ended = True
        elif isinstance(ev, h2.events.StreamReset):
            if st is not None:
                st.reset = int(ev.error_code)
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = "error %s" % ev.error_code
            self.closed = True

    def open(self, headers, end_stream=False):
        sid = self.conn.get_next_available_stream_id()
        self.streams[sid] = Stream()
        self.conn.send_headers(sid, headers, end_stream=end_stream)
        self.flush()
        return sid

    def send(self, sid, data, end_stream=False):
        st = self.streams[sid]
        view = memoryview(data)
        while len(view):
            if st.reset is not None:
                raise Failed("the stream was reset (error %d) while sending" % st.reset)
            win = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if win <= 0:
                self.pump(lambda: self.conn.local_flow_control_window(sid) > 0 or st.reset is not None,
                          T, "flow-control window")
                continue
            chunk = bytes(view[:win])
            view = view[win:]
            self.conn.send_data(sid, chunk, end_stream=end_stream and not len(view))
            self.flush()
        if end_stream and not data:
            self.conn.end_stream(sid)
            self.flush()

    def settings(self):
        self.pump(lambda: self.remote_settings is not None, T, "server SETTINGS")
        return self.remote_settings


def fmt_headers(headers):
    return " ".join("%s=%s" % (k, v) for k, v in headers if k != ":status")


def status_of(headers):
    return dict(headers).get(":status")


# --- WebSocket over extended CONNECT ------------------------------------------------

def ws_mode(port, path):
    from websockets.connection import Connection, Side, State
    from websockets.frames import Opcode

    c = Client(port)
    begin("settings")
    s = c.settings()
    ecp = s.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL, 0)
    if ecp != 1:
        raise Failed("SETTINGS_ENABLE_CONNECT_PROTOCOL is %s, not 1" % ecp)
    ok("settings")

    begin("status")
    sid = c.open([(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
                  (":path", path), (":authority", "127.0.0.1:%d" % port),
                  # RFC 8441 needs only the version; the key lets an HTTP/1.1
                  # upstream that checks it (python websockets does) accept the
                  # handshake legate makes of this request.
                  ("sec-websocket-version", "13"),
                  ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")])
    st = c.streams[sid]
    c.pump(lambda: st.response is not None or st.reset is not None or st.ended, T, "response HEADERS")
    if st.response is None:
        raise Failed("no response: stream %s" % ("reset, error %d" % st.reset if st.reset is not None
                                                else "ended"))
    if status_of(st.response) != "200":
        raise Failed(":status %s (%s)" % (status_of(st.response), fmt_headers(st.response)))
    if st.ended:
        raise Failed(":status 200 but the stream ended with it")
    ok("status")

    ws = Connection(Side.CLIENT, State.OPEN, max_size=None)
    frames = []

    def flush_ws():
        for out in ws.data_to_send():
            if out == b"":  # SEND_EOF: the end of our side is END_STREAM
                try:
                    c.send(sid, b"", end_stream=True)
                except Exception:
                    pass  # already ended
            else:
                c.send(sid, out)

    def on_data(_sid, data):
        ws.receive_data(data)
        frames.extend(ws.events_received())
        flush_ws()

    c.on_data = on_data

    def next_frame(timeout=T, what="a frame"):
        def have():
            return any(f.opcode != Opcode.PONG for f in frames) or st.reset is not None or st.ended
        c.pump(have, timeout, what)
        for i, f in enumerate(frames):
            if f.opcode != Opcode.PONG:
                return frames.pop(i)
        raise Failed("%s: the stream %s" % (what, "was reset (error %d)" % st.reset
                                            if st.reset is not None else "ended"))

    def echo(step, opcode, payload, timeout=T):
        begin(step)
        if opcode == Opcode.TEXT:
            ws.send_text(payload)
        else:
            ws.send_binary(payload)
        flush_ws()
        f = next_frame(timeout, "the echo")
        if f.opcode != opcode or f.data != payload:
            raise Failed("echo differs: sent %s %d bytes, got %s %d bytes" % (
                opcode.name, len(payload), f.opcode.name, len(f.data)))
        ok(step)

    echo("text", Opcode.TEXT, "hello over h2, h\u00e9llo \u2713".encode())
    echo("binary", Opcode.BINARY, bytes(range(256)) * 4)
    echo("big", Opcode.BINARY, os.urandom(1 << 20), timeout=20)
    begin("seq100")
    msgs = [("h2 message %03d" % i).encode() for i in range(100)]
    for m in msgs:
        ws.send_text(m)
    flush_ws()
    for i, m in enumerate(msgs):
        f = next_frame(T, "message %d" % i)
        if f.data != m:
            raise Failed("message %d came back as %r" % (i, bytes(f.data[:40])))
    ok("seq100")
    begin("ping")
    ws.send_ping(b"legate-h2-ping")
    flush_ws()
    c.pump(lambda: any(f.opcode == Opcode.PONG for f in frames) or st.reset is not None, T, "pong")
    if not any(f.opcode == Opcode.PONG and f.data == b"legate-h2-ping" for f in frames):
        raise Failed("no pong (stream reset %s)" % st.reset)
    frames[:] = [f for f in frames if f.opcode != Opcode.PONG]
    ok("ping")
    begin("close")
    ws.send_close(1000, "bye")
    flush_ws()
    f = next_frame(T, "the close frame")
    if f.opcode != Opcode.CLOSE:
        raise Failed("got %s instead of a close frame" % f.opcode.name)
    code = int.from_bytes(f.data[:2], "big") if len(f.data) >= 2 else None
    if code != 1000:
        raise Failed("close code %s" % code)
    # the upstream closes its TCP connection after the close frames: the
    # stream's end (END_STREAM, or RST_STREAM NO_ERROR) follows
    if not st.ended:
        try:
            c.send(sid, b"", end_stream=True)
        except Exception:
            pass
    c.pump(lambda: st.ended or st.reset is not None, T, "the end of the stream after the close frames")
    if st.reset not in (None, 0):
        raise Failed("the stream was reset with error %d" % st.reset)
    ok("close")


# --- classic CONNECT ---------------------------------------------------------------------

def connect_mode(port, authority):
    c = Client(port)
    begin("status")
    sid = c.open([(":method", "CONNECT"), (":authority", authority)])
    st = c.streams[sid]
    c.pump(lambda: st.response is not None or st.reset is not None or st.ended, T, "response HEADERS")
    if st.response is None:
        raise Failed("no response: stream %s" % ("reset, error %d" % st.reset if st.reset is not None
                                                else "ended"))
    if status_of(st.response) != "200":
        raise Failed(":status %s (%s)" % (status_of(st.response), fmt_headers(st.response)))
    ok("status")
    for step, payload in (("echo", b"hello through an h2 CONNECT tunnel\n"), ("echo-64k", os.urandom(65536))):
        begin(step)
        st.data = bytearray()
        c.send(sid, payload)
        c.pump(lambda: len(st.data) >= len(payload) or st.reset is not None or st.ended, T, "the echo")
        if bytes(st.data) != payload:
            raise Failed("echo differs: sent %d bytes, got %d" % (len(payload), len(st.data)))
        ok(step)
    begin("end")
    c.send(sid, b"", end_stream=True)
    c.pump(lambda: st.ended or st.reset is not None, T, "the end of the tunnel")
    if st.reset not in (None, 0):
        raise Failed("the stream was reset with error %d" % st.reset)
    ok("end")


# --- plain requests ---------------------------------------------------------------------------

def request_mode(port, method, path, body_bytes, expect):
    c = Client(port)
    body = bytes((i * 7) & 0xFF for i in range(body_bytes))
    headers = [(":method", method), (":scheme", "http"), (":path", path),
               (":authority", "127.0.0.1:%d" % port)]
    if body_bytes or expect:
        headers.append(("content-length", str(body_bytes)))
    if expect:
        headers.append(("expect", "100-continue"))
    sid = c.open(headers, end_stream=not body_bytes and not expect)
    st = c.streams[sid]
    try:
        if expect:
            try:
                c.pump(lambda: st.informational or st.response is not None or st.reset is not None
                       or st.ended, 2.0, "100")
            except Failed:
                pass
            print("continue" if any(status_of(h) == "100" for h in st.informational) else "no-continue",
                  flush=True)
        if body_bytes or expect:
            if st.reset is None and not st.ended:
                c.send(sid, body, end_stream=True)
        c.pump(lambda: st.ended or st.reset is not None, T, "the response")
    except Failed:
        pass
    for h in st.informational:
        print("info %s %s" % (status_of(h), fmt_headers(h)), flush=True)
    if st.response is not None:
        print("response %s %s" % (status_of(st.response), fmt_headers(st.response)), flush=True)
        print("body %d %s" % (len(st.data), hashlib.sha256(st.data).hexdigest()), flush=True)
        if len(st.data) <= 200:
            print("text %s" % bytes(st.data).decode("utf-8", "replace").rstrip("\n"), flush=True)
    if st.trailers is not None:
        print("trailers %s" % fmt_headers(st.trailers), flush=True)
    print("end" if st.ended else "reset %d" % st.reset if st.reset is not None else "timeout", flush=True)


def main():
    port, mode = int(sys.argv[1]), sys.argv[2]
    try:
        if mode == "settings":
            s = Client(port).settings()
            print("enable_connect_protocol=%d" % s.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL, 0))
        elif mode == "ws":
            ws_mode(port, sys.argv[3])
        elif mode == "connect":
            connect_mode(port, sys.argv[3])
        elif mode == "request":
            request_mode(port, sys.argv[3], sys.argv[4], int(sys.argv[5]) if len(sys.argv) > 5 else 0,
                         len(sys.argv) > 6 and sys.argv[6] == "expect")
        else:
            raise SystemExit("unknown mode " + mode)
    except Failed as e:
        print("FAIL %s: %s" % (STEP[0], e), flush=True)
        sys.exit(1)
    except Exception as e:
        print("FAIL %s: %s: %s" % (STEP[0], type(e).__name__, e), flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
