/**
 * Reloads, unit by unit: the handler finishes each query with the configuration it started with
 * and never hands the listener a promise that rejects; the metrics' zone labels follow the running
 * zones; a cache flush by name canonicalises the name as queries are; and a reload (the real
 * wiring, in-process, real sockets on 127.0.0.1) builds everything before it starts anything.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { QueryHandler, type QueryHandlerDeps } from '../../src/query/handler.js';
import type { ResponseCache } from '../../src/cache/answer-cache.js';
import { AnswerCache } from '../../src/cache/answer-cache.js';
import { cacheKey, cacheKeyPrefix } from '../../src/cache/key.js';
import { Router, type Route } from '../../src/query/router.js';
import { Metrics, TRANSPORT, SOURCE } from '../../src/observability/metrics.js';
import type { Logger } from '../../src/observability/log.js';
import { createLogger } from '../../src/observability/log.js';
import { parseQuery, scanReply, questionName, type Query } from '../../src/dns/wire.js';
import { RCODE, FLAG, TYPE } from '../../src/dns/constants.js';
import { decodeMessage, encodeMessage } from '../../src/dns/message.js';
import type { ExchangeResult } from '../../src/upstream/types.js';
import type { UpstreamPool } from '../../src/upstream/pool.js';
import { loadConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { startApp } from '../../src/app.js';
import { startScripted, reply, isProbe, a, metricValue, type Scripted } from '../support/scripted-upstream.js';
import { freePort } from '../support/proc.js';
import { waitFor } from '../support/wait.js';

const A = TYPE.A;

function queryBytes(name: string, id = 0x4242): Buffer {
  return encodeMessage({
    id,
    flags: FLAG.RD,
    questions: [{ name, type: A, class: 1 }],
    answers: [],
    authorities: [],
    additionals: [],
  });
}

function answerFor(question: Buffer, qStart: number, ip: string): ExchangeResult {
  const name = questionName(question, qStart);
  const bytes = encodeMessage({
    id: 0,
    flags: 0x8000 | FLAG.RD | FLAG.RA,
    questions: [{ name, type: A, class: 1 }],
    answers: [{ name, type: A, class: 1, ttl: 30, rdata: Buffer.from(ip.split('.').map(Number)) }],
    authorities: [],
    additionals: [],
  });
  const layout = scanReply(bytes);
  assert.ok(layout);
  return { reply: bytes, layout, upstream: 'fake' };
}

/** A pool whose exchanges wait until the test settles them (resolve with an answer, or reject). */
function heldPool() {
  const held: { name: string; resolve(ip: string): void; reject(err: Error): void }[] = [];
  const pool = {
    name: 'consul',
    exchange(question: Buffer, qStart: number): Promise<ExchangeResult> {
      return new Promise((resolve, reject) => {
        held.push({
          name: questionName(question, qStart),
          resolve: (ip) => resolve(answerFor(question, qStart, ip)),
          reject,
        });
      });
    },
  };
  return { pool: pool as unknown as UpstreamPool, held };
}

/** A cache that keeps what it is offered and renders it back; `throwOnStore` stands for a bug. */
function keepingCache(throwOnStore = false) {
  const entries = new Map<string, Buffer>();
  const calls: string[] = [];
  const render = (key: string, q: Query): Buffer | null => {
    const e = entries.get(key);
    if (!e) return null;
    const out = Buffer.from(e);
    out.writeUInt16BE(q.id, 0);
    return out;
  };
  const cache: ResponseCache = {
    lookup: (key, q) => render(key, q),
    store: (key, _q, _r, _c, result) => {
      calls.push('store');
      if (throwOnStore) throw new Error('store failed');
      if ('failure' in result) return false;
      entries.set(key, Buffer.from(result.reply));
      return true;
    },
    peek: (key, q) => {
      calls.push('peek');
      return render(key, q);
    },
    stale: () => null,
  };
  return { cache, calls };
}

/** A logger that records error lines (the rest is discarded). */
function recordingLog() {
  const errors: { obj: object; msg?: string }[] = [];
  const silent = createLogger('silent');
  const log = new Proxy(silent, {
    get(target, prop, receiver) {
      if (prop === 'error') return (obj: object, msg?: string) => errors.push({ obj, msg });
      return Reflect.get(target, prop, receiver) as unknown;
    },
  });
  return { log, errors };
}

function deps(pool: UpstreamPool, cache: ResponseCache | null, log: Logger): QueryHandlerDeps {
  const router = new Router({ domain: 'consul', aliases: [], reverseZones: [], zones: [], hasRecursors: false });
  return {
    settings: { domain: 'consul', maxUdpSize: 1232, udpAnswerLimit: 3, logQueries: false },
    router,
    pools: new Map([['consul', pool]]),
    metrics: new Metrics({ version: 'x', zones: router.zoneLabels, enabled: false }),
    log,
    cache,
  };
}

