/**
 * Replies, end to end through the real CLI: TC only when the answer or authority section does not
 * fit (RFC 2181 §9), large alias answers over TCP trimmed to 65,535 octets, OPT in every reply to
 * an EDNS query and server cookies (RFC 6891 §7, RFC 7873, RFC 9018), NOTIMP without RD for an
 * unknown opcode, FORMERR for a query carrying an answer record, TCP half-close and the per-client
 * TCP cap under stalled connections (RFC 7766 §6.2.3). Checked with dig's own options where dig can
 * send the message, with raw sockets where it cannot.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { decodeMessage, encodeMessage } from '../../src/dns/message.js';
import { startProxy, type ProxyProc } from '../support/proc.js';
import { dig } from '../support/dig.js';
import { startJanusCluster } from '../support/consul-sim/index.js';
import { waitFor } from '../support/wait.js';
import {
  startScripted,
  reply,
  isProbe,
  a,
  rr,
  optRecord,
  clientQuery,
  askUdp,
  askTcp,
  metricValue,
  scrape,
  type Scripted,
  type Script,
  scriptedProxyArgs,
} from '../support/scripted-upstream.js';
import { nameToWire } from '../../src/dns/message.js';

type T = { after(fn: () => unknown): void };

async function setup(
  t: T,
  script: Script,
  config = '{}\n',
  metrics = false,
): Promise<{ up: Scripted; p: ProxyProc; ask: (...args: string[]) => ReturnType<typeof dig> }> {
  const up = await startScripted((q) => (isProbe(q) ? reply(q) : script(q)));
  t.after(() => up.stop());
  const p = await startProxy(await scriptedProxyArgs(up.address, metrics ? '127.0.0.1:0' : 'off'), { config });
  t.after(() => p.stop());
  return { up, p, ask: (...args) => dig(['@127.0.0.1', '-p', String(p.port), ...args]) };
}

const answerA: Script = (q) => reply(q, { answers: [a(q.rawName, '192.0.2.1', 300)] });
/** Two MX records with 40 glue A records: an answer that fits 512 octets only without its Additional section. */
const mxWithGlue: Script = (q) => {
  const mx = (pref: number, exchange: string) => {
    const p = Buffer.alloc(2);
    p.writeUInt16BE(pref);
    return rr(q.rawName, 15, 300, Buffer.concat([p, nameToWire(exchange)]));
  };
  const glue = Array.from({ length: 40 }, (_, i) => a(`mail${i % 2}.mx.example`, `192.0.2.${i + 1}`, 300));
  return reply(q, { answers: [mx(10, 'mail0.mx.example'), mx(20, 'mail1.mx.example')], additionals: glue });
};

test('item 12: 2 MX with 40 glue A records to a 512-octet client → the 2 MX without TC (additional records dropped)', async (t) => {
  const { ask } = await setup(t, mxWithGlue);
  const r = await ask('mx.example', 'MX', '+noedns', '+ignore');
  assert.equal(r.status, 'NOERROR', r.raw);
  assert.equal(r.flags.includes('tc'), false, r.raw);
  assert.equal(r.answer.length, 2, r.raw);
});

test('item 13: 1,000 SRV instances under the alias over TCP → NOERROR trimmed to 65,535; the canonical answer is cached afterwards', async (t) => {
  const sim = await startJanusCluster();
  t.after(() => sim.stop());
  for (let i = 0; i < 1000; i++)
    sim.register({
      id: `big-${i}`,
      name: 'big',
      node: `big-node-${i}`,
      nodeAddress: `10.1.${i >> 8}.${i & 255}`,
      port: 8000 + i,
    });
  const p = await startProxy([
    '--metrics',
    'off',
    '--agent',
    `127.0.0.1:${sim.dnsPort}`,
    '--consul-http',
    `http://127.0.0.1:${sim.httpPort}`,
  ]);
  t.after(() => p.stop());
  const ask = (...args: string[]) => dig(['@127.0.0.1', '-p', String(p.port), '+tcp', '+time=5', ...args]);
  const alias = await ask('big.service.starlings', 'SRV');
  assert.equal(alias.status, 'NOERROR', alias.raw.slice(0, 2000));
  assert.ok(alias.answer.length > 500, `${alias.answer.length} SRV records`);
  assert.ok((alias.msgSize ?? Infinity) <= 65535, `${alias.msgSize} octets`);
  // The first answer is cached once the service's health watch is live (TTL 0 answers).
  await waitFor(
    async () => {
      const n = sim.queries;
      const again = await ask('big.service.starlings', 'SRV');
      assert.equal(again.status, 'NOERROR', again.raw.slice(0, 2000));
      return sim.queries === n;
    },
    { what: 'the alias answer to be served from the cache', timeoutMs: 10000 },
  );
  const before = sim.queries;
  const canonical = await ask('big.service.consul', 'SRV');
  assert.equal(canonical.status, 'NOERROR', canonical.raw.slice(0, 2000));
  assert.equal(sim.queries, before, 'the canonical answer came from the cache');
});

test('item 14: FORMERR and NOTIMP to an EDNS query carry an OPT record', async (t) => {
  const { p, ask } = await setup(t, answerA);
  const notimp = await ask('www.example', 'A', '+opcode=3', '+edns=0');
  assert.equal(notimp.status, 'NOTIMP', notimp.raw);
  assert.ok(notimp.opt, `NOTIMP has an OPT: ${notimp.raw}`);
  // Two questions: FORMERR (dig cannot send this).
  const two = encodeMessage({
    id: 14,
    flags: 0x0100,
    questions: [
      { name: 'a.example', type: 1, class: 1 },
      { name: 'b.example', type: 1, class: 1 },
    ],
    answers: [],
    authorities: [],
    additionals: [optRecord(1232)],
  });
  const r = await askUdp(p.port, two);
  assert.ok(r, 'no answer');
  const m = decodeMessage(r);
  assert.equal(m.flags & 0xf, 1, 'FORMERR');
  assert.ok(
    m.additionals.some((x) => x.type === 41),
    `FORMERR has an OPT (${r.length} octets)`,
  );
});

