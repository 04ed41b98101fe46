/**
 * Consul features on real Consul 1.8.7, each behind the proxy:
 *  - an ACL cluster (127.0.21.x: default deny, a master token, an anonymous token that may read
 *    for DNS) which also sets Consul's own `alt_domain = "starlings"`: watches with a read token,
 *    a token Consul does not know (403), no token, and a token that cannot read the service;
 *  - a plain cluster (127.0.22.x): a prepared query with a DNS TTL, a service of 200 instances
 *    (UDP without EDNS, EDNS TC, TCP, the cache), node lookups and PTR through `reverseZones`.
 * Consul's own DNS and Prometheus counters are the reference throughout.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { ConsulCluster, consulSkip } from '../../support/consul-cluster.js';
import { ask, aAddrs } from '../../support/dns-ask.js';
import { dig } from '../../support/dig.js';
import { startProxy, type ProxyProc } from '../../support/proc.js';
import { waitFor } from '../../support/wait.js';

const skip = consulSkip();
const MASTER = 'b1e2c3d4-0000-4000-8000-00000000a11c';
const ACL = '127.0.21.21',
  PLAIN = '127.0.22.21';
const WEB = ['127.0.21.31', '127.0.21.32'];

let acl: ConsulCluster;
let plain: ConsulCluster;
const standIns = new Map<string, net.Server>();
const proxies: ProxyProc[] = [];

async function up(addr: string): Promise<void> {
  if (standIns.has(addr)) return;
  const s = net.createServer((c) => c.end());
  await new Promise<void>((r, j) => {
    s.once('error', j);
    s.listen(8801, addr, () => r());
  });
  standIns.set(addr, s);
}
async function down(addr: string): Promise<void> {
  const s = standIns.get(addr);
  if (!s) return;
  standIns.delete(addr);
  await new Promise<void>((r) => s.close(() => r()));
}

after(async () => {
  for (const p of proxies) await p.stop();
  for (const s of standIns.values()) s.close();
  await acl?.stop();
  await plain?.stop();
});

let readToken = '',
  weakToken = '';

before(async () => {
  if (skip) return;
  for (const a of WEB) await up(a);
  acl = new ConsulCluster(
    [
      {
        name: 'acl1',
        address: ACL,
        server: true,
        services: WEB.map((a, i) => ({
          id: `web-${i + 1}`,
          name: 'web',
          port: 8801,
          address: a,
          tags: ['v1'],
          token: MASTER,
        })),
        extra: {
          alt_domain: 'starlings',
          acl: {
            enabled: true,
            default_policy: 'deny',
            down_policy: 'extend-cache',
            tokens: { master: MASTER, agent: MASTER },
          },
        },
      },
    ],
    { token: MASTER },
  );
  plain = new ConsulCluster([{ name: 'plain1', address: PLAIN, server: true }]);
  await Promise.all([acl.start(), plain.start()]);
  // Tokens: one that reads services and nodes (the proxy's), one that reads nodes only, and the
  // anonymous token given service and node read so that Consul's own DNS answers (the usual setup).
  const policy = async (name: string, rules: string) => {
    const r = await acl.put('/v1/acl/policy', { Name: name, Rules: rules });
    assert.equal(r.status, 200, `policy ${name}: ${JSON.stringify(r.body)}`);
    return (r.body as { ID: string }).ID;
  };
  const read = await policy('dns-read', 'service_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }');
  const nodes = await policy('node-read', 'node_prefix "" { policy = "read" }');
  const tok = async (ids: string[]) =>
    ((await acl.put('/v1/acl/token', { Policies: ids.map((ID) => ({ ID })) })).body as { SecretID: string }).SecretID;
  readToken = await tok([read]);
  weakToken = await tok([nodes]);
  const anon = await acl.put('/v1/acl/token/00000000-0000-0000-0000-000000000002', { Policies: [{ ID: read }] });
  assert.equal(anon.status, 200, JSON.stringify(anon.body));
  await acl.waitFor(async () => (await acl.passing('web')).length === 2, 'both web instances passing');
  await acl.waitFor(
    async () => aAddrs(await ask(`${ACL}:8600`, 'web.service.consul')).length === 2,
    "Consul's own DNS naming both web instances",
  );
});

async function proxyOn(agent: string, yaml: string): Promise<ProxyProc> {
  const p = await startProxy(['--metrics', 'off'], {
    config: `consul:\n  agents: ["${agent}:8600"]\n  http: ["http://${agent}:8500"]\n${yaml}upstream:\n  probeIntervalMs: 3600000\n`,
  });
  proxies.push(p);
  return p;
}
const addr = (p: ProxyProc) => `${p.host}:${p.port}`;

/** Waits until a query for `name` reaches the agent zero times (Consul's own counter). */
async function cached(
  c: ConsulCluster,
  node: string,
  p: ProxyProc,
  name: string,
  type: 'A' | 'SRV' = 'A',
  timeoutMs = 10_000,
): Promise<void> {
  await waitFor(
    async () => {
      const c0 = await c.dnsQueryCount([node]);
      const r = await ask(addr(p), name, type);
      return r.rcode === 0 && (await c.dnsQueryCount([node])) === c0;
    },
    { timeoutMs, intervalMs: 100, what: `${name} answered from the proxy's cache` },
  );
}

