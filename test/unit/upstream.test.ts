/**
 * Unit tests of UpstreamPool (src/upstream.ts) against fake upstreams: real UDP and TCP sockets on
 * 127.0.0.1 port 0 whose behaviour each test sets (answer, stay silent, SERVFAIL, REFUSED, spoof
 * with a wrong ID, a wrong question or from another port, TC over UDP then the full answer over
 * TCP with RFC 1035 §4.2.2 framing, hold a query until released). Covered: RFC 5452 reply
 * matching, failover, hedging and the rule that a hedge beating a silent upstream counts as that
 * upstream's failure at once, marking down after maxFails and going straight to the next one,
 * the deadline, RFC 7766 TCP retry on TC, maxInFlight overflow, and probes bringing an upstream
 * back. Timing assertions are upper bounds only, and generous: 2 cores are shared.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { once } from 'node:events';
import { readdirSync, readlinkSync } from 'node:fs';
import type { FailureReason } from '../../src/observability/metrics.js';
import {
  type PoolObserver,
  type PoolOptions,
  type ExchangeResult,
  type Answer,
  type Failure,
} from '../../src/upstream/types.js';
import { UpstreamSockets } from '../../src/upstream/udp.js';
import { UpstreamPool } from '../../src/upstream/pool.js';
import { buildOpt, buildQuestion, buildUpstreamQuery, parseQuery } from '../../src/dns/wire.js';
import { FLAG, HEADER_LEN, RCODE, TYPE } from '../../src/dns/constants.js';
import { waitFor } from '../support/wait.js';

const PROBE_QUESTION = buildQuestion('consul.', TYPE.SOA);
const QNAME = 'web.service.consul';
const QUESTION = buildQuestion(QNAME, TYPE.A);

function options(over: Partial<PoolOptions> = {}): PoolOptions {
  return {
    timeoutMs: 300,
    hedgeMs: 30,
    deadlineMs: 1000,
    maxFails: 2,
    probeIntervalMs: 60_000,
    probeQuestion: PROBE_QUESTION,
    udpSize: 1232,
    maxInFlight: 1024,
    ...over,
  };
}

// ------------------------------------------------------------------------------------------------
// Replies

interface ReplyOpts {
  rcode?: number;
  tc?: boolean;
  id?: number;
  ip?: [number, number, number, number];
  question?: Buffer;
  answer?: boolean;
}

/** A reply to `query`: its ID and question (or overrides), one A record unless told otherwise, our OPT. */
function reply(query: Buffer, o: ReplyOpts = {}): Buffer {
  const p = parseQuery(query);
  assert.ok(p.kind === 'query', 'the pool sent a valid query');
  const question = o.question ?? query.subarray(HEADER_LEN, p.q.qEnd);
  const withAnswer = o.answer ?? (!o.tc && (o.rcode ?? 0) === 0);
  const h = Buffer.alloc(HEADER_LEN);
  h.writeUInt16BE(o.id ?? p.q.id, 0);
  h.writeUInt16BE(FLAG.QR | (p.q.flags & FLAG.RD) | FLAG.RA | (o.tc ? FLAG.TC : 0) | (o.rcode ?? 0), 2);
  h.writeUInt16BE(1, 4);
  h.writeUInt16BE(withAnswer ? 1 : 0, 6);
  h.writeUInt16BE(1, 10);
  const parts = [h, question];
  if (withAnswer) {
    const a = Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, ...(o.ip ?? [127, 0, 0, 1])]);
    parts.push(a);
  }
  parts.push(buildOpt(1232, 0, false));
  return Buffer.concat(parts);
}

function qname(query: Buffer): string {
  const p = parseQuery(query);
  return p.kind === 'query' ? p.q.name : '?';
}

// ------------------------------------------------------------------------------------------------
// Fake upstream

type Behaviour = (query: Buffer, up: FakeUpstream) => void | Promise<void>;

