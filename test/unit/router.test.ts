/**
 * Unit tests of routing (src/router.ts): the longest suffix on a label boundary picks the pool
 * (forward zones over the recursors, an alias nested under the Consul domain or the other way
 * round, reverse zones to the agents, the root to the recursors or REFUSED when there are none,
 * as Consul does), the metric label/index of each route, and reverseZonesOf's exact zone names
 * for octet (RFC 1035 §3.5) and nibble (RFC 3596 §2.5) aligned and unaligned prefixes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Router, reverseZonesOf, type Route, type RouterConfig } from '../../src/query/router.js';

function router(over: Partial<RouterConfig> = {}): Router {
  return new Router({
    domain: 'consul',
    aliases: ['starlings'],
    reverseZones: ['10.in-addr.arpa'],
    zones: ['corp', 'lab.corp'],
    hasRecursors: true,
    ...over,
  });
}

/** Every route's zoneIndex names its zoneLabel (the counters are indexed by it). */
function assertIndexed(r: Router, route: Route): void {
  assert.equal(r.zoneLabels[route.zoneIndex], route.zoneLabel, `zoneLabels[${route.zoneIndex}]`);
}

test('forward zones: the longest suffix wins over shorter zones and the recursors', () => {
  const r = router();
  const corp = r.route('db.corp');
  assert.deepEqual(corp, { kind: 'zone', zoneLabel: 'corp', zoneIndex: 3, pool: 'zone:corp', alias: null });
  assert.deepEqual(r.route('corp'), corp, 'the zone apex itself');
  const lab = r.route('x.y.lab.corp');
  assert.deepEqual(lab, { kind: 'zone', zoneLabel: 'lab.corp', zoneIndex: 4, pool: 'zone:lab.corp', alias: null });
  assert.deepEqual(r.route('lab.corp'), lab);
  assert.deepEqual(r.route('notlab.corp'), corp, 'label boundary: notlab.corp is under corp, not lab.corp');
  const rec = r.route('example.org');
  assert.deepEqual(rec, { kind: 'recursor', zoneLabel: 'recursor', zoneIndex: 2, pool: 'recursor', alias: null });
  assert.deepEqual(r.route('xcorp'), rec, 'label boundary: xcorp is not under corp');
  assert.deepEqual(r.route('corp.example'), rec, 'corp as a left label does not count');
  for (const n of ['db.corp', 'x.lab.corp', 'example.org', 'web.service.consul', 'a.starlings', ''])
    assertIndexed(r, r.route(n));
});

test('the Consul domain, its aliases and names equal to either', () => {
  const r = router();
  const consul: Route = { kind: 'consul', zoneLabel: 'consul', zoneIndex: 0, pool: 'consul', alias: null };
  assert.deepEqual(r.route('consul'), consul, 'a name equal to the domain');
  assert.deepEqual(r.route('web.service.consul'), consul);
  assert.deepEqual(r.route('web.service.dc1.consul'), consul);
  assert.deepEqual(r.route('notconsul').kind, 'recursor');
  const alias: Route = { kind: 'consul', zoneLabel: 'alias', zoneIndex: 1, pool: 'consul', alias: 'starlings' };
  assert.deepEqual(r.route('janus.service.starlings'), alias, 'alias route carries the alias');
  assert.deepEqual(r.route('starlings'), alias, 'a name equal to the alias');
  assertIndexed(r, alias);
  assertIndexed(r, consul);
});

test('an alias under the Consul domain, and a domain under an alias: longest wins', () => {
  // Alias nested in the domain: names under the alias are the alias's, the rest the domain's.
  const nested = router({ aliases: ['svc.consul'] });
  assert.equal(nested.route('web.svc.consul').alias, 'svc.consul');
  assert.equal(nested.route('svc.consul').zoneLabel, 'alias');
  assert.equal(nested.route('web.service.consul').alias, null);
  assert.equal(nested.route('web.service.consul').zoneLabel, 'consul');
  // Domain nested in an alias.
  const deep = router({ domain: 'consul.example.com', aliases: ['example.com'] });
  assert.equal(deep.route('web.service.consul.example.com').alias, null);
  assert.equal(deep.route('web.service.consul.example.com').zoneLabel, 'consul');
  assert.equal(deep.route('consul.example.com').zoneLabel, 'consul');
  assert.equal(deep.route('www.example.com').alias, 'example.com');
  assert.equal(deep.route('consul').kind, 'recursor', 'plain consul is not the domain here');
  // Several aliases keep their own names.
  const many = router({ aliases: ['starlings', 'murmuration.local'] });
  assert.equal(many.route('a.starlings').alias, 'starlings');
  assert.equal(many.route('a.b.murmuration.local').alias, 'murmuration.local');
  assert.equal(many.route('local').kind, 'recursor');
  // A forward zone inside the Consul domain is more specific than the domain.
  const z = router({ zones: ['ext.consul'] });
  assert.equal(z.route('a.ext.consul').pool, 'zone:ext.consul');
  assert.equal(z.route('a.service.consul').pool, 'consul');
});

