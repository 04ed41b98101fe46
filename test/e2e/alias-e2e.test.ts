/**
 * The `starlings` alias end to end (issue 4): dig through the real CLI against the simulator.
 * Every name in the reply must be under `starlings`, with the same addresses and ports the agent
 * gives for the `consul` names.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startJanusCluster, type Sim } from '../support/consul-sim/index.js';
import { dig, type DigResult, type DigRecord } from '../support/dig.js';
import { startProxy, type ProxyProc } from '../support/proc.js';

let sim: Sim;
let proxy: ProxyProc;
const at = () => [`@${proxy.host}`, '-p', String(proxy.port)];
const agent = () => ['@127.0.0.1', '-p', String(sim.dnsPort)];

before(async () => {
  sim = await startJanusCluster();
  // Yorc registers without an address: SRV targets are then <node>.node.<dc>.consul.
  sim.register({ id: 'yorc-1', name: 'yorc', node: 'janus-1', port: 8800, tags: ['server', 'server1'] });
  sim.register({ id: 'yorc-2', name: 'yorc', node: 'janus-2', port: 8800, tags: ['server', 'server2'] });
  proxy = await startProxy([
    '--agent',
    `127.0.0.1:${sim.dnsPort}`,
    '--consul-http',
    `http://127.0.0.1:${sim.httpPort}`,
    '--metrics',
    'off',
  ]);
});

after(async () => {
  await proxy?.stop();
  await sim?.stop();
});

function allNames(r: DigResult): string[] {
  const names: string[] = r.question.map((q) => q.name);
  const section = (recs: DigRecord[]) => {
    for (const rec of recs) {
      names.push(rec.name);
      if (rec.type === 'SRV') names.push(rec.data.split(/\s+/)[3]!);
      if (rec.type === 'SOA') names.push(...rec.data.split(/\s+/).slice(0, 2));
      if (rec.type === 'CNAME' || rec.type === 'NS' || rec.type === 'PTR') names.push(rec.data);
    }
  };
  section(r.answer);
  section(r.authority);
  section(r.additional);
  return names;
}

function assertOnlyStarlings(r: DigResult): void {
  for (const n of allNames(r)) {
    assert.ok(!/consul\.$/i.test(n), `name ${n} leaks the Consul domain`);
  }
}

const norm = (recs: DigRecord[]) =>
  recs.map((a) => `${a.type} ${a.data.replace(/consul\.$/i, 'X.').replace(/starlings\.$/i, 'X.')}`).sort();

for (const [label, extra] of [
  ['UDP', []],
  ['TCP', ['+tcp']],
  ['UDP without EDNS', ['+noedns']],
] as const) {
  test(`janus.service.starlings A over ${label}: the agent's addresses, only starlings names`, async () => {
    const want = await dig([...agent(), 'janus.service.consul', ...extra]);
    const r = await dig([...at(), 'janus.service.starlings', ...extra]);
    assert.equal(r.status, 'NOERROR');
    assert.deepEqual(norm(r.answer), norm(want.answer));
    assert.equal(r.answer.length, 2);
    assertOnlyStarlings(r);
  });
}

test('SRV with .addr. targets (+additional): targets and glue under starlings', async () => {
  const want = await dig([...agent(), '_janus._tcp.service.consul', 'SRV']);
  const r = await dig([...at(), '_janus._tcp.service.starlings', 'SRV']);
  assert.equal(r.status, 'NOERROR');
  assert.deepEqual(norm(r.answer), norm(want.answer));
  assert.match(r.answer[0]!.data, /\.addr\.dc1\.starlings\.$/);
  assert.deepEqual(
    norm(r.additional).filter((x) => x.startsWith('A ')),
    norm(want.additional).filter((x) => x.startsWith('A ')),
  );
  assertOnlyStarlings(r);
});

test('SRV with node targets: <node>.node.dc1.starlings., resolvable through the proxy', async () => {
  const r = await dig([...at(), 'yorc.service.starlings', 'SRV']);
  assert.equal(r.status, 'NOERROR');
  const targets = r.answer.map((a) => a.data.split(/\s+/)[3]!).sort();
  assert.deepEqual(targets, ['janus-1.node.dc1.starlings.', 'janus-2.node.dc1.starlings.']);
  assert.ok(
    r.additional.some((a) => a.type === 'TXT'),
    'node-meta TXT kept in Additional',
  );
  assertOnlyStarlings(r);
  const node = await dig([...at(), targets[0]!]);
  assert.equal(node.status, 'NOERROR');
  assert.equal(node.answer[0]?.data, '127.0.0.11');
  assertOnlyStarlings(node);
});

test('tag lookup, datacenter-qualified names, .addr. and node lookups under the alias', async () => {
  const tag = await dig([...at(), 'server1.janus.service.starlings']);
  assert.deepEqual(
    tag.answer.map((a) => a.data),
    ['127.0.0.11'],
  );
  const dc = await dig([...at(), 'janus.service.dc1.starlings']);
  assert.equal(dc.answer.length, 2);
  const addr = await dig([...at(), '7f00000b.addr.dc1.starlings']);
  assert.equal(addr.answer[0]?.data, '127.0.0.11');
  for (const r of [tag, dc, addr]) assertOnlyStarlings(r);
});

test('AAAA on an IPv4-only service: NODATA with the SOA of starlings.', async () => {
  const r = await dig([...at(), 'janus.service.starlings', 'AAAA']);
  assert.equal(r.status, 'NOERROR');
  assert.equal(r.answer.length, 0);
  assert.equal(r.authority[0]?.type, 'SOA');
  assert.equal(r.authority[0]?.name, 'starlings.');
  assert.match(r.authority[0].data, /^ns\.starlings\. hostmaster\.starlings\. /);
});

test('NXDOMAIN carries the SOA of starlings.', async () => {
  const r = await dig([...at(), 'nosuch.service.starlings']);
  assert.equal(r.status, 'NXDOMAIN');
  assert.equal(r.authority[0]?.name, 'starlings.');
  assertOnlyStarlings(r);
});

test('TXT and ANY are answered as Consul answers them, under starlings', async () => {
  for (const type of ['TXT', 'ANY']) {
    const want = await dig([...agent(), 'janus.service.consul', type]);
    const r = await dig([...at(), 'janus.service.starlings', type]);
    assert.equal(r.status, want.status);
    assert.deepEqual(norm(r.answer), norm(want.answer));
    assertOnlyStarlings(r);
  }
});

test('mixed-case questions come back byte for byte', async () => {
  const r = await dig([...at(), 'JaNuS.SeRvIcE.StArLiNgS', 'SRV']);
  assert.equal(r.status, 'NOERROR');
  assert.equal(r.question[0]?.name, 'JaNuS.SeRvIcE.StArLiNgS.');
  assert.equal(r.answer[0]?.name.toLowerCase(), 'janus.service.starlings.');
});

test('the Consul domain itself still answers when an alias is configured', async () => {
  const r = await dig([...at(), 'janus.service.consul', 'SRV']);
  assert.equal(r.status, 'NOERROR');
  assert.match(r.answer[0]!.data, /\.consul\.$/);
});