/** One fake DNS server: UDP + TCP on the same 127.0.0.1 port, plus a second UDP socket to spoof from. */
class FakeUpstream {
  /** Non-probe queries received over UDP / TCP, in order. */
  readonly udpQueries: Buffer[] = [];
  readonly tcpQueries: Buffer[] = [];
  readonly probes: Buffer[] = [];
  behaviour: Behaviour = (q, up) => up.send(reply(q));
  tcpBehaviour: Behaviour = (q, up) => up.sendTcp(reply(q));
  private peer: { port: number; address: string } | null = null;
  private conn: net.Socket | null = null;
  private readonly conns = new Set<net.Socket>();

  private constructor(
    readonly udp: dgram.Socket,
    readonly other: dgram.Socket,
    readonly tcp: net.Server,
    readonly port: number,
  ) {}

  static async start(t: TestContext): Promise<FakeUpstream> {
    const udp = dgram.createSocket('udp4');
    udp.bind(0, '127.0.0.1');
    await once(udp, 'listening');
    const port = udp.address().port;
    const other = dgram.createSocket('udp4');
    other.bind(0, '127.0.0.1');
    await once(other, 'listening');
    const tcp = net.createServer();
    tcp.listen(port, '127.0.0.1');
    await once(tcp, 'listening');
    const up = new FakeUpstream(udp, other, tcp, port);
    udp.on('message', (msg, rinfo) => {
      up.peer = rinfo;
      if (qname(msg) === 'consul' && !up.answerProbesAsQueries) {
        up.probes.push(msg);
        if (up.answerProbes) up.send(reply(msg));
        return;
      }
      up.udpQueries.push(msg);
      void up.behaviour(msg, up);
    });
    tcp.on('connection', (s) => {
      up.conns.add(s);
      s.on('close', () => up.conns.delete(s));
      s.on('error', () => {
        /* the pool closes its side at the end */
      });
      let buf = Buffer.alloc(0);
      s.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          const msg = buf.subarray(2, 2 + buf.readUInt16BE(0));
          buf = buf.subarray(2 + msg.length);
          up.conn = s;
          up.tcpQueries.push(Buffer.from(msg));
          void up.tcpBehaviour(Buffer.from(msg), up);
        }
      });
    });
    t.after(() => up.close());
    return up;
  }

  /** Probes ('consul. SOA') are answered unless told otherwise, and kept apart from the queries. */
  answerProbes = true;
  answerProbesAsQueries = false;

  get addr() {
    return { host: '127.0.0.1', port: this.port };
  }
  get label() {
    return `127.0.0.1:${this.port}`;
  }

  /** Reply to the last UDP sender from the server's own socket. */
  send(b: Buffer): void {
    assert.ok(this.peer);
    this.udp.send(b, this.peer.port, this.peer.address);
  }
  /** Reply to the last UDP sender from a different port (a spoofer's socket). */
  sendFromOtherPort(b: Buffer): void {
    assert.ok(this.peer);
    this.other.send(b, this.peer.port, this.peer.address);
  }
  sendTcp(b: Buffer): void {
    assert.ok(this.conn);
    const f = Buffer.alloc(2 + b.length);
    f.writeUInt16BE(b.length, 0);
    b.copy(f, 2);
    this.conn.write(f);
  }

  close(): void {
    for (const s of this.conns) s.destroy();
    this.tcp.close();
    this.udp.close();
    this.other.close();
  }
}

const silent: Behaviour = () => {};
const rcode =
  (r: number): Behaviour =>
  (q, up) =>
    up.send(reply(q, { rcode: r }));

// ------------------------------------------------------------------------------------------------
// Recording observer

type Event =
  | ['request', string, string, 'udp' | 'tcp']
  | ['failure', string, string, FailureReason]
  | ['duration', string, string, number]
  | ['hedged', string]
  | ['health', string, string, boolean]
  | ['overflow', string];

