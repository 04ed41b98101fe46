/**
 * Unit tests of the answer cache (issue 5) with synthetic replies and a fake clock: the
 * cacheability rules, watch protection, TTL aging, the service tie of every lookup form, health
 * invalidation, serve-stale, bounds, and that every rendering a hit sends equals what the proxy's
 * miss path sends without a cache (up to ID, TTL and record order). No sockets, no sleeps.
 */
import { test } from 'node:test';
import { cacheKey } from '../../src/cache/key.js';
import assert from 'node:assert/strict';
import {
  AnswerCache,
  cacheableTtl,
  STALE_NONE,
  STALE_READY,
  STALE_RECHECK,
  type CacheSettings,
  type WatchView,
} from '../../src/cache/answer-cache.js';
import { applyTtlRules } from '../../src/cache/rules.js';
import { encodeMessage, decodeMessage, nameToWire, type Message, type Record as RR } from '../../src/dns/message.js';
import { parseQuery, scanReply, type Query } from '../../src/dns/wire.js';
import { TYPE, RCODE, FLAG, EDNS_OPTION_EDE } from '../../src/dns/constants.js';
import { Metrics } from '../../src/observability/metrics.js';
import { QueryHandler } from '../../src/query/handler.js';
import { Router, type Route } from '../../src/query/router.js';
import { type ExchangeResult } from '../../src/upstream/types.js';
import { type UpstreamPool } from '../../src/upstream/pool.js';
import { createLogger } from '../../src/observability/log.js';
import { serviceKey } from '../../src/consul/service-key.js';

// ---- builders ---------------------------------------------------------------------------------

const OPT_RR = (size = 65467): RR => ({ name: '', type: TYPE.OPT, class: size, ttl: 0, rdata: Buffer.alloc(0) });
const aRR = (name: string, ip: string, ttl = 0): RR => ({
  name,
  type: TYPE.A,
  class: 1,
  ttl,
  rdata: Buffer.from(ip.split('.').map(Number)),
});
function srvRR(name: string, target: string, port: number, ttl = 0): RR {
  const t = nameToWire(target);
  const rdata = Buffer.alloc(6 + t.length);
  rdata.writeUInt16BE(1, 0);
  rdata.writeUInt16BE(1, 2);
  rdata.writeUInt16BE(port, 4);
  t.copy(rdata, 6);
  return { name, type: TYPE.SRV, class: 1, ttl, rdata };
}
function soaRR(zone: string, ttl: number, minimum: number): RR {
  const m = nameToWire('ns.' + zone),
    r = nameToWire('hostmaster.' + zone);
  const tail = Buffer.alloc(20);
  [1700000000, 3600, 600, 86400, minimum].forEach((v, i) => tail.writeUInt32BE(v, i * 4));
  return { name: zone, type: TYPE.SOA, class: 1, ttl, rdata: Buffer.concat([m, r, tail]) };
}

interface ReplySpec {
  rcode?: number;
  flags?: number;
  answers?: RR[];
  authorities?: RR[];
  additionals?: RR[];
  extRcode?: number;
  /** RDATA of the upstream's OPT (its options). */
  optRdata?: Buffer;
}

/** A reply as the agent sends it: QR, AA, the question echoed, our EDNS OPT echoed. */
function reply(
  qname: string,
  qtype: number,
  spec: ReplySpec = {},
): { reply: Buffer; layout: ReturnType<typeof scanReply> & object; upstream: string } {
  const opt = OPT_RR();
  if (spec.extRcode) opt.ttl = spec.extRcode << 24;
  if (spec.optRdata) opt.rdata = spec.optRdata;
  const m: Message = {
    id: 0,
    flags: FLAG.QR | FLAG.AA | FLAG.RD | (spec.flags ?? 0) | (spec.rcode ?? 0),
    questions: [{ name: qname, type: qtype, class: 1 }],
    answers: spec.answers ?? [],
    authorities: spec.authorities ?? [],
    additionals: [...(spec.additionals ?? []), opt],
  };
  const buf = encodeMessage(m);
  const layout = scanReply(buf);
  assert.ok(layout, 'synthetic reply scans');
  return { reply: buf, layout, upstream: 'test' };
}

interface QOpts {
  id?: number;
  rd?: boolean;
  edns?: boolean;
  dnssecOk?: boolean;
  cd?: boolean;
}
function query(name: string, qtype: number, o: QOpts = {}): { buf: Buffer; q: Query } {
  const qn = nameToWire(name);
  const edns = o.edns ?? true;
  const buf = Buffer.alloc(12 + qn.length + 4 + (edns ? 11 : 0));
  buf.writeUInt16BE(o.id ?? 0x1234, 0);
  buf.writeUInt16BE(((o.rd ?? true) ? FLAG.RD : 0) | (o.cd ? FLAG.CD : 0), 2);
  buf.writeUInt16BE(1, 4);
  buf.writeUInt16BE(edns ? 1 : 0, 10);
  qn.copy(buf, 12);
  buf.writeUInt16BE(qtype, 12 + qn.length);
  buf.writeUInt16BE(1, 14 + qn.length);
  if (edns) {
    const o2 = 16 + qn.length;
    buf.writeUInt16BE(TYPE.OPT, o2 + 1);
    buf.writeUInt16BE(1232, o2 + 3);
    buf.writeUInt32BE(o.dnssecOk ? 0x8000 : 0, o2 + 5);
  }
  const p = parseQuery(buf);
  assert.equal(p.kind, 'query');
  return { buf, q: (p as { q: Query }).q };
}

