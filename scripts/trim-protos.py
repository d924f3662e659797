#!/usr/bin/env python3
"""Writes legate's trimmed Envoy v3 protos (proto/) from the canonical ones.

The canonical definitions ship in the npm package @grpc/grpc-js-xds
(deps/envoy-api, deps/googleapis, deps/xds). This script keeps, for each
message listed in scripts/proto-keep.txt, only the listed fields -- with the
canonical names, numbers, types, oneofs and nesting -- drops every option and
annotation, and writes one file per canonical file under proto/. Enums that a
kept field uses are kept whole.

    scripts/trim-protos.py CANONICAL_DEPS_DIR OUT_DIR

The output is committed; the script documents how it was made and lets the
next person add a field without hand-copying numbers.
"""
import os
import re
import sys

TOKEN = re.compile(r'''
    (?P<ws>\s+) | (?P<comment>//[^\n]*|/\*.*?\*/) |
    (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*') |
    (?P<num>-?(?:0x[0-9a-fA-F]+|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)) |
    (?P<id>\.?[A-Za-z_][A-Za-z0-9_.]*) | (?P<p>[{}()\[\]<>;=,:])
''', re.X | re.S)


def tokenize(text):
    out = []
    pos = 0
    while pos < len(text):
        m = TOKEN.match(text, pos)
        if not m:
            raise SystemExit('tokenize error at %r' % text[pos:pos + 40])
        pos = m.end()
        if m.lastgroup in ('ws', 'comment'):
            continue
        out.append(m.group())
    return out


class P:
    def __init__(self, toks):
        self.t = toks
        self.i = 0

    def peek(self, k=0):
        return self.t[self.i + k] if self.i + k < len(self.t) else None

    def next(self):
        tok = self.t[self.i]
        self.i += 1
        return tok

    def expect(self, tok):
        got = self.next()
        if got != tok:
            raise SystemExit('expected %r got %r near %r' % (tok, got, self.t[self.i - 5:self.i + 5]))

    def skip_balanced(self, open_, close):
        depth = 0
        while True:
            tok = self.next()
            if tok == open_:
                depth += 1
            elif tok == close:
                depth -= 1
                if depth == 0:
                    return

    def skip_statement(self):
        while True:
            tok = self.next()
            if tok == ';':
                return
            if tok == '{':
                self.i -= 1
                self.skip_balanced('{', '}')
                return


def parse_field_options(p):
    if p.peek() == '[':
        p.skip_balanced('[', ']')


def parse_enum(p, name):
    e = {'kind': 'enum', 'name': name, 'values': []}
    p.expect('{')
    while p.peek() != '}':
        tok = p.next()
        if tok in ('option', 'reserved'):
            p.i -= 1
            p.skip_statement()
            continue
        p.expect('=')
        num = p.next()
        parse_field_options(p)
        p.expect(';')
        e['values'].append((tok, num))
    p.expect('}')
    return e


def parse_message(p, name):
    m = {'kind': 'message', 'name': name, 'fields': [], 'nested': []}
    p.expect('{')
    while p.peek() != '}':
        tok = p.peek()
        if tok in ('option', 'reserved', 'extensions'):
            p.skip_statement()
            continue
        if tok == 'message':
            p.next()
            m['nested'].append(parse_message(p, p.next()))
            continue
        if tok == 'enum':
            p.next()
            m['nested'].append(parse_enum(p, p.next()))
            continue
        if tok == 'oneof':
            p.next()
            oname = p.next()
            p.expect('{')
            while p.peek() != '}':
                if p.peek() == 'option':
                    p.skip_statement()
                    continue
                f = parse_field(p)
                f['oneof'] = oname
                m['fields'].append(f)
            p.expect('}')
            continue
        if tok == ';':
            p.next()
            continue
        m['fields'].append(parse_field(p))
    p.expect('}')
    return m


def parse_field(p):
    label = ''
    if p.peek() in ('repeated', 'optional'):
        label = p.next()
    if p.peek() == 'map':
        p.next()
        p.expect('<')
        k = p.next()
        p.expect(',')
        v = p.next()
        p.expect('>')
        ftype = ('map', k, v)
    else:
        ftype = p.next()
    name = p.next()
    p.expect('=')
    num = p.next()
    parse_field_options(p)
    p.expect(';')
    return {'label': label, 'type': ftype, 'name': name, 'num': num, 'oneof': None}


