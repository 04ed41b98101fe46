/**
 * The control server of the bench: a raw Node dgram responder, the floor of this runtime on this
 * machine. It does for each datagram only what no DNS server can avoid: one receive, one lookup of
 * a prebuilt reply, one copy with the query's ID patched in, one send. Proxy ÷ control is then
 * what our own pipeline (parsing, cache, rendering) adds, with the machine's share divided out.
 *
 * Its socket is made, bound and written exactly as the proxy's UDP listener does it (src/server/dns-server.ts
 * at the time of writing: `createSocket({ type: 'udp4', ipv6Only: false, lookup: numericLookup })`,
 * `bind` with `exclusive: true`, no receive or send buffer sizes set, `send(reply, port, address)`
 * without a callback). When the listener changes those, this file must follow, or the
 * ratio stops meaning "our pipeline alone".
 *
 *   node dist/bench/lib/control-responder.js --port P --table FILE
 *
 * FILE is JSON, `[{ "query": hex, "reply": hex }]`: `query` is a query's bytes after its ID (the
 * same for every query dnsperf sends from one line of its file), `reply` the proxy's reply to it
 * (bench/lib/control.ts learns them through a relay in front of the proxy). A query not in the
 * table (the unique names of the miss scenario, probes) gets a synthesized reply: the question
 * and, for type A, one address; so on misses the control measures one receive and one send, the
 * part of a miss that is not forwarding.
 */
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import { numericLookup } from '../../src/server/dns-server.js';

function arg(name: string): string {
  const i = process.argv.indexOf(name);
  const v = i >= 0 ? process.argv[i + 1] : undefined;
  if (v === undefined) {
    process.stderr.write(`control-responder: ${name} is required\n`);
    process.exit(2);
  }
  return v;
}

const port = Number(arg('--port'));
const table = new Map<string, Buffer>();
for (const e of JSON.parse(readFileSync(arg('--table'), 'utf8')) as { query: string; reply: string }[]) {
  table.set(Buffer.from(e.query, 'hex').toString('latin1'), Buffer.from(e.reply, 'hex'));
}

let fromTable = 0;
let synthesized = 0;

/** NOERROR with the question and, for A/IN, `192.0.2.9` TTL 30; null when the question does not parse. */
function synthesize(q: Buffer): Buffer | null {
  let off = 12;
  for (;;) {
    const len = q[off];
    if (len === undefined || len > 63) return null;
    off += 1 + len;
    if (len === 0) break;
  }
  if (off + 4 > q.length) return null;
  const isA = q.readUInt16BE(off) === 1 && q.readUInt16BE(off + 2) === 1;
  const end = off + 4;
  const r = Buffer.allocUnsafe(end + (isA ? 16 : 0));
  q.copy(r, 0, 0, end);
  r[2] = 0x80 | (q[2]! & 0x79); // QR, the query's opcode and RD
  r[3] = 0x80; // RA, NOERROR
  r.writeUInt16BE(1, 4);
  r.writeUInt16BE(isA ? 1 : 0, 6);
  r.writeUInt32BE(0, 8);
  if (isA) {
    r.writeUInt16BE(0xc00c, end);
    r.writeUInt16BE(1, end + 2);
    r.writeUInt16BE(1, end + 4);
    r.writeUInt32BE(30, end + 6);
    r.writeUInt16BE(4, end + 10);
    r[end + 12] = 192;
    r[end + 13] = 0;
    r[end + 14] = 2;
    r[end + 15] = 9;
  }
  return r;
}

const sock = dgram.createSocket({ type: 'udp4', ipv6Only: false, lookup: numericLookup });
sock.on('error', (err) => process.stderr.write(`control-responder: udp socket error: ${err.message}\n`));
sock.on('message', (msg, rinfo) => {
  if (msg.length < 12 || (msg[2]! & 0x80) !== 0) return;
  const tpl = table.get(msg.toString('latin1', 2));
  let reply: Buffer | null;
  if (tpl !== undefined) {
    // A copy per datagram, as the proxy's cache answers: a send may still hold the buffer.
    reply = Buffer.allocUnsafe(tpl.length);
    tpl.copy(reply);
    reply[0] = msg[0]!;
    reply[1] = msg[1]!;
    fromTable++;
  } else {
    reply = synthesize(msg);
    if (reply === null) return;
    synthesized++;
  }
  sock.send(reply, rinfo.port, rinfo.address);
});
sock.bind({ address: '127.0.0.1', port, exclusive: true }, () => {
  process.stdout.write(`control-responder: 127.0.0.1:${port}, ${table.size} prebuilt replies\n`);
});

const stop = () => {
  process.stdout.write(`control-responder: ${fromTable} replies from the table, ${synthesized} synthesized\n`);
  sock.close(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