test(
  "ACL cluster, read token: the watch works (answers cached) and a check failure reaches the proxy as fast as Consul's DNS",
  { skip },
  async () => {
    const p = await proxyOn(ACL, `  token: "${readToken}"\n`);
    await cached(acl, 'acl1', p, 'web.service.starlings');
    // Consul's own DNS drops it first; the proxy must follow within 100 ms of that.
    await down(WEB[0]!);
    await waitFor(async () => !aAddrs(await ask(`${ACL}:8600`, 'web.service.consul')).includes(WEB[0]!), {
      timeoutMs: 10_000,
      intervalMs: 5,
      what: "Consul's DNS to drop web-1",
    });
    const t0 = performance.now();
    await waitFor(async () => !aAddrs(await ask(addr(p), 'web.service.starlings')).includes(WEB[0]!), {
      timeoutMs: 10_000,
      intervalMs: 5,
      what: 'the proxy to drop web-1',
    });
    const lagMs = performance.now() - t0;
    await up(WEB[0]!);
    await waitFor(async () => aAddrs(await ask(addr(p), 'web.service.starlings')).length === 2, {
      timeoutMs: 10_000,
      intervalMs: 20,
      what: 'web-1 back',
    });
    assert.ok(lagMs < 100, `the proxy named web-1 for ${lagMs} ms after Consul's DNS stopped`);
    assert.ok(!p.logs.some((l) => String(l.err ?? '').includes('HTTP 403')), 'no 403 with the read token');
  },
);

test(
  "ACL cluster, a token Consul does not know: the proxy logs the 403 once, clearly, and falls back to Consul's TTL",
  { skip },
  async () => {
    const p = await proxyOn(ACL, '  token: "00000000-dead-4000-8000-000000000403"\n');
    // The first miss starts the watch; answers fetched while its first request is in flight are
    // held for the start-up grace (50 ms). Count once the watch has failed.
    assert.equal((await ask(addr(p), 'web.service.starlings')).rcode, 0);
    await waitFor(() => p.logs.some((l) => String(l.err ?? '').includes('HTTP 403')), {
      timeoutMs: 5000,
      what: 'the 403 in the log',
    });
    const c0 = await acl.dnsQueryCount(['acl1']);
    for (let i = 0; i < 10; i++) {
      const r = await ask(addr(p), 'web.service.starlings');
      assert.equal(r.rcode, 0);
      assert.equal(aAddrs(r).length, 2);
    }
    // Let the watch retry a few times (its backoff), then count the lines again.
    const asked = (await acl.dnsQueryCount(['acl1'])) - c0;
    assert.ok(asked >= 10, `without a working watch every query reaches the agent (Consul's TTL 0): ${asked} of 10`);
    const t0 = Date.now();
    await waitFor(
      async () => {
        await ask(addr(p), 'web.service.starlings');
        return Date.now() - t0 > 3000;
      },
      { timeoutMs: 5000, intervalMs: 250 },
    );
    const lines = p.logs.filter((l) => String(l.err ?? '').includes('403'));
    assert.equal(lines.length, 1, `one log line for the 403, got ${lines.length}: ${JSON.stringify(lines)}`);
    assert.match(String(lines[0]!.msg), /consul watch request failed/);
  },
);

test(
  "ACL cluster, no token: Consul 1.8.7 answers the watch with the agent's default (anonymous) token, no 403",
  { skip },
  async () => {
    const p = await proxyOn(ACL, '');
    await cached(acl, 'acl1', p, 'web.service.starlings');
    assert.ok(!p.logs.some((l) => String(l.err ?? '').includes('403')), 'no 403 without a token on 1.8.7');
  },
);