class Recorder implements PoolObserver {
  readonly events: Event[] = [];
  request(pool: string, upstream: string, transport: 'udp' | 'tcp') {
    this.events.push(['request', pool, upstream, transport]);
  }
  failure(pool: string, upstream: string, reason: FailureReason) {
    this.events.push(['failure', pool, upstream, reason]);
  }
  duration(pool: string, upstream: string, seconds: number) {
    this.events.push(['duration', pool, upstream, seconds]);
  }
  hedged(pool: string) {
    this.events.push(['hedged', pool]);
  }
  health(pool: string, upstream: string, healthy: boolean) {
    this.events.push(['health', pool, upstream, healthy]);
  }
  overflow(pool: string) {
    this.events.push(['overflow', pool]);
  }
  of<K extends Event[0]>(kind: K): Extract<Event, [K, ...unknown[]]>[] {
    return this.events.filter((e) => e[0] === kind) as Extract<Event, [K, ...unknown[]]>[];
  }
  failures(upstream: string): FailureReason[] {
    return this.of('failure')
      .filter((e) => e[2] === upstream)
      .map((e) => e[3]);
  }
  requests(upstream: string, transport?: 'udp' | 'tcp'): number {
    return this.of('request').filter((e) => e[2] === upstream && (!transport || e[3] === transport)).length;
  }
}

function setup(t: TestContext, ups: FakeUpstream[], over: Partial<PoolOptions> = {}) {
  const transport = new UpstreamSockets();
  const obs = new Recorder();
  const pool = new UpstreamPool(
    'consul',
    ups.map((u) => u.addr),
    options(over),
    transport,
    obs,
  );
  // Pool first (stops probes), then the transport (clears pending timers): nothing keeps the loop alive.
  t.after(() => {
    pool.close();
    transport.close();
  });
  return { transport, obs, pool };
}

function ask(pool: UpstreamPool, flags: number = FLAG.RD, dnssecOk = false): Promise<ExchangeResult> {
  return pool.exchange(QUESTION, 0, QUESTION.length, flags, dnssecOk);
}

function answered(r: ExchangeResult): Answer {
  assert.ok('reply' in r, `expected an answer, got ${JSON.stringify(r)}`);
  return r;
}
function failed(r: ExchangeResult): Failure {
  assert.ok('failure' in r, 'expected a failure, got an answer');
  return r;
}

/** The IPv4 address in the (single) A record of an answer from reply(). */
function answerIp(a: Answer): string {
  const off = a.layout.qEnd + 12;
  return [...a.reply.subarray(off, off + 4)].join('.');
}

// ------------------------------------------------------------------------------------------------

test('a valid answer is returned with its layout; the query sent is our upstream form', async (t) => {
  const up = await FakeUpstream.start(t);
  const { obs, pool } = setup(t, [up]);
  const r = answered(await ask(pool, FLAG.RD | FLAG.CD | FLAG.TC | FLAG.Z, true));
  assert.equal(r.upstream, up.label);
  assert.equal(up.udpQueries.length, 1);
  const sent = up.udpQueries[0]!;
  assert.equal(r.reply.readUInt16BE(0), sent.readUInt16BE(0), 'the reply carries the ID we sent');
  assert.equal(r.layout.rcode, RCODE.NOERROR);
  assert.equal(r.layout.an, 1);
  assert.equal(r.layout.ttlOffsets.length, 1);
  assert.equal(r.reply.readUInt32BE(r.layout.ttlOffsets[0]), 60);
  assert.ok(r.layout.optStart > 0 && r.layout.optEnd === r.reply.length);
  assert.equal(answerIp(r), '127.0.0.1');
  // What went upstream: RD/CD only (TC and Z dropped), our OPT with udpSize 1232 and DO.
  const p = parseQuery(sent);
  assert.ok(p.kind === 'query');
  assert.equal(p.q.flags, FLAG.RD | FLAG.CD);
  assert.equal(p.q.name, QNAME);
  assert.equal(p.q.udpSize, 1232);
  assert.equal(p.q.dnssecOk, true);
  assert.equal(obs.requests(up.label, 'udp'), 1);
  assert.equal(obs.of('duration').length, 1);
  assert.deepEqual(obs.of('failure'), []);
  assert.deepEqual(obs.of('hedged'), []);
  assert.equal(pool.status()[0]?.healthy, true);
  assert.ok(pool.lastOkAt() > 0);
  // A second exchange uses a fresh random ID (RFC 5452 §9.2); two equal in a row is 1 in 65536.
  const r2 = answered(await ask(pool));
  assert.equal(up.udpQueries.length, 2);
  assert.equal(r2.reply.readUInt16BE(0), up.udpQueries[1]!.readUInt16BE(0));
});

