// Tests for the Consul query-name parser (src/consul-names.ts) against the forms agent/dns.go
// `dispatch` accepts: keyword scan from the right, the SRV-only `_` rule, RFC 2782 names,
// dotted tags, locality labels, and the names Consul rejects (NXDOMAIN → kind 'other').

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConsulName } from '../../src/consul/names.js';

const A = 1,
  SRV = 33,
  AAAA = 28,
  TXT = 16;

test('service lookups: standard form, tags, datacenter', () => {
  const cases: [string, number, unknown][] = [
    ['web.service.consul', A, { kind: 'service', service: 'web' }],
    ['web.service.dc2.consul', A, { kind: 'service', service: 'web', dc: 'dc2' }],
    ['web.service.dc2.dc.consul', SRV, { kind: 'service', service: 'web', dc: 'dc2' }],
    ['primary.web.service.consul', SRV, { kind: 'service', service: 'web', tag: 'primary' }],
    // More than one label left of the service: joined into one tag (Consul 0.3 form).
    ['v1.primary.web.service.consul', A, { kind: 'service', service: 'web', tag: 'v1.primary' }],
    ['primary.web.service.dc1.consul', AAAA, { kind: 'service', service: 'web', tag: 'primary', dc: 'dc1' }],
  ];
  for (const [name, qt, want] of cases) assert.deepEqual(parseConsulName(name, 'consul', qt), want, name);
});

test('RFC 2782 form: _svc._tag[.service][.dc]; _tcp means no tag; SRV-only without .service', () => {
  const cases: [string, number, unknown][] = [
    ['_web._tcp.service.consul', SRV, { kind: 'service', service: 'web' }],
    ['_web._tcp.service.consul', A, { kind: 'service', service: 'web' }], // "works for A queries too when .service is present"
    ['_web._primary.service.consul', SRV, { kind: 'service', service: 'web', tag: 'primary' }],
    ['_janus._tcp.consul', SRV, { kind: 'service', service: 'janus' }],
    ['_janus._tcp.dc2.consul', SRV, { kind: 'service', service: 'janus', dc: 'dc2' }],
    ['_janus._udp.consul', SRV, { kind: 'service', service: 'janus', tag: 'udp' }],
    // Without .service the _ rule is SRV only: an A query finds no keyword → NXDOMAIN.
    ['_janus._tcp.consul', A, { kind: 'other' }],
    // The _ label is the keyword and stays a query part: foo._web → tag foo, service _web (as Consul does).
    ['foo._web.consul', SRV, { kind: 'service', service: '_web', tag: 'foo' }],
  ];
  for (const [name, qt, want] of cases) assert.deepEqual(parseConsulName(name, 'consul', qt), want, `${name}/${qt}`);
});

test('the rightmost keyword wins; labels left of it are the query', () => {
  // "node" is met first from the right, so this is a node lookup (node name "web.service.n1").
  assert.deepEqual(parseConsulName('web.service.n1.node.consul', 'consul', A), { kind: 'node' });
  // Left of the keyword anything goes, keywords included: a service called "node".
  assert.deepEqual(parseConsulName('node.service.consul', 'consul', A), { kind: 'service', service: 'node' });
});

test('other lookup kinds and their locality', () => {
  const cases: [string, number, unknown][] = [
    ['n1.node.consul', A, { kind: 'node' }],
    ['n1.rack2.node.dc1.consul', TXT, { kind: 'node', dc: 'dc1' }], // dotted node name
    ['n1.node.p1.peer.consul', A, { kind: 'node' }],
    ['c000020a.addr.dc1.consul', A, { kind: 'addr', dc: 'dc1' }],
    ['c000020a.addr.consul', A, { kind: 'addr' }],
    ['20010db8000000000000000000000001.addr.consul', AAAA, { kind: 'addr' }],
    ['c00002.addr.consul', A, { kind: 'other' }],
    ['zz00020a.addr.consul', A, { kind: 'other' }],
    ['myq.query.consul', A, { kind: 'query' }],
    ['myq.query.dc2.consul', A, { kind: 'query', dc: 'dc2' }],
    ['_myq._tcp.query.consul', SRV, { kind: 'query' }],
    ['myq.query.dc2.dc.consul', A, { kind: 'other' }], // parseDatacenter: one label at most
    ['web.connect.consul', SRV, { kind: 'connect' }],
    ['web.connect.dc2.consul', A, { kind: 'connect', dc: 'dc2' }],
    ['web.ingress.consul', A, { kind: 'ingress' }],
    ['web.virtual.consul', A, { kind: 'virtual' }],
    ['web.virtual.peer1.consul', A, { kind: 'virtual' }], // the label is a peer, not a dc
  ];
  for (const [name, qt, want] of cases) assert.deepEqual(parseConsulName(name, 'consul', qt), want, name);
});

test('names Consul answers with NXDOMAIN are kind other; names outside the domain are null', () => {
  for (const name of [
    'consul',
    'foo.consul',
    'service.consul',
    'node.consul',
    'web.service.a.b.c.consul',
    'web.service.dc1.dc.p1.peer.consul',
    'web.service.ns1.ns.consul',
  ]) {
    assert.deepEqual(parseConsulName(name, 'consul', A), { kind: 'other' }, name);
  }
  // Peered service lookups: not tied to a local watch.
  assert.deepEqual(parseConsulName('web.service.p1.peer.consul', 'consul', A), { kind: 'other' });
  assert.equal(parseConsulName('example.com', 'consul', A), null);
  assert.equal(parseConsulName('web.service.notconsul', 'consul', A), null);
  assert.equal(parseConsulName('xconsul', 'consul', A), null);
});

test('domain given with a trailing dot, mixed case, or several labels', () => {
  assert.deepEqual(parseConsulName('web.service.consul', 'Consul.', A), { kind: 'service', service: 'web' });
  assert.deepEqual(parseConsulName('web.service.dc1.consul.example.org', 'consul.example.org', A), {
    kind: 'service',
    service: 'web',
    dc: 'dc1',
  });
  assert.equal(parseConsulName('web.service.consul', 'consul.example.org', A), null);
});