const CONSUL: Route = { kind: 'consul', zoneLabel: 'consul', zoneIndex: 0, pool: 'consul', alias: null };
const ALIAS: Route = { kind: 'consul', zoneLabel: 'alias', zoneIndex: 1, pool: 'consul', alias: 'starlings' };
const RECURSOR: Route = { kind: 'recursor', zoneLabel: 'recursor', zoneIndex: 2, pool: 'recursor', alias: null };

/** The key exactly as proxy.ts builds it: canonical name, type, DO, CD. */
const keyOf = (canonical: string, q: Query) => cacheKey(canonical, q.qtype, q.dnssecOk, (q.flags & 0x10) !== 0);
const canonicalOf = (name: string) => name.toLowerCase().replace(/\.starlings$/, '.consul');

const metrics = () => new Metrics({ version: 't', zones: ['consul', 'alias', 'recursor'], enabled: false });

/** A health watcher stand-in: tests say when each watch went live. */
class FakeWatch implements WatchView {
  live = new Map<string, number>();
  ensured: string[] = [];
  touched: string[] = [];
  ensure(s: string, dc?: string) {
    this.ensured.push(serviceKey(s, dc));
  }
  touch(s: string, dc?: string) {
    this.touched.push(serviceKey(s, dc));
  }
  liveSince(s: string, dc?: string) {
    return this.live.get(serviceKey(s, dc)) ?? 0;
  }
}

const SETTINGS: CacheSettings = {
  maxEntries: 1000,
  maxBytes: 1 << 24,
  consulTtl: 60,
  negativeMaxTtl: 3600,
  maxTtl: 86400,
  staleConsul: 300,
  staleRecursors: 86400,
  udpAnswerLimit: 3,
  maxUdpSize: 1232,
  domain: 'consul',
  aliases: ['starlings'],
};

function setup(over: Partial<CacheSettings> = {}) {
  const clock = { t: 1000 }; // lru-cache: a clock at 0 means "no TTL" (libraries.md §3)
  const watch = new FakeWatch();
  const cache = new AnswerCache({ ...SETTINGS, ...over }, metrics(), watch, () => clock.t);
  /** Client asks `name`; the cache is offered the agent's reply for the canonical name, fetched at `fetchedAt`. */
  const miss = (
    name: string,
    qtype: number,
    spec: ReplySpec,
    o: { route?: Route; fetchedAt?: number; q?: QOpts } = {},
  ) => {
    const { q } = query(name, qtype, o.q);
    const canonical = canonicalOf(q.name);
    const route = o.route ?? (q.name.endsWith('.starlings') ? ALIAS : CONSUL);
    const r = reply(canonical, qtype, spec);
    return cache.store(keyOf(canonical, q), q, route, canonical, r, o.fetchedAt ?? clock.t);
  };
  const hit = (name: string, qtype: number, o: QOpts & { udp?: boolean; route?: Route } = {}) => {
    const { buf, q } = query(name, qtype, o);
    const route = o.route ?? (q.name.endsWith('.starlings') ? ALIAS : CONSUL);
    return cache.lookup(keyOf(canonicalOf(q.name), q), q, buf, route, o.udp ?? true);
  };
  const stale = (name: string, qtype: number, o: QOpts & { udp?: boolean } = {}) => {
    const { buf, q } = query(name, qtype, o);
    const route = q.name.endsWith('.starlings') ? ALIAS : CONSUL;
    return cache.stale(keyOf(canonicalOf(q.name), q), q, buf, route, o.udp ?? true);
  };
  return { clock, watch, cache, miss, hit, stale };
}

const JANUS_A = (ttl = 0): ReplySpec => ({
  answers: [aRR('janus.service.consul', '127.0.0.11', ttl), aRR('janus.service.consul', '127.0.0.12', ttl)],
});
const ttlsOf = (b: Buffer) => {
  const m = decodeMessage(b);
  return [...m.answers, ...m.authorities, ...m.additionals.filter((r) => r.type !== TYPE.OPT)].map((r) => r.ttl);
};
const edeOf = (b: Buffer): number | null => {
  const opt = decodeMessage(b).additionals.find((r) => r.type === TYPE.OPT);
  if (!opt || opt.rdata.length < 6 || opt.rdata.readUInt16BE(0) !== EDNS_OPTION_EDE) return null;
  return opt.rdata.readUInt16BE(4);
};

// ---- cacheableTtl -------------------------------------------------------------------------------