test('a miss in flight across a reconfiguration that disables the cache is answered with the configuration it started with', async () => {
  const p1 = heldPool();
  const c1 = keepingCache();
  const { log, errors } = recordingLog();
  const handler = new QueryHandler(deps(p1.pool, c1.cache, log));
  const r = handler.handle(queryBytes('slow.service.consul', 7), '127.0.0.1', true);
  assert.ok(r instanceof Promise);
  const p2 = heldPool();
  handler.reconfigure(deps(p2.pool, null, log));
  p1.held[0]!.resolve('192.0.2.19');
  const m = decodeMessage((await r)!);
  assert.equal(m.flags & 0xf, RCODE.NOERROR);
  assert.equal(m.id, 7);
  assert.deepEqual(c1.calls, ['store', 'peek'], 'stored in and rendered by the cache it started with');
  assert.equal(errors.length, 0);
  assert.equal(handler.pending, 0);
});

test('a query after a reconfiguration never joins an exchange of the old configuration', async () => {
  const p1 = heldPool();
  const { log } = recordingLog();
  const handler = new QueryHandler(deps(p1.pool, keepingCache().cache, log));
  const r1 = handler.handle(queryBytes('x.service.consul', 1), '127.0.0.1', true) as Promise<Buffer | null>;
  const p2 = heldPool();
  handler.reconfigure(deps(p2.pool, null, log));
  const r2 = handler.handle(queryBytes('x.service.consul', 2), '127.0.0.1', true) as Promise<Buffer | null>;
  assert.equal(p2.held.length, 1, 'the new pool is asked');
  p1.held[0]!.resolve('192.0.2.1');
  p2.held[0]!.resolve('192.0.2.2');
  const [m1, m2] = [decodeMessage((await r1)!), decodeMessage((await r2)!)];
  assert.deepEqual([...m1.answers[0]!.rdata], [192, 0, 2, 1]);
  assert.deepEqual([...m2.answers[0]!.rdata], [192, 0, 2, 2]);
});

test('handle() never returns a promise that rejects: an exchange that rejects is SERVFAIL with the question, logged once, and not joined later', async () => {
  const p = heldPool();
  const { log, errors } = recordingLog();
  const handler = new QueryHandler(deps(p.pool, keepingCache().cache, log));
  const r = handler.handle(queryBytes('bug.service.consul', 9), '127.0.0.1', true);
  assert.ok(r instanceof Promise);
  p.held[0]!.reject(new Error('a bug below the handler'));
  const out = await r; // rejects (and fails the test) without the fix
  assert.ok(out);
  const m = decodeMessage(out);
  assert.equal(m.flags & 0xf, RCODE.SERVFAIL);
  assert.equal(m.id, 9);
  assert.deepEqual(
    m.questions.map((q) => q.name),
    ['bug.service.consul'],
  );
  assert.equal(errors.length, 1);
  assert.equal(errors[0]!.msg, 'query handler failed');
  assert.equal(handler.pending, 0, 'the drain count is not left behind');
  const again = handler.handle(queryBytes('bug.service.consul', 10), '127.0.0.1', true);
  assert.equal(p.held.length, 2, 'the next query asks again instead of joining the failed exchange');
  p.held[1]!.resolve('192.0.2.10');
  assert.equal(decodeMessage((await again)!).flags & 0xf, RCODE.NOERROR);
});

test('an error after the exchange (the cache throws while storing) is SERVFAIL, not a rejection', async () => {
  const p = heldPool();
  const { log, errors } = recordingLog();
  const handler = new QueryHandler(deps(p.pool, keepingCache(true).cache, log));
  const r = handler.handle(queryBytes('x.service.consul', 3), '127.0.0.1', true);
  p.held[0]!.resolve('192.0.2.3');
  const m = decodeMessage((await r)!);
  assert.equal(m.flags & 0xf, RCODE.SERVFAIL);
  assert.equal(errors.length, 1);
  assert.equal(handler.pending, 0);
});

// ---------------------------------------------------------------------------------------------
// Zone labels

async function requestsByZone(m: Metrics, transport: string): Promise<Record<string, number>> {
  const text = await m.metricsText();
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const x = /^consul_dns_proxy_requests_total\{transport="(\w+)",zone="([^"]+)",type="A"\} (\d+)/.exec(line);
    if (x && x[1] === transport) out[x[2]!] = Number(x[3]);
  }
  return out;
}

