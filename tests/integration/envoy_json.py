#!/usr/bin/python3
"""Parses JSON that legate's admin serves as an Envoy admin message, with
Envoy's own protos (a descriptor set from tests/protos/envoy-protos.sh) and
Python protobuf's json_format: not legate's writer's descriptors, and no
unknown field let through.

    envoy_json.py DESCRIPTORS.pb MESSAGE FILE.json

MESSAGE is a full name (envoy.admin.v3.ConfigDump). Exits 1 with the
parser's error when the JSON does not read as that message; prints
"ok <n>" (n: configs in a ConfigDump, else 1) when it does. Every Any,
however deep, is resolved against the same descriptors, so a wrong field
name or type anywhere fails.
"""
import json
import sys

from google.protobuf import descriptor_pb2, descriptor_pool, json_format

try:
    from google.protobuf import message_factory
    _get = getattr(message_factory, "GetMessageClass", None)
except ImportError:  # pragma: no cover
    _get = None


def message_class(pool, name):
    d = pool.FindMessageTypeByName(name)
    if _get:
        return _get(d)
    return message_factory.MessageFactory(pool).GetPrototype(d)


def main():
    pb, name, path = sys.argv[1:4]
    fds = descriptor_pb2.FileDescriptorSet()
    with open(pb, "rb") as f:
        fds.ParseFromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for fd in fds.file:
        pool.Add(fd)
    msg = message_class(pool, name)()
    with open(path) as f:
        text = f.read()
    try:
        json_format.Parse(text, msg, ignore_unknown_fields=False, descriptor_pool=pool)
    except json_format.ParseError as e:
        print("not a valid %s: %s" % (name, e))
        sys.exit(1)
    n = len(msg.configs) if name == "envoy.admin.v3.ConfigDump" else 1
    # Every Any must unpack with these descriptors too.
    if name == "envoy.admin.v3.ConfigDump":
        for a in msg.configs:
            inner = message_class(pool, a.TypeName())()
            if not a.Unpack(inner):
                print("configs: cannot unpack %s" % a.type_url)
                sys.exit(1)
    json.loads(text)
    print("ok %d" % n)


if __name__ == "__main__":
    main()