test('cacheableTtl: positive answers, RFC 2308 negatives, and the never-cached rcodes', () => {
  const L = (spec: ReplySpec, qtype: number = TYPE.A) => reply('x.service.consul', qtype, spec).layout;
  assert.equal(
    cacheableTtl(L({ answers: [aRR('x.service.consul', '1.2.3.4', 0)] }), 3600),
    0,
    'Consul TTL 0: cacheable, 0 s of its own',
  );
  assert.equal(
    cacheableTtl(L({ answers: [aRR('x', '1.2.3.4', 50), aRR('x', '1.2.3.5', 20)] }), 3600),
    20,
    'smallest TTL',
  );
  assert.equal(
    cacheableTtl(L({ rcode: RCODE.NXDOMAIN, authorities: [soaRR('consul', 0, 0)] }), 3600),
    -1,
    "Consul's SOA MINIMUM 0: never",
  );
  assert.equal(
    cacheableTtl(L({ rcode: RCODE.NXDOMAIN, authorities: [soaRR('consul', 300, 60)] }), 3600),
    60,
    'min(SOA TTL, MINIMUM)',
  );
  assert.equal(
    cacheableTtl(L({ rcode: RCODE.NXDOMAIN, authorities: [soaRR('consul', 30, 600)] }), 3600),
    30,
    'min(SOA TTL, MINIMUM)',
  );
  assert.equal(
    cacheableTtl(L({ rcode: RCODE.NXDOMAIN, authorities: [soaRR('consul', 7200, 7200)] }), 3600),
    3600,
    'capped by negativeMaxTtl',
  );
  assert.equal(cacheableTtl(L({ authorities: [soaRR('consul', 300, 60)] }, TYPE.AAAA), 3600), 60, 'NODATA with SOA');
  assert.equal(cacheableTtl(L({}, TYPE.AAAA), 3600), -1, 'NODATA without SOA (Consul node lookups): never');
  assert.equal(cacheableTtl(L({ rcode: RCODE.NXDOMAIN }), 3600), -1, 'NXDOMAIN without SOA: never');
  for (const rcode of [RCODE.SERVFAIL, RCODE.REFUSED, RCODE.FORMERR, RCODE.NOTIMP]) {
    assert.equal(cacheableTtl(L({ rcode, answers: [aRR('x', '1.2.3.4', 60)] }), 3600), -1, `rcode ${rcode}: never`);
    assert.equal(cacheableTtl(L({ rcode }), 3600), -1, `rcode ${rcode}: never`);
  }
  assert.equal(cacheableTtl(L({ flags: FLAG.TC, answers: [aRR('x', '1.2.3.4', 60)] }), 3600), -1, 'truncated: never');
  assert.equal(cacheableTtl(L({ extRcode: 1, answers: [aRR('x', '1.2.3.4', 60)] }), 3600), -1, 'extended rcode: never');
});

// ---- watch protection and TTLs ------------------------------------------------------------------

test('a service answer fetched while its watch was live is held for consulTtl; clients see TTL 0', () => {
  const { clock, watch, miss, hit } = setup();
  watch.live.set('janus', 500);
  assert.ok(miss('janus.service.consul', TYPE.A, JANUS_A(0)));
  assert.deepEqual(watch.ensured, ['janus']);
  clock.t = 1000 + 59_999;
  const r = hit('janus.service.consul', TYPE.A);
  assert.ok(r, 'held for consulTtl');
  assert.deepEqual(ttlsOf(r), [0, 0], "clients see Consul's TTL, not our holding time");
  assert.ok(watch.touched.includes('janus'), 'a hit keeps the watch from going idle');
  clock.t = 1000 + 60_000;
  assert.equal(hit('janus.service.consul', TYPE.A), null, 'gone after consulTtl');
});

test('no protection unless the watch was live since BEFORE the fetch, and only while it stays live', () => {
  const s = setup();
  // Not live at all: Consul's TTL (0) rules.
  assert.ok(s.miss('janus.service.consul', TYPE.A, JANUS_A(0)));
  assert.equal(s.hit('janus.service.consul', TYPE.A), null);
  // Live from the same millisecond the fetch started: the answer may predate the watch's baseline.
  s.watch.live.set('janus', 2000);
  s.clock.t = 2000;
  assert.ok(s.miss('janus.service.consul', TYPE.A, JANUS_A(0), { fetchedAt: 2000 }));
  assert.equal(s.hit('janus.service.consul', TYPE.A), null);
  // Fetched after: protected.
  s.clock.t = 2001;
  assert.ok(s.miss('janus.service.consul', TYPE.A, JANUS_A(0), { fetchedAt: 2001 }));
  s.clock.t = 3000;
  assert.ok(s.hit('janus.service.consul', TYPE.A));
  // The watch fails (HTTP API down): nothing could invalidate the entry, so it is not fresh.
  s.watch.live.delete('janus');
  assert.equal(s.hit('janus.service.consul', TYPE.A), null);
  // It recovers: a new live period that began after the fetch does not protect the old answer.
  s.watch.live.set('janus', 2500);
  assert.equal(s.hit('janus.service.consul', TYPE.A), null);
});

test("Consul's own TTL without a watch, aged for clients; the longer of own TTL and consulTtl with one", () => {
  const s = setup();
  assert.ok(s.miss('janus.service.consul', TYPE.A, JANUS_A(30), { fetchedAt: 1000 }));
  s.clock.t = 1000 + 10_500;
  assert.deepEqual(ttlsOf(s.hit('janus.service.consul', TYPE.A)!), [20, 20], 'aged by whole seconds since the fetch');
  s.clock.t = 1000 + 29_999;
  assert.ok(s.hit('janus.service.consul', TYPE.A));
  s.clock.t = 1000 + 30_000;
  assert.equal(s.hit('janus.service.consul', TYPE.A), null);
  // With a live watch, held to consulTtl while the client TTL floors at 0.
  s.watch.live.set('janus', 1);
  assert.ok(s.miss('janus.service.consul', TYPE.A, JANUS_A(30)));
  s.clock.t += 45_000;
  assert.deepEqual(ttlsOf(s.hit('janus.service.consul', TYPE.A)!), [0, 0]);
  // service_ttl above consulTtl: the longer one.
  assert.ok(s.miss('janus.service.consul', TYPE.A, JANUS_A(100)));
  s.clock.t += 90_000;
  assert.deepEqual(ttlsOf(s.hit('janus.service.consul', TYPE.A)!), [10, 10]);
});

