/**
 * The query pipeline (src/proxy.ts, class Proxy) alone, with fake pools and a fake cache: objects
 * that implement what the handler calls (exchange; lookup/store/peek/stale) and record every call.
 * No sockets, no CLI. Queries are built and replies decoded with the project's own codec
 * (src/message.ts), so each assertion is about the bytes a client would get.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { QueryHandler } from '../../src/query/handler.js';
import { STALE_NONE, STALE_READY, STALE_RECHECK, type ResponseCache } from '../../src/cache/answer-cache.js';
import { Router, type Route } from '../../src/query/router.js';
import { Metrics } from '../../src/observability/metrics.js';
import { createLogger } from '../../src/observability/log.js';
import { scanReply, questionName, type Query } from '../../src/dns/wire.js';
import { RCODE, FLAG, TYPE, EDE, EDNS_OPTION_EDE } from '../../src/dns/constants.js';
import { decodeMessage, encodeMessage, type Message, type Record as RR } from '../../src/dns/message.js';
import { type ExchangeResult } from '../../src/upstream/types.js';
import { type UpstreamPool } from '../../src/upstream/pool.js';
import type { FailureReason } from '../../src/observability/metrics.js';

const A = TYPE.A;

function aRR(name: string, ip: string, ttl = 30): RR {
  return { name, type: A, class: 1, ttl, rdata: Buffer.from(ip.split('.').map(Number)) };
}

function optRR(udpSize = 1232): RR {
  return { name: '', type: TYPE.OPT, class: udpSize, ttl: 0, rdata: Buffer.alloc(0) };
}

function queryBytes(name: string, qtype: number = A, opts: { id?: number; edns?: boolean } = {}): Buffer {
  return encodeMessage({
    id: opts.id ?? 0x4242,
    flags: FLAG.RD,
    questions: [{ name, type: qtype, class: 1 }],
    answers: [],
    authorities: [],
    additionals: opts.edns === false ? [] : [optRR()],
  });
}

/** The EDE info-code of a reply's OPT record, or null. */
function edeCode(m: Message): number | null {
  const opt = m.additionals.find((r) => r.type === TYPE.OPT);
  if (!opt) return null;
  for (let o = 0; o + 4 <= opt.rdata.length; o += 4 + opt.rdata.readUInt16BE(o + 2)) {
    if (opt.rdata.readUInt16BE(o) === EDNS_OPTION_EDE) return opt.rdata.readUInt16BE(o + 4);
  }
  return null;
}

interface Asked {
  name: string;
  flags: number;
  dnssecOk: boolean;
}

/**
 * A pool that answers every question with one A record owned by the name it was asked (as an
 * agent or recursor would), or fails with the reason given.
 */
function fakePool(name: string, answer: string) {
  const asked: Asked[] = [];
  const pool = {
    name,
    exchange(
      question: Buffer,
      qStart: number,
      qEnd: number,
      clientFlags: number,
      dnssecOk: boolean,
    ): Promise<ExchangeResult> {
      const qname = questionName(question, qStart);
      asked.push({ name: qname, flags: clientFlags, dnssecOk });
      if (!/^\d/.test(answer))
        return Promise.resolve({ failure: answer as FailureReason, upstream: `${name}-upstream` });
      const qtype = question.readUInt16BE(qEnd - 4);
      const reply = encodeMessage({
        id: 0,
        flags: 0x8000 | FLAG.RD | 0x0080 | 0x0400,
        questions: [{ name: qname, type: qtype, class: 1 }],
        answers: [aRR(qname, answer)],
        authorities: [],
        additionals: [optRR()],
      });
      const layout = scanReply(reply);
      assert.ok(layout, 'the fake reply is well formed');
      return Promise.resolve({ reply, layout, upstream: `${name}-upstream` });
    },
  };
  // The handler only ever calls exchange(); the cast stands for the class's private state.
  return { pool: pool as unknown as UpstreamPool, asked };
}

/**
 * A cache that stores what it is offered when `cacheable` says so and hands the stored bytes back
 * (with the client's ID) on lookup/peek; stale() returns `staleReply` when set. Records each call.
 */
