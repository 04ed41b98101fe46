/**
 * The fault matrix (issue 9; the README table is docs/hardening.md): every fault mode of the
 * Consul agent simulator, a dead recursor, a broken Consul HTTP API and everything down, each
 * driven through the real CLI and checked with dig. Where the expectation is "answers keep
 * coming", a second healthy simulator is the failover agent and the test also checks the faulty
 * one was really asked. Spoofed replies (wrong ID, wrong question, wrong source address) must
 * reach neither the client nor the cache: after the fault clears, the right answer comes back.
 *
 * Small timeouts (upstream.timeoutMs 400, deadlineMs 1500) keep the suite fast; the cache is on, so
 * each case asks names nobody asked before when it needs the query to go upstream.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { startJanusCluster, type Sim, type DnsFault } from '../support/consul-sim/index.js';
import { dig, type DigResult } from '../support/dig.js';
import { startProxy, startUnbound, freePort, type Unbound, type ProxyProc } from '../support/proc.js';
import { waitFor } from '../support/wait.js';

let healthy: Sim;
let unbound: Unbound;

before(async () => {
  healthy = await startJanusCluster();
  unbound = await startUnbound();
});

after(async () => {
  await healthy?.stop();
  await unbound?.stop();
});

async function proxyWith(t: { after(fn: () => unknown): void }, args: string[]): Promise<ProxyProc> {
  const p = await startProxy(['--metrics', 'off', ...args], {
    config: 'upstream:\n  timeoutMs: 400\n  deadlineMs: 1500\n  probeIntervalMs: 1000\n',
  });
  t.after(() => p.stop());
  return p;
}

const ask = (p: ProxyProc, ...args: string[]): Promise<DigResult> => dig([`@127.0.0.1`, '-p', String(p.port), ...args]);
const addrs = (r: DigResult) =>
  r.answer
    .filter((a) => a.type === 'A')
    .map((a) => a.data)
    .sort();
const JANUS = ['127.0.0.11', '127.0.0.12'];

// --- Agent faults with a healthy second agent: answers keep coming -------------------------------

const failoverCases: { fault: DnsFault; name: string }[] = [
  { fault: 'refuse', name: 'agent refusing (port closed)' },
  { fault: 'silent', name: 'agent silent' },
  { fault: 'slow', name: 'agent slow beyond the timeout' },
  { fault: 'servfail', name: 'agent answering SERVFAIL' },
  { fault: 'garbage', name: 'agent sending garbage' },
  { fault: 'wrongid', name: 'agent replying with the wrong ID' },
  { fault: 'wrongquestion', name: 'agent replying to another question' },
];

for (const c of failoverCases) {
  test(`fault: ${c.name} → failover to the second agent, every answer correct`, async (t) => {
    const bad = await startJanusCluster();
    t.after(() => bad.stop());
    if (c.fault === 'slow') await bad.setFault({ dns: 'slow', delayMs: 2500 });
    else await bad.setFault({ dns: c.fault });
    const before = bad.queries;
    const p = await proxyWith(t, ['--agent', `127.0.0.1:${bad.dnsPort}`, '--agent', `127.0.0.1:${healthy.dnsPort}`]);
    // Distinct names and types: each one is a cache miss that has to go upstream.
    for (const [name, type] of [
      ['janus.service.consul', 'A'],
      ['server1.janus.service.consul', 'A'],
      ['janus.service.starlings', 'A'],
      ['server2.janus.service.consul', 'SRV'],
    ] as const) {
      const r = await ask(p, name, type);
      assert.equal(r.status, 'NOERROR', `${name} ${type}: ${r.raw}`);
      if (type === 'A') assert.deepEqual(addrs(r), name.startsWith('server1') ? ['127.0.0.11'] : JANUS);
      else assert.equal(r.answer[0]?.data.endsWith('.consul.'), true);
      assert.equal(r.question[0]?.name, name + '.', 'the question is the one asked');
    }
    if (c.fault !== 'refuse') assert.ok(bad.queries > before, 'the faulty agent was asked');
  });
}

test('fault: agent truncating every UDP reply → the TCP retry to it gets the full answer', async (t) => {
  const trunc = await startJanusCluster();
  t.after(() => trunc.stop());
  await trunc.setFault({ dns: 'truncated' });
  const p = await proxyWith(t, ['--agent', `127.0.0.1:${trunc.dnsPort}`]);
  const r = await ask(p, 'janus.service.consul');
  assert.equal(r.status, 'NOERROR');
  assert.deepEqual(addrs(r), JANUS);
  assert.ok(!r.flags.includes('tc'), 'the client gets the answer over UDP, no TC');
  assert.equal(r.transport, 'UDP');
});

// --- Spoofed replies with no other agent: SERVFAIL, never the spoofed data, cache clean -------------

for (const fault of ['wrongid', 'wrongquestion', 'garbage'] as const) {
  test(`spoof: ${fault} from the only agent never reaches the client or the cache`, async (t) => {
    const only = await startJanusCluster();
    t.after(() => only.stop());
    await only.setFault({ dns: fault });
    const p = await proxyWith(t, ['--agent', `127.0.0.1:${only.dnsPort}`]);
    const r = await ask(p, 'janus.service.consul', '+time=4');
    assert.equal(r.status, 'SERVFAIL', r.raw);
    assert.equal(r.answer.length, 0);
    await only.setFault({ dns: null });
    await waitFor(async () => (await ask(p, 'janus.service.consul')).status === 'NOERROR', {
      timeoutMs: 10_000,
      what: 'recovery',
    });
    assert.deepEqual(addrs(await ask(p, 'janus.service.consul')), JANUS);
    if (fault === 'wrongquestion') {
      // The spoofed reply was for wrong-question.janus...: had it been cached, it would answer now.
      const w = await ask(p, 'wrong-question.janus.service.consul');
      assert.equal(w.status, 'NXDOMAIN', 'nothing was cached under the spoofed question');
    }
  });
}

/**
 * An agent that answers from the wrong source port (an off-path spoofer's best guess at the
 * reply) with a poisoned address, or from the right socket with the right one, as told.
 */