/** The COOKIE option's hex value as dig prints it ("<hex> (good)"). */
const cookieHex = (r: Awaited<ReturnType<typeof dig>>): string =>
  (r.opt?.options.COOKIE ?? '').trim().split(/\s+/)[0] ?? '';

/** RFC 9018 §4: version 1, 3 reserved zero octets, a 32-bit timestamp, then an 8-octet hash. */
function checkServerCookie(hex: string, raw: string): void {
  assert.equal(hex.length, 48, `8-octet client + 16-octet server cookie: ${raw}`);
  const server = Buffer.from(hex.slice(16), 'hex');
  assert.equal(server[0], 1, 'version 1');
  assert.equal(server.readUIntBE(1, 3), 0, 'reserved');
  assert.ok(Math.abs(server.readUInt32BE(4) - Date.now() / 1000) < 300, `timestamp ${server.readUInt32BE(4)}`);
}

test('item 14: QDCOUNT=0 with a COOKIE → NOERROR with a server cookie (RFC 7873 §5.4)', async (t) => {
  const { ask } = await setup(t, answerA);
  const r = await ask('+header-only', '+cookie');
  assert.equal(r.status, 'NOERROR', r.raw);
  checkServerCookie(cookieHex(r), r.raw);
});

test('item 14: a client cookie in a normal query gets a server cookie (RFC 9018 format)', async (t) => {
  const { ask } = await setup(t, answerA);
  const r = await ask('www.example', 'A', '+cookie');
  assert.equal(r.status, 'NOERROR', r.raw);
  checkServerCookie(cookieHex(r), r.raw);
});

test('item 15: an unknown opcode (3) gets NOTIMP with RD cleared', async (t) => {
  const { ask } = await setup(t, answerA);
  const r = await ask('www.example', 'A', '+opcode=3', '+noedns');
  assert.equal(r.status, 'NOTIMP', r.raw);
  assert.equal(r.flags.includes('rd'), false, r.raw);
});

test('item 16: a query carrying an answer record plus an OPT → FORMERR', async (t) => {
  const { p } = await setup(t, answerA);
  const q = clientQuery(16, 'www.example', 1, {
    answers: [a('www.example', '192.0.2.99', 300)],
    additionals: [optRecord(1232)],
  });
  const r = await askUdp(p.port, q);
  assert.ok(r, 'no answer');
  assert.equal(decodeMessage(r).flags & 0xf, 1, 'FORMERR');
});

test('item 17: TCP half-close: query sent, then shutdown(SHUT_WR) → the miss is still answered', async (t) => {
  const { p } = await setup(t, (q) => ({ bytes: answerA(q)!, delayMs: 200 }) as { bytes: Buffer; delayMs: number });
  const r = await askTcp(p.port, clientQuery(17, 'halfclose.example', 1), { halfClose: true, timeoutMs: 3000 });
  assert.ok(r, 'no answer after the half-close');
  const m = decodeMessage(r);
  assert.equal(m.flags & 0xf, 0);
  assert.equal(m.answers.length, 1);
});

test('item 18: 50 stalled TCP connections from 127.0.0.1 do not lock out a real TCP query; evictions are counted', async (t) => {
  const { p } = await setup(t, answerA, '{}\n', true);
  const stalled: net.Socket[] = [];
  t.after(() => {
    for (const s of stalled) s.destroy();
  });
  for (let i = 0; i < 50; i++) {
    const s = net.connect(p.port, '127.0.0.1');
    s.on('error', () => {
      /* evicted */
    });
    await new Promise<void>((r) => s.once('connect', () => r()));
    s.write(Buffer.from([0])); // one octet of a length prefix, then nothing
    stalled.push(s);
  }
  await waitFor(async () => (metricValue(await scrape(p.metrics!), 'consul_dns_proxy_tcp_connections') ?? 0) >= 50, {
    what: '50 TCP connections open at the proxy',
    timeoutMs: 5000,
  });
  const r = await askTcp(p.port, clientQuery(18, 'www.example', 1), { timeoutMs: 2000 });
  assert.ok(r, 'the real TCP query was answered');
  assert.equal(decodeMessage(r).flags & 0xf, 0);
  const text = await scrape(p.metrics!);
  assert.ok((metricValue(text, 'consul_dns_proxy_tcp_connections_evicted_total') ?? 0) >= 1, 'an eviction was counted');
});

test('item 12: the same MX answer to an EDNS client with +bufsize=512 → the 2 MX without TC', async (t) => {
  const { ask } = await setup(t, mxWithGlue);
  const r = await ask('mx.example', 'MX', '+bufsize=512', '+ignore');
  assert.equal(r.status, 'NOERROR', r.raw);
  assert.equal(r.flags.includes('tc'), false, r.raw);
  assert.equal(r.answer.length, 2, r.raw);
  assert.ok(r.opt, `the reply to an EDNS query has an OPT: ${r.raw}`);
});

test('item 14: a client cookie sent as a raw option (+ednsopt=10:...) gets a server cookie', async (t) => {
  const { ask } = await setup(t, answerA);
  const r = await ask('www.example', 'A', '+ednsopt=10:0102030405060708');
  assert.equal(r.status, 'NOERROR', r.raw);
  const hex = cookieHex(r);
  assert.equal(hex.slice(0, 16), '0102030405060708', `the client cookie is echoed: ${r.raw}`);
  checkServerCookie(hex, r.raw);
});
