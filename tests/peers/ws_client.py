#!/usr/bin/python3
"""WebSocket client over HTTP/1.1 (python3-websockets) for the upgrade tests.

usage: ws_client.py URL SCENARIO

Prints one line per step, "ok STEP" or "FAIL STEP: why", and stops at the
first failure (later steps are then missing, which the test counts as
failures too). Every operation has a timeout, so a proxy that hangs fails
in seconds. Scenarios:
  echo            handshake text binary big seq100 ping close
  text            handshake text close
  reject          prints "status N": the handshake's answer (101 if accepted)
  upstream-close  handshake, then asks the server to drop its TCP connection:
                  step "ended" when this client's connection ends too
  client-abort    handshake text, then drops its own TCP connection
                  (the server's log tells whether the close reached it)
"""
import asyncio
import os
import sys
import time

import websockets
import websockets.exceptions

T = 5  # seconds for any single operation


class Failed(Exception):
    pass


STEP = ["start"]


def begin(step):
    STEP[0] = step


def ok(step):
    print("ok %s" % step, flush=True)


async def recv(ws, timeout=T):
    try:
        return await asyncio.wait_for(ws.recv(), timeout)
    except asyncio.TimeoutError:
        raise Failed("no message within %d s" % timeout)
    except websockets.exceptions.ConnectionClosed as e:
        raise Failed("connection closed: %s" % e)


async def echo_one(ws, step, msg, timeout=T):
    begin(step)
    await asyncio.wait_for(ws.send(msg), timeout)
    got = await recv(ws, timeout)
    if got != msg:
        raise Failed("echo differs: sent %d %s, got %d %s" % (
            len(msg), type(msg).__name__, len(got), type(got).__name__))
    ok(step)


async def connect(url):
    begin("handshake")
    try:
        ws = await websockets.connect(url, open_timeout=T, close_timeout=4, max_size=None,
                                      compression=None, ping_interval=None)
    except websockets.exceptions.InvalidStatusCode as e:
        raise Failed("handshake answered HTTP %d" % e.status_code)
    except Exception as e:  # timeout, reset, bad handshake
        raise Failed("%s: %s" % (type(e).__name__, e))
    ok("handshake")
    return ws


async def close(ws):
    begin("close")
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(ws.close(1000, "bye"), 12)
    except asyncio.TimeoutError:
        raise Failed("close did not finish in 12 s")
    dt = time.monotonic() - t0
    if ws.close_code != 1000:
        raise Failed("close code from the server %s (1006: no close frame came back)" % ws.close_code)
    if dt > 3.5:
        raise Failed("close frames exchanged, but the connection ended only after %.1f s "
                     "(the client had to give up waiting for the TCP close)" % dt)
    ok("close")


async def scenario(url, name):
    if name == "reject":
        try:
            ws = await websockets.connect(url, open_timeout=T, close_timeout=2, compression=None,
                                          ping_interval=None)
        except websockets.exceptions.InvalidStatusCode as e:
            print("status %d" % e.status_code, flush=True)
            return
        except Exception as e:
            print("status none: %s: %s" % (type(e).__name__, e), flush=True)
            return
        print("status 101", flush=True)
        await ws.close()
        return
    ws = await connect(url)
    if name == "echo":
        await echo_one(ws, "text", "hello legate, h\u00e9llo \u2713")
        await echo_one(ws, "binary", bytes(range(256)) * 4)
        await echo_one(ws, "big", os.urandom(1 << 20), timeout=20)
        begin("seq100")
        msgs = ["message %03d" % i for i in range(100)]
        for m in msgs:
            await asyncio.wait_for(ws.send(m), T)
        for i, m in enumerate(msgs):
            got = await recv(ws)
            if got != m:
                raise Failed("message %d came back as %r" % (i, got))
        ok("seq100")
        begin("ping")
        pong = await ws.ping(b"legate-ping")
        try:
            await asyncio.wait_for(pong, T)
        except asyncio.TimeoutError:
            raise Failed("no pong within %d s" % T)
        ok("ping")
        await close(ws)
    elif name == "text":
        await echo_one(ws, "text", "route-level upgrade")
        await close(ws)
    elif name == "upstream-close":
        begin("ended")
        await asyncio.wait_for(ws.send("close-tcp"), T)
        t0 = time.monotonic()
        try:
            got = await asyncio.wait_for(ws.recv(), 8)
            raise Failed("got a message %r instead of the end" % got)
        except asyncio.TimeoutError:
            raise Failed("the connection was still open 8 s after the upstream closed")
        except websockets.exceptions.ConnectionClosed as e:
            ok("ended")
            print("info ended after %.2f s (%s)" % (time.monotonic() - t0, e), flush=True)
    elif name == "client-abort":
        await echo_one(ws, "text", "about to go")
        begin("aborted")
        ws.transport.abort()
        ok("aborted")
    else:
        raise SystemExit("unknown scenario " + name)


def main():
    url, name = sys.argv[1], sys.argv[2]
    try:
        asyncio.run(scenario(url, name))
    except Failed as e:
        print("FAIL %s: %s" % (STEP[0], e), flush=True)
        sys.exit(1)
    except Exception as e:  # a send on a closed connection, a timeout while sending
        print("FAIL %s: %s: %s" % (STEP[0], type(e).__name__, e), flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