test('spoofed replies (wrong ID, wrong question, wrong port) are ignored; the real answer is accepted', async (t) => {
  const up = await FakeUpstream.start(t);
  // A generous timeout: the real answer is sent only once all three spoofs were seen and dropped.
  const { transport, obs, pool } = setup(t, [up], { timeoutMs: 3000, deadlineMs: 4000 });
  const before = transport.mismatches;
  up.behaviour = async (q, u) => {
    const id = q.readUInt16BE(0);
    // From another port: the socket is connected to the upstream, so the kernel drops it unseen.
    u.sendFromOtherPort(reply(q, { ip: [6, 6, 6, 4] }));
    u.send(reply(q, { id: id ^ 0x5a5a, ip: [6, 6, 6, 1] }));
    u.send(reply(q, { question: buildQuestion('web.service.consuk', TYPE.A), ip: [6, 6, 6, 2] }));
    u.send(reply(q, { question: buildQuestion(QNAME, TYPE.AAAA), ip: [6, 6, 6, 3] }));
    await waitFor(() => transport.mismatches >= before + 3, {
      timeoutMs: 2500,
      intervalMs: 2,
      what: 'three mismatches',
    });
    // The question in another case is still the same question (RFC 5452 §9.1, dns0x20).
    u.send(reply(q, { question: buildQuestion(QNAME.toUpperCase(), TYPE.A), ip: [10, 0, 0, 7] }));
  };
  const r = answered(await ask(pool));
  assert.equal(answerIp(r), '10.0.0.7', 'the real answer, not a spoof');
  assert.equal(transport.mismatches - before, 3);
  assert.deepEqual(obs.of('failure'), [], "a mismatch is not the upstream's failure");
  assert.equal(up.udpQueries.length, 1, 'no retry was needed');
});

test('SERVFAIL and REFUSED fail over to the next upstream and are counted under their reason', async (t) => {
  for (const [code, why] of [
    [RCODE.SERVFAIL, 'servfail'],
    [RCODE.REFUSED, 'refused'],
  ] as const) {
    const a = await FakeUpstream.start(t);
    const b = await FakeUpstream.start(t);
    a.behaviour = rcode(code);
    const { obs, pool } = setup(t, [a, b], { timeoutMs: 2000, deadlineMs: 3000 });
    const r = answered(await ask(pool));
    assert.equal(r.upstream, b.label, `${why}: answered by the second`);
    assert.deepEqual(obs.failures(a.label), [why]);
    assert.deepEqual(obs.failures(b.label), []);
    assert.equal(a.udpQueries.length, 1);
    assert.equal(b.udpQueries.length, 1);
    assert.equal(pool.status()[0]?.healthy, true, 'one failure is below maxFails');
  }
});

