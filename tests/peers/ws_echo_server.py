#!/usr/bin/python3
"""A WebSocket echo server (python3-websockets) for the upgrade tests.

usage: ws_echo_server.py PORT

Echoes every text and binary message. Logs one line per event on stdout:
  request path=P upgrade=U connection=C key=yes|no version=V
      every HTTP request that reaches it, upgrade or not (before the
      handshake is validated, so a request a proxy mangled is logged too)
  open path=P
  close path=P code=N   the close code the client sent (1006: no close frame)
Messages that are commands rather than data:
  "close-tcp"  the server ends the TCP connection at once, without a close
               frame (the upstream goes away under the tunnel)
"""
import asyncio
import sys

import websockets
import websockets.exceptions


def log(line):
    print(line, flush=True)


async def on_request(path, headers):
    log("request path=%s upgrade=%s connection=%s key=%s version=%s" % (
        path, headers.get("Upgrade", "-"), headers.get("Connection", "-"),
        "yes" if headers.get("Sec-WebSocket-Key") else "no", headers.get("Sec-WebSocket-Version", "-")))
    return None  # go on with the handshake


async def handler(ws):
    path = ws.path
    log("open path=%s" % path)
    try:
        async for msg in ws:
            if msg == "close-tcp":
                log("close-tcp path=%s" % path)
                ws.transport.close()
                break
            await ws.send(msg)
    except websockets.exceptions.ConnectionClosed:
        pass
    try:
        await asyncio.wait_for(ws.wait_closed(), 10)
    except asyncio.TimeoutError:
        pass
    log("close path=%s code=%s" % (path, ws.close_code))


async def main(port):
    async with websockets.serve(handler, "127.0.0.1", port, max_size=None, ping_interval=None,
                                process_request=on_request, close_timeout=5):
        log("listening %d" % port)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