test('setZones: an index counts under the label the running configuration gives it; counts already made stay with their label', async () => {
  const m = new Metrics({ version: 'x', zones: ['consul', 'alias', 'recursor', 'a.test'] });
  m.request(TRANSPORT.udp, 3, A);
  m.response(3, RCODE.NOERROR, SOURCE.upstream);
  // A reload renames a.test to b.test and adds c.test: index 3 is b.test now, 4 is c.test.
  m.setZones(['consul', 'alias', 'recursor', 'b.test', 'c.test']);
  m.request(TRANSPORT.udp, 3, A);
  m.request(TRANSPORT.udp, 4, A);
  m.request(TRANSPORT.udp, 4, A);
  m.request(TRANSPORT.tcp, 0, A);
  m.request(TRANSPORT.udp, 9, A); // an index no zone has: not counted anywhere
  assert.deepEqual(await requestsByZone(m, 'udp'), { 'a.test': 1, 'b.test': 1, 'c.test': 2 });
  assert.deepEqual(await requestsByZone(m, 'tcp'), { consul: 1 });
  assert.equal(m.zoneIndex('c.test'), 4);
  // Back to a.test at index 3: it continues from its own count.
  m.setZones(['consul', 'alias', 'recursor', 'a.test']);
  m.request(TRANSPORT.udp, 3, A);
  assert.deepEqual(await requestsByZone(m, 'udp'), { 'a.test': 2, 'b.test': 1, 'c.test': 2 });
  const text = await m.metricsText();
  assert.equal(metricValue(text, 'consul_dns_proxy_responses_total', { zone: 'a.test', rcode: 'NOERROR' }), 1);
});

// ---------------------------------------------------------------------------------------------
// Cache flush by name

test('cacheKeyPrefix: a name under an alias, with a trailing dot or in upper case, is keyed as its queries are', () => {
  const aliases = ['starlings', 'dc.example'];
  const p = (n: string) => cacheKeyPrefix(n, 'consul', aliases);
  assert.equal(p('janus.service.starlings'), 'janus.service.consul/');
  assert.equal(p('Janus.Service.STARLINGS.'), 'janus.service.consul/');
  assert.equal(p('janus.service.consul.'), 'janus.service.consul/');
  assert.equal(p('JANUS.service.consul'), 'janus.service.consul/');
  assert.equal(p('starlings'), 'consul/');
  assert.equal(p('x.dc.example'), 'x.consul/');
  assert.equal(p('www.example.org.'), 'www.example.org/');
  assert.equal(p('notstarlings'), 'notstarlings/', 'a suffix only on a label boundary');
  assert.equal(p('a\\.starlings'), 'a\\.starlings/', 'an escaped dot is inside a label');
  // The longest suffix wins, as in routing: a domain under an alias stays the domain.
  assert.equal(cacheKeyPrefix('x.consul.starlings', 'consul.starlings', ['starlings']), 'x.consul.starlings/');
});

test('AnswerCache.flush/entries by an alias name reach the canonical entry; by service in any case too', () => {
  const metrics = new Metrics({ version: 'x', zones: ['consul', 'alias', 'recursor'], enabled: false });
  const cache = new AnswerCache(
    {
      maxEntries: 100,
      maxBytes: 1 << 20,
      consulTtl: 60,
      negativeMaxTtl: 3600,
      maxTtl: 86400,
      staleConsul: 300,
      staleRecursors: 86400,
      udpAnswerLimit: 3,
      maxUdpSize: 1232,
      domain: 'consul',
      aliases: ['starlings'],
    },
    metrics,
    null,
  );
  const route: Route = { kind: 'consul', zoneLabel: 'consul', zoneIndex: 0, pool: 'consul', alias: null };
  const fill = () => {
    const buf = queryBytes('janus.service.consul');
    const parsed = parseQuery(buf);
    assert.equal(parsed.kind, 'query');
    const q = (parsed as { q: Query }).q;
    const key = cacheKey('janus.service.consul', A, false, false);
    const stored = cache.store(key, q, route, 'janus.service.consul', answerFor(buf, 12, '127.0.0.5'), Date.now());
    assert.ok(stored, 'the answer is cached');
  };
  fill();
  assert.equal(cache.entries('JANUS.service.starlings.').length, 1);
  assert.equal(cache.flush({ name: 'janus.service.starlings' }), 1);
  assert.equal(cache.size, 0);
  fill();
  assert.equal(cache.flush({ name: 'Janus.Service.Consul.' }), 1);
  fill();
  assert.equal(cache.flush({ service: 'JANUS' }), 1);
  assert.equal(cache.size, 0);
});

// ---------------------------------------------------------------------------------------------
// A reload on the real wiring

function configFrom(args: string[], yaml: string): Config {
  return loadConfig({
    argv: ['--listen', '127.0.0.1:0', '--metrics', '127.0.0.1:0', '--config', 'test.yaml', ...args],
    env: {},
    readFile: () => yaml,
  }).config;
}