test('node, .addr., .query., SOA and NS answers keep Consul TTL even with a live watch', () => {
  const s = setup();
  for (const k of ['janus', 'janus-1', 'web']) s.watch.live.set(k, 1);
  const cases: [string, number, ReplySpec][] = [
    ['janus-1.node.consul', TYPE.A, { answers: [aRR('janus-1.node.consul', '127.0.0.11')] }],
    ['7f00000b.addr.dc1.consul', TYPE.A, { answers: [aRR('7f00000b.addr.dc1.consul', '127.0.0.11')] }],
    ['web.query.consul', TYPE.A, { answers: [aRR('web.query.consul', '127.0.0.11')] }],
    ['janus.connect.consul', TYPE.A, { answers: [aRR('janus.connect.consul', '127.0.0.11')] }],
    ['janus.service.consul', TYPE.SOA, { answers: [soaRR('consul', 0, 0)] }],
    [
      'janus.service.consul',
      TYPE.NS,
      {
        answers: [
          {
            name: 'janus.service.consul',
            type: TYPE.NS,
            class: 1,
            ttl: 0,
            rdata: nameToWire('sim-agent.node.dc1.consul'),
          },
        ],
      },
    ],
  ];
  for (const [name, t, spec] of cases) {
    assert.ok(s.miss(name, t, spec), `${name} stored (as last-known-good)`);
    assert.equal(s.hit(name, t), null, `${name} type ${t}: Consul TTL 0, not held`);
  }
  assert.deepEqual(s.watch.ensured, [], 'no watch started for them');
  // PTR (a reverse zone routed to the agents): not under the domain, never tied to a service.
  assert.ok(
    s.miss(
      '11.0.0.127.in-addr.arpa',
      TYPE.PTR,
      {
        answers: [
          {
            name: '11.0.0.127.in-addr.arpa',
            type: TYPE.PTR,
            class: 1,
            ttl: 0,
            rdata: nameToWire('janus-1.node.dc1.consul'),
          },
        ],
      },
      { route: CONSUL },
    ),
  );
  assert.equal(s.hit('11.0.0.127.in-addr.arpa', TYPE.PTR, { route: CONSUL }), null);
});

// ---- service keys and invalidation --------------------------------------------------------------

test('every form of a service lookup, under every alias, is tied to the one service the watch names', () => {
  const s = setup();
  s.watch.live.set('janus', 1);
  s.watch.live.set('janus@dc1', 1);
  s.watch.live.set('web', 1);
  const srv = (owner: string): ReplySpec => ({
    answers: [srvRR(owner, 'janus-1.node.dc1.consul', 8800), srvRR(owner, 'janus-2.node.dc1.consul', 8800)],
    additionals: [aRR('janus-1.node.dc1.consul', '127.0.0.11'), aRR('janus-2.node.dc1.consul', '127.0.0.12')],
  });
  const forms: [string, number, ReplySpec][] = [
    ['janus.service.consul', TYPE.A, JANUS_A()],
    ['janus.service.consul', TYPE.SRV, srv('janus.service.consul')],
    ['server1.janus.service.consul', TYPE.A, { answers: [aRR('server1.janus.service.consul', '127.0.0.11')] }],
    ['_janus._tcp.service.consul', TYPE.SRV, srv('_janus._tcp.service.consul')],
    ['_janus._server1.service.consul', TYPE.SRV, srv('_janus._server1.service.consul')],
    ['_janus._tcp.consul', TYPE.SRV, srv('_janus._tcp.consul')],
    [
      'JaNuS.SeRvIcE.StArLiNgS',
      TYPE.AAAA,
      { answers: [{ name: 'janus.service.consul', type: TYPE.AAAA, class: 1, ttl: 0, rdata: Buffer.alloc(16, 1) }] },
    ],
  ];
  for (const [name, t, spec] of forms) assert.ok(s.miss(name, t, spec), `${name} stored`);
  assert.ok(s.miss('janus.service.dc1.consul', TYPE.A, JANUS_A()));
  assert.ok(s.miss('web.service.consul', TYPE.A, { answers: [aRR('web.service.consul', '10.0.0.1')] }));
  assert.deepEqual(
    [...new Set(s.watch.ensured)].sort(),
    ['janus', 'janus@dc1', 'web'],
    'the watch keys health.ts uses (serviceKey)',
  );
  s.clock.t += 1000;
  // Alias and canonical share ONE entry: the alias hit is served from the canonical miss.
  assert.ok(s.hit('janus.service.starlings', TYPE.A), 'alias hit from the canonical entry');
  assert.ok(s.hit('server1.janus.service.starlings', TYPE.A));
  assert.ok(s.hit('janus.service.consul', TYPE.AAAA), 'canonical hit from the alias entry');
  for (const [name, t] of forms) assert.ok(s.hit(name, t), `${name} fresh before the change`);

  const dropped = s.cache.invalidateService('janus');
  assert.equal(dropped, forms.length, 'every form at once, one entry each');
  for (const [name, t] of forms) {
    assert.equal(s.hit(name, t), null, `${name} dropped`);
    assert.equal(s.stale(name, t), null, `${name} never served stale after a health change`);
  }
  assert.ok(s.hit('janus.service.dc1.consul', TYPE.A), 'the dc-qualified lookup has its own watch (janus@dc1)');
  assert.ok(s.hit('web.service.consul', TYPE.A), 'other services untouched');
  assert.equal(s.cache.invalidateService('janus', 'dc1'), 1);
  assert.equal(s.hit('janus.service.dc1.consul', TYPE.A), null);
});

