#!/usr/bin/env python3
"""Raw HTTP/2 frames for hostile-client tests (no HTTP/2 library needed).

usage: h2raw.py PORT SCENARIO
  rapid-reset   300 requests, each reset at once
  big-settings  a SETTINGS frame with 40 entries
  conn-header   a request carrying "connection: close" (forbidden in HTTP/2)
  ok            one plain request
Prints what came back: "goaway <error code>", "rst <stream> <code>",
"status <code>", "closed".
"""
import socket
import struct
import sys

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def lit(name, value):
    # literal header field without indexing, new name
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def request(stream, path=b"/hole", extra=b""):
    block = b"\x82\x86" + b"\x04" + bytes([len(path)]) + path + b"\x01\x09localhost" + extra
    return frame(1, 0x5, stream, block)  # HEADERS, END_STREAM|END_HEADERS


def main():
    port, scenario = int(sys.argv[1]), sys.argv[2]
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(5)
    out = PREFACE + frame(4, 0, 0)  # empty SETTINGS
    if scenario == "rapid-reset":
        for i in range(300):
            sid = 1 + 2 * i
            out += request(sid) + frame(3, 0, sid, struct.pack(">I", 8))  # RST_STREAM CANCEL
    elif scenario == "big-settings":
        out += frame(4, 0, 0, b"".join(struct.pack(">HI", 3, 100) for _ in range(40)))
    elif scenario == "conn-header":
        out += request(1, b"/healthz", lit(b"connection", b"close"))
    elif scenario == "ok":
        out += request(1, b"/healthz")
    s.sendall(out)
    seen = []
    buf = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                seen.append("closed")
                break
            buf += d
            while len(buf) >= 9:
                ln = int.from_bytes(buf[:3], "big")
                if len(buf) < 9 + ln:
                    break
                ftype, sid, payload = buf[3], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF, buf[9:9 + ln]
                buf = buf[9 + ln:]
                if ftype == 7:
                    seen.append("goaway %d" % int.from_bytes(payload[4:8], "big"))
                elif ftype == 3:
                    seen.append("rst %d %d" % (sid, int.from_bytes(payload[:4], "big")))
                elif ftype == 1 and payload[:1] in (b"\x88", b"\x8d", b"\x8e", b"\x89"):
                    codes = {0x88: 200, 0x89: 204, 0x8d: 404, 0x8e: 500}
                    seen.append("status %d" % codes[payload[0]])
                    if scenario == "ok":
                        raise StopIteration
    except (socket.timeout, ConnectionResetError, StopIteration):
        pass
    print("\n".join(dict.fromkeys(seen)))


if __name__ == "__main__":
    main()
