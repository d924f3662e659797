#!/usr/bin/env node
// A gRPC peer built on @grpc/grpc-js, with no protobuf code generation: the
// service legate.test.Echo moves raw bytes (Buffer in, Buffer out). It is a
// server and a client; grpc_py.py is the same peer on Python's grpcio, and
// the two speak the same protocol, so any client can be pointed at any server.
//
//   node grpc_node.js server --name NAME --port PORT [--tls-port PORT --cert PEM --key PEM]
//   node grpc_node.js client --target HOST:PORT [--ca PEM --server-name NAME]
//        --upstream VALUE --expect-server NAME --scenarios a,b,c [--kill-pid PID]
//
// The server prints "ready" once listening. The client runs each scenario in
// order on one channel and prints one JSON line per scenario, starting with
// {"scenario":"NAME","ok":true|false,...} and listing what did not match in
// "problems"; it exits 0 only when every scenario is ok.
//
// The server's behaviour comes from request metadata (see PROTOCOL below and
// in grpc_py.py): x-mode ok | error-before | error-after | sleep-MS | big |
// sha | stream-forever | query-ID, x-count, x-size, x-call-id. Every answer
// carries initial metadata x-server, x-echo-req, x-echo-req-bin, x-bin-bin and
// trailing metadata x-trailer, x-trailer-bin; errors come with x-trailer too.
'use strict';
const path = require('path');
const fs = require('fs');
const crypto = require('crypto');
const grpc = require(path.join(__dirname, 'node_modules', '@grpc', 'grpc-js'));

// --- PROTOCOL (keep in step with grpc_py.py) ---------------------------------------
const SERVICE = 'legate.test.Echo';
const HDR_BIN = Buffer.from([0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff, 0x0a, 0x0d]); // x-bin-bin
const TRL_BIN = Buffer.from([0xff, 0x00, 0x10, 0x20, 0xc3, 0xbc, 0x00, 0x01]); // x-trailer-bin
const REQ_BIN = Buffer.from([0xde, 0xad, 0xbe, 0xef, 0x00, 0xff]);             // x-req-bin
const REQ_TEXT = 'hello legate';                                                  // x-req
const ERR_BEFORE = { code: 5, details: 'no such thing' };                         // NOT_FOUND
const ERR_AFTER = { code: 9, details: 'gone after 3 messages (100% sûr)' };      // FAILED_PRECONDITION
const MAX_MSG = 16 * 1024 * 1024;
const STREAM_FOREVER_MAX = 200; // messages, one every 50 ms
// -----------------------------------------------------------------------------------

const id = x => x;
function method(name, requestStream, responseStream) {
  return {
    path: `/${SERVICE}/${name}`, requestStream, responseStream,
    requestSerialize: id, requestDeserialize: id, responseSerialize: id, responseDeserialize: id,
  };
}
const DEF = {
  Unary: method('Unary', false, false),
  ServerStream: method('ServerStream', false, true),
  ClientStream: method('ClientStream', true, false),
  Bidi: method('Bidi', true, true),
};

function args(argv) {
  const o = {};
  for (let i = 0; i < argv.length; i++) {
    if (argv[i].startsWith('--')) o[argv[i].slice(2)] = argv[i + 1] !== undefined && !argv[i + 1].startsWith('--') ? argv[++i] : 'true';
  }
  return o;
}
function u32(i) { const b = Buffer.alloc(4); b.writeUInt32BE(i >>> 0); return b; }
function sha(buf) { return crypto.createHash('sha256').update(buf).digest('hex'); }
function repeatTo(seed, size) {
  if (seed.length === 0) return Buffer.alloc(size);
  return Buffer.alloc(size, seed);
}
function first(md, key) { const v = md.get(key); return v.length ? v[0] : undefined; }

