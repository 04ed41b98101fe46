/**
 * The seed topology on real Consul: three servers (127.0.20.21-23), two Janus hosts (client
 * agents 127.0.20.31/.32, each with the seed's `janus` service definition, a TCP check on 8800
 * and a stand-in HTTP server on that port), and the Alien4Cloud host (client agent 127.0.20.41)
 * with the proxy in front of it: `consul.agents` = that agent then server 1, `consul.http` in the
 * same order, a real unbound (static zones only) as the recursor.
 *
 * Consul's own DNS is the reference: every lag below is the time between the agent's own DNS
 * changing its answer and the proxy's doing so, both polled side by side. The tests run in order
 * on one cluster; each leaves it as it found it (every agent running, every check passing).
 */
import { test, before, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { ConsulCluster, consulSkip } from '../../support/consul-cluster.js';
import { ask, aAddrs, percentile, type Reply } from '../../support/dns-ask.js';
import { dig } from '../../support/dig.js';
import { startProxy, startUnbound, type ProxyProc, type Unbound } from '../../support/proc.js';
import { waitFor } from '../../support/wait.js';
import { sideBySide } from '../../support/side-by-side.js';
import { janusStandIn, seedAddresses, seedAgents } from '../../support/seed-cluster.js';

const skip = consulSkip();
const [J1, J2] = seedAddresses('127.0.20').janus;

let cluster: ConsulCluster;
let unbound: Unbound;
let proxy: ProxyProc;
let proxyAddr: string;
const standIns = new Map<string, http.Server>();
const lags: Record<string, number> = {};
const slack: Record<string, number> = {};

after(async () => {
  await proxy?.stop();
  for (const s of standIns.values()) s.close();
  await cluster?.stop();
  await unbound?.stop();
  if (Object.keys(lags).length)
    console.log(`# seed lags (ms): ${JSON.stringify(lags, (_k, v: unknown) => (v === Infinity ? 'never' : v))}`);
});

/** The Janus stand-in on addr:8800: up makes the TCP check pass, down makes it fail. */
async function janusUp(addr: string): Promise<void> {
  if (standIns.has(addr)) return;
  standIns.set(addr, await janusStandIn(addr));
}
async function janusDown(addr: string): Promise<void> {
  const srv = standIns.get(addr);
  if (!srv) return;
  standIns.delete(addr);
  srv.closeAllConnections();
  await new Promise<void>((r) => srv.close(() => r()));
}

before(async () => {
  if (skip) return;
  await janusUp(J1);
  await janusUp(J2);
  unbound = await startUnbound();
  cluster = new ConsulCluster(seedAgents('127.0.20'));
  await cluster.start();
  await cluster.waitFor(async () => (await cluster.passing('janus')).length === 2, 'both Janus instances passing');
  proxy = await startProxy(['--metrics', '127.0.0.1:0'], {
    config:
      [
        'consul:',
        '  agents: ["127.0.20.41:8600", "127.0.20.21:8600"]',
        '  http: ["http://127.0.20.41:8500", "http://127.0.20.21:8500"]',
        `recursors: ["127.0.0.1:${unbound.port}"]`,
        'upstream:',
        '  probeIntervalMs: 1000',
      ].join('\n') + '\n',
  });
  proxyAddr = `${proxy.host}:${proxy.port}`;
});

const A4C_DNS = '127.0.20.41:8600',
  S1_DNS = '127.0.20.21:8600';

/**
 * The proxy's lag behind the agent's own DNS (test/support/side-by-side.ts) for `name` under
 * `.consul` at `reference` and under `.starlings` at the proxy, recorded under `label`.
 */
async function lag(
  label: string,
  reference: string,
  name: string,
  ok: (r: Reply) => boolean,
  change: () => Promise<void>,
  timeoutMs = 30_000,
): Promise<number> {
  const r = await sideBySide({
    reference,
    referenceName: `${name}.consul`,
    proxy: proxyAddr,
    proxyName: `${name}.starlings`,
    ok,
    change,
    graceMs: PROXY_GRACE_MS,
    timeoutMs,
  });
  assert.ok(!Number.isNaN(r.lagMs), `the agent's own DNS never changed for ${name} within ${timeoutMs} ms`);
  lags[label] = r.lagMs === Infinity ? Infinity : Math.round(r.lagMs);
  slack[label] = Math.round(r.pollP99Ms);
  if (r.lagMs === Infinity)
    console.log(
      `# ${label}: the proxy had not followed ${PROXY_GRACE_MS} ms after the agent (agent after ${Math.round(r.agentMs)} ms)`,
    );
  return lags[label];
}
const PROXY_GRACE_MS = 5000;

/**
 * The proxy follows within 100 ms of the agent, plus the p99 round trip of the polls themselves
 * in that measurement (on a loaded machine a poll can wait for the CPU: that is not the proxy's lag).
 */
function within100(label: string, what: string): void {
  assert.ok(
    lags[label]! < 100 + slack[label]!,
    `${what}: the proxy lagged the agent's own DNS by ${lags[label]} ms (poll p99 ${slack[label]} ms)`,
  );
}
const without = (addr: string) => (r: Reply) => aAddrs(r).length > 0 && !aAddrs(r).includes(addr);
const withBoth = (r: Reply) => aAddrs(r).includes(J1) && aAddrs(r).includes(J2);

/** 200 q/s of mixed traffic to the proxy while `during` runs; every reply's rcode and latency. */
async function traffic(during: (mark: () => void) => Promise<void>): Promise<{
  n: number;
  servfail: number;
  timeouts: number;
  other: string[];
  p99: number;
  p99Before: number;
  max: number;
}> {
  const names: [string, 'A' | 'SRV'][] = [
    ['janus.service.starlings', 'A'],
    ['_janus._tcp.service.starlings', 'SRV'],
    ['server1.janus.service.starlings', 'A'],
    ['janus.service.consul', 'A'],
    ['www.example', 'A'],
    ['api.example', 'A'],
  ];
  const ms: number[] = [],
    before: number[] = [];
  let marked = false;
  let servfail = 0,
    timeouts = 0;
  const other = new Set<string>();
  const inflight = new Set<Promise<void>>();
  let i = 0,
    running = true;
  const gen = (async () => {
    const t0 = performance.now();
    while (running) {
      const [q, ty] = names[i % names.length]!;
      i++;
      const pre = !marked;
      const p = ask(proxyAddr, q, ty, 2000)
        .then(
          (r) => {
            (pre ? before : ms).push(r.ms);
            if (r.rcode === 2) servfail++;
            else if (r.rcode !== 0) other.add(`${q} rcode ${r.rcode}`);
          },
          () => {
            timeouts++;
          },
        )
        .finally(() => inflight.delete(p));
      inflight.add(p);
      const next = t0 + i * 5;
      await new Promise((r) => setTimeout(r, Math.max(0, next - performance.now())));
    }
  })();
  try {
    await during(() => {
      marked = true;
    });
  } finally {
    running = false;
    await gen;
    await Promise.all(inflight);
  }
  return {
    n: i,
    servfail,
    timeouts,
    other: [...other],
    p99: Math.round(percentile(ms, 99)),
    p99Before: Math.round(percentile(before, 99)),
    max: Math.round(Math.max(...ms)),
  };
}

test(
  'janus.service.starlings (A, SRV, tag) names both Janus hosts, all under starlings.; other names go to the recursor',
  { skip },
  async () => {
    const p = ['@' + proxy.host, '-p', String(proxy.port)];
    const ref = ['@127.0.20.41', '-p', '8600'];
    const a = await dig([...p, 'janus.service.starlings']);
    const aRef = await dig([...ref, 'janus.service.consul']);
    assert.equal(a.status, 'NOERROR');
    const ips = (r: typeof a) =>
      r.answer
        .filter((x) => x.type === 'A')
        .map((x) => x.data)
        .sort();
    assert.deepEqual(ips(a), [J1, J2]);
    assert.deepEqual(ips(a), ips(aRef), "the same addresses as Consul's own DNS");
    const srv = await dig([...p, '_janus._tcp.service.starlings', 'SRV']);
    const srvRef = await dig([...ref, '_janus._tcp.service.consul', 'SRV']);
    assert.equal(srv.answer.filter((x) => x.type === 'SRV').length, 2);
    assert.deepEqual(srv.answer.map((x) => x.data.split(' ')[2]).sort(), ['8800', '8800']);
    assert.deepEqual(
      srv.additional
        .filter((x) => x.type === 'A')
        .map((x) => x.data)
        .sort(),
      srvRef.additional
        .filter((x) => x.type === 'A')
        .map((x) => x.data)
        .sort(),
    );
    const tag = await dig([...p, 'server2.janus.service.starlings']);
    assert.deepEqual(ips(tag), [J2]);
    const rfc = await dig([...p, '_janus._server1.service.starlings', 'SRV']);
    assert.equal(rfc.answer.length, 1, 'the RFC 2782 tag form names janus-1 only');
    for (const r of [a, srv, tag, rfc]) {
      for (const rec of [...r.answer, ...r.additional]) {
        assert.ok(rec.name.endsWith('.starlings.'), `${rec.name} is under starlings.`);
        if (rec.type === 'SRV')
          assert.ok(rec.data.endsWith('.starlings.'), `SRV target ${rec.data} is under starlings.`);
      }
    }
    const www = await dig([...p, 'www.example']);
    assert.equal(www.status, 'NOERROR');
    assert.deepEqual(ips(www), ['192.0.2.1'], 'other names go to the recursor');
  },
);

test(
  "a Janus host's check fails: the proxy stops naming it within 100 ms of the agent's own DNS, and names it again within 100 ms",
  { skip },
  async () => {
    await waitFor(async () => withBoth(await ask(proxyAddr, 'janus.service.starlings')), {
      what: 'both Janus hosts named',
    });
    await lag('checkFail', A4C_DNS, 'janus.service', without(J1), () => janusDown(J1));
    await lag('checkRecover', A4C_DNS, 'janus.service', withBoth, () => janusUp(J1));
    within100('checkFail', 'check failure');
    within100('checkRecover', 'check recovery');
  },
);

test(
  "a Janus host's agent is killed: once Serf marks the node failed the proxy follows within 100 ms; and when it returns",
  { skip },
  async () => {
    const t0 = performance.now();
    await lag('nodeFail', A4C_DNS, 'janus.service', without(J1), async () => {
      await cluster.kill('janus-1');
    });
    await cluster.waitFor(() => cluster.nodeFailed('janus-1'), 'janus-1 marked failed');
    lags.serfFailedMs = Math.round(performance.now() - t0);
    // A restarted agent registers its check critical until the first run passes, and may sync that
    // to the catalog: the recovery counts once the agent's own check passes and DNS names both.
    let armed = false;
    await lag(
      'nodeRecover',
      A4C_DNS,
      'janus.service',
      (r) => armed && withBoth(r),
      async () => {
        await cluster.restart('janus-1');
        await cluster.waitFor(async () => {
          const c = await cluster.get('/v1/agent/checks', 'janus-1', 2000);
          return (c.body as Record<string, { Status: string }>)['janus-1-tcp']?.Status === 'passing';
        }, "janus-1's own TCP check passing after the restart");
        armed = true;
      },
    );
    within100('nodeFail', 'node failure');
    within100('nodeRecover', 'node recovery');
  },
);

test(
  'the Alien4Cloud agent is killed during 200 q/s: no SERVFAIL, no timeout, p99 < 100 ms; a health change still arrives within 100 ms',
  { skip },
  async () => {
    const t = await traffic(async (mark) => {
      await new Promise((r) => setTimeout(r, 500));
      mark();
      await cluster.kill('a4c');
      await new Promise((r) => setTimeout(r, 1000));
      // The watch now reads from server 1; the reference is that server's own DNS.
      await lag('agentLossChange', S1_DNS, 'janus.service', without(J2), () => janusDown(J2));
      await lag('agentLossRecover', S1_DNS, 'janus.service', withBoth, () => janusUp(J2));
    });
    lags.agentLossP99 = t.p99;
    lags.agentLossMax = t.max;
    lags.agentLossBaselineP99 = t.p99Before;
    await cluster.restart('a4c');
    assert.equal(t.servfail, 0, `SERVFAIL during agent loss (${JSON.stringify(t)})`);
    assert.equal(t.timeouts, 0, `client timeouts during agent loss (${JSON.stringify(t)})`);
    assert.deepEqual(t.other, []);
    // 100 ms over the same traffic's p99 just before the kill (the machine's own load, same run).
    assert.ok(t.p99 < 100 + t.p99Before, `p99 ${t.p99} ms during agent loss (${t.p99Before} ms before it)`);
  },
);

// The watch and the agents' DNS then read from different servers: a follower applies a commit up
// to ~100 ms after the leader, and the miss after the watch's eviction can fetch (and hold) the
// old answer. Measured in the outage above. The cache holds a fetched answer only if it agrees with
// the set the watch last reported (consul/agree.ts), so a lagging server's answer is asked again.
test(
  "during the Alien4Cloud agent outage a health change reaches the proxy within 100 ms of server 1's DNS (watch failed over)",
  {
    skip,
  },
  () => {
    within100('agentLossChange', 'a health change during the outage');
    within100('agentLossRecover', 'recovery during the outage');
  },
);

test('the Consul leader is killed during traffic: no SERVFAIL, no timeout', { skip }, async () => {
  const old = await cluster.leader();
  assert.ok(old);
  let electedMs = NaN;
  const t = await traffic(async (mark) => {
    await new Promise((r) => setTimeout(r, 500));
    mark();
    const t0 = performance.now();
    await cluster.kill(old);
    await cluster.waitFor(async () => {
      const l = await cluster.leader();
      return l !== null && l !== old;
    }, 'a new leader');
    electedMs = Math.round(performance.now() - t0);
    await lag('leaderLossChange', A4C_DNS, 'janus.service', without(J1), () => janusDown(J1));
    await lag('leaderLossRecover', A4C_DNS, 'janus.service', withBoth, () => janusUp(J1));
  });
  lags.leaderElectedMs = electedMs;
  lags.leaderLossP99 = t.p99;
  lags.leaderLossMax = t.max;
  await cluster.restart(old);
  await cluster.waitReady();
  assert.equal(t.servfail, 0, `SERVFAIL during leader loss (${JSON.stringify(t)})`);
  assert.equal(t.timeouts, 0, `client timeouts during leader loss (${JSON.stringify(t)})`);
});

test(
  "after re-election a health change still propagates, within 100 ms of the agent's DNS",
  {
    skip,
  },
  () => {
    within100('leaderLossChange', 'after re-election, a health change');
  },
);

/** GET the proxy's /ready: its status code. */
async function ready(): Promise<number> {
  return new Promise((resolve, reject) => {
    http
      .get(`http://${proxy.metrics}/ready`, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      })
      .on('error', reject);
  });
}