test('an answer fetched before the last health change is not stored; one fetched after is', () => {
  const s = setup();
  s.watch.live.set('janus', 1);
  s.clock.t = 5000;
  s.cache.invalidateService('janus');
  assert.equal(
    s.miss('janus.service.consul', TYPE.A, JANUS_A(), { fetchedAt: 4000 }),
    false,
    'fetched before the change',
  );
  assert.equal(
    s.miss('janus.service.consul', TYPE.A, JANUS_A(), { fetchedAt: 5000 }),
    false,
    'same millisecond: may predate it',
  );
  assert.equal(s.hit('janus.service.consul', TYPE.A), null);
  s.clock.t = 5001;
  assert.ok(s.miss('janus.service.consul', TYPE.A, JANUS_A(), { fetchedAt: 5001 }));
  assert.ok(s.hit('janus.service.consul', TYPE.A));
});

test('SERVFAIL, REFUSED, truncated replies and failures are never stored; negatives per RFC 2308', () => {
  const s = setup();
  s.watch.live.set('janus', 1);
  assert.equal(s.miss('janus.service.consul', TYPE.A, { rcode: RCODE.SERVFAIL }), false);
  assert.equal(s.miss('janus.service.consul', TYPE.A, { rcode: RCODE.REFUSED }), false);
  assert.equal(
    s.miss('janus.service.consul', TYPE.A, { flags: FLAG.TC, answers: [aRR('janus.service.consul', '127.0.0.11')] }),
    false,
  );
  const { q } = query('janus.service.consul', TYPE.A);
  assert.equal(
    s.cache.store(
      keyOf('janus.service.consul', q),
      q,
      CONSUL,
      'janus.service.consul',
      { failure: 'timeout' },
      s.clock.t,
    ),
    false,
  );
  assert.equal(s.stale('janus.service.consul', TYPE.A), null, 'nothing to serve stale either');
  // "No healthy instance" with Consul's SOA MINIMUM 0 never sticks.
  assert.equal(
    s.miss('janus.service.consul', TYPE.A, { rcode: RCODE.NXDOMAIN, authorities: [soaRR('consul', 0, 0)] }),
    false,
  );
  // With soa.min_ttl 30: cached for 30 s, not watch-held, but a health change still drops it.
  assert.ok(s.miss('janus.service.consul', TYPE.A, { rcode: RCODE.NXDOMAIN, authorities: [soaRR('consul', 30, 30)] }));
  assert.deepEqual(s.watch.ensured, [], 'negative answers start no watch');
  s.clock.t += 5000;
  const nx = s.hit('janus.service.consul', TYPE.A);
  assert.equal(nx![3]! & 0xf, RCODE.NXDOMAIN);
  assert.deepEqual(ttlsOf(nx!), [25]);
  assert.equal(s.cache.invalidateService('janus'), 1);
  assert.equal(s.hit('janus.service.consul', TYPE.A), null);
});

// ---- serve-stale --------------------------------------------------------------------------------

test('item 5: after a failed refresh the stale entry is served at once for staleRecheckSeconds, then asked again', () => {
  const s = setup({ staleRecursors: 600, staleRecheckSeconds: 30 });
  const { q } = query('www.example', TYPE.A);
  const key = keyOf('www.example', q);
  assert.equal(s.cache.staleState(key), STALE_NONE, 'nothing cached');
  s.cache.refreshFailed(key); // no entry: nothing to mark
  assert.equal(s.cache.staleState(key), STALE_NONE);
  assert.ok(s.miss('www.example', TYPE.A, { answers: [aRR('www.example', '192.0.2.1', 10)] }, { route: RECURSOR }));
  assert.equal(s.cache.staleState(key), STALE_READY, 'fresh or stale, an entry to answer with');
  s.clock.t += 11_000; // expired
  assert.equal(s.cache.staleState(key), STALE_READY, 'expired, no failure yet: ask, answer stale after the timer');
  s.cache.refreshFailed(key);
  assert.equal(s.cache.staleState(key), STALE_RECHECK, 'refresh failed: stale at once');
  s.clock.t += 29_999;
  assert.equal(s.cache.staleState(key), STALE_RECHECK, 'still inside the 30 s window');
  s.clock.t += 1;
  assert.equal(s.cache.staleState(key), STALE_READY, 'window over: the upstreams are asked again');
  s.cache.refreshFailed(key);
  assert.equal(s.cache.staleState(key), STALE_RECHECK);
  assert.ok(s.miss('www.example', TYPE.A, { answers: [aRR('www.example', '192.0.2.2', 10)] }, { route: RECURSOR }));
  assert.equal(s.cache.staleState(key), STALE_READY, 'a successful refresh ends the window');
  s.clock.t += 600_000 + 10_000;
  assert.equal(s.cache.staleState(key), STALE_NONE, 'past the stale window');
  const off = setup({ staleRecursors: 600, staleRecheckSeconds: 0 });
  assert.ok(off.miss('www.example', TYPE.A, { answers: [aRR('www.example', '192.0.2.1', 10)] }, { route: RECURSOR }));
  off.clock.t += 11_000;
  off.cache.refreshFailed(key);
  assert.equal(off.cache.staleState(key), STALE_READY, 'staleRecheckSeconds 0: every query asks again');
});