test(
  "ACL cluster, a token that cannot read the service (Consul answers 200 []): a check failure still reaches the proxy within 1 s of Consul's DNS",
  {
    skip,
  },
  async () => {
    const p = await proxyOn(ACL, `  token: "${weakToken}"\n`);
    const body = (await acl.httpAs(weakToken, '/v1/health/service/web')).body;
    assert.deepEqual(body, [], 'Consul 1.8.7 filters the reply rather than refusing it');
    // The watch is live but sees nothing: an answer naming instances does not agree with its
    // (empty) set, so it is never held; every query asks the agent (consul/agree.ts).
    await waitFor(async () => (await ask(addr(p), 'web.service.starlings')).rcode === 0, {
      timeoutMs: 10_000,
      what: 'the proxy to answer',
    });
    // Answers fetched while the watch's first request is in flight are held for the start-up
    // grace (50 ms); once it has replied, none may be.
    const reachesAgent = async () => {
      const c0 = await acl.dnsQueryCount(['acl1']);
      await ask(addr(p), 'web.service.starlings');
      return (await acl.dnsQueryCount(['acl1'])) > c0;
    };
    await waitFor(reachesAgent, { timeoutMs: 5000, what: "the watch's first reply (end of the start-up grace)" });
    for (let i = 0; i < 3; i++) {
      const c0 = await acl.dnsQueryCount(['acl1']);
      assert.equal((await ask(addr(p), 'web.service.starlings')).rcode, 0);
      assert.ok((await acl.dnsQueryCount(['acl1'])) > c0, 'not held: the query reached the agent');
    }
    await down(WEB[1]!);
    try {
      await waitFor(async () => !aAddrs(await ask(`${ACL}:8600`, 'web.service.consul')).includes(WEB[1]!), {
        timeoutMs: 10_000,
        intervalMs: 5,
        what: "Consul's DNS to drop web-2",
      });
      const t0 = performance.now();
      await waitFor(async () => !aAddrs(await ask(addr(p), 'web.service.starlings')).includes(WEB[1]!), {
        timeoutMs: 5000,
        intervalMs: 10,
        what: 'the proxy to drop web-2',
      });
      assert.ok(performance.now() - t0 < 1000);
    } finally {
      await up(WEB[1]!);
      await waitFor(async () => aAddrs(await ask(`${ACL}:8600`, 'web.service.consul')).length === 2, {
        timeoutMs: 10_000,
        what: 'web-2 back',
      });
    }
  },
);

test(
  'Consul\'s own alt_domain = "starlings" and the proxy\'s alias at once: nothing is mapped twice',
  { skip },
  async () => {
    const p = await proxyOn(ACL, '');
    const own = await dig([`@${ACL}`, '-p', '8600', 'web.service.starlings', 'SRV']);
    assert.equal(own.status, 'NOERROR', 'Consul answers its alt_domain itself');
    const r = await dig([`@${p.host}`, '-p', String(p.port), 'web.service.starlings', 'SRV']);
    assert.equal(r.status, 'NOERROR');
    assert.equal(r.answer.length, 2);
    for (const rec of [...r.answer, ...r.additional]) {
      assert.ok(
        rec.name.endsWith('.starlings.') && !rec.name.includes('consul') && !rec.name.includes('starlings.starlings'),
        `${rec.name}: one starlings., not consul. nor starlings twice`,
      );
      if (rec.type === 'SRV') assert.ok(rec.data.endsWith('.dc1.starlings.') && !rec.data.includes('consul'), rec.data);
    }
    const c = await dig([`@${p.host}`, '-p', String(p.port), 'web.service.consul', 'SRV']);
    for (const rec of [...c.answer, ...c.additional])
      assert.ok(rec.name.endsWith('.consul.'), `${rec.name} under consul.`);
  },
);

const BIG = 200;

test('a prepared query (.query.): answered with its own DNS TTL, and held for that TTL', { skip }, async () => {
  for (let i = 1; i <= 2; i++) {
    const r = await plain.put('/v1/catalog/register', {
      Node: `pq-${i}`,
      Address: `127.22.250.${i}`,
      Service: { ID: `pq-${i}`, Service: 'pqsvc', Port: 9000 },
    });
    assert.equal(r.status, 200);
  }
  const q = await plain.put(
    '/v1/query',
    { Name: 'pq', Service: { Service: 'pqsvc' }, DNS: { TTL: '7s' } },
    undefined,
    'POST',
  );
  assert.equal(q.status, 200, JSON.stringify(q.body));
  const own = await ask(`${PLAIN}:8600`, 'pq.query.consul');
  assert.deepEqual(
    own.answer.map((x) => x.ttl),
    [7, 7],
    "Consul's own TTL for the prepared query",
  );
  const p = await proxyOn(PLAIN, '');
  const r1 = await ask(addr(p), 'pq.query.starlings');
  assert.deepEqual(aAddrs(r1), ['127.22.250.1', '127.22.250.2']);
  assert.ok(
    r1.answer.every((x) => x.ttl > 0 && x.ttl <= 7),
    `TTLs ${r1.answer.map((x) => x.ttl)}`,
  );
  const c0 = await plain.dnsQueryCount(['plain1']);
  const r2 = await ask(addr(p), 'pq.query.starlings');
  assert.equal((await plain.dnsQueryCount(['plain1'])) - c0, 0, 'a repeat within the TTL is a cache hit');
  assert.ok(r2.answer.every((x) => x.ttl <= 7));
});

