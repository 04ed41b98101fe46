/**
 * The cache against the Consul simulator, end to end (issue 5): the real CLI as a child process,
 * the simulator's DNS and HTTP API on loopback, dig as the client. Repeated queries stay off the
 * agent once the health watch is live; a health change reaches the proxy's answers as soon as the
 * watch returns; index bumps without change keep the entry; failures are never cached; without
 * the HTTP API answers follow Consul's TTL; with the agents down stale answers carry EDE 3.
 * Every wait is on a condition with a generous ceiling; each test uses its own service names.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { startJanusCluster, startSim, type Sim } from '../support/consul-sim/index.js';
import { dig, type DigResult } from '../support/dig.js';
import { startProxy, type ProxyProc } from '../support/proc.js';
import { waitFor } from '../support/wait.js';

let sim: Sim;
after(async () => {
  await sim?.stop();
});
before(async () => {
  sim = await startJanusCluster();
});

/** A proxy on `s` with a config file; probes are made rare so sim.queries counts client misses only. */
async function proxyFor(s: Sim, yaml = '', extra: string[] = []): Promise<ProxyProc> {
  const q0 = s.queries;
  const p = await startProxy(
    [
      '--agent',
      `127.0.0.1:${s.dnsPort}`,
      '--consul-http',
      `http://127.0.0.1:${s.httpPort}`,
      '--metrics',
      'off',
      ...extra,
    ],
    { config: `upstream:\n  probeIntervalMs: 3600000\n${yaml}` },
  );
  // The pool probes each agent once at start; let that land before tests count agent queries.
  await waitFor(() => s.queries > q0, { timeoutMs: 10_000, what: 'the start-up probe to reach the agent' });
  return p;
}

const ask = (p: ProxyProc, ...args: string[]) => dig([`@${p.host}`, '-p', String(p.port), ...args]);
const addrs = (r: DigResult) =>
  r.answer
    .filter((a) => a.type === 'A')
    .map((a) => a.data)
    .sort();

/**
 * Waits until `name` is answered from the cache: a query that reaches the agent zero times. The
 * first miss starts the watch; an answer fetched before the watch's first reply is not held
 * (it may predate the watch's baseline), so the miss after the watch went live is the one kept.
 */
async function primed(s: Sim, p: ProxyProc, ...args: string[]): Promise<void> {
  await waitFor(
    async () => {
      const q0 = s.queries;
      const r = await ask(p, ...args);
      return r.status === 'NOERROR' && s.queries === q0;
    },
    { timeoutMs: 15_000, intervalMs: 50, what: `${args.join(' ')} answered from the cache` },
  );
}

function register(s: Sim, name: string, n: number, base: number) {
  for (let i = 1; i <= n; i++) {
    s.register({
      id: `${name}-${i}`,
      name,
      node: `${name}-n${i}`,
      nodeAddress: `127.0.${base}.${i}`,
      port: 8000 + i,
      tags: ['t', `t${i}`],
    });
  }
}

test('after the watch is live, repeated queries (canonical, alias, any case) reach the agent zero times', async (t) => {
  register(sim, 'rep', 2, 50);
  const p = await proxyFor(sim);
  t.after(() => p.stop());
  await primed(sim, p, 'rep.service.consul');
  const q0 = sim.queries;
  for (let i = 0; i < 15; i++) {
    const r = await ask(
      p,
      i % 3 === 0 ? 'rep.service.consul' : i % 3 === 1 ? 'rep.service.starlings' : 'rEp.SeRvIcE.StArLiNgS',
    );
    assert.equal(r.status, 'NOERROR');
    assert.deepEqual(addrs(r), ['127.0.50.1', '127.0.50.2']);
    assert.ok(
      r.answer.every((a) => a.ttl === 0),
      "clients see Consul's TTL 0",
    );
  }
  assert.equal(sim.queries, q0, 'fifteen queries, alias and canonical sharing one entry: no agent query');
});