test('items 7, 9: the TTL rules in place: top bit 0, maxTtl in every section, negative SOA min(TTL, MINIMUM, cap); idempotent', () => {
  const r = reply('nx.example', TYPE.A, {
    rcode: RCODE.NXDOMAIN,
    authorities: [soaRR('example', 0x80000001, 300), soaRR('example', 900, 60)],
    additionals: [aRR('ns.example', '192.0.2.1', 100_000)],
  });
  applyTtlRules(r.reply, r.layout, { maxTtl: 7200, negativeMaxTtl: 3600 });
  assert.deepEqual(ttlsOf(r.reply), [0, 900, 7200], 'the first SOA: top bit 0 → min(0, 300) = 0');
  assert.equal(r.layout.negTtl, 0);
  assert.equal(r.layout.minTtl, 0);
  const n = reply('nodata.example', TYPE.AAAA, { authorities: [soaRR('example', 3600, 1800)] });
  applyTtlRules(n.reply, n.layout, { maxTtl: 86400, negativeMaxTtl: 600 });
  assert.deepEqual(ttlsOf(n.reply), [600], 'NODATA: min(3600, 1800) capped by negativeMaxTtl');
  const before = Buffer.from(n.reply);
  applyTtlRules(n.reply, n.layout, { maxTtl: 86400, negativeMaxTtl: 600 });
  assert.deepEqual(n.reply, before, 'applying twice changes nothing');
  assert.equal(cacheableTtl(n.layout, 600), 600);
  const p = reply('www.example', TYPE.A, {
    answers: [aRR('www.example', '192.0.2.1', 0xffffffff)],
    authorities: [soaRR('example', 3600, 1)],
  });
  applyTtlRules(p.reply, p.layout, { maxTtl: 86400, negativeMaxTtl: 3600 });
  assert.deepEqual(ttlsOf(p.reply), [0, 3600], 'a positive answer keeps its SOA TTL (not negative)');
});

test('serve-stale (RFC 8767): TTL 30 and EDE 3 within staleSeconds, then nothing', () => {
  const s = setup({ staleConsul: 100 });
  assert.ok(s.miss('janus.service.consul', TYPE.A, JANUS_A(0), { fetchedAt: 1000 }));
  assert.equal(s.hit('janus.service.consul', TYPE.A), null, 'expired at once (Consul TTL 0, no watch)');
  s.clock.t = 1000 + 99_999;
  const st = s.stale('janus.service.consul', TYPE.A);
  assert.ok(st);
  assert.deepEqual(ttlsOf(st), [30, 30]);
  assert.equal(edeOf(st), 3, 'EDE 3 Stale Answer');
  const plain = s.stale('janus.service.starlings', TYPE.A, { edns: false });
  assert.ok(plain, 'alias and non-EDNS clients get it too (no OPT, so no EDE)');
  assert.equal(decodeMessage(plain).additionals.length, 0);
  assert.equal(decodeMessage(plain).answers[0]!.name, 'janus.service.starlings');
  s.clock.t = 1000 + 100_000;
  assert.equal(s.stale('janus.service.consul', TYPE.A), null, 'past staleSeconds');
  // Watch-held entries: the stale window starts when consulTtl ends.
  s.watch.live.set('janus', 1);
  const t0 = s.clock.t;
  assert.ok(s.miss('janus.service.consul', TYPE.A, JANUS_A(0)));
  s.clock.t = t0 + 60_000 + 99_999;
  assert.ok(s.stale('janus.service.consul', TYPE.A));
  // Recursor answers: their own TTL capped by maxTtl, staleRecursors.
  const r = setup({ maxTtl: 10, staleRecursors: 5 });
  assert.ok(r.miss('www.example', TYPE.A, { answers: [aRR('www.example', '192.0.2.1', 300)] }, { route: RECURSOR }));
  r.clock.t += 9_999;
  // Clients see the TTL clamped to maxTtl, aged (issue 13 item 7: as BIND's max-cache-ttl).
  assert.deepEqual(ttlsOf(r.hit('www.example', TYPE.A, { route: RECURSOR })!), [1]);
  r.clock.t += 1;
  assert.equal(r.hit('www.example', TYPE.A, { route: RECURSOR }), null, 'maxTtl caps the holding time');
  r.clock.t += 4_999;
  const { buf, q } = query('www.example', TYPE.A);
  assert.ok(r.cache.stale(keyOf('www.example', q), q, buf, RECURSOR, true));
  r.clock.t += 1;
  assert.equal(r.cache.stale(keyOf('www.example', q), q, buf, RECURSOR, true), null);
});

