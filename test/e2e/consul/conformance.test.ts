/**
 * The simulator held to the real thing: the same services on test/support/consul-sim and on a
 * real `consul agent -dev` (127.0.23.1, node "dev"), the same questions to both. DNS answers are
 * compared section by section up to ID, TTL and record order (the SOA serial is Consul's clock);
 * the health endpoint is compared on the fields the proxy reads (src/consul/health.ts's dnsView);
 * and blocking queries on how their index behaves. Where Consul versions differ, the simulator
 * runs as 1.8 (`consulVersion: '1.8'`, the real agent here); its default is newer Consul.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { consulSkip, startDevAgent, httpRequest } from '../../support/consul-cluster.js';
import { startSim, type Sim } from '../../support/consul-sim/index.js';
import { dig, type DigResult, type DigRecord } from '../../support/dig.js';
import { dnsView } from '../../../src/consul/health.js';

const skip = consulSkip();
const DEV = '127.0.23.1';
let real: { http: string; dns: string; stop(): Promise<void> };
let sim: Sim;

const SERVICES = [
  { id: 'web-1', name: 'web', address: '127.0.23.11', port: 80, tags: ['a'], status: 'passing' as const },
  { id: 'web-2', name: 'web', address: '127.0.23.12', port: 81, tags: ['b'], status: 'passing' as const },
  { id: 'web-3', name: 'web', address: '127.0.23.13', port: 82, tags: ['a'], status: 'critical' as const },
  { id: 'db-1', name: 'db', address: '127.0.23.21', port: 5432, tags: [], status: 'passing' as const },
];

after(async () => {
  await real?.stop();
  await sim?.stop();
});

before(async () => {
  if (skip) return;
  real = await startDevAgent(DEV);
  sim = await startSim({ nodeName: 'dev', nodeAddress: DEV, consulVersion: '1.8' });
  for (const s of SERVICES) {
    const r = await httpRequest(
      'PUT',
      `${real.http}/v1/agent/service/register`,
      {
        ID: s.id,
        Name: s.name,
        Address: s.address,
        Port: s.port,
        Tags: s.tags,
        Check: { CheckID: `service:${s.id}`, TTL: '10m', Status: s.status },
      },
      '',
      5000,
    );
    assert.equal(r.status, 200, JSON.stringify(r.body));
    sim.register({ id: s.id, name: s.name, address: s.address, port: s.port, tags: s.tags, status: s.status });
  }
  // The agent syncs local services to the catalog asynchronously.
  const deadline = Date.now() + 10_000;
  for (;;) {
    const r = await httpRequest('GET', `${real.http}/v1/health/service/web`, undefined, '', 2000);
    if (Array.isArray(r.body) && r.body.length === 3) break;
    if (Date.now() > deadline) throw new Error('the dev agent never listed three web instances');
    await new Promise((res) => setTimeout(res, 50));
  }
});

/** A reply reduced to what must agree: rcode, flags, question, and each section as a sorted set. */
function shape(r: DigResult): Record<string, unknown> {
  const rec = (x: DigRecord) => {
    let data = x.data.toLowerCase();
    if (x.type === 'SOA') data = data.replace(/^(\S+ \S+) \d+ /, '$1 <serial> ');
    return `${x.name.toLowerCase()} ${x.class} ${x.type} ${data}`;
  };
  return {
    status: r.status,
    flags: r.flags.filter((f) => f !== 'qr').sort(),
    edns: r.opt ? { udp: r.opt.udp, flags: r.opt.flags } : null,
    question: r.question.map((q) => `${q.name.toLowerCase()} ${q.type}`),
    answer: r.answer.map(rec).sort(),
    authority: r.authority.map(rec).sort(),
    additional: r.additional.map(rec).sort(),
  };
}

const DNS_CASES: { q: string[]; todo?: string }[] = [
  { q: ['web.service.consul'] },
  { q: ['web.service.consul', 'SRV'] },
  { q: ['_web._tcp.service.consul', 'SRV'] },
  { q: ['a.web.service.consul'] },
  { q: ['web.service.dc1.consul', '+noedns'] },
  { q: ['db.service.consul', 'SRV', '+noedns'] },
  { q: ['web.service.consul', 'AAAA'] },
  { q: ['nosuch.service.consul'] },
  { q: ['dev.node.consul'] },
  { q: ['dev.node.dc1.consul', 'TXT'] },
  { q: ['nosuch.node.consul'] },
  { q: ['1.23.0.127.in-addr.arpa', 'PTR'] },
  { q: ['consul.', 'SOA'] },
  { q: ['consul.', 'NS'] },
  { q: ['7f00170b.addr.dc1.consul'] },
  { q: ['7f00170b.addr.dc1.consul', 'AAAA'] },
  { q: ['nonsense.consul'] },
];

for (const c of DNS_CASES) {
  test(
    `DNS ${c.q.join(' ')}: the simulator answers as Consul 1.8.7`,
    { skip, todo: skip ? false : (c.todo ?? false) },
    async () => {
      const [r, s] = await Promise.all([
        dig([`@${DEV}`, '-p', '8600', ...c.q]),
        dig([`@${sim.host}`, '-p', String(sim.dnsPort), ...c.q]),
      ]);
      assert.deepEqual(shape(s), shape(r), `simulator (+) against real Consul (-):\n${r.raw}`);
    },
  );
}