async function startSpoofAgent(): Promise<{ port: number; spoof: boolean; close(): void }> {
  const sock = dgram.createSocket('udp4');
  const other = dgram.createSocket('udp4');
  const state = {
    port: 0,
    spoof: true,
    close: () => {
      sock.close();
      other.close();
    },
  };
  sock.on('message', (q, rinfo) => {
    if (q.length < 17) return;
    // Reply: header + question + one A record (pointer to the question name), no OPT.
    let end = 12;
    while (q[end]! !== 0 && end < q.length) end += q[end]! + 1;
    end += 5;
    const head = Buffer.from(q.subarray(0, end));
    head.writeUInt16BE(0x8580, 2);
    head.writeUInt16BE(1, 4);
    head.writeUInt16BE(1, 6);
    head.writeUInt16BE(0, 8);
    head.writeUInt16BE(0, 10);
    const ip = state.spoof ? [6, 6, 6, 6] : [192, 0, 2, 99];
    const rr = Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, ...ip]);
    (state.spoof ? other : sock).send(Buffer.concat([head, rr]), rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  await new Promise<void>((r) => other.bind(0, '127.0.0.1', () => r()));
  state.port = sock.address().port;
  return state;
}

test('spoof: a reply from the wrong source address never reaches the client or the cache', async (t) => {
  const s = await startSpoofAgent();
  t.after(() => s.close());
  const p = await proxyWith(t, ['--agent', `127.0.0.1:${s.port}`, '--no-alias']);
  const r = await ask(p, 'x.service.consul', '+time=4');
  assert.equal(r.status, 'SERVFAIL');
  assert.ok(!r.raw.includes('6.6.6.6'));
  s.spoof = false;
  await waitFor(async () => (await ask(p, 'x.service.consul')).status === 'NOERROR', {
    timeoutMs: 10_000,
    what: 'recovery',
  });
  assert.deepEqual(addrs(await ask(p, 'x.service.consul')), ['192.0.2.99']);
});

// --- Recursors ------------------------------------------------------------------------------------

test('fault: recursor down → SERVFAIL with an EDE within the deadline; a second recursor keeps answering; .consul unaffected', async (t) => {
  const dead = await freePort();
  const p = await proxyWith(t, ['--agent', `127.0.0.1:${healthy.dnsPort}`, '--recursor', `127.0.0.1:${dead}`]);
  const t0 = Date.now();
  const r = await ask(p, 'www.example', '+time=5');
  const ms = Date.now() - t0;
  assert.equal(r.status, 'SERVFAIL');
  assert.ok(r.opt?.ede, 'Extended DNS Error present');
  assert.ok(ms < 5000, `answered before the client gave up (${ms} ms)`);
  assert.equal((await ask(p, 'janus.service.consul')).status, 'NOERROR');
  const p2 = await proxyWith(t, [
    '--agent',
    `127.0.0.1:${healthy.dnsPort}`,
    '--recursor',
    `127.0.0.1:${dead}`,
    '--recursor',
    `127.0.0.1:${unbound.port}`,
  ]);
  for (const n of ['www.example', 'api.example']) {
    const ok = await ask(p2, n);
    assert.equal(ok.status, 'NOERROR');
    assert.equal(addrs(ok).length, 1);
  }
});

// --- Consul HTTP API --------------------------------------------------------------------------------

for (const http of ['500', 'refuse'] as const) {
  test(`fault: Consul HTTP API ${http === '500' ? 'answering 500' : 'down'} → answers keep coming, the cache falls back to Consul's TTL (every query reaches the agent)`, async (t) => {
    const agent = await startJanusCluster();
    t.after(() => agent.stop());
    await agent.setFault({ http });
    const p = await proxyWith(t, [
      '--agent',
      `127.0.0.1:${agent.dnsPort}`,
      '--consul-http',
      `http://127.0.0.1:${agent.httpPort}`,
    ]);
    const before = agent.queries;
    for (let i = 0; i < 4; i++) {
      const r = await ask(p, 'janus.service.consul');
      assert.equal(r.status, 'NOERROR');
      assert.deepEqual(addrs(r), JANUS);
    }
    // Probes may add queries of their own; the four client queries must all have gone upstream.
    assert.ok(agent.queries - before >= 4, `agent saw ${agent.queries - before} queries for 4 asked`);
  });
}

test('contrast: with the HTTP API healthy, a watched service is answered from the cache', async (t) => {
  const agent = await startJanusCluster();
  t.after(() => agent.stop());
  const p = await proxyWith(t, [
    '--agent',
    `127.0.0.1:${agent.dnsPort}`,
    '--consul-http',
    `http://127.0.0.1:${agent.httpPort}`,
  ]);
  // Once the watch is live, an answer is held: three queries in a row cost the agent nothing.
  await waitFor(
    async () => {
      const before = agent.queries;
      for (let i = 0; i < 3; i++) assert.equal((await ask(p, 'janus.service.consul')).status, 'NOERROR');
      return agent.queries === before;
    },
    { timeoutMs: 10_000, what: 'cache hits for a watched service' },
  );
});

// --- Everything down ---------------------------------------------------------------------------------

test('fault: everything down → SERVFAIL within the deadline for every name, then recovery when one agent returns', async (t) => {
  const a = await startJanusCluster();
  const b = await startJanusCluster();
  t.after(async () => {
    await a.stop();
    await b.stop();
  });
  await a.setFault({ dns: 'silent', http: 'refuse' });
  await b.setFault({ dns: 'refuse', http: '500' });
  const deadRecursor = await freePort();
  const p = await proxyWith(t, [
    '--agent',
    `127.0.0.1:${a.dnsPort}`,
    '--agent',
    `127.0.0.1:${b.dnsPort}`,
    '--recursor',
    `127.0.0.1:${deadRecursor}`,
    '--consul-http',
    `http://127.0.0.1:${a.httpPort}`,
  ]);
  for (const name of ['janus.service.consul', 'janus.service.starlings', 'www.example']) {
    const t0 = Date.now();
    const r = await ask(p, name, '+time=5');
    const ms = Date.now() - t0;
    assert.equal(r.status, 'SERVFAIL', name);
    assert.ok(r.opt?.ede, `${name}: EDE`);
    assert.ok(ms < 4000, `${name}: SERVFAIL in ${ms} ms (deadline 1500)`);
  }
  await b.setFault({ dns: null });
  await waitFor(async () => (await ask(p, 'janus.service.consul')).status === 'NOERROR', {
    timeoutMs: 15_000,
    what: 'recovery through the returning agent',
  });
  assert.deepEqual(addrs(await ask(p, 'janus.service.consul')), JANUS);
});