// Filled by the outage test for the fail-fast todo below (same outage, measured once).
const outage: { uncachedMs?: number; staleMs?: number } = {};

test(
  "both of the proxy's agents are killed: /ready 503, an uncached name SERVFAIL within the deadline, cached names served stale; all recover",
  { skip },
  async () => {
    // After a re-cache race in an earlier test the proxy may hold a wrong answer for up to
    // cache.consulTtl (60 s); this test needs a right one cached, so it waits that out.
    await waitFor(async () => withBoth(await ask(proxyAddr, 'janus.service.starlings')), {
      timeoutMs: 70_000,
      intervalMs: 100,
      what: 'both Janus hosts named',
    });
    await cluster.kill('a4c');
    await cluster.kill('s1');
    try {
      await waitFor(async () => (await ready()) === 503, { timeoutMs: 15_000, what: '/ready to turn 503' });
      const unc = await ask(proxyAddr, 'never-asked-before.service.starlings', 'A', 5000);
      outage.uncachedMs = Math.round(unc.ms);
      assert.equal(unc.rcode, 2, 'an uncached Consul name: SERVFAIL');
      assert.ok(unc.ms <= 3000 + 500, `SERVFAIL within the 3 s deadline (took ${unc.ms} ms)`);
      const stale = await ask(proxyAddr, 'janus.service.starlings', 'A', 5000);
      outage.staleMs = Math.round(stale.ms);
      assert.equal(stale.rcode, 0, 'a cached name is served stale');
      assert.deepEqual(aAddrs(stale), [J1, J2]);
    } finally {
      await cluster.restart('s1');
      await cluster.restart('a4c');
      await cluster.waitReady();
    }
    await waitFor(async () => (await ready()) === 200, { timeoutMs: 20_000, what: '/ready back to 200' });
    await waitFor(async () => withBoth(await ask(proxyAddr, 'janus.service.starlings')), {
      timeoutMs: 70_000,
      intervalMs: 100,
      what: 'fresh answers again',
    });
    lags.outageUncachedMs = outage.uncachedMs!;
    lags.outageStaleMs = outage.staleMs!;
  },
);