function fakeCache(cacheable = (r: ExchangeResult) => !('failure' in r)) {
  const entries = new Map<string, Buffer>();
  const calls: { op: string; key: string; canonicalName?: string; pool?: string }[] = [];
  let staleReply: Buffer | null = null;
  let recheck = false;
  const answer = (key: string, q: Query): Buffer | null => {
    const e = entries.get(key);
    if (!e) return null;
    const out = Buffer.from(e);
    out.writeUInt16BE(q.id, 0);
    return out;
  };
  const cache: ResponseCache = {
    lookup: (key, q) => {
      calls.push({ op: 'lookup', key });
      return answer(key, q);
    },
    store: (key, _q, route: Route, canonicalName, result) => {
      calls.push({ op: 'store', key, canonicalName, pool: route.pool });
      if (!cacheable(result) || 'failure' in result) return false;
      entries.set(key, Buffer.from(result.reply));
      return true;
    },
    peek: (key, q) => {
      calls.push({ op: 'peek', key });
      return answer(key, q);
    },
    stale: (key, q) => {
      calls.push({ op: 'stale', key });
      if (!staleReply) return null;
      const out = Buffer.from(staleReply);
      out.writeUInt16BE(q.id, 0);
      return out;
    },
    staleState: () => (staleReply ? (recheck ? STALE_RECHECK : STALE_READY) : STALE_NONE),
    refreshFailed: (key) => {
      calls.push({ op: 'refreshFailed', key });
    },
  };
  return {
    cache,
    entries,
    calls,
    setStale: (b: Buffer | null, inRecheck = false) => {
      staleReply = b;
      recheck = inRecheck;
    },
  };
}

function makeProxy(opts: {
  cache?: ResponseCache | null;
  consul?: UpstreamPool;
  recursor?: UpstreamPool;
  staleClientTimeoutMs?: number;
}) {
  const router = new Router({
    domain: 'consul',
    aliases: ['starlings'],
    reverseZones: [],
    zones: [],
    hasRecursors: opts.recursor !== undefined,
  });
  const pools = new Map<string, UpstreamPool>();
  if (opts.consul) pools.set('consul', opts.consul);
  if (opts.recursor) pools.set('recursor', opts.recursor);
  const metrics = new Metrics({ version: 'x', zones: router.zoneLabels, enabled: false });
  const proxy = new QueryHandler({
    settings: {
      domain: 'consul',
      maxUdpSize: 1232,
      udpAnswerLimit: 3,
      logQueries: false,
      staleClientTimeoutMs: opts.staleClientTimeoutMs,
    },
    router,
    pools,
    metrics,
    log: createLogger('silent'),
    cache: opts.cache ?? null,
  });
  return { proxy, metrics };
}

test('a cache hit is answered synchronously from the cache; the pool is not asked', () => {
  const consul = fakePool('consul', '127.0.0.11');
  const c = fakeCache();
  const { proxy, metrics } = makeProxy({ cache: c.cache, consul: consul.pool });
  c.entries.set(
    'janus.service.consul/1/',
    encodeMessage({
      id: 0,
      flags: 0x8000 | FLAG.RD | 0x0080 | 0x0400,
      questions: [{ name: 'janus.service.consul', type: A, class: 1 }],
      answers: [aRR('janus.service.consul', '127.0.0.99', 17)],
      authorities: [],
      additionals: [],
    }),
  );
  const got = proxy.handle(queryBytes('JANUS.service.consul', A, { id: 0x0101 }), '127.0.0.1', true);
  assert.ok(Buffer.isBuffer(got), 'a hit is not a promise');
  const m = decodeMessage(got);
  assert.equal(m.id, 0x0101);
  assert.equal(m.flags & 0xf, RCODE.NOERROR);
  assert.deepEqual(
    m.answers.map((r) => [r.name, [...r.rdata].join('.'), r.ttl]),
    [['janus.service.consul', '127.0.0.99', 17]],
  );
  assert.deepEqual(consul.asked, []);
  assert.deepEqual(
    c.calls,
    [{ op: 'lookup', key: 'janus.service.consul/1/' }],
    'the key is the lowercased name, type and DO/CD bits',
  );
  assert.equal(metrics.cacheHits, 1);
  assert.equal(metrics.cacheMisses, 0);
});