test("an upstream's Extended DNS Error is kept with the cached answer: every hit carries it, a stale one after EDE 3", () => {
  const text = Buffer.from('blocked here');
  const ede = Buffer.alloc(6 + text.length);
  ede.writeUInt16BE(EDNS_OPTION_EDE, 0);
  ede.writeUInt16BE(2 + text.length, 2);
  ede.writeUInt16BE(15, 4); // 15 Blocked
  text.copy(ede, 6);
  const cookie = Buffer.from([0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]); // hop by hop: not kept
  const s = setup({ staleRecursors: 100 });
  const spec: ReplySpec = {
    rcode: RCODE.NXDOMAIN,
    authorities: [soaRR('example', 300, 300)],
    optRdata: Buffer.concat([cookie, ede]),
  };
  assert.ok(s.miss('ads.example', TYPE.A, spec, { route: RECURSOR }));
  const optOf = (b: Buffer) => decodeMessage(b).additionals.find((r) => r.type === TYPE.OPT)!;
  const h = s.hit('ads.example', TYPE.A, { route: RECURSOR });
  assert.ok(h);
  assert.equal(h[3]! & 0xf, RCODE.NXDOMAIN);
  assert.deepEqual(optOf(h).rdata, ede, 'exactly the EDE option, the cookie is not passed on');
  assert.equal(optOf(h).class, 1232, "our own UDP size, not the upstream's");
  assert.equal(decodeMessage(s.hit('ads.example', TYPE.A, { route: RECURSOR, edns: false })!).additionals.length, 0);
  s.clock.t += 300_000 + 1;
  const { buf, q } = query('ads.example', TYPE.A);
  const st = s.cache.stale(keyOf('ads.example', q), q, buf, RECURSOR, true);
  assert.ok(st);
  const rd = optOf(st).rdata;
  assert.equal(rd.readUInt16BE(0), EDNS_OPTION_EDE);
  assert.equal(rd.readUInt16BE(4), 3, 'EDE 3 Stale Answer first');
  assert.deepEqual(rd.subarray(6), ede, "then the upstream's");
});

// ---- bounds -------------------------------------------------------------------------------------

test('bounded by entries and bytes; evicted entries leave the service index', () => {
  const s = setup({ maxEntries: 3 });
  s.watch.live.set('svc', 1);
  for (const n of [1, 2, 3, 4])
    assert.ok(
      s.miss(`t${n}.svc.service.consul`, TYPE.A, { answers: [aRR(`t${n}.svc.service.consul`, '10.0.0.' + n)] }),
    );
  assert.equal(s.cache.size, 3);
  assert.equal(s.hit('t1.svc.service.consul', TYPE.A), null, 'least recently used went first');
  assert.equal(s.cache.invalidateService('svc'), 3, 'the evicted key is no longer indexed');
  const b = setup({ maxBytes: 600 });
  b.watch.live.set('big', 1);
  const many = Array.from({ length: 20 }, (_, i) => aRR('big.service.consul', `10.0.1.${i}`));
  assert.equal(b.miss('big.service.consul', TYPE.A, { answers: many }), false, 'larger than maxBytes: not stored');
  assert.equal(b.cache.size, 0);
  assert.equal(b.cache.invalidateService('big'), 0);
});

// ---- renderings vs the miss path ----------------------------------------------------------------

/** A fake agent behind a real QueryHandler: answers like Consul (owner = the question as asked). */
function agentPool(spec: (qname: string, qtype: number) => ReplySpec) {
  let calls = 0;
  const pool = {
    exchange(question: Buffer, qStart: number, qEnd: number): Promise<ExchangeResult> {
      calls++;
      const qb = Buffer.concat([Buffer.alloc(12), question.subarray(qStart, qEnd)]);
      const m = decodeMessage(Buffer.concat([Buffer.from([0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]), qb.subarray(12)]));
      const qq = m.questions[0]!;
      const r = reply(qq.name, qq.type, spec(qq.name, qq.type));
      return new Promise((res) => setImmediate(() => res(r)));
    },
  };
  return { pool: pool as unknown as UpstreamPool, calls: () => calls };
}

function janusSpec(qname: string, qtype: number): ReplySpec {
  const n = 6;
  if (qtype === TYPE.SRV) {
    return {
      answers: Array.from({ length: n }, (_, i) => srvRR(qname, `janus-${i}.node.dc1.consul`, 8800 + i)),
      additionals: Array.from({ length: n }, (_, i) => [
        aRR(`janus-${i}.node.dc1.consul`, `127.0.0.${20 + i}`),
        {
          name: `janus-${i}.node.dc1.consul`,
          type: TYPE.TXT,
          class: 1,
          ttl: 0,
          rdata: Buffer.from('\x17consul-network-segment='),
        },
      ]).flat(),
    };
  }
  return { answers: Array.from({ length: n }, (_, i) => aRR(qname, `127.0.0.${20 + i}`)) };
}

function makeProxy(cache: AnswerCache | null, pool: UpstreamPool) {
  return new QueryHandler({
    settings: { domain: 'consul', maxUdpSize: 1232, udpAnswerLimit: 3, logQueries: false },
    router: new Router({ domain: 'consul', aliases: ['starlings'], reverseZones: [], zones: [], hasRecursors: false }),
    pools: new Map([['consul', pool]]),
    metrics: metrics(),
    log: createLogger('silent'),
    cache,
  });
}

/** Everything but ID, TTLs and record order. */
function normal(b: Buffer) {
  const m = decodeMessage(b);
  const rr = (r: RR) => `${r.name}|${r.type}|${r.class}|${r.type === TYPE.OPT ? r.ttl : ''}|${r.rdata.toString('hex')}`;
  return {
    flags: m.flags,
    questions: m.questions,
    answers: m.answers.map(rr).sort(),
    authorities: m.authorities.map(rr).sort(),
    additionals: m.additionals.map(rr).sort(),
  };
}