/** The fields of a health reply that the proxy reads, per instance, sorted. */
function fields(body: unknown): unknown[] {
  assert.ok(Array.isArray(body));
  return (body as Record<string, Record<string, unknown> | Record<string, unknown>[]>[])
    .map((e) => {
      const n = e['Node'] as Record<string, unknown>,
        s = e['Service'] as Record<string, unknown>;
      return {
        node: n['Node'],
        address: n['Address'],
        taggedAddresses: n['TaggedAddresses'],
        nodeMeta: n['Meta'],
        service: s['Service'],
        id: s['ID'],
        svcAddress: s['Address'],
        svcTagged: s['TaggedAddresses'],
        port: s['Port'],
        tags: s['Tags'],
        weights: s['Weights'],
        checks: (e['Checks'] as Record<string, unknown>[])
          .map((c) => `${c['CheckID']} ${c['ServiceName']} ${c['Status']}`)
          .sort(),
      };
    })
    .sort((a, b) => String(a.id).localeCompare(String(b.id)));
}

const simHttp = () => `http://${sim.host}:${sim.httpPort}`;

test('HTTP /v1/health/service: the fields the proxy reads agree, and so does its DNS view', { skip }, async () => {
  for (const svc of ['web', 'db', 'nosuch']) {
    const [r, s] = await Promise.all([
      httpRequest('GET', `${real.http}/v1/health/service/${svc}?stale`, undefined, '', 5000),
      httpRequest('GET', `${simHttp()}/v1/health/service/${svc}?stale`, undefined, '', 5000),
    ]);
    assert.equal(s.status, r.status);
    if (svc === 'web') assert.equal(fields(r.body).length, 3, 'three web instances, one critical');
    assert.ok(
      /^\d+$/.test(String(r.headers['x-consul-index'])) && /^\d+$/.test(String(s.headers['x-consul-index'])),
      'both send X-Consul-Index',
    );
    assert.deepEqual(fields(s.body), fields(r.body), `${svc}: simulator (+) against real Consul (-)`);
    assert.deepEqual(dnsView(s.body, false), dnsView(r.body, false), `${svc}: the proxy's DNS view`);
    assert.deepEqual(dnsView(s.body, true), dnsView(r.body, true), `${svc}: the proxy's DNS view with onlyPassing`);
  }
});

test(
  'HTTP Service.Meta of a service registered without meta: the same on both (null on 1.8.7; the proxy never reads it)',
  { skip },
  async () => {
    const [r, s] = await Promise.all([
      httpRequest('GET', `${real.http}/v1/health/service/db`, undefined, '', 5000),
      httpRequest('GET', `${simHttp()}/v1/health/service/db`, undefined, '', 5000),
    ]);
    const meta = (b: unknown) => (b as { Service: { Meta: unknown } }[])[0]!.Service.Meta;
    assert.deepEqual(meta(s.body), meta(r.body));
  },
);

/** A blocking health query against `base`: how long it took and the index it returned. */
async function blocking(
  base: string,
  index: string,
  wait: string,
): Promise<{ ms: number; index: string; status: number }> {
  const t0 = performance.now();
  const r = await httpRequest(
    'GET',
    `${base}/v1/health/service/web?stale&index=${index}&wait=${wait}`,
    undefined,
    '',
    30_000,
  );
  return { ms: performance.now() - t0, index: String(r.headers['x-consul-index']), status: r.status };
}

test(
  'blocking queries: an unchanged index waits out `wait` and returns the same index; a change returns at once with a higher one',
  { skip },
  async () => {
    const results: Record<string, unknown> = {};
    for (const [label, base, fail] of [
      [
        'real',
        real.http,
        () => httpRequest('PUT', `${real.http}/v1/agent/check/fail/service:web-2`, undefined, '', 5000),
      ],
      [
        'sim',
        simHttp(),
        () => {
          sim.setHealth('web-2', 'critical');
          return Promise.resolve();
        },
      ],
    ] as const) {
      const first = await httpRequest('GET', `${base}/v1/health/service/web?stale`, undefined, '', 5000);
      const i0 = String(first.headers['x-consul-index']);
      const idle = await blocking(base, i0, '1s');
      const pending = blocking(base, i0, '20s');
      // Give the request time to arrive and block; were the change first, the reply would still be
      // early with a higher index (the assertions hold either way).
      await new Promise((r) => setTimeout(r, 200));
      await fail();
      const changed = await pending;
      // index=0 is answered at once (blocking.mdx: use at least 1).
      const zero = await blocking(base, '0', '5s');
      results[label] = {
        idleSameIndex: idle.index === i0,
        idleWaited: idle.ms >= 900 && idle.ms < (1000 * 17) / 16 + 500,
        changedEarly: changed.ms < 5000,
        changedHigher: Number(changed.index) > Number(i0),
        zeroAtOnce: zero.ms < 1000,
      };
    }
    assert.deepEqual(results['sim'], results['real']);
    assert.deepEqual(results['real'], {
      idleSameIndex: true,
      idleWaited: true,
      changedEarly: true,
      changedHigher: true,
      zeroAtOnce: true,
    });
  },
);