test('a miss goes to the pool its name routes to, is offered to the cache, and the next ask is a hit', async () => {
  const consul = fakePool('consul', '127.0.0.11');
  const recursor = fakePool('recursor', '192.0.2.7');
  const c = fakeCache();
  const { proxy, metrics } = makeProxy({ cache: c.cache, consul: consul.pool, recursor: recursor.pool });

  const r1 = proxy.handle(queryBytes('janus.service.consul', A, { id: 1 }), '127.0.0.1', true);
  assert.ok(r1 instanceof Promise, 'a miss waits for the pool');
  const m1 = decodeMessage((await r1)!);
  assert.equal(m1.id, 1);
  assert.deepEqual(
    m1.answers.map((r) => [r.name, [...r.rdata].join('.')]),
    [['janus.service.consul', '127.0.0.11']],
  );
  assert.deepEqual(
    consul.asked.map((a) => a.name),
    ['janus.service.consul'],
  );
  assert.equal(recursor.asked.length, 0);

  const m2 = decodeMessage((await proxy.handle(queryBytes('www.example.org', A, { id: 2 }), '127.0.0.1', true))!);
  assert.deepEqual(
    m2.answers.map((r) => [r.name, [...r.rdata].join('.')]),
    [['www.example.org', '192.0.2.7']],
  );
  assert.deepEqual(
    recursor.asked.map((a) => a.name),
    ['www.example.org'],
  );
  assert.equal(consul.asked.length, 1);

  assert.deepEqual(
    c.calls.filter((x) => x.op === 'store'),
    [
      { op: 'store', key: 'janus.service.consul/1/', canonicalName: 'janus.service.consul', pool: 'consul' },
      { op: 'store', key: 'www.example.org/1/', canonicalName: 'www.example.org', pool: 'recursor' },
    ],
  );
  // Stored: the miss reply is the cache's own rendering (peek), so hits and the miss agree.
  assert.deepEqual(
    c.calls.filter((x) => x.op === 'peek').map((x) => x.key),
    ['janus.service.consul/1/', 'www.example.org/1/'],
  );

  const r3 = proxy.handle(queryBytes('janus.service.consul', A, { id: 3 }), '127.0.0.1', true);
  assert.ok(Buffer.isBuffer(r3), 'the second ask is a hit');
  assert.equal(decodeMessage(r3).id, 3);
  assert.equal(consul.asked.length, 1, 'the pool was asked once');
  assert.equal(metrics.cacheMisses, 2);
  assert.equal(metrics.cacheHits, 1);
});

test('an answer the cache declines is rendered by the handler and not found later', async () => {
  const consul = fakePool('consul', '127.0.0.11');
  const c = fakeCache(() => false);
  const { proxy } = makeProxy({ cache: c.cache, consul: consul.pool });
  for (const id of [7, 8]) {
    const m = decodeMessage((await proxy.handle(queryBytes('web.service.consul', A, { id }), '127.0.0.1', false))!);
    assert.equal(m.id, id);
    assert.equal(m.answers.length, 1);
  }
  assert.equal(consul.asked.length, 2, 'nothing was kept, so both went upstream');
  assert.deepEqual(
    c.calls.filter((x) => x.op === 'peek'),
    [],
    'nothing stored, nothing to peek',
  );
});

test('an alias name (starlings) asks the pool under consul and is answered under the alias', async () => {
  const consul = fakePool('consul', '127.0.0.12');
  const c = fakeCache(() => false); // the handler renders the alias itself
  const { proxy } = makeProxy({ cache: c.cache, consul: consul.pool });
  const m = decodeMessage(
    (await proxy.handle(queryBytes('Janus.Service.Starlings', A, { id: 9 }), '127.0.0.1', true))!,
  );
  assert.deepEqual(
    consul.asked.map((a) => a.name),
    ['janus.service.consul'],
    'the pool sees the canonical name',
  );
  assert.equal(m.id, 9);
  assert.deepEqual(
    m.questions,
    [{ name: 'Janus.Service.Starlings', type: A, class: 1 }],
    'the question as the client spelled it',
  );
  assert.equal(m.answers.length, 1);
  assert.equal(m.answers[0]!.name.toLowerCase(), 'janus.service.starlings', 'owner names mapped back under the alias');
  assert.equal([...m.answers[0]!.rdata].join('.'), '127.0.0.12');
  assert.deepEqual(
    c.calls.filter((x) => x.op !== 'lookup'),
    [{ op: 'store', key: 'janus.service.consul/1/', canonicalName: 'janus.service.consul', pool: 'consul' }],
    'the alias and the Consul name share one cache key',
  );
});