// ================================ server ============================================
function server(o) {
  const name = o.name || 'node';
  const cancelled = new Set();

  function headers(md) {
    const h = new grpc.Metadata();
    h.set('x-server', name);
    const r = first(md, 'x-req'); if (r !== undefined) h.set('x-echo-req', String(r));
    const rb = first(md, 'x-req-bin'); if (rb !== undefined) h.set('x-echo-req-bin', rb);
    h.set('x-bin-bin', HDR_BIN);
    return h;
  }
  function trailers() {
    const t = new grpc.Metadata();
    t.set('x-trailer', 'done');
    t.set('x-trailer-bin', TRL_BIN);
    return t;
  }
  function watch(call) {
    const cid = first(call.metadata, 'x-call-id');
    call.on('cancelled', () => { if (cid) cancelled.add(String(cid)); });
  }
  const mode = call => String(first(call.metadata, 'x-mode') || 'ok');

  const impl = {
    Unary(call, cb) {
      watch(call);
      const m = mode(call);
      const req = call.request;
      if (m.startsWith('query-')) {
        call.sendMetadata(headers(call.metadata));
        return cb(null, Buffer.from(JSON.stringify({ cancelled: cancelled.has(m.slice(6)) })), trailers());
      }
      if (m === 'error-before') return cb({ ...ERR_BEFORE, metadata: trailers() });
      const answer = () => {
        if (call.cancelled) return;
        let resp = req;
        if (m === 'big') resp = repeatTo(req, Number(first(call.metadata, 'x-size') || 0));
        else if (m === 'sha') resp = crypto.createHash('sha256').update(req).digest();
        call.sendMetadata(headers(call.metadata));
        cb(null, resp, trailers());
      };
      if (m.startsWith('sleep-')) setTimeout(answer, Number(m.slice(6)));
      else answer();
    },
    ServerStream(call) {
      watch(call);
      const m = mode(call);
      const req = call.request;
      if (m === 'error-before') return call.emit('error', { ...ERR_BEFORE, metadata: trailers() });
      call.sendMetadata(headers(call.metadata));
      if (m === 'stream-forever') {
        let i = 0;
        const t = setInterval(() => {
          if (call.cancelled) return clearInterval(t);
          if (i >= STREAM_FOREVER_MAX) { clearInterval(t); return call.end(trailers()); }
          call.write(Buffer.concat([req, u32(i++)]));
        }, 50);
        return;
      }
      const count = Number(first(call.metadata, 'x-count') || 100);
      let i = 0;
      const pump = () => {
        while (i < count) {
          if (call.cancelled) return;
          const more = call.write(Buffer.concat([req, u32(i++)]));
          if (!more) return call.once('drain', pump);
        }
        if (m === 'error-after') call.emit('error', { ...ERR_AFTER, metadata: trailers() });
        else call.end(trailers());
      };
      pump();
    },
    ClientStream(call, cb) {
      watch(call);
      const h = crypto.createHash('sha256');
      let n = 0;
      call.on('data', d => { h.update(d); n++; });
      call.on('end', () => {
        if (call.cancelled) return;
        call.sendMetadata(headers(call.metadata));
        cb(null, Buffer.concat([h.digest(), u32(n)]), trailers());
      });
    },
    Bidi(call) {
      watch(call);
      call.sendMetadata(headers(call.metadata));
      call.on('data', d => call.write(d));
      call.on('end', () => call.end(trailers()));
    },
  };

  const srv = new grpc.Server({ 'grpc.max_receive_message_length': MAX_MSG, 'grpc.max_send_message_length': MAX_MSG });
  srv.addService(DEF, impl);
  const binds = [[o.port, grpc.ServerCredentials.createInsecure()]];
  if (o['tls-port']) {
    binds.push([o['tls-port'], grpc.ServerCredentials.createSsl(null,
      [{ cert_chain: fs.readFileSync(o.cert), private_key: fs.readFileSync(o.key) }], false)]);
  }
  let pending = binds.length;
  for (const [port, creds] of binds) {
    srv.bindAsync(`127.0.0.1:${port}`, creds, err => {
      if (err) { console.error(`bind ${port}: ${err.message}`); process.exit(1); }
      if (--pending === 0) console.log('ready');
    });
  }
  process.on('SIGTERM', () => srv.forceShutdown() || process.exit(0));
}