test(
  'with both agents marked down, killed agents cost milliseconds: uncached SERVFAIL < 100 ms, stale at once',
  // Connected upstream sockets hear the ICMP port-unreachable of a killed agent (ECONNREFUSED), so
  // the pool marks both down at once and answers without asking (issue 13 item 1, issue 14).
  { skip },
  () => {
    assert.ok(outage.uncachedMs !== undefined, 'the outage test ran');
    assert.ok(outage.uncachedMs < 100, `uncached SERVFAIL took ${outage.uncachedMs} ms`);
    assert.ok(outage.staleMs! < 100, `stale answer took ${outage.staleMs} ms`);
  },
);

test(
  'after the HTTP API returns, answers are cached again at once (no agent queries within 5 s of recovery)',
  {
    skip,
  },
  async () => {
    // Probes (SOA every probeIntervalMs, 1 s) also count as domain queries: allow one per agent per second.
    await waitFor(
      async () => {
        const c0 = await cluster.dnsQueryCount(['a4c', 's1']);
        const t0 = Date.now();
        for (let i = 0; i < 20; i++) await ask(proxyAddr, 'janus.service.starlings');
        const probes = 2 * (Math.ceil((Date.now() - t0) / 1000) + 1);
        return (await cluster.dnsQueryCount(['a4c', 's1'])) - c0 <= probes;
      },
      { timeoutMs: 5000, intervalMs: 200, what: 'twenty repeated queries to be answered from the cache' },
    );
  },
);