test('reverse zones go to the agents; the root goes to the recursors or is refused', () => {
  const r = router({ reverseZones: ['10.in-addr.arpa', '8.b.d.0.1.0.0.2.ip6.arpa'] });
  assert.deepEqual(r.route('1.0.0.10.in-addr.arpa'), {
    kind: 'consul',
    zoneLabel: 'consul',
    zoneIndex: 0,
    pool: 'consul',
    alias: null,
  });
  assert.equal(r.route('10.in-addr.arpa').pool, 'consul');
  assert.equal(r.route('1.0.0.11.in-addr.arpa').kind, 'recursor');
  assert.equal(r.route('in-addr.arpa').kind, 'recursor');
  assert.equal(r.route('1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa').pool, 'consul');
  assert.equal(r.route('').kind, 'recursor', 'the root with recursors');

  const none = router({ hasRecursors: false });
  const refused: Route = { kind: 'refused', zoneLabel: 'recursor', zoneIndex: 2, pool: '', alias: null };
  assert.deepEqual(none.route(''), refused, 'the root without recursors');
  assert.deepEqual(none.route('example.org'), refused);
  assert.deepEqual(none.route('1.0.0.11.in-addr.arpa'), refused);
  assert.equal(none.route('web.service.consul').kind, 'consul', '.consul never needs a recursor');
  assert.equal(none.route('db.corp').kind, 'zone');
  assertIndexed(none, refused);
});

test('zone indexes match zoneLabels', () => {
  const zones = ['corp', 'lab.corp', 'example.net', 'in.example.net'];
  const r = router({ zones });
  assert.deepEqual(r.zoneLabels, ['consul', 'alias', 'recursor', ...zones]);
  for (const z of zones) {
    const route = r.route('host.' + z);
    assert.equal(route.zoneLabel, z);
    assert.equal(route.zoneIndex, r.zoneLabels.indexOf(z));
    assert.equal(route.pool, 'zone:' + z);
    assertIndexed(r, route);
  }
  assert.deepEqual(router({ zones: [] }).zoneLabels, ['consul', 'alias', 'recursor']);
});

// ------------------------------------------------------------------------------------------------

const v4 = (s: string) => Buffer.from(s.split('.').map(Number));
/** 16 bytes of an IPv6 address written as 32 hex digits (spaces allowed). */
const v6 = (hex: string) => {
  const b = Buffer.from(hex.replace(/\s+/g, '').padEnd(32, '0'), 'hex');
  assert.equal(b.length, 16);
  return b;
};

test('reverseZonesOf IPv4: octet-aligned and unaligned prefixes', () => {
  assert.deepEqual(reverseZonesOf(4, v4('10.0.0.0'), 8), ['10.in-addr.arpa']);
  assert.deepEqual(reverseZonesOf(4, v4('192.168.1.0'), 24), ['1.168.192.in-addr.arpa']);
  assert.deepEqual(reverseZonesOf(4, v4('192.168.1.77'), 32), ['77.1.168.192.in-addr.arpa']);
  assert.deepEqual(reverseZonesOf(4, v4('0.0.0.0'), 0), ['in-addr.arpa']);
  assert.deepEqual(reverseZonesOf(4, v4('8.8.8.8'), 0), ['in-addr.arpa'], '/0 ignores the address');
  const rfc1918 = reverseZonesOf(4, v4('172.16.0.0'), 12);
  assert.equal(rfc1918.length, 16);
  assert.deepEqual(
    rfc1918,
    Array.from({ length: 16 }, (_, i) => `${16 + i}.172.in-addr.arpa`),
  );
  assert.equal(rfc1918[0], '16.172.in-addr.arpa');
  assert.equal(rfc1918[15], '31.172.in-addr.arpa');
  // Host bits set in the address are masked off first.
  assert.deepEqual(reverseZonesOf(4, v4('172.20.1.2'), 12), rfc1918);
  assert.deepEqual(reverseZonesOf(4, v4('10.1.2.3'), 8), ['10.in-addr.arpa']);
  assert.deepEqual(reverseZonesOf(4, v4('192.168.3.0'), 23), ['2.168.192.in-addr.arpa', '3.168.192.in-addr.arpa']);
  assert.deepEqual(
    reverseZonesOf(4, v4('100.64.0.0'), 10),
    Array.from({ length: 64 }, (_, i) => `${64 + i}.100.in-addr.arpa`),
  );
  assert.deepEqual(reverseZonesOf(4, v4('10.0.0.5'), 31), ['4.0.0.10.in-addr.arpa', '5.0.0.10.in-addr.arpa']);
});

test('reverseZonesOf IPv6: nibble-aligned and unaligned prefixes', () => {
  assert.deepEqual(reverseZonesOf(6, v6('fd'), 8), ['d.f.ip6.arpa']);
  assert.deepEqual(reverseZonesOf(6, v6('fd12 3456 789a'), 8), ['d.f.ip6.arpa']);
  assert.deepEqual(reverseZonesOf(6, v6('2001 0db8'), 32), ['8.b.d.0.1.0.0.2.ip6.arpa']);
  // /33: the ninth nibble keeps its top bit (0) and the three below run 0..7.
  assert.deepEqual(
    reverseZonesOf(6, v6('2001 0db8'), 33),
    Array.from({ length: 8 }, (_, k) => `${k}.8.b.d.0.1.0.0.2.ip6.arpa`),
  );
  assert.deepEqual(
    reverseZonesOf(6, v6('2001 0db8 8000'), 33),
    Array.from({ length: 8 }, (_, k) => `${(8 + k).toString(16)}.8.b.d.0.1.0.0.2.ip6.arpa`),
  );
  assert.deepEqual(reverseZonesOf(6, v6('fc'), 7), ['c.f.ip6.arpa', 'd.f.ip6.arpa']);
  assert.deepEqual(reverseZonesOf(6, v6('fe80'), 10), [
    '8.e.f.ip6.arpa',
    '9.e.f.ip6.arpa',
    'a.e.f.ip6.arpa',
    'b.e.f.ip6.arpa',
  ]);
  assert.deepEqual(reverseZonesOf(6, v6(''), 0), ['ip6.arpa']);
  const host = v6('2001 0db8 0000 0000 0000 0000 0000 0001');
  assert.deepEqual(reverseZonesOf(6, host, 128), [
    '1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa',
  ]);
});
