/**
 * The load clients count right: against a responder that drops, closes and cuts answers on purpose
 * (by query name), every query ends in the outcome the responder chose for it, and the TCP client
 * resends exactly the queries outstanding at a close.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { TYPE } from '../../src/dns/constants.js';
import { queryMessage } from '../support/query.js';
import { udpLoad, PipelinedTcpClient, summarize } from '../support/load.js';
import { freePort } from '../support/proc.js';

/** The first label of the question name of a query. */
function firstLabel(q: Buffer): string {
  const len = q[12] ?? 0;
  return q.subarray(13, 13 + len).toString('latin1');
}

function answer(q: Buffer): Buffer {
  const r = Buffer.from(q);
  r[2] = r[2]! | 0x80;
  return r;
}

interface Responder {
  port: number;
  udpSeen: number;
  tcpSeen: number;
  close(): Promise<void>;
}

/**
 * Names `drop-*` get no answer. Over TCP, the first time it reads `close-*` it closes the
 * connection without answering it, and the first time it reads `mid-*` it writes half an answer
 * and resets the connection; a resent copy is answered.
 */
async function startResponder(port = 0): Promise<Responder> {
  const seenOnce = new Set<string>();
  const state = { udpSeen: 0, tcpSeen: 0 };
  const udp = dgram.createSocket('udp4');
  udp.on('message', (m, r) => {
    state.udpSeen++;
    if (firstLabel(m).startsWith('drop-')) return;
    udp.send(answer(m), r.port, r.address);
  });
  await new Promise<void>((res) => udp.bind(port, '127.0.0.1', () => res()));
  const conns = new Set<net.Socket>();
  const tcp = net.createServer((s) => {
    conns.add(s);
    s.on('close', () => conns.delete(s));
    s.on('error', () => {});
    let buf = Buffer.alloc(0);
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const q = buf.subarray(2, 2 + buf.readUInt16BE(0));
        buf = buf.subarray(2 + q.length);
        state.tcpSeen++;
        const name = firstLabel(q);
        if (name.startsWith('drop-')) continue;
        const first = !seenOnce.has(name);
        seenOnce.add(name);
        const r = answer(q);
        const framed = Buffer.concat([Buffer.from([r.length >> 8, r.length & 0xff]), r]);
        if (name.startsWith('close-') && first) {
          s.end();
          return;
        }
        if (name.startsWith('mid-') && first) {
          s.write(framed.subarray(0, 5));
          setTimeout(() => s.destroy(), 50);
          return;
        }
        s.write(framed);
      }
    });
  });
  await new Promise<void>((res) => tcp.listen(udp.address().port, '127.0.0.1', () => res()));
  return {
    port: udp.address().port,
    get udpSeen() {
      return state.udpSeen;
    },
    get tcpSeen() {
      return state.tcpSeen;
    },
    async close() {
      for (const c of conns) c.destroy();
      await Promise.all([
        new Promise<void>((r) => udp.close(() => r())),
        new Promise<void>((r) => tcp.close(() => r())),
      ]);
    },
  };
}

const q = (name: string) => queryMessage(0, `${name}.example.`, TYPE.A);

test('UDP load: dropped queries are unanswered, the rest answered, each counted once', async (t) => {
  const r = await startResponder();
  t.after(() => r.close());
  const load = udpLoad({
    host: '127.0.0.1',
    port: r.port,
    qps: 200,
    durationMs: 500,
    timeoutMs: 600,
    query: (n) => q(n % 10 === 3 ? `drop-${n}` : `ok-${n}`),
  });
  const s = await load.done;
  assert.equal(s.sent, 100);
  assert.equal(r.udpSeen, 100);
  assert.equal(s.unanswered, 10);
  assert.equal(s.answered, 90);
  assert.equal(s.refused, 0);
  assert.equal(s.errors, 0);
  load.records.forEach((rec, n) => assert.equal(rec.outcome, n % 10 === 3 ? 'unanswered' : 'answered', `query ${n}`));
  assert.ok(s.maxMs > 0 && s.maxMs < 600 && s.p99Ms <= s.maxMs, JSON.stringify(s));
});

test('UDP load: a port nothing is bound to counts every query refused (ICMP), none unanswered', async () => {
  const port = await freePort();
  const s = await udpLoad({
    host: '127.0.0.1',
    port,
    qps: 100,
    durationMs: 200,
    timeoutMs: 1000,
    query: (n) => q(`ok-${n}`),
  }).done;
  assert.equal(s.sent, 20);
  assert.equal(s.refused, 20);
  assert.equal(s.unanswered, 0);
  assert.equal(s.answered, 0);
});

test('TCP client: pipelines, resends only what was outstanding at a close, counts closes in mid-answer', async (t) => {
  const r = await startResponder();
  t.after(() => r.close());
  const c = new PipelinedTcpClient('127.0.0.1', r.port, { timeoutMs: 800 });
  t.after(() => c.close());
  for (let i = 0; i < 10; i++) c.send(q(`ok-${i}`));
  await c.whenIdle();
  let s = c.stats();
  assert.deepEqual([s.answered, s.resends, s.closes, s.connects], [10, 0, 0, 1]);

  // drop-a is read and ignored; close-b makes the server close: both are outstanding then, so
  // both are resent on the new connection, where close-b is answered and drop-a again ignored.
  const drop = c.send(q('drop-a'));
  const close = c.send(q('close-b'));
  await c.whenIdle();
  s = c.stats();
  assert.equal(close.outcome, 'answered');
  assert.equal(close.resends, 1);
  assert.equal(drop.outcome, 'unanswered');
  assert.equal(drop.resends, 1);
  assert.deepEqual(
    [s.answered, s.unanswered, s.resends, s.closes, s.closesWithOutstanding, s.closesMidAnswer, s.connects],
    [11, 1, 2, 1, 1, 0, 2],
  );

  const mid = c.send(q('mid-c'));
  await c.whenIdle();
  s = c.stats();
  assert.equal(mid.outcome, 'answered');
  assert.equal(mid.resends, 1);
  assert.deepEqual([s.answered, s.resends, s.closes, s.closesMidAnswer, s.duplicates], [12, 3, 2, 1, 0]);
  assert.equal(r.tcpSeen, 10 + 4 + 2);
});

test('TCP client: connects refused while nothing listens are counted, then the queued query is sent', async (t) => {
  const port = await freePort();
  const c = new PipelinedTcpClient('127.0.0.1', port, { timeoutMs: 3000, reconnectDelayMs: 20 });
  t.after(() => c.close());
  const rec = c.send(q('ok-late'));
  while (c.stats().refusedConnects < 3) await new Promise((res) => setTimeout(res, 10));
  const r = await startResponder(port);
  t.after(() => r.close());
  await c.whenIdle();
  const s = c.stats();
  assert.equal(rec.outcome, 'answered');
  // Never written before the connect that succeeded: not a resend.
  assert.equal(rec.resends, 0);
  assert.ok(s.refusedConnects >= 3);
  assert.equal(s.connects, 1);
  assert.deepEqual(summarize(c.records), { ...summarize(c.records), answered: 1, unanswered: 0 });
});