/**
 * A proxy of its own in front of the Alien4Cloud agent and server 1, whose health probes are rare
 * (after the start-up ones), so the agents' own DNS counters count client misses only.
 */
async function countingProxy(t: TestContext): Promise<{ server: string; agents: string[] }> {
  const p = await startProxy(['--metrics', 'off'], {
    config:
      [
        'consul:',
        '  agents: ["127.0.20.41:8600", "127.0.20.21:8600"]',
        '  http: ["http://127.0.20.41:8500", "http://127.0.20.21:8500"]',
        'upstream:',
        '  probeIntervalMs: 3600000',
      ].join('\n') + '\n',
  });
  t.after(() => p.stop());
  const agents = ['a4c', 's1'];
  const before = await cluster.dnsQueryCount(agents);
  await waitFor(async () => (await cluster.dnsQueryCount(agents)) >= before + 2, {
    timeoutMs: 10_000,
    what: 'the start-up probes to reach both agents',
  });
  return { server: `${p.host}:${p.port}`, agents };
}

const repeated: { fromFirst?: number } = {};

test(
  "once the health watch is live, 500 repeated A and SRV queries raise the agents' own DNS counters by 0",
  { skip },
  async (t) => {
    const { server, agents } = await countingProxy(t);
    const qs: [string, 'A' | 'SRV'][] = [
      ['janus.service.starlings', 'A'],
      ['_janus._tcp.service.starlings', 'SRV'],
    ];
    const run = async (n: number) => {
      const c0 = await cluster.dnsQueryCount(agents);
      for (let i = 0; i < n; i++) {
        const [q, ty] = qs[i % 2]!;
        assert.equal((await ask(server, q, ty)).rcode, 0);
      }
      return (await cluster.dnsQueryCount(agents)) - c0;
    };
    // From the very first query (the todo below asserts the bound on this figure).
    repeated.fromFirst = await run(500);
    lags.agentQueriesFor500FromFirst = repeated.fromFirst;
    // Then, the watch live for both names, none at all.
    for (const [q, ty] of qs) {
      await waitFor(
        async () => {
          const c0 = await cluster.dnsQueryCount(agents);
          await ask(server, q, ty);
          return (await cluster.dnsQueryCount(agents)) === c0;
        },
        { timeoutMs: 10_000, intervalMs: 50, what: `${q} ${ty} answered from the cache` },
      );
    }
    const added = await run(500);
    lags.agentQueriesFor500Live = added;
    assert.equal(added, 0, `500 cached queries raised consul_dns_domain_query_count by ${added}`);
  },
);

