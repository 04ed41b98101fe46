/**
 * Observability end to end (issue 6): the real CLI, a mixed dig session, then /metrics must show
 * exactly the traffic, cache and upstream figures that were sent and pass `promtool check
 * metrics`; /ready must tell the truth about the agents; the query log and the cache endpoints
 * work. Counts are asserted on a proxy of this file's own, so no other test's traffic mixes in.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { startJanusCluster, startSim } from '../support/consul-sim/index.js';
import { dig } from '../support/dig.js';
import { startProxy, startUnbound } from '../support/proc.js';
import { waitFor } from '../support/wait.js';

/** The value of one sample (`name{labels}`; labels in any order), 0 when absent. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    const m = /^([^{ ]+)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries(
      (m[2] ?? '')
        .split(',')
        .filter(Boolean)
        .map((kv) => {
          const i = kv.indexOf('=');
          return [kv.slice(0, i), kv.slice(i + 2, -1)];
        }),
    );
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) total += Number(m[3]);
  }
  return total;
}

test('after a mixed dig session, /metrics counts exactly what was sent, and promtool accepts it', async (t) => {
  const sim = await startJanusCluster();
  const unbound = await startUnbound();
  const p = await startProxy([
    '--agent',
    `127.0.0.1:${sim.dnsPort}`,
    '--recursor',
    `127.0.0.1:${unbound.port}`,
    '--consul-http',
    `http://127.0.0.1:${sim.httpPort}`,
    '--metrics',
    '127.0.0.1:0',
  ]);
  t.after(async () => {
    await p.stop();
    await unbound.stop();
    await sim.stop();
  });
  const at = ['@127.0.0.1', '-p', String(p.port)];
  const scrape = async () => (await fetch(`http://${p.metrics}/metrics`)).text();

  // One miss starts the health watch; once it is live, repeated queries are cache hits.
  assert.equal((await dig([...at, 'janus.service.consul'])).status, 'NOERROR');
  await waitFor(async () => sample(await scrape(), 'consul_dns_proxy_health_watches') === 1, {
    what: 'one health watch',
  });
  assert.equal((await dig([...at, 'janus.service.consul'])).status, 'NOERROR'); // fetched after the watch went live
  const before = await scrape();
  const hits0 = sample(before, 'consul_dns_proxy_cache_hits_total');
  for (let i = 0; i < 5; i++) assert.equal((await dig([...at, 'janus.service.consul'])).status, 'NOERROR');
  for (let i = 0; i < 3; i++) assert.equal((await dig([...at, 'janus.service.starlings', '+tcp'])).status, 'NOERROR');
  assert.equal((await dig([...at, 'www.example'])).status, 'NOERROR');
  assert.equal((await dig([...at, 'nosuch.service.consul'])).status, 'NXDOMAIN');
  assert.equal((await dig([...at, 'janus.service.consul', '+opcode=15'])).status, 'NOTIMP');

  const text = await scrape();
  const req = (labels: Record<string, string>) =>
    sample(text, 'consul_dns_proxy_requests_total', labels) - sample(before, 'consul_dns_proxy_requests_total', labels);
  assert.equal(req({ zone: 'consul', type: 'A', transport: 'udp' }), 6, 'five hits and the NXDOMAIN');
  assert.equal(req({ zone: 'alias', type: 'A', transport: 'tcp' }), 3);
  assert.equal(req({ zone: 'recursor', type: 'A' }), 1, 'www.example');
  // A NOTIMP is answered before its question is read: no type, and zone "none" (not routed).
  assert.equal(req({ zone: 'none', type: 'other' }), 1, 'the NOTIMP');
  assert.equal(sample(text, 'consul_dns_proxy_cache_hits_total') - hits0, 8, 'alias and canonical share one entry');
  const resp = (labels: Record<string, string>) =>
    sample(text, 'consul_dns_proxy_responses_total', labels) -
    sample(before, 'consul_dns_proxy_responses_total', labels);
  assert.equal(resp({ zone: 'consul', rcode: 'NOERROR', source: 'cache' }), 5);
  assert.equal(resp({ zone: 'alias', rcode: 'NOERROR', source: 'cache' }), 3);
  assert.equal(resp({ zone: 'consul', rcode: 'NXDOMAIN', source: 'upstream' }), 1);
  assert.equal(resp({ rcode: 'NOTIMP', source: 'local' }), 1);
  assert.ok(
    sample(text, 'consul_dns_proxy_upstream_requests_total', {
      pool: 'recursor',
      upstream: `127.0.0.1:${unbound.port}`,
      transport: 'udp',
    }) >= 1,
  );
  assert.equal(
    sample(text, 'consul_dns_proxy_upstream_healthy', { pool: 'consul', upstream: `127.0.0.1:${sim.dnsPort}` }),
    1,
  );
  assert.ok(sample(text, 'consul_dns_proxy_cache_entries') >= 2);
  assert.equal(sample(text, 'consul_dns_proxy_service_instances', { service: 'janus' }), 2);

  const promtool = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  if (promtool.error) {
    if (process.env.CI) assert.fail('promtool is missing (CI installs the prometheus package)');
    t.skip('promtool not installed');
    return;
  }
  assert.equal(promtool.status, 0, promtool.stdout + promtool.stderr);
});

test('/ready is 503 with a reason while the agents are silent, 200 once one answers; /health is 200', async (t) => {
  const sim = await startSim();
  const p = await startProxy(['--agent', `127.0.0.1:${sim.dnsPort}`, '--metrics', '127.0.0.1:0'], {
    config: 'upstream: {probeIntervalMs: 300, timeoutMs: 200, hedgeMs: 50, deadlineMs: 1000}\n',
  });
  t.after(async () => {
    await p.stop();
    await sim.stop();
  });
  const ready = async () => {
    const r = await fetch(`http://${p.metrics}/ready`);
    return { status: r.status, body: (await r.json()) as { reason?: string } };
  };
  await waitFor(async () => (await ready()).status === 200, { what: 'ready with a live agent' });
  assert.equal((await fetch(`http://${p.metrics}/health`)).status, 200);
  await sim.setFault({ dns: 'silent' });
  await waitFor(async () => (await ready()).status === 503, { timeoutMs: 10_000, what: '503 with a silent agent' });
  assert.match((await ready()).body.reason ?? '', /agent/);
  await sim.setFault({ dns: null });
  await waitFor(async () => (await ready()).status === 200, {
    timeoutMs: 10_000,
    what: '200 once the agent answers again',
  });
});

test('query log: one JSON line per query with client, name, type, rcode, source, duration', async (t) => {
  const sim = await startJanusCluster();
  const p = await startProxy(['--agent', `127.0.0.1:${sim.dnsPort}`, '--metrics', 'off'], {
    config: 'log: {queries: true}\n',
  });
  t.after(async () => {
    await p.stop();
    await sim.stop();
  });
  await dig(['@127.0.0.1', '-p', String(p.port), 'JaNuS.service.consul', 'SRV']);
  await waitFor(() => p.logs.some((l) => l.msg === 'query'), { what: 'a query log line' });
  const line = p.logs.find((l) => l.msg === 'query')!;
  assert.equal(line.client, '127.0.0.1');
  assert.equal(line.name, 'janus.service.consul');
  assert.equal(line.type, 33);
  assert.equal(line.rcode, 0);
  assert.equal(line.source, 'upstream');
  assert.equal(typeof line.ms, 'number');
});

test("cache endpoints: GET /cache lists a name's entries, POST /cache/flush drops a service", async (t) => {
  const sim = await startJanusCluster();
  const p = await startProxy([
    '--agent',
    `127.0.0.1:${sim.dnsPort}`,
    '--consul-http',
    `http://127.0.0.1:${sim.httpPort}`,
    '--metrics',
    '127.0.0.1:0',
  ]);
  t.after(async () => {
    await p.stop();
    await sim.stop();
  });
  await dig(['@127.0.0.1', '-p', String(p.port), 'janus.service.consul']);
  const listed = (await (await fetch(`http://${p.metrics}/cache?name=janus.service.consul`)).json()) as {
    entries: number;
    matches: unknown[];
  };
  assert.ok(listed.entries >= 1);
  assert.equal(listed.matches.length, 1);
  const flushed = (await (await fetch(`http://${p.metrics}/cache/flush?service=janus`, { method: 'POST' })).json()) as {
    flushed: number;
  };
  assert.equal(flushed.flushed, 1);
  const after = (await (await fetch(`http://${p.metrics}/cache?name=janus.service.consul`)).json()) as {
    matches: unknown[];
  };
  assert.equal(after.matches.length, 0);
});
