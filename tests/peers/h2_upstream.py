#!/usr/bin/python3
"""An HTTP/2 (h2c, prior knowledge) upstream on python3-h2 that sends an
informational response before the final one.

usage: h2_upstream.py PORT

  .../early...  HEADERS :status 103 with a link header, a short pause, then
               HEADERS :status 200, DATA (BODY), and trailers (x-trailer: done)
  anything     HEADERS :status 200, DATA (BODY), trailers: the same without the 103
BODY is "%05d\\n" for 0..2999 (18000 bytes; `seq -f %05g 0 2999` prints it).
Every request is logged on stdout: "request METHOD PATH".
"""
import socket
import sys
import threading
import time

import h2.config
import h2.connection
import h2.events

BODY = b"".join(b"%05d\n" % i for i in range(3000))


def log(line):
    print(line, flush=True)


def serve(sock):
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False,
                                                                       header_encoding="utf-8"))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    pending = {}  # stream id -> bytes of the body still to send
    trailers_due = set()

    def send_pending():
        for sid in list(pending):
            data = pending[sid]
            while data:
                n = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size, len(data))
                if n <= 0:
                    break
                conn.send_data(sid, data[:n])
                data = data[n:]
            pending[sid] = data
            if not data:
                del pending[sid]
                conn.send_headers(sid, [("x-trailer", "done")], end_stream=True)
        sock.sendall(conn.data_to_send())

    requests = {}
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    requests[ev.stream_id] = dict(ev.headers)
                elif isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    h = requests.pop(ev.stream_id, {})
                    path = h.get(":path", "")
                    log("request %s %s" % (h.get(":method"), path))
                    if "/early" in path:
                        conn.send_headers(ev.stream_id, [(":status", "103"),
                                                         ("link", "</h2.css>; rel=preload; as=style")])
                        sock.sendall(conn.data_to_send())
                        time.sleep(0.2)
                    conn.send_headers(ev.stream_id, [(":status", "200"), ("content-type", "text/plain")])
                    pending[ev.stream_id] = BODY
                elif isinstance(ev, h2.events.StreamReset):
                    pending.pop(ev.stream_id, None)
            send_pending()
    except OSError:
        pass
    finally:
        sock.close()


def main():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(sys.argv[1])))
    s.listen(64)
    log("listening %s" % sys.argv[1])
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


if __name__ == "__main__":
    main()