test('every upstream SERVFAIL or REFUSED: each is asked once, at once the result carries the last such reply; none is marked down', async (t) => {
  const a = await FakeUpstream.start(t);
  const b = await FakeUpstream.start(t);
  a.behaviour = rcode(RCODE.SERVFAIL);
  b.behaviour = rcode(RCODE.REFUSED);
  const { obs, pool } = setup(t, [a, b], { timeoutMs: 2000, deadlineMs: 3000 });
  for (let i = 1; i <= 3; i++) {
    const t0 = Date.now();
    const r = failed(await ask(pool));
    assert.ok(Date.now() - t0 < 1000, 'answered at once, not at the deadline');
    assert.equal(r.failure, 'refused');
    assert.ok(r.answer, 'the upstream reply comes with the failure');
    assert.equal(r.answer.layout.rcode, RCODE.REFUSED);
    assert.equal(r.answer.upstream, b.label);
    assert.equal(a.udpQueries.length, i);
    assert.equal(b.udpQueries.length, i);
  }
  assert.deepEqual(obs.failures(a.label), ['servfail', 'servfail', 'servfail']);
  assert.deepEqual(obs.failures(b.label), ['refused', 'refused', 'refused']);
  assert.deepEqual(
    pool.status().map((s) => s.healthy),
    [true, true],
    'an answer, even REFUSED or SERVFAIL, never counts toward maxFails',
  );
  assert.deepEqual(obs.of('health'), []);
});

test('a reply after the try timeout but before the deadline is the answer; the slow upstream is not counted failed', async (t) => {
  const a = await FakeUpstream.start(t);
  a.behaviour = (q, up) => {
    setTimeout(() => up.send(reply(q, { ip: [10, 9, 9, 9] })), 250);
  };
  const { obs, pool } = setup(t, [a], { timeoutMs: 100, deadlineMs: 1500, maxFails: 1 });
  for (let i = 0; i < 3; i++) {
    const r = answered(await ask(pool));
    assert.equal(answerIp(r), '10.9.9.9');
  }
  // Retried (with backoff) while waiting: 100 ms, then 200 ms later; the first reply wins.
  assert.ok(a.udpQueries.length >= 3 && a.udpQueries.length <= 9, `${a.udpQueries.length} queries`);
  assert.deepEqual(obs.failures(a.label), [], 'slow, not down');
  assert.equal(pool.status()[0]?.healthy, true);
});

test('one silent upstream: retried with backoff until the deadline, then a timeout; not before', async (t) => {
  const a = await FakeUpstream.start(t);
  a.behaviour = silent;
  a.answerProbes = false;
  const { obs, pool } = setup(t, [a], { timeoutMs: 100, deadlineMs: 800, maxFails: 10 });
  const t0 = Date.now();
  const r = failed(await ask(pool));
  const took = Date.now() - t0;
  assert.equal(r.failure, 'timeout');
  assert.ok(took >= 790, `ended after ${took} ms, at the deadline (800 ms)`);
  // Tries at 0, 100, 300 and 700 ms (each round's timeout twice the one before); a loaded machine
  // may run the timers late enough to leave no room for the last one.
  const n = a.udpQueries.length;
  assert.ok(n === 3 || n === 4, `${n} tries`);
  assert.deepEqual(obs.failures(a.label), Array(n).fill('timeout'), 'each unanswered try is a timeout');
});

test('a closed port: ECONNREFUSED at once (connected socket), a network failure toward maxFails', async (t) => {
  const closed = dgram.createSocket('udp4');
  await new Promise<void>((r) => closed.bind(0, '127.0.0.1', () => r()));
  const port = closed.address().port;
  closed.close();
  const b = await FakeUpstream.start(t);
  const transport = new UpstreamSockets();
  const obs = new Recorder();
  const pool = new UpstreamPool(
    'consul',
    [{ host: '127.0.0.1', port }, b.addr],
    options({ timeoutMs: 2000, hedgeMs: 1500, deadlineMs: 3000 }),
    transport,
    obs,
  );
  t.after(() => {
    pool.close();
    transport.close();
  });
  for (let i = 1; i <= 2; i++) {
    const t0 = Date.now();
    const r = answered(await ask(pool));
    assert.equal(r.upstream, b.label);
    assert.ok(Date.now() - t0 < 1000, `exchange ${i}: failed over at once, before the hedge (1500 ms)`);
  }
  // (Marking it down starts a probe round, refused too: a third may follow.)
  assert.deepEqual(obs.failures(`127.0.0.1:${port}`).slice(0, 2), ['network', 'network']);
  assert.deepEqual(
    pool.status().map((s) => s.healthy),
    [false, true],
    'down after maxFails (2) refusals',
  );
});

