#!/usr/bin/env python3
"""An HTTP/2 (h2c) upstream that does not process every other request:

  h2_refuser.py PORT rst      requests 1, 3, 5... get RST_STREAM REFUSED_STREAM
  h2_refuser.py PORT goaway   requests 1, 3, 5... get GOAWAY (last stream
                              0), then the connection closes

The others are answered 200 "attempt N body=<bytes>", N counting the
requests seen, so a client whose answer has an even N knows the proxy sent
its request again (RFC 9113 8.7). Uses python3-h2 (Debian).
"""
import socket
import sys
import threading

import h2.config
import h2.connection
import h2.errors
import h2.events

port, mode = int(sys.argv[1]), sys.argv[2]
lock = threading.Lock()
seen = [0]


def serve(sock):
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    bodies = {}
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    bodies[ev.stream_id] = b""
                elif isinstance(ev, h2.events.DataReceived):
                    bodies[ev.stream_id] = bodies.get(ev.stream_id, b"") + ev.data
                    conn.acknowledge_received_data(len(ev.data), ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    with lock:
                        seen[0] += 1
                        n = seen[0]
                    if n % 2 == 1 and mode == "rst":
                        conn.reset_stream(ev.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                    elif n % 2 == 1 and mode == "goaway":
                        conn.close_connection(h2.errors.ErrorCodes.NO_ERROR, last_stream_id=0)
                        sock.sendall(conn.data_to_send())
                        return
                    else:
                        body = ("attempt %d body=%d\n" % (n, len(bodies.get(ev.stream_id, b"")))).encode()
                        conn.send_headers(ev.stream_id, [(":status", "200"), ("content-length", str(len(body)))])
                        conn.send_data(ev.stream_id, body, end_stream=True)
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
    except (ConnectionError, OSError):
        pass
    finally:
        sock.close()


s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(16)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