test('critical removes an instance from every form as soon as the watch returns; warning stays; passing returns', async (t) => {
  register(sim, 'flip', 3, 51);
  const p = await proxyFor(sim);
  t.after(() => p.stop());
  const forms: string[][] = [
    ['flip.service.consul'],
    ['flip.service.starlings'],
    ['flip.service.dc1.consul'],
    ['t.flip.service.consul'],
    ['_flip._tcp.service.consul', 'SRV'],
    ['_flip._t.service.starlings', 'SRV'],
  ];
  for (const f of forms) await primed(sim, p, ...f);
  const has1 = async (f: string[]) => {
    const r = await ask(p, ...f);
    assert.equal(r.status, 'NOERROR');
    return f[1] === 'SRV' ? r.additional.some((a) => a.data === '127.0.51.1') : addrs(r).includes('127.0.51.1');
  };
  for (const f of forms) assert.ok(await has1(f), `${f.join(' ')} has flip-1 before`);

  sim.setHealth('flip-1', 'critical');
  for (const f of forms)
    await waitFor(async () => !(await has1(f)), { timeoutMs: 10_000, what: `${f.join(' ')} without flip-1` });
  for (const f of forms) await primed(sim, p, ...f); // and cached again, without it
  for (const f of forms) assert.ok(!(await has1(f)));

  sim.setHealth('flip-1', 'warning');
  for (const f of forms)
    await waitFor(() => has1(f), { timeoutMs: 10_000, what: `${f.join(' ')} with flip-1 (warning is served)` });
  await primed(sim, p, 'flip.service.consul');
  sim.setHealth('flip-1', 'passing');
  const q0 = sim.queries;
  assert.ok(await has1(['flip.service.consul']), 'still there when passing again');
  t.diagnostic(`agent queries after warning→passing: ${sim.queries - q0} (0 unless the SRV weight changed)`);
});

test('an index bump with no change keeps the entry: no extra agent query', async (t) => {
  register(sim, 'bump', 2, 52);
  const p = await proxyFor(sim);
  t.after(() => p.stop());
  await primed(sim, p, 'bump.service.consul');
  const q0 = sim.queries;
  const h0 = sim.httpRequests;
  sim.bumpIndex();
  // The blocked watch request returns (index moved) and the watch asks again: the bump was seen.
  await waitFor(() => sim.httpRequests > h0, { timeoutMs: 10_000, what: 'the watch to re-block after the bump' });
  for (let i = 0; i < 5; i++) assert.equal((await ask(p, 'bump.service.consul')).status, 'NOERROR');
  assert.equal(sim.queries, q0, 'still served from the cache');
});

test('SERVFAIL and truncated agent replies are never cached', async (t) => {
  const s = await startSim();
  t.after(() => s.stop());
  register(s, 'sf', 2, 53);
  const p = await proxyFor(s, '  timeoutMs: 300\n  hedgeMs: 50\n  deadlineMs: 600\n');
  t.after(() => p.stop());
  await primed(s, p, 'sf.service.consul'); // the watch is live: a good answer would be held
  await s.setFault({ dns: 'servfail' });
  for (let i = 0; i < 4; i++) {
    const q0 = s.queries;
    const r = await ask(p, 'sf.service.consul', 'SRV');
    assert.equal(r.status, 'SERVFAIL');
    assert.ok(s.queries > q0, 'every SERVFAIL query reached the agent again');
  }
  await s.setFault({ dns: 'truncated' });
  const tc = await ask(p, 'sf.service.consul', 'AAAA', '+ignore');
  assert.ok(!tc.flags.includes('tc'), "the agent's TC reply was retried over TCP, not passed on");
  const full = await ask(p, 'sf.service.consul', 'SRV', '+ignore');
  assert.equal(full.status, 'NOERROR');
  assert.equal(full.answer.length, 2, 'the whole answer (from the TCP retry), not the empty TC one');
  await s.setFault({ dns: null });
  await primed(s, p, 'sf.service.consul', 'SRV');
  assert.equal((await ask(p, 'sf.service.consul', 'SRV')).answer.length, 2);
});

test("HTTP API down: answers follow Consul's TTL (0: every query reaches the agent; 30: cached, aged)", async (t) => {
  const s = await startSim({ serviceTtl: { 'long*': 30 } });
  t.after(() => s.stop());
  register(s, 'zero', 2, 54);
  register(s, 'longer', 2, 55);
  await s.setFault({ http: 'refuse' });
  const p = await proxyFor(s);
  t.after(() => p.stop());
  for (let i = 0; i < 5; i++) {
    const q0 = s.queries;
    const r = await ask(p, 'zero.service.consul');
    assert.equal(r.status, 'NOERROR');
    assert.equal(s.queries, q0 + 1, 'TTL 0 and no watch: every query is a miss');
  }
  const first = await ask(p, 'longer.service.consul');
  assert.ok(first.answer.every((a) => a.ttl <= 30 && a.ttl >= 29));
  const q0 = s.queries;
  for (let i = 0; i < 5; i++) {
    const r = await ask(p, 'longer.service.starlings');
    assert.ok(
      r.answer.every((a) => a.ttl <= 30),
      'aged TTL, never more than Consul gave',
    );
  }
  assert.equal(s.queries, q0, 'held for its own 30 s');
});