test(
  "a service of 200 instances: UDP without EDNS gets Consul's 3, EDNS that does not fit gets TC, TCP the whole set; the cache holds it all and rotates",
  { skip },
  async () => {
    for (let i = 1; i <= BIG; i++) {
      const r = await plain.put('/v1/catalog/register', {
        Node: `big-${i}`,
        Address: `127.22.${Math.ceil(i / 250)}.${i % 250}`,
        Service: { ID: `big-${i}`, Service: 'big', Port: 9000 + i },
      });
      assert.equal(r.status, 200);
    }
    const p = await proxyOn(PLAIN, '');
    const own = await dig([`@${PLAIN}`, '-p', '8600', '+tcp', 'big.service.consul']);
    assert.equal(own.answer.length, BIG, "Consul's own TCP answer carries every instance");
    const udp = await ask(addr(p), 'big.service.starlings');
    assert.equal(udp.answer.length, 3, 'UDP without EDNS: udp_answer_limit 3');
    const edns = await dig([`@${p.host}`, '-p', String(p.port), '+bufsize=1232', '+ignore', 'big.service.starlings']);
    assert.ok(edns.flags.includes('tc'), `EDNS 1232 cannot hold 200 A records: TC (flags ${edns.flags})`);
    const tcp1 = await dig([`@${p.host}`, '-p', String(p.port), '+tcp', 'big.service.starlings']);
    assert.equal(tcp1.answer.length, BIG, 'TCP: the whole set');
    await cached(plain, 'plain1', p, 'big.service.starlings');
    const c0 = await plain.dnsQueryCount(['plain1']);
    const tcp2 = await dig([`@${p.host}`, '-p', String(p.port), '+tcp', 'big.service.starlings']);
    const tcp3 = await dig([`@${p.host}`, '-p', String(p.port), '+tcp', 'big.service.starlings']);
    const firsts = new Set<string>();
    for (let i = 0; i < 6; i++) firsts.add(aAddrs(await ask(addr(p), 'big.service.starlings')).join(','));
    assert.equal((await plain.dnsQueryCount(['plain1'])) - c0, 0, 'all from the cache');
    assert.equal(tcp2.answer.length, BIG, 'the cache holds the whole set');
    assert.notDeepEqual(
      tcp2.answer.map((x) => x.data),
      tcp3.answer.map((x) => x.data),
      'rotated between two hits',
    );
    assert.deepEqual(tcp2.answer.map((x) => x.data).sort(), tcp3.answer.map((x) => x.data).sort());
    assert.ok(firsts.size > 1, 'UDP hits show different 3-instance subsets');
  },
);

test('node lookups and PTR through reverseZones', { skip }, async () => {
  const p = await proxyOn(PLAIN, '  reverseZones: ["127.0.22.0/24"]\n');
  const n = await ask(addr(p), 'plain1.node.starlings');
  assert.deepEqual(aAddrs(n), [PLAIN]);
  const own = await ask(`${PLAIN}:8600`, '21.22.0.127.in-addr.arpa', 'PTR');
  const ptr = await ask(addr(p), '21.22.0.127.in-addr.arpa', 'PTR');
  assert.equal(ptr.rcode, 0);
  assert.deepEqual(
    ptr.answer.map((x) => x.data),
    own.answer.map((x) => x.data),
    `the agent's PTR answer (${own.answer.map((x) => x.data)})`,
  );
  assert.ok(own.answer.length >= 1 && own.answer[0]!.data.startsWith('plain1.node.'));
  const outside = await ask(addr(p), '1.0.0.10.in-addr.arpa', 'PTR');
  assert.equal(outside.rcode, 5, 'a reverse name outside reverseZones is not sent to Consul (no recursor: REFUSED)');
});