test('every rendering a hit sends equals what the miss path sends without a cache (up to ID, TTL, order)', async () => {
  const watch = new FakeWatch();
  watch.live.set('janus', 1);
  const cached = agentPool(janusSpec);
  const bare = agentPool(janusSpec);
  const cache = new AnswerCache(SETTINGS, metrics(), watch);
  const withCache = makeProxy(cache, cached.pool);
  const without = makeProxy(null, bare.pool);
  const names = ['janus.service.consul', 'JaNuS.SeRvIcE.CoNsUl', 'janus.service.starlings', 'jAnUs.SERVICE.starLINGS'];
  let id = 1;
  for (const qtype of [TYPE.A, TYPE.SRV]) {
    for (const name of names) {
      for (const edns of [true, false]) {
        for (const udp of [true, false]) {
          for (const rd of [true, false]) {
            const { buf } = query(name, qtype, { id: id++, edns, rd, dnssecOk: edns && rd });
            const want = (await without.handle(buf, '127.0.0.1', udp)) as Buffer;
            const fullWant = edns || !udp ? want : ((await without.handle(buf, '127.0.0.1', false)) as Buffer);
            const firstOrders = new Set<string>();
            for (let i = 0; i < 8; i++) {
              const got = (await withCache.handle(buf, '127.0.0.1', udp)) as Buffer;
              const what = `${name} type ${qtype} edns=${edns} udp=${udp} rd=${rd} #${i}`;
              if (edns || !udp) assert.deepEqual(normal(got), normal(want), what);
              else {
                // Trimmed to udpAnswerLimit: like Consul's per-query shuffle, each reply holds a
                // different subset; everything else is the same, and the subset is well formed.
                const g = normal(got),
                  w = normal(want),
                  all = normal(fullWant);
                assert.deepEqual(
                  { ...g, answers: g.answers.length, additionals: g.additionals.length },
                  { ...w, answers: w.answers.length, additionals: w.additionals.length },
                  what,
                );
                for (const a of g.answers) assert.ok(all.answers.includes(a), `${what}: ${a} is one of the instances`);
                for (const a of g.additionals) assert.ok(all.additionals.includes(a), `${what}: ${a}`);
                if (qtype === TYPE.SRV) {
                  const targets = decodeMessage(got).answers.map((r) => r.rdata.subarray(6).toString('latin1'));
                  const glue = decodeMessage(got)
                    .additionals.filter((r) => r.type === TYPE.A)
                    .map((r) => nameToWire(r.name).toString('latin1'));
                  assert.deepEqual(glue.sort(), targets.sort(), `${what}: glue for exactly the kept targets`);
                }
              }
              assert.equal(got.readUInt16BE(0), buf.readUInt16BE(0), `${what}: the client's ID`);
              assert.deepEqual(
                got.subarray(12, 12 + buf.length - 12 - (edns ? 11 : 0)),
                buf.subarray(12, buf.length - (edns ? 11 : 0)),
                `${what}: the client's exact question bytes`,
              );
              firstOrders.add(decodeMessage(got).answers[0]!.rdata.toString('hex'));
            }
            const full = edns || !udp;
            const m = decodeMessage(want);
            assert.equal(m.answers.length, full ? 6 : 3, 'udpAnswerLimit only for UDP without EDNS');
            if (qtype === TYPE.SRV && !full)
              assert.equal(m.additionals.length, 3, 'Additional resynced to the kept SRV targets');
            if (name.toLowerCase().endsWith('starlings')) {
              assert.ok(!JSON.stringify(normal(want)).includes('consul'), 'alias replies name no .consul');
            }
            assert.equal(firstOrders.size, 6, 'consecutive hits rotate through every instance');
          }
        }
      }
    }
  }
  assert.equal(
    cached.calls(),
    4,
    'one agent query per type and DO bit (in the key), for every name, alias, case, EDNS, transport and RD',
  );
  assert.equal(bare.calls(), names.length * 2 * (2 * 2 * 2 + 2), 'without a cache: every query');
});

test('identical misses in flight share one upstream query; its failure is seen once', async () => {
  let calls = 0;
  let release: (r: ExchangeResult) => void = () => {};
  const pool = {
    exchange: () => {
      calls++;
      return new Promise<ExchangeResult>((r) => {
        release = r;
      });
    },
  } as unknown as UpstreamPool;
  const cache = new AnswerCache(SETTINGS, metrics(), new FakeWatch());
  const p = makeProxy(cache, pool);
  const pending = Array.from({ length: 10 }, (_, i) =>
    p.handle(
      query(i % 2 ? 'janus.service.consul' : 'janus.service.starlings', TYPE.A, { id: i }).buf,
      '127.0.0.1',
      true,
    ),
  );
  assert.equal(calls, 1, 'ten clients (canonical and alias), one upstream query');
  release({ failure: 'timeout' });
  const replies = (await Promise.all(pending.map((r) => Promise.resolve(r)))) as Buffer[];
  for (const r of replies) assert.equal(r[3]! & 0xf, RCODE.SERVFAIL);
  assert.equal(cache.size, 0, 'the failure was not cached');
});