test('a silent upstream is hedged after hedgeMs, counted failed at once, then marked down and skipped', async (t) => {
  const a = await FakeUpstream.start(t);
  const b = await FakeUpstream.start(t);
  a.behaviour = silent;
  a.answerProbes = false; // marking a down starts a probe round: a stays silent to it too
  // timeoutMs long enough that "answered before the silent one's timeout" is unmistakable.
  const timeoutMs = 1500;
  const { obs, pool } = setup(t, [a, b], { timeoutMs, deadlineMs: 3000 });

  for (let i = 1; i <= 2; i++) {
    const t0 = Date.now();
    const r = answered(await ask(pool));
    const took = Date.now() - t0;
    assert.equal(r.upstream, b.label, `exchange ${i}: the hedge answered`);
    assert.ok(took < timeoutMs, `exchange ${i}: answered in ${took} ms, before the ${timeoutMs} ms timeout`);
    assert.equal(obs.of('hedged').length, i);
    assert.equal(a.udpQueries.length, i);
    assert.equal(b.udpQueries.length, i);
    // Counted the moment the hedge won, not at a's timeout (still far off).
    assert.deepEqual(obs.failures(a.label), Array(i).fill('timeout'), `exchange ${i}: a's failure counted at once`);
  }
  assert.deepEqual(
    pool.status().map((s) => s.healthy),
    [false, true],
    'a down after maxFails',
  );
  assert.deepEqual(obs.of('health'), [['health', 'consul', a.label, false]]);

  // Straight to b now: no hedge, no request to a.
  const r = answered(await ask(pool));
  assert.equal(r.upstream, b.label);
  assert.equal(obs.of('hedged').length, 2, 'no hedge');
  assert.equal(obs.requests(a.label), 2, 'no new request to a');
  assert.equal(a.udpQueries.length, 2, 'a received no further query');
  assert.equal(b.udpQueries.length, 3);
  assert.deepEqual(obs.failures(a.label), ['timeout', 'timeout'], 'no double counting');
});

test('all upstreams silent: failure timeout by the deadline', async (t) => {
  const a = await FakeUpstream.start(t);
  const b = await FakeUpstream.start(t);
  a.behaviour = silent;
  b.behaviour = silent;
  a.answerProbes = false;
  b.answerProbes = false;
  const { obs, pool } = setup(t, [a, b]);
  const t0 = Date.now();
  const r = failed(await ask(pool));
  const took = Date.now() - t0;
  assert.equal(r.failure, 'timeout');
  assert.ok(took < 3000, `gave up after ${took} ms (deadline 1000 ms)`);
  assert.ok(a.udpQueries.length >= 1 && b.udpQueries.length >= 1, 'both were asked');
  assert.ok(obs.failures(a.label).every((w) => w === 'timeout'));
});