test(
  "500 repeated A and SRV queries raise the agents' own DNS counters by at most 2 per distinct question (counted from the first)",
  {
    skip,
  },
  () => {
    assert.ok(repeated.fromFirst !== undefined, 'the counting test ran');
    assert.ok(
      repeated.fromFirst <= 4,
      `500 queries from the first raised consul_dns_domain_query_count by ${repeated.fromFirst}`,
    );
  },
);

test(
  "repeated AAAA and unknown-name queries raise the agents' own DNS counters by at most 2 per distinct question",
  {
    skip,
  },
  async (t) => {
    const { server, agents } = await countingProxy(t);
    const qs: [string, 'AAAA' | 'A'][] = [
      ['janus.service.starlings', 'AAAA'],
      ['no-such-service.service.starlings', 'A'],
    ];
    const c0 = await cluster.dnsQueryCount(agents);
    for (let i = 0; i < 200; i++) {
      const [q, ty] = qs[i % 2]!;
      const r = await ask(server, q, ty);
      assert.equal(r.rcode, ty === 'AAAA' ? 0 : 3);
    }
    const added = (await cluster.dnsQueryCount(agents)) - c0;
    lags.agentQueriesFor200Negative = added;
    assert.ok(added <= 2 * qs.length, `200 AAAA/unknown queries raised consul_dns_domain_query_count by ${added}`);
  },
);