def parse_file(path):
    toks = tokenize(open(path).read())
    p = P(toks)
    f = {'package': '', 'items': [], 'path': path}
    while p.peek() is not None:
        tok = p.next()
        if tok == 'package':
            f['package'] = p.next()
            p.expect(';')
        elif tok == 'message':
            f['items'].append(parse_message(p, p.next()))
        elif tok == 'enum':
            f['items'].append(parse_enum(p, p.next()))
        elif tok == 'service':
            name = p.next()
            f['items'].append({'kind': 'service', 'name': name, 'body': None})
            p.i -= 1
            start = p.i
            p.next()
            p.skip_balanced('{', '}')
        elif tok in ('syntax', 'import', 'option'):
            p.i -= 1
            p.skip_statement()
        else:
            raise SystemExit('%s: unexpected %r' % (path, tok))
    return f


SCALARS = {'double', 'float', 'int32', 'int64', 'uint32', 'uint64', 'sint32', 'sint64', 'fixed32',
           'fixed64', 'sfixed32', 'sfixed64', 'bool', 'string', 'bytes'}


def main():
    deps, out = sys.argv[1], sys.argv[2]
    keep_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'proto-keep.txt')
    roots = [os.path.join(deps, d) for d in ('envoy-api', 'googleapis', 'xds', 'protoc-gen-validate')]

    # keep spec: "file: path" lines, then "Message.Nested: f1 f2 ..." lines
    keep = {}
    cur = None
    for line in open(keep_path):
        line = line.split('#', 1)[0].strip()
        if not line:
            continue
        if line.startswith('file:'):
            cur = line.split(':', 1)[1].strip()
            keep.setdefault(cur, {})
            continue
        msg, fields = line.split(':', 1)
        keep[cur][msg.strip()] = fields.split()

    # symbol table over the kept files (and what they need)
    files = {}
    symbols = {}  # fq name -> (file, node)

    def load(rel):
        if rel in files:
            return files[rel]
        for r in roots:
            pth = os.path.join(r, rel)
            if os.path.exists(pth):
                f = parse_file(pth)
                files[rel] = f

                def reg(prefix, node):
                    fq = prefix + '.' + node['name']
                    symbols[fq] = (rel, node)
                    for n in node.get('nested', []):
                        reg(fq, n)
                for it in f['items']:
                    if it['kind'] != 'service':
                        reg(f['package'], it)
                return f
        raise SystemExit('canonical file not found: ' + rel)

    for rel in keep:
        load(rel)

    def resolve(tname, scope):
        if tname.startswith('.'):
            return tname[1:]
        parts = scope.split('.')
        while parts:
            cand = '.'.join(parts) + '.' + tname
            if cand in symbols:
                return cand
            parts.pop()
        if tname in symbols:
            return tname
        if tname.startswith('google.protobuf.'):
            return tname
        raise SystemExit('cannot resolve type %s in %s' % (tname, scope))

    used_enums = set()
    errors = []

    def kept_fields(rel, qual, node):
        want = keep.get(rel, {}).get(qual)
        if want is None:
            return None
        names = {f['name'] for f in node['fields']}
        for w in want:
            if w != '*' and w not in names:
                errors.append('%s: %s has no field %s' % (rel, qual, w))
        if '*' in want:
            return list(node['fields'])
        return [f for f in node['fields'] if f['name'] in want]

    imports = {}

    def type_ref(t, scope, rel):
        if t in SCALARS:
            return t
        fq = resolve(t, scope)
        if fq.startswith('google.protobuf.'):
            imports.setdefault(rel, set()).add(
                'google/protobuf/%s.proto' % {
                    'Any': 'any', 'Duration': 'duration', 'Struct': 'struct', 'Value': 'struct',
                    'ListValue': 'struct', 'Empty': 'empty', 'Timestamp': 'timestamp',
                }.get(fq.split('.')[-1], 'wrappers'))
            return '.' + fq
        frel, node = symbols[fq]
        if node['kind'] == 'enum':
            used_enums.add(fq)
        else:
            pkg = files[frel]['package']
            qual = fq[len(pkg) + 1:]
            if qual not in keep.get(frel, {}):
                errors.append('%s: field type %s (%s) is not kept' % (rel, fq, frel))
        if frel != rel:
            imports.setdefault(rel, set()).add(frel)
        return '.' + fq

    def emit_message(rel, pkg, qual, node, ind):
        fields = kept_fields(rel, qual, node)
        lines = []
        nested_out = []
        for n in node['nested']:
            nq = qual + '.' + n['name']
            fq = pkg + '.' + nq
            if n['kind'] == 'message' and nq in keep.get(rel, {}):
                nested_out.append(('m', n, nq))
            elif n['kind'] == 'enum':
                nested_out.append(('e', n, nq))
        body = []
        scope = pkg + '.' + qual
        oneofs = {}
        for f in fields:
            if f['type'][0] == 'map' and isinstance(f['type'], tuple):
                k = f['type'][1]
                v = type_ref(f['type'][2], scope, rel)
                s = 'map<%s, %s> %s = %s;' % (k, v, f['name'], f['num'])
            else:
                t = type_ref(f['type'], scope, rel)
                if f['name'] == 'base':
                    raise SystemExit('field named base in %s' % qual)
                s = '%s%s %s = %s;' % (f['label'] + ' ' if f['label'] == 'repeated' else '', t,
                                       f['name'], f['num'])
            if f['oneof']:
                oneofs.setdefault(f['oneof'], []).append(s)
                if len(oneofs[f['oneof']]) == 1:
                    body.append(('oneof', f['oneof']))
            else:
                body.append(('f', s))
        return nested_out, body, oneofs

    outputs = {}
    for rel, msgs in keep.items():
        f = files[rel]
        pkg = f['package']
        text = []

        def walk(node, qual, ind):
            if node['kind'] == 'enum':
                fq = pkg + '.' + qual
                return ('enum', node, qual, ind)
            nested_out, body, oneofs = emit_message(rel, pkg, qual, node, ind)
            out = []
            pad = '  ' * ind
            out.append('%smessage %s {' % (pad, node['name']))
            for kind, n, nq in nested_out:
                if kind == 'm':
                    out.extend(walk(n, nq, ind + 1))
                else:
                    out.append(('enum-nested', n, nq, ind + 1))
            for item in body:
                if item[0] == 'f':
                    out.append('%s  %s' % (pad, item[1]))
                else:
                    out.append('%s  oneof %s {' % (pad, item[1]))
                    for s in oneofs[item[1]]:
                        out.append('%s    %s' % (pad, s))
                    out.append('%s  }' % pad)
            out.append('%s}' % pad)
            return out

        for it in f['items']:
            if it['kind'] == 'message' and it['name'] in msgs:
                text.append(walk(it, it['name'], 0))
            elif it['kind'] == 'service' and it['name'] in msgs:
                text.append([('service', it)])
            elif it['kind'] == 'enum':
                text.append([('enum-top', it, it['name'], 0)])
        outputs[rel] = text

    if errors:
        raise SystemExit('\n'.join(sorted(set(errors))))

    def enum_lines(node, qual, ind, pkg):
        fq = pkg + '.' + qual
        if fq not in used_enums:
            return []
        pad = '  ' * ind
        out = ['%senum %s {' % (pad, node['name'])]
        for n, v in node['values']:
            out.append('%s  %s = %s;' % (pad, n, v))
        out.append('%s}' % pad)
        return out

    for rel, blocks in outputs.items():
        f = files[rel]
        pkg = f['package']
        lines = []
        for block in blocks:
            for item in block:
                if isinstance(item, str):
                    lines.append(item)
                elif item[0] in ('enum-nested', 'enum-top'):
                    lines.extend(enum_lines(item[1], item[2], item[3], pkg))
                elif item[0] == 'service':
                    imports.setdefault(rel, set()).add('envoy/service/discovery/v3/discovery.proto')
                    lines.append('service %s {' % item[1]['name'])
                    lines.append('  rpc StreamAggregatedResources(stream DiscoveryRequest) '
                                 'returns (stream DiscoveryResponse);')
                    lines.append('}')
            lines.append('')
        # nested enums inside emitted messages are placeholders: expand
        head = ['// Trimmed from envoy/api %s: same package, names and field numbers;' % rel,
                '// only the fields legate reads. Unknown fields still decode (protobuf-c',
                '// keeps them). Generated by scripts/trim-protos.py from scripts/proto-keep.txt.',
                'syntax = "proto3";', '', 'package %s;' % pkg, '']
        for imp in sorted(imports.get(rel, ())):
            if imp != rel:
                head.append('import "%s";' % imp)
        head.append('')
        while lines and lines[-1] == '':
            lines.pop()
        dst = os.path.join(out, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(dst, 'w') as fh:
            fh.write('\n'.join(head + lines) + '\n')
    # drop files that ended up with nothing
    return 0


if __name__ == '__main__':
    sys.exit(main())