async function scripted(t: { after(fn: () => unknown): void }): Promise<Scripted> {
  const u = await startScripted((q) => (isProbe(q) ? reply(q) : reply(q, { answers: [a(q.rawName, '192.0.2.1')] })));
  t.after(() => u.stop());
  return u;
}

const probes = (u: Scripted) => u.queries.filter((q) => isProbe(q)).length;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('a reload that fails (an unreadable TLS file, an invalid probe) starts nothing: no probe, no series of its upstreams; the running one goes on', async (t) => {
  const agent = await scripted(t);
  const newAgent = await scripted(t);
  const closed = await freePort();
  const base = `upstream:\n  probeIntervalMs: 100\n`;
  const app = await startApp(
    configFrom(['--agent', agent.address, '--consul-http', `http://127.0.0.1:${closed}`], base),
    createLogger('silent'),
  );
  t.after(() => app.close());
  await assert.rejects(
    app.reload(
      configFrom(
        ['--agent', newAgent.address],
        `consul:\n  http: ["https://127.0.0.1:${closed}"]\n  tls:\n    caFile: /nonexistent/ca.pem\n` + base,
      ),
    ),
    /cannot read \/nonexistent\/ca.pem/,
  );
  // Fails after the agents' pool is built: that pool is closed, never started.
  const bad = structuredClone(
    configFrom(['--agent', newAgent.address, '--consul-http', `http://127.0.0.1:${closed}`], base),
  );
  bad.upstream.recursorProbe = 'not a probe';
  bad.recursors = [newAgent.address];
  await assert.rejects(app.reload(bad), /expected "NAME TYPE"/);
  const before = probes(agent);
  await sleep(500);
  assert.equal(probes(newAgent), 0, 'the failed configurations never probed');
  assert.ok(probes(agent) > before, 'the running configuration still probes');
  const text = await app.metrics.metricsText();
  assert.equal(
    metricValue(text, 'consul_dns_proxy_upstream_healthy', { upstream: newAgent.address }),
    null,
    'no series for an upstream of a configuration that never ran',
  );
});

test('two reloads that overlap: the one that finishes last runs, the other is closed (it stops probing)', async (t) => {
  const agent = await scripted(t);
  const first = await scripted(t);
  const second = await scripted(t);
  const closed = await freePort();
  // A replaced configuration's pools close once its queries' deadline has passed.
  const base = `upstream:\n  probeIntervalMs: 100\n  timeoutMs: 200\n  hedgeMs: 20\n  deadlineMs: 200\n`;
  const cfg = (up: Scripted) =>
    configFrom(['--agent', up.address, '--consul-http', `http://127.0.0.1:${closed}`], base);
  const app = await startApp(cfg(agent), createLogger('silent'));
  t.after(() => app.close());
  await Promise.all([app.reload(cfg(first)), app.reload(cfg(second))]);
  await sleep(500);
  const [a0, b0] = [probes(first), probes(second)];
  await sleep(600);
  const more = [probes(first) - a0, probes(second) - b0].sort((x, y) => x - y);
  assert.ok(more[0]! <= 1 && more[1]! >= 3, `probes in 600 ms by the two configurations: ${more.join(', ')}`);
});

test('a miss in flight over TCP across a reload is answered: the old pools close once their queries are done', async (t) => {
  // The agent truncates over UDP and answers over TCP 600 ms later; the reload lands in between.
  const agent = await startScripted((q) => {
    if (isProbe(q)) return reply(q);
    if (q.transport === 'udp') return reply(q, { flags: 0x0200 });
    return { bytes: reply(q, { answers: [a(q.rawName, '192.0.2.22')] }), delayMs: 600 };
  });
  t.after(() => agent.stop());
  const closed = await freePort();
  const cfg = (probeIntervalMs: number) =>
    configFrom(
      ['--agent', agent.address, '--consul-http', `http://127.0.0.1:${closed}`],
      `upstream:\n  probeIntervalMs: ${probeIntervalMs}\n`,
    );
  const app = await startApp(cfg(1000), createLogger('silent'));
  t.after(() => app.close());
  const answer = app.proxy.handle(queryBytes('tcp.service.consul', 22), '127.0.0.1', true);
  assert.ok(answer instanceof Promise);
  await waitFor(() => agent.queries.some((q) => q.transport === 'tcp'), { what: 'the retry over TCP' });
  await app.reload(cfg(2000));
  const m = decodeMessage((await answer)!);
  assert.equal(m.flags & 0xf, RCODE.NOERROR);
  assert.deepEqual([...m.answers[0]!.rdata], [192, 0, 2, 22]);
  const overTcp = agent.queriesFor('tcp.service.consul').filter((q) => q.transport === 'tcp').length;
  assert.equal(overTcp, 1, 'the exchange over TCP was not cut by the reload (and asked again)');
});