// ================================ client ============================================
function client(o) {
  const target = o.target;
  const upstream = o.upstream || '';
  const expectServer = o['expect-server'] || '';
  const opts = {
    'grpc.max_receive_message_length': MAX_MSG, 'grpc.max_send_message_length': MAX_MSG,
    'grpc.enable_http_proxy': 0,
  };
  let creds = grpc.credentials.createInsecure();
  if (o.ca) {
    creds = grpc.credentials.createSsl(fs.readFileSync(o.ca));
    if (o['server-name']) {
      opts['grpc.ssl_target_name_override'] = o['server-name'];
      opts['grpc.default_authority'] = o['server-name'];
    }
  }
  const Client = grpc.makeGenericClientConstructor(DEF, 'Echo');
  const cl = new Client(target, creds, opts);

  function meta(extra = {}, up = upstream) {
    const md = new grpc.Metadata();
    if (up) md.set('x-upstream', up);
    md.set('x-req', REQ_TEXT);
    md.set('x-req-bin', REQ_BIN);
    for (const [k, v] of Object.entries(extra)) md.set(k, v);
    return md;
  }
  const deadline = ms => ({ deadline: new Date(Date.now() + ms) });
  const mdObj = md => {
    const out = {};
    if (!md) return out;
    for (const [k, v] of Object.entries(md.getMap())) {
      if (k.startsWith('x-')) out[k] = Buffer.isBuffer(v) ? 'hex:' + v.toString('hex') : v;
    }
    return out;
  };
  // Wraps a call: resolves with {code, details, headers, trailers, msgs} once
  // the status is in.
  function track(call, collect) {
    return new Promise(resolve => {
      const r = { headers: null, msgs: [], t0: Date.now() };
      call.on('metadata', md => { r.headers = md; });
      if (collect) call.on('data', d => { r.msgs.push(d); if (collect !== true) collect(d, r); });
      call.on('error', () => {});
      call.on('status', s => {
        r.code = s.code; r.details = s.details; r.trailers = s.metadata; r.ms = Date.now() - r.t0;
        // Unary callbacks may come after 'status': settle on the next tick.
        setImmediate(() => resolve(r));
      });
    });
  }
  function unary(pathName, req, md, ms) {
    let resp;
    const call = cl.makeUnaryRequest(pathName, id, id, req, md, deadline(ms), (err, v) => { if (!err) resp = v; });
    return track(call).then(r => new Promise(res => setImmediate(() => { r.msgs = resp ? [resp] : []; res(r); })));
  }
  const P = n => `/${SERVICE}/${n}`;

  function checkHeaders(r, pr, server = expectServer) {
    const h = r.headers;
    if (!h) { pr.push('no initial metadata'); return; }
    if (server && String(first(h, 'x-server')) !== server) pr.push(`x-server=${first(h, 'x-server')} want ${server}`);
    if (String(first(h, 'x-echo-req')) !== REQ_TEXT) pr.push(`x-echo-req=${first(h, 'x-echo-req')}`);
    const erb = first(h, 'x-echo-req-bin');
    if (!Buffer.isBuffer(erb) || !erb.equals(REQ_BIN)) pr.push(`x-echo-req-bin=${erb && erb.toString('hex')}`);
    const hb = first(h, 'x-bin-bin');
    if (!Buffer.isBuffer(hb) || !hb.equals(HDR_BIN)) pr.push(`x-bin-bin=${hb && hb.toString('hex')}`);
  }
  function checkTrailers(r, pr) {
    const t = r.trailers;
    if (!t || String(first(t, 'x-trailer')) !== 'done') pr.push(`trailer x-trailer=${t && first(t, 'x-trailer')}`);
    const tb = t && first(t, 'x-trailer-bin');
    if (!Buffer.isBuffer(tb) || !tb.equals(TRL_BIN)) pr.push(`trailer x-trailer-bin=${tb && tb.toString('hex')}`);
  }
  function checkStatus(r, pr, code, details) {
    if (r.code !== code || (details !== undefined && r.details !== details)) {
      pr.push(`status ${r.code} "${r.details}" want ${code}${details !== undefined ? ` "${details}"` : ''}`);
    }
  }
  // What a client makes up when the answer was not a gRPC response at all.
  const SYNTHETIC = /Received HTTP status code|http2 header with status|RST_STREAM|Protocol error|Stream removed|No connection established|without trailers/i;
  function checkLocal(r, pr, code, want) {
    if (r.code !== code) pr.push(`status ${r.code} "${r.details}" want ${code}`);
    else if (!r.details) pr.push('no grpc-message');
    else if (SYNTHETIC.test(r.details)) pr.push(`details "${r.details}" look made up by the client, not a grpc-message`);
    else if (want && !r.details.includes(want)) pr.push(`details "${r.details}" want "${want}"`);
  }

  const S = {
    async unary() {
      const pr = [];
      const req = crypto.randomBytes(1024);
      const r = await unary(P('Unary'), req, meta(), 5000);
      checkStatus(r, pr, 0);
      if (r.code === 0) {
        if (r.msgs.length !== 1 || !r.msgs[0].equals(req)) pr.push('response is not the request echoed');
        checkHeaders(r, pr); checkTrailers(r, pr);
      }
      return [r, pr];
    },
    async server_stream() {
      const pr = [];
      const req = crypto.randomBytes(64);
      const r = await track(cl.makeServerStreamRequest(P('ServerStream'), id, id, req, meta({ 'x-count': '100' }), deadline(5000)), true);
      checkStatus(r, pr, 0);
      if (r.msgs.length !== 100) pr.push(`${r.msgs.length} messages want 100`);
      else if (!r.msgs.every((m, i) => m.equals(Buffer.concat([req, u32(i)])))) pr.push('messages out of order or corrupted');
      if (r.code === 0) { checkHeaders(r, pr); checkTrailers(r, pr); }
      return [r, pr];
    },
    async client_stream() {
      const pr = [];
      let resp;
      const call = cl.makeClientStreamRequest(P('ClientStream'), id, id, meta(), deadline(5000), (err, v) => { if (!err) resp = v; });
      const done = track(call);
      const h = crypto.createHash('sha256');
      for (let i = 0; i < 50; i++) { const m = crypto.randomBytes(1000 + i); h.update(m); call.write(m); }
      call.end();
      const want = Buffer.concat([h.digest(), u32(50)]);
      const r = await done;
      await new Promise(res => setImmediate(res));
      r.msgs = resp ? [resp] : [];
      checkStatus(r, pr, 0);
      if (r.code === 0) {
        if (!resp || !resp.equals(want)) pr.push(`server saw other bytes: ${resp && resp.toString('hex')} want ${want.toString('hex')}`);
        checkHeaders(r, pr); checkTrailers(r, pr);
      }
      return [r, pr];
    },
    async bidi() {
      // Ping-pong: each message waits for the echo of the one before, so a
      // proxy that holds messages back until the end of the stream deadlocks
      // (and the deadline reports it).
      const pr = [];
      const call = cl.makeBidiStreamRequest(P('Bidi'), id, id, meta(), deadline(5000));
      const sent = [];
      let got = 0, bad = 0;
      const send = () => { const m = crypto.randomBytes(100 + sent.length); sent.push(m); call.write(m); };
      const done = track(call, (d) => {
        if (!d.equals(sent[got])) bad++;
        got++;
        if (sent.length < 20) send(); else call.end();
      });
      send();
      const r = await done;
      checkStatus(r, pr, 0);
      if (got !== 20) pr.push(`${got} echoes of 20 (${sent.length} sent)`);
      if (bad) pr.push(`${bad} echoes differ`);
      if (r.code === 0) { checkHeaders(r, pr); checkTrailers(r, pr); }
      return [r, pr];
    },
    async error_before() {
      const pr = [];
      const r = await unary(P('Unary'), Buffer.from('x'), meta({ 'x-mode': 'error-before' }), 5000);
      checkStatus(r, pr, ERR_BEFORE.code, ERR_BEFORE.details);
      if (r.msgs.length) pr.push('a message arrived');
      checkTrailers(r, pr);
      return [r, pr];
    },
    async error_before_stream() {
      const pr = [];
      const r = await track(cl.makeServerStreamRequest(P('ServerStream'), id, id, Buffer.from('x'),
        meta({ 'x-mode': 'error-before' }), deadline(5000)), true);
      checkStatus(r, pr, ERR_BEFORE.code, ERR_BEFORE.details);
      if (r.msgs.length) pr.push(`${r.msgs.length} messages arrived`);
      checkTrailers(r, pr);
      return [r, pr];
    },
    async error_after() {
      const pr = [];
      const req = Buffer.from('abc');
      const r = await track(cl.makeServerStreamRequest(P('ServerStream'), id, id, req,
        meta({ 'x-mode': 'error-after', 'x-count': '3' }), deadline(5000)), true);
      checkStatus(r, pr, ERR_AFTER.code, ERR_AFTER.details);
      if (r.msgs.length !== 3) pr.push(`${r.msgs.length} messages want 3`);
      else if (!r.msgs.every((m, i) => m.equals(Buffer.concat([req, u32(i)])))) pr.push('messages corrupted');
      checkHeaders(r, pr); checkTrailers(r, pr);
      return [r, pr];
    },
    async deadline() {
      const pr = [];
      const r = await unary(P('Unary'), Buffer.from('zzz'), meta({ 'x-mode': 'sleep-3000' }), 500);
      checkStatus(r, pr, 4);
      if (r.ms > 2500) pr.push(`took ${r.ms} ms for a 500 ms deadline`);
      return [r, pr];
    },
    async cancel() {
      // Cancels a server stream after 3 messages, then asks the server
      // whether it saw the cancel: it can only have, if the proxy reset the
      // upstream stream (the call's own deadline is 10 s away).
      const pr = [];
      const cid = crypto.randomBytes(8).toString('hex');
      const call = cl.makeServerStreamRequest(P('ServerStream'), id, id, Buffer.from('c'),
        meta({ 'x-mode': 'stream-forever', 'x-call-id': cid }), deadline(10000));
      const r = await track(call, (d, rr) => { if (rr.msgs.length === 3) call.cancel(); });
      checkStatus(r, pr, 1);
      if (r.msgs.length < 3) pr.push(`${r.msgs.length} messages before the cancel`);
      let seen = false, last = '';
      for (let i = 0; i < 30 && !seen; i++) {
        const q = await unary(P('Unary'), Buffer.alloc(0), meta({ 'x-mode': `query-${cid}` }), 3000);
        last = q.code === 0 ? q.msgs[0].toString() : `status ${q.code} ${q.details}`;
        seen = q.code === 0 && JSON.parse(q.msgs[0].toString()).cancelled === true;
        if (!seen) await new Promise(res => setTimeout(res, 100));
      }
      if (!seen) pr.push(`the server never saw the cancel (${last})`);
      return [r, pr];
    },
    async big_upload() {
      const pr = [];
      const req = crypto.randomBytes(4 * 1024 * 1024);
      const r = await unary(P('Unary'), req, meta({ 'x-mode': 'sha' }), 15000);
      checkStatus(r, pr, 0);
      if (r.code === 0 && (r.msgs.length !== 1 || r.msgs[0].toString('hex') !== sha(req))) pr.push('the server got other bytes');
      r.sha256 = sha(req);
      return [r, pr];
    },
    async big_download() {
      const pr = [];
      const seed = crypto.randomBytes(4099);
      const size = 4 * 1024 * 1024;
      const r = await unary(P('Unary'), seed, meta({ 'x-mode': 'big', 'x-size': String(size) }), 15000);
      checkStatus(r, pr, 0);
      const want = repeatTo(seed, size);
      if (r.code === 0 && (r.msgs.length !== 1 || !r.msgs[0].equals(want))) pr.push(`response differs (${r.msgs[0] ? r.msgs[0].length : 0} bytes)`);
      if (r.code === 0) checkTrailers(r, pr);
      r.sha256 = sha(want);
      return [r, pr];
    },
    async big_echo() {
      const pr = [];
      const req = crypto.randomBytes(4 * 1024 * 1024);
      const r = await unary(P('Unary'), req, meta(), 15000);
      checkStatus(r, pr, 0);
      if (r.code === 0 && (r.msgs.length !== 1 || !r.msgs[0].equals(req))) pr.push('the echo differs');
      r.sha256 = sha(req);
      return [r, pr];
    },
    async concurrent() {
      const pr = [];
      const reqs = Array.from({ length: 50 }, () => crypto.randomBytes(16384));
      const t0 = Date.now();
      const rs = await Promise.all(reqs.map(q => unary(P('Unary'), q, meta(), 10000)));
      const r = { code: 0, details: '', ms: Date.now() - t0, msgs: [] };
      const codes = {};
      rs.forEach((x, i) => {
        codes[x.code] = (codes[x.code] || 0) + 1;
        if (x.code === 0 && (x.msgs.length !== 1 || !x.msgs[0].equals(reqs[i]))) pr.push(`call ${i}: echo differs`);
        if (x.code !== 0 && !r.details) r.details = `${x.code} ${x.details}`;
        if (x.code === 0) { const p2 = []; checkHeaders(x, p2); checkTrailers(x, p2); if (p2.length) pr.push(`call ${i}: ${p2[0]}`); }
      });
      if ((codes[0] || 0) !== 50) pr.push(`status codes ${JSON.stringify(codes)}, want 50 OK`);
      r.codes = codes;
      return [r, pr.slice(0, 5)];
    },
    async kill_midstream() {
      const pr = [];
      const pid = Number(o['kill-pid']);
      if (!pid) return [{}, ['--kill-pid missing']];
      const call = cl.makeServerStreamRequest(P('ServerStream'), id, id, Buffer.from('k'),
        meta({ 'x-mode': 'stream-forever' }), deadline(8000));
      const r = await track(call, (d, rr) => { if (rr.msgs.length === 5) { try { process.kill(pid, 'SIGKILL'); } catch (e) { pr.push(`kill: ${e.message}`); } } });
      if (r.msgs.length < 5) pr.push(`${r.msgs.length} messages before the kill`);
      if (r.code !== 13 && r.code !== 14) pr.push(`status ${r.code} "${r.details}" want 13 or 14`);
      return [r, pr];
    },
    // Answers legate makes itself: they must be gRPC answers (HTTP 200,
    // grpc-status and grpc-message), as Envoy sends them.
    async no_route() {
      const pr = [];
      const r = await unary(`/legate.test.Missing/Unary`, Buffer.from('x'), meta(), 5000);
      checkLocal(r, pr, 12);
      return [r, pr];
    },
    async no_endpoints() {
      const pr = [];
      const r = await unary(P('Unary'), Buffer.from('x'), meta({}, 'empty'), 5000);
      checkLocal(r, pr, 14, 'no healthy upstream');
      return [r, pr];
    },
    async refused() {
      const pr = [];
      const r = await unary(P('Unary'), Buffer.from('x'), meta({}, 'refused'), 5000);
      checkLocal(r, pr, 14, 'upstream connect error');
      return [r, pr];
    },
    async route_timeout() {
      const pr = [];
      const r = await unary(P('Unary'), Buffer.from('x'), meta({ 'x-mode': 'sleep-3000' }, 'slow'), 8000);
      checkLocal(r, pr, 14, 'upstream request timeout');
      if (r.ms > 2900) pr.push(`took ${r.ms} ms: the 0.5 s route timeout did not fire`);
      return [r, pr];
    },
  };

  (async () => {
    let allOk = true;
    for (const name of (o.scenarios || '').split(',').filter(Boolean)) {
      let r, pr;
      try {
        if (!S[name]) throw new Error(`unknown scenario ${name}`);
        [r, pr] = await S[name]();
      } catch (e) {
        r = {}; pr = [`exception: ${e.stack || e}`];
      }
      const ok = pr.length === 0;
      allOk = allOk && ok;
      const line = {
        scenario: name, ok, problems: pr, code: r.code, details: r.details, ms: r.ms,
        count: r.msgs ? r.msgs.length : undefined, sha256: r.sha256, codes: r.codes,
        headers: mdObj(r.headers), trailers: mdObj(r.trailers),
      };
      console.log(JSON.stringify(line));
    }
    cl.close();
    process.exit(allOk ? 0 : 1);
  })();
}

const o = args(process.argv.slice(3));
if (process.argv[2] === 'server') server(o);
else if (process.argv[2] === 'client') client(o);
else { console.error('usage: grpc_node.js server|client ...'); process.exit(2); }
