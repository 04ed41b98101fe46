// consul/agree.ts: does a fetched answer agree with the healthy set a watch last reported? And the
// catalog watch's view of /v1/catalog/services (consul/health.ts catalogView).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { answerAgrees, ipKey, type DnsInstance } from '../../src/consul/agree.js';
import { catalogView, dnsView } from '../../src/consul/health.js';
import { nameToWire, type Message, type Record as RR } from '../../src/dns/message.js';
import { RCODE, TYPE } from '../../src/dns/constants.js';

const Q = 'web.service.consul';
const a = (ip: string, name = Q): RR => ({
  name,
  type: TYPE.A,
  class: 1,
  ttl: 0,
  rdata: Buffer.from(ip.split('.').map(Number)),
});
function srv(target: string, port: number): RR {
  const t = nameToWire(target);
  const rdata = Buffer.alloc(6 + t.length);
  rdata.writeUInt16BE(1, 0);
  rdata.writeUInt16BE(1, 2);
  rdata.writeUInt16BE(port, 4);
  t.copy(rdata, 6);
  return { name: Q, type: TYPE.SRV, class: 1, ttl: 0, rdata };
}
const msg = (qtype: number, rcode: number, answers: RR[], additionals: RR[] = []): Message => ({
  id: 0,
  flags: 0x8400 | rcode,
  questions: [{ name: Q, type: qtype, class: 1 }],
  answers,
  authorities: [],
  additionals,
});
const inst = (ip: string, port = 80, tags: string[] = []): DnsInstance => ({
  tags,
  primary: ipKey(ip),
  addrs: [ipKey(ip)],
  port,
});

test('ipKey: IPv4 and IPv6 by their bytes (any spelling), hostnames lowercased without the dot', () => {
  assert.equal(ipKey('10.0.0.1'), 'v4:0a000001');
  assert.equal(ipKey('::1'), ipKey('0:0:0:0:0:0:0:1'));
  assert.equal(ipKey('2001:db8::1'), 'v6:20010db8000000000000000000000001');
  assert.equal(ipKey('::ffff:10.0.0.1'), 'v6:00000000000000000000ffff0a000001');
  assert.equal(ipKey('Host.Example.'), 'h:host.example');
});

test('answerAgrees: A answers name only healthy instances, and all of them up to 3', () => {
  const two = [inst('10.0.0.1'), inst('10.0.0.2')];
  assert.ok(answerAgrees(two, undefined, TYPE.A, msg(TYPE.A, 0, [a('10.0.0.1'), a('10.0.0.2')])));
  assert.ok(
    !answerAgrees([inst('10.0.0.2')], undefined, TYPE.A, msg(TYPE.A, 0, [a('10.0.0.1'), a('10.0.0.2')])),
    'a dead instance named',
  );
  assert.ok(!answerAgrees(two, undefined, TYPE.A, msg(TYPE.A, 0, [a('10.0.0.2')])), 'a healthy instance left out');
  const five = [1, 2, 3, 4, 5].map((i) => inst(`10.0.0.${i}`));
  assert.ok(
    answerAgrees(five, undefined, TYPE.A, msg(TYPE.A, 0, [a('10.0.0.1'), a('10.0.0.4'), a('10.0.0.5')])),
    'trimmed to 3',
  );
  // A CNAME target's addresses (resolved by the recursors) are not judged.
  assert.ok(
    answerAgrees(
      two,
      undefined,
      TYPE.A,
      msg(TYPE.A, 0, [a('10.0.0.1'), a('10.0.0.2'), a('192.0.2.9', 'other.example')]),
    ),
  );
});

test('answerAgrees: SRV by port and target address; tags filter the set', () => {
  const set = [inst('10.0.0.1', 80, ['a']), inst('10.0.0.2', 81, ['b'])];
  const both = msg(
    TYPE.SRV,
    0,
    [srv('n1.node.dc1.consul', 80), srv('n2.node.dc1.consul', 81)],
    [a('10.0.0.1', 'n1.node.dc1.consul'), a('10.0.0.2', 'n2.node.dc1.consul')],
  );
  assert.ok(answerAgrees(set, undefined, TYPE.SRV, both));
  assert.ok(!answerAgrees(set, 'a', TYPE.SRV, both), 'the tag names one instance only');
  assert.ok(
    answerAgrees(
      set,
      'A',
      TYPE.SRV,
      msg(TYPE.SRV, 0, [srv('n1.node.dc1.consul', 80)], [a('10.0.0.1', 'n1.node.dc1.consul')]),
    ),
  );
  assert.ok(!answerAgrees(set, undefined, TYPE.SRV, msg(TYPE.SRV, 0, [srv('n1.node.dc1.consul', 99)])), 'unknown port');
});

test('answerAgrees: NXDOMAIN only with no healthy instance; NODATA only when instances exist but none of the family', () => {
  const v4 = [inst('10.0.0.1')];
  assert.ok(answerAgrees([], undefined, TYPE.A, msg(TYPE.A, RCODE.NXDOMAIN, [])));
  assert.ok(
    !answerAgrees(v4, undefined, TYPE.A, msg(TYPE.A, RCODE.NXDOMAIN, [])),
    'a lagging server still says NXDOMAIN',
  );
  assert.ok(answerAgrees(v4, 'nosuchtag', TYPE.A, msg(TYPE.A, RCODE.NXDOMAIN, [])), 'no instance with the tag');
  assert.ok(answerAgrees(v4, undefined, TYPE.AAAA, msg(TYPE.AAAA, 0, [])), 'AAAA of IPv4-only instances');
  assert.ok(!answerAgrees([inst('2001:db8::1')], undefined, TYPE.AAAA, msg(TYPE.AAAA, 0, [])));
  assert.ok(!answerAgrees([], undefined, TYPE.AAAA, msg(TYPE.AAAA, 0, [])), 'no instance: Consul says NXDOMAIN');
  assert.ok(!answerAgrees(v4, undefined, TYPE.A, msg(TYPE.A, RCODE.SERVFAIL, [])));
});

test('dnsView gives the healthy set; catalogView the service names, lowercased, tags not part of the hash', () => {
  const body = [
    {
      Node: { Node: 'n1', Address: '10.0.0.1', TaggedAddresses: { wan: '198.51.100.1' } },
      Service: { Service: 'web', Address: '', Port: 80, Tags: ['Primary'] },
      Checks: [{ Status: 'passing' }],
    },
    {
      Node: { Node: 'n2', Address: '10.0.0.2' },
      Service: { Service: 'web', Port: 80 },
      Checks: [{ Status: 'critical' }],
    },
  ];
  const v = dnsView(body, false);
  assert.equal(v.set.length, 1);
  assert.deepEqual(v.set[0]!.tags, ['primary']);
  assert.equal(v.set[0]!.primary, ipKey('10.0.0.1'));
  assert.ok(v.set[0]!.addrs.includes(ipKey('198.51.100.1')), 'WAN address too');
  const c1 = catalogView({ Web: ['a'], consul: [] });
  assert.deepEqual([...c1.names].sort(), ['consul', 'web']);
  assert.equal(catalogView({ consul: [], web: ['b', 'c'] }).hash, c1.hash);
  assert.notEqual(catalogView({ consul: [] }).hash, c1.hash);
  assert.throws(() => catalogView([]));
});