test('TC over UDP is retried over TCP to the same upstream', async (t) => {
  const a = await FakeUpstream.start(t);
  const b = await FakeUpstream.start(t);
  a.behaviour = (q, up) => up.send(reply(q, { tc: true }));
  a.tcpBehaviour = (q, up) => up.sendTcp(reply(q, { ip: [10, 1, 2, 3] }));
  const { obs, pool } = setup(t, [a, b], { timeoutMs: 2000, deadlineMs: 3000 });
  const r = answered(await ask(pool));
  assert.equal(r.upstream, a.label);
  assert.equal(r.layout.flags & FLAG.TC, 0);
  assert.equal(answerIp(r), '10.1.2.3');
  assert.equal(a.udpQueries.length, 1);
  assert.equal(a.tcpQueries.length, 1);
  assert.equal(qname(a.tcpQueries[0]!), QNAME);
  assert.equal(r.reply.readUInt16BE(0), a.tcpQueries[0]!.readUInt16BE(0), 'TCP reply matched on its own ID');
  assert.equal(obs.requests(a.label, 'udp'), 1);
  assert.equal(obs.requests(a.label, 'tcp'), 1);
  assert.equal(b.udpQueries.length, 0, 'no failover');
  assert.deepEqual(obs.of('failure'), []);
  // The TCP connection is kept and reused (RFC 7766 §6.2.1).
  answered(await ask(pool));
  assert.equal(a.tcpQueries.length, 2);
});

test('maxInFlight 1: a second concurrent exchange overflows; the slot frees when the first ends', async (t) => {
  const a = await FakeUpstream.start(t);
  const held: Buffer[] = [];
  a.behaviour = (q) => {
    held.push(q);
  };
  const { obs, pool } = setup(t, [a], { maxInFlight: 1, timeoutMs: 3000, deadlineMs: 4000 });
  const first = ask(pool);
  await waitFor(() => held.length === 1, { timeoutMs: 2000, what: 'the slow upstream to get the query' });
  const second = await ask(pool);
  assert.deepEqual(second, { failure: 'overflow' });
  assert.deepEqual(obs.of('overflow'), [['overflow', 'consul']]);
  assert.equal(a.udpQueries.length, 1, 'the overflowing exchange sent nothing');
  a.send(reply(held[0]!));
  answered(await first);
  a.behaviour = (q, up) => up.send(reply(q));
  answered(await ask(pool));
});

test('startProbes brings a down upstream back when it answers', async (t) => {
  const a = await FakeUpstream.start(t);
  const b = await FakeUpstream.start(t);
  a.behaviour = silent;
  a.answerProbes = false;
  const { obs, pool } = setup(t, [a, b], { probeIntervalMs: 100 });
  pool.startProbes();
  // Mark a down through hedged exchanges.
  await waitFor(
    async () => {
      answered(await ask(pool));
      return pool.status()[0]?.healthy === false;
    },
    { timeoutMs: 5000, intervalMs: 1, what: 'a to be marked down' },
  );
  assert.deepEqual(obs.of('health')[0], ['health', 'consul', a.label, false]);
  // a comes back: the next probe round sees it answer.
  a.answerProbes = true;
  await waitFor(() => pool.status()[0]?.healthy === true, { timeoutMs: 5000, what: 'a probe to mark a up' });
  assert.deepEqual(obs.of('health').at(-1), ['health', 'consul', a.label, true]);
  assert.ok(a.probes.length >= 1);
  // And it is asked first again.
  a.behaviour = (q, up) => up.send(reply(q));
  const r = answered(await ask(pool));
  assert.equal(r.upstream, a.label);
});