test('a pool failure becomes SERVFAIL with an Extended DNS Error, or the stale answer the cache has', async () => {
  for (const [reason, ede] of [
    ['timeout', EDE.NO_REACHABLE_AUTHORITY],
    ['network', EDE.NETWORK_ERROR],
    ['servfail', EDE.NETWORK_ERROR],
  ] as const) {
    const consul = fakePool('consul', reason);
    const c = fakeCache();
    const { proxy } = makeProxy({ cache: c.cache, consul: consul.pool });
    const m = decodeMessage(
      (await proxy.handle(queryBytes('janus.service.consul', A, { id: 0x0bad }), '127.0.0.1', true))!,
    );
    assert.equal(m.id, 0x0bad, reason);
    assert.equal(m.flags & 0xf, RCODE.SERVFAIL, reason);
    assert.ok(m.flags & 0x8000, 'QR');
    assert.ok(m.flags & 0x0080, 'RA');
    assert.deepEqual(m.questions, [{ name: 'janus.service.consul', type: A, class: 1 }]);
    assert.deepEqual(m.answers, []);
    assert.equal(edeCode(m), ede, reason);
    assert.deepEqual(
      c.calls.map((x) => x.op),
      ['lookup', 'refreshFailed', 'store', 'stale'], // the failure starts the entry's recheck window (item 5)
      reason,
    );
  }

  const consul = fakePool('consul', 'timeout');
  const c = fakeCache();
  c.setStale(
    encodeMessage({
      id: 0,
      flags: 0x8000 | FLAG.RD | 0x0080,
      questions: [{ name: 'janus.service.consul', type: A, class: 1 }],
      answers: [aRR('janus.service.consul', '127.0.0.11', 30)],
      authorities: [],
      additionals: [],
    }),
  );
  const { proxy, metrics } = makeProxy({ cache: c.cache, consul: consul.pool });
  const m = decodeMessage((await proxy.handle(queryBytes('janus.service.consul', A, { id: 5 }), '127.0.0.1', true))!);
  assert.equal(m.id, 5);
  assert.equal(m.flags & 0xf, RCODE.NOERROR, 'stale beats SERVFAIL');
  assert.equal(m.answers.length, 1);
  assert.equal(metrics.servedStale, 1);
});

test('malformed queries get FORMERR (or NOTIMP, or nothing) before the cache and the pools', async () => {
  const consul = fakePool('consul', '127.0.0.11');
  const c = fakeCache();
  const { proxy } = makeProxy({ cache: c.cache, consul: consul.pool });
  const good = queryBytes('janus.service.consul', A, { id: 0x7777, edns: false });

  const cases: [string, Buffer, number | null][] = [
    ['question cut short', good.subarray(0, good.length - 3), RCODE.FORMERR],
    [
      'QDCOUNT 2',
      (() => {
        const b = Buffer.from(good);
        b.writeUInt16BE(2, 4);
        return b;
      })(),
      RCODE.FORMERR,
    ],
    [
      'QDCOUNT 0',
      (() => {
        const b = Buffer.from(good);
        b.writeUInt16BE(0, 4);
        return b;
      })(),
      RCODE.FORMERR,
    ],
    [
      'label longer than 63',
      (() => {
        const b = Buffer.from(good);
        b[12] = 64;
        return b;
      })(),
      RCODE.FORMERR,
    ],
    ['OPT as the question type', queryBytes('x.consul', TYPE.OPT, { id: 0x7777 }), RCODE.FORMERR],
    [
      'opcode 2 (STATUS)',
      (() => {
        const b = Buffer.from(good);
        b.writeUInt16BE(2 << 11, 2);
        return b;
      })(),
      RCODE.NOTIMP,
    ],
    [
      'a response (QR set)',
      (() => {
        const b = Buffer.from(good);
        b.writeUInt16BE(0x8000, 2);
        return b;
      })(),
      null,
    ],
    ['shorter than a header', good.subarray(0, 11), null],
  ];
  for (const [what, buf, rcode] of cases) {
    const got = await proxy.handle(buf, '127.0.0.1', true);
    if (rcode === null) {
      assert.equal(got, null, what);
      continue;
    }
    assert.ok(Buffer.isBuffer(got), what);
    assert.equal(got.readUInt16BE(0), 0x7777, `${what}: ID kept`);
    assert.ok(got.readUInt16BE(2) & 0x8000, `${what}: QR`);
    assert.equal(got.readUInt16BE(2) & 0xf, rcode, what);
  }
  assert.deepEqual(consul.asked, []);
  assert.deepEqual(c.calls, []);
});

