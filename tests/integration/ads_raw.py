#!/usr/bin/python3
"""A minimal ADS server (gRPC, state of the world) that serves resources
encoded as Envoy's full protos would encode them: legate's messages with
the bytes of fields that legate's trimmed protos lack appended. No real
control plane can be told to send such bytes through legate's own
converter, and legate-control refuses unknown field names, so this one
builds them directly.

    ads_raw.py PORT DESCRIPTOR_SET SCENARIO.py LOG.jsonl

DESCRIPTOR_SET: `protoc --include_imports --descriptor_set_out` over
legate's proto/. SCENARIO.py defines steps(M, Any, parse) -> a list of
steps, each {type_url: [resource Any, ...]}; M maps a full message name to
its class, parse(name, dict) makes one from Envoy's JSON form. Step 0 is served at once; step N (N >= 1) once the file go-N
exists in the working directory. Every DiscoveryRequest is written to LOG
as one JSON line: type_url, version_info, response_nonce, error_detail
(message or null), resource_names. Nonces are "<step>-<type short name>".
"""
import json
import os
import queue
import sys
import threading
import time
from concurrent import futures

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory


def load_messages(path):
    fds = descriptor_pb2.FileDescriptorSet()
    with open(path, 'rb') as fh:
        fds.ParseFromString(fh.read())
    pool = descriptor_pool.DescriptorPool()
    for fd in fds.file:
        pool.Add(fd)
    factory = message_factory.MessageFactory(pool)

    class Messages(dict):
        def __missing__(self, name):
            desc = pool.FindMessageTypeByName(name)
            cls = (message_factory.GetMessageClass(desc) if hasattr(message_factory, 'GetMessageClass')
                   else factory.GetPrototype(desc))
            self[name] = cls
            return cls

    def parse(name, d):
        return json_format.ParseDict(d, msgs[name](), descriptor_pool=pool)

    msgs = Messages()
    return msgs, parse


def main():
    port, dset, scenario, log_path = sys.argv[1:5]
    M, parse = load_messages(dset)
    Any = M['google.protobuf.Any']
    env = {}
    with open(scenario) as fh:
        exec(compile(fh.read(), scenario, 'exec'), env)
    steps = env['steps'](M, Any, parse)
    Req = M['envoy.service.discovery.v3.DiscoveryRequest']
    Resp = M['envoy.service.discovery.v3.DiscoveryResponse']
    log = open(log_path, 'a', buffering=1)
    lock = threading.Lock()
    state = {'step': 0, 'current': {}}  # type_url -> (step, resources)
    streams = []
    for t, res in steps[0].items():
        state['current'][t] = (0, res)

    def response(t):
        step, res = state['current'][t]
        return Resp(version_info=str(step + 1), resources=res, type_url=t,
                    nonce='%d-%s' % (step, t.rsplit('.', 1)[-1]))

    def handler(request_iterator, context):
        out = queue.Queue()
        sent = set()
        with lock:
            streams.append((out, sent))

        def reader():
            try:
                for req in request_iterator:
                    log.write(json.dumps({
                        'type_url': req.type_url, 'version_info': req.version_info,
                        'response_nonce': req.response_nonce,
                        'error_detail': req.error_detail.message if req.HasField('error_detail') else None,
                        'resource_names': list(req.resource_names)}) + '\n')
                    with lock:
                        # the first request of a type gets what there is
                        if req.type_url in state['current'] and req.type_url not in sent:
                            sent.add(req.type_url)
                            out.put(response(req.type_url))
            except Exception:  # the stream ended
                pass
            out.put(None)

        threading.Thread(target=reader, daemon=True).start()
        while True:
            item = out.get()
            if item is None:
                return
            yield item

    def stepper():
        n = 1
        while n < len(steps):
            if os.path.exists('go-%d' % n):
                with lock:
                    for t, res in steps[n].items():
                        state['current'][t] = (n, res)
                        for out, sent in streams:
                            sent.add(t)
                            out.put(response(t))
                n += 1
            time.sleep(0.05)

    threading.Thread(target=stepper, daemon=True).start()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        'envoy.service.discovery.v3.AggregatedDiscoveryService',
        {'StreamAggregatedResources': grpc.stream_stream_rpc_method_handler(
            handler, request_deserializer=Req.FromString,
            response_serializer=lambda m: m.SerializeToString())}),))
    server.add_insecure_port('127.0.0.1:%s' % port)
    server.start()
    server.wait_for_termination()


if __name__ == '__main__':
    main()