test('the sockets: opened one per query until the ring is full, then one at random per query; every port is new', async (t) => {
  const up = dgram.createSocket('udp4');
  await new Promise<void>((r) => up.bind(0, '127.0.0.1', () => r()));
  t.after(() => up.close());
  const ports = new Map<number, number>();
  up.on('message', (m, ri) => {
    ports.set(ri.port, (ports.get(ri.port) ?? 0) + 1);
    const r = Buffer.from(m);
    r.writeUInt16BE(0x8180, 2);
    up.send(r, ri.port, ri.address);
  });
  const tr = new UpstreamSockets(64, 1_000_000);
  t.after(() => tr.close());
  const ring = tr.acquire('127.0.0.1', up.address().port);
  const q = buildUpstreamQuery(QUESTION, 0, QUESTION.length, FLAG.RD, false, 1232);
  const one = () =>
    new Promise<void>((resolve, reject) => {
      ring.send(Buffer.from(q), HEADER_LEN + QUESTION.length, 2000, (reply, _l, why) =>
        reply ? resolve() : reject(new Error(why ?? 'no reply')),
      );
    });
  await Promise.all([one(), one(), one()]);
  assert.equal(ring.open, 3, 'lazily: three queries, three sockets');
  assert.equal(ports.size, 3);
  for (let i = 0; i < 20; i++) await Promise.all(Array.from({ length: 50 }, one));
  assert.equal(ring.open, 64, 'never more than the ring');
  assert.equal(ports.size, 64);
  // 1,003 queries over 64 sockets at random: about 16 each; in turn would be exactly that, so
  // check randomness through the spread of the counts (their variance is near the mean).
  const counts = [...ports.values()];
  const mean = counts.reduce((s, n) => s + n, 0) / counts.length;
  const variance = counts.reduce((s, n) => s + (n - mean) ** 2, 0) / counts.length;
  assert.ok(variance > 2, `counts vary as random picks do (variance ${variance.toFixed(1)})`);
  assert.ok(Math.max(...counts) < 50, `no port carries more than its share: ${Math.max(...counts)}`);
  // A second pool naming the same upstream shares the ring; it closes with its last user.
  assert.equal(tr.acquire('127.0.0.1', up.address().port), ring);
  tr.release(ring);
  assert.equal(ring.open, 64);
  tr.release(ring);
  assert.equal(ring.open, 0);
});

test('retired sockets close once their last query is answered, and all close with the transport', async (t) => {
  const sockets = () =>
    readdirSync('/proc/self/fd').filter((f) => {
      try {
        return readlinkSync('/proc/self/fd/' + f).startsWith('socket:');
      } catch {
        return false;
      }
    }).length;
  const up = dgram.createSocket('udp4');
  await new Promise<void>((r) => up.bind(0, '127.0.0.1', () => r()));
  t.after(() => up.close());
  const held: [Buffer, dgram.RemoteInfo][] = [];
  up.on('message', (m, ri) => held.push([m, ri]));
  const answer = ([m, ri]: [Buffer, dgram.RemoteInfo]) => {
    const p = parseQuery(m);
    assert.equal(p.kind, 'query');
    if (p.kind !== 'query') return;
    const r = Buffer.from(m.subarray(0, p.q.qEnd));
    r.writeUInt16BE(0x8180, 2);
    r.writeUInt16BE(0, 10);
    up.send(r, ri.port, ri.address);
  };
  const base = sockets();
  const tr = new UpstreamSockets(1, 1); // one socket, retired after every query
  const q = buildQuestion('web.service.consul', TYPE.A);
  const pool = new UpstreamPool(
    'c',
    [{ host: '127.0.0.1', port: up.address().port }],
    {
      timeoutMs: 5000,
      hedgeMs: 3000,
      deadlineMs: 6000,
      maxFails: 2,
      probeIntervalMs: 60000,
      probeQuestion: q,
      udpSize: 1232,
      maxInFlight: 1024,
    },
    tr,
  );
  for (let round = 0; round < 4; round++) {
    // Two overlapping exchanges: the second retires the socket the first is still waiting on.
    const p1 = pool.exchange(q, 0, q.length, 0x100, false);
    await waitFor(() => held.length >= 1, { what: 'first query' });
    const p2 = pool.exchange(q, 0, q.length, 0x100, false);
    await waitFor(() => held.length >= 2, { what: 'second query' });
    answer(held.shift()!);
    answer(held.shift()!);
    const [r1, r2] = await Promise.all([p1, p2]);
    assert.ok('reply' in r1 && 'reply' in r2);
    assert.ok(sockets() - base <= 1, `round ${round}: ${sockets() - base} sockets open`);
  }
  pool.close();
  tr.close();
  assert.equal(sockets() - base, 0);
});