test('a name outside every zone with no recursors is REFUSED without asking anyone', async () => {
  const consul = fakePool('consul', '127.0.0.11');
  const c = fakeCache();
  const { proxy } = makeProxy({ cache: c.cache, consul: consul.pool });
  const m = decodeMessage((await proxy.handle(queryBytes('www.example.org', A, { id: 3 }), '127.0.0.1', true))!);
  assert.equal(m.flags & 0xf, RCODE.REFUSED);
  assert.deepEqual(consul.asked, []);
  assert.deepEqual(c.calls, []);
});

const STALE_JANUS = () =>
  encodeMessage({
    id: 0,
    flags: 0x8000 | FLAG.RD | 0x0080,
    questions: [{ name: 'janus.service.consul', type: A, class: 1 }],
    answers: [aRR('janus.service.consul', '127.0.0.11', 30)],
    authorities: [],
    additionals: [],
  });

test('item 5: every upstream of the pool marked down: the stale entry, or SERVFAIL + EDE 22, at once; the pool is not asked', () => {
  const consul = fakePool('consul', '127.0.0.11');
  Object.assign(consul.pool, { status: () => [{ upstream: 'a', healthy: false, lastOkAt: 0 }] });
  const c = fakeCache();
  const { proxy, metrics } = makeProxy({ cache: c.cache, consul: consul.pool });
  const r = proxy.handle(queryBytes('janus.service.consul', A, { id: 6 }), '127.0.0.1', true);
  assert.ok(Buffer.isBuffer(r), 'answered synchronously');
  const m = decodeMessage(r);
  assert.equal(m.flags & 0xf, RCODE.SERVFAIL);
  assert.equal(edeCode(m), EDE.NO_REACHABLE_AUTHORITY);
  c.setStale(STALE_JANUS());
  const r2 = proxy.handle(queryBytes('janus.service.consul', A, { id: 7 }), '127.0.0.1', true);
  assert.ok(Buffer.isBuffer(r2), 'answered synchronously');
  assert.equal(decodeMessage(r2).flags & 0xf, RCODE.NOERROR);
  assert.equal(decodeMessage(r2).id, 7);
  assert.equal(metrics.servedStale, 1);
  assert.equal(consul.asked.length, 0, 'nobody asked');
});

test('item 5: a stale entry in its recheck window is the answer at once; the pool is not asked', () => {
  const consul = fakePool('consul', '127.0.0.11');
  const c = fakeCache();
  c.setStale(STALE_JANUS(), true);
  const { proxy } = makeProxy({ cache: c.cache, consul: consul.pool });
  const r = proxy.handle(queryBytes('janus.service.consul', A, { id: 8 }), '127.0.0.1', true);
  assert.ok(Buffer.isBuffer(r), 'answered synchronously');
  assert.equal(decodeMessage(r).id, 8);
  assert.equal(consul.asked.length, 0, 'nobody asked');
});

test('item 5: the client-response timer: stale at staleClientTimeoutMs while the exchange goes on; its failure starts the recheck window', async () => {
  let finish: (r: ExchangeResult) => void = () => {};
  let asked = 0;
  const pool = {
    name: 'consul',
    exchange: () => {
      asked++;
      return new Promise<ExchangeResult>((resolve) => (finish = resolve));
    },
  } as unknown as UpstreamPool;
  const c = fakeCache();
  c.setStale(STALE_JANUS());
  const { proxy, metrics } = makeProxy({ cache: c.cache, consul: pool, staleClientTimeoutMs: 20 });
  const r = proxy.handle(queryBytes('janus.service.consul', A, { id: 9 }), '127.0.0.1', true);
  assert.ok(r instanceof Promise);
  const m = decodeMessage((await r)!);
  assert.equal(m.id, 9);
  assert.equal(m.flags & 0xf, RCODE.NOERROR, 'the stale answer, before the exchange ended');
  assert.equal(metrics.servedStale, 1);
  assert.equal(proxy.pending, 1, 'the refresh is still in flight');
  finish({ failure: 'timeout', upstream: 'a' });
  await new Promise((res) => setImmediate(res));
  assert.equal(proxy.pending, 0);
  assert.equal(metrics.servedStale, 1, 'the late failure answered nobody a second time');
  assert.ok(
    c.calls.some((x) => x.op === 'refreshFailed'),
    'the failure was reported to the cache',
  );
  assert.equal(asked, 1);
});