test('agents down: stale answers carry TTL 30 and EDE 3; never after a health change', async (t) => {
  const s = await startSim();
  t.after(() => s.stop());
  register(s, 'old', 2, 56);
  register(s, 'gone', 2, 57);
  const p = await proxyFor(s, 'cache:\n  consulTtl: 1\n  staleSeconds: 120\n');
  t.after(() => p.stop());
  await primed(s, p, 'old.service.consul');
  await primed(s, p, 'gone.service.consul');
  await s.setFault({ dns: 'refuse' });
  let r: DigResult | null = null;
  await waitFor(
    async () => {
      r = await ask(p, 'old.service.consul', '+time=5');
      return r.opt?.ede?.code === 3;
    },
    { timeoutMs: 15_000, what: 'a stale answer once consulTtl (1 s) ended' },
  );
  const st = r!;
  assert.equal(st.status, 'NOERROR');
  assert.deepEqual(addrs(st), ['127.0.56.1', '127.0.56.2']);
  assert.ok(
    st.answer.every((a) => a.ttl === 30),
    'RFC 8767: TTL 30',
  );
  // A health change while the agents are down: that entry must not come back as stale.
  s.setHealth('gone-1', 'critical');
  await waitFor(async () => (await ask(p, 'gone.service.consul', '+time=5')).status === 'SERVFAIL', {
    timeoutMs: 15_000,
    what: 'SERVFAIL for the service whose health changed',
  });
  assert.equal(
    (await ask(p, 'old.service.consul', '+time=5')).opt?.ede?.code,
    3,
    'the other service is still served stale',
  );
});

test('identical misses in flight share one agent exchange: its failure is counted once, not per client', async (t) => {
  const s = await startSim();
  t.after(() => s.stop());
  await s.setFault({ dns: 'silent' });
  const p = await proxyFor(s, '  timeoutMs: 400\n  hedgeMs: 100\n  deadlineMs: 800\n  maxFails: 1000\n'); // never marked down: no extra probes
  t.after(() => p.stop());
  const sock = dgram.createSocket('udp4');
  t.after(() => sock.close());
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  const replies: Buffer[] = [];
  sock.on('message', (m) => replies.push(m));
  const qn = Buffer.from('\x05burst\x07service\x06consul\x00', 'latin1');
  const q0 = s.queries;
  for (let i = 0; i < 20; i++) {
    const b = Buffer.concat([Buffer.from([0, i, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]), qn, Buffer.from([0, 1, 0, 1])]);
    sock.send(b, p.port, p.host);
  }
  await waitFor(() => replies.length === 20, { timeoutMs: 10_000, what: '20 SERVFAIL replies' });
  for (const m of replies) assert.equal(m[3]! & 0xf, 2, 'SERVFAIL');
  const sent = s.queries - q0;
  assert.ok(sent >= 1 && sent <= 2, `one exchange (at most its two tries) for 20 clients, got ${sent} agent queries`);
});

test('a dead instance is not re-cached from a lagging agent after the watch reported it gone; a recovered one is not left out (issue 13 item 25)', async (t) => {
  register(sim, 'lag', 2, 58);
  const p = await proxyFor(sim);
  t.after(() => p.stop());
  t.after(() => sim.lagDns(false));
  const forms: string[][] = [['lag.service.consul'], ['_lag._tcp.service.consul', 'SRV']];
  const named = async (f: string[]) => {
    const r = await ask(p, ...f);
    assert.equal(r.status, 'NOERROR');
    const a = f[1] === 'SRV' ? r.additional.filter((x) => x.type === 'A').map((x) => x.data) : addrs(r);
    return [...new Set(a)].sort();
  };
  const flip = async (status: 'critical' | 'passing') => {
    // The agent's DNS lags behind the server the watch reads from (a follower applying late).
    sim.lagDns(true);
    const h0 = sim.httpRequests;
    sim.setHealth('lag-1', status);
    // The watch's blocked request returned with the change (the cache dropped the entries) and it
    // blocks again: the change has been reported.
    await waitFor(() => sim.httpRequests > h0, { timeoutMs: 10_000, what: 'the watch to report the change' });
  };
  for (const f of forms) await primed(sim, p, ...f);

  await flip('critical');
  // The miss right after the eviction reads the lagging DNS: still the old set.
  for (const f of forms) assert.deepEqual(await named(f), ['127.0.58.1', '127.0.58.2'], `${f} lagging`);
  sim.lagDns(false);
  // That answer was not held: the next query asks again and gets what the watch reported.
  for (const f of forms) assert.deepEqual(await named(f), ['127.0.58.2'], `${f} after the lag`);
  for (const f of forms) await primed(sim, p, ...f);

  await flip('passing');
  for (const f of forms) assert.deepEqual(await named(f), ['127.0.58.2'], `${f} lagging (recovery)`);
  sim.lagDns(false);
  for (const f of forms) assert.deepEqual(await named(f), ['127.0.58.1', '127.0.58.2'], `${f} recovered`);
  // And an answer that agrees is held again.
  for (const f of forms) await primed(sim, p, ...f);
});