/** Registers `id` on the Alien4Cloud host's agent; `critical`: with a TTL check that starts critical. */
async function registerLate(id: string, critical: boolean): Promise<void> {
  const body: Record<string, unknown> = { ID: id, Name: id, Address: '127.0.20.41', Port: 9000 };
  if (critical) body['Check'] = { TTL: '10m', Status: 'critical' };
  const r = await cluster.put('/v1/agent/service/register', body, 'a4c');
  assert.equal(r.status, 200, `register ${id}: ${JSON.stringify(r.body)}`);
}

test(
  "a service registered after its NXDOMAIN was held resolves within 100 ms of the agent's own DNS; one registered critical, within 100 ms of its check passing",
  { skip },
  async () => {
    const named = (r: Reply) => aAddrs(r).includes('127.0.20.41');
    const held = async (name: string) => {
      // Held: a few repeats reach the agents not at all (the first misses start the watch).
      await waitFor(
        async () => {
          const c0 = await cluster.dnsQueryCount(['a4c', 's1']);
          for (let i = 0; i < 5; i++) assert.equal((await ask(proxyAddr, `${name}.service.starlings`)).rcode, 3);
          return (await cluster.dnsQueryCount(['a4c', 's1'])) - c0 <= 2; // probes: 1 s, both agents
        },
        { timeoutMs: 10_000, intervalMs: 100, what: `the NXDOMAIN of ${name} held` },
      );
    };
    try {
      await held('late-one');
      await lag('registeredLate', A4C_DNS, 'late-one.service', named, () => registerLate('late-one', false));
      await held('late-two');
      await registerLate('late-two', true);
      // Known to the catalog now, still no healthy instance: held under its health watch.
      await held('late-two');
      await lag('criticalThenPassing', A4C_DNS, 'late-two.service', named, async () => {
        const r = await cluster.put('/v1/agent/check/pass/service:late-two', undefined, 'a4c');
        assert.equal(r.status, 200);
      });
    } finally {
      for (const id of ['late-one', 'late-two'])
        await cluster.put(`/v1/agent/service/deregister/${id}`, undefined, 'a4c');
    }
    within100('registeredLate', 'a service registered after its NXDOMAIN was held');
    within100('criticalThenPassing', 'a service registered critical whose check then passed');
  },
);
