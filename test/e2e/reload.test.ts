/**
 * Reloads and admin, end to end through the real CLI: a SIGHUP that disables the cache while a
 * cacheable miss is in flight, a SIGHUP that adds a forward zone (metrics labels), a failed reload
 * that must start nothing (no extra probing), a cache flush by an alias name, and malformed queries
 * counted under their own zone label.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { decodeMessage } from '../../src/dns/message.js';
import { startProxy, freePort, type ProxyProc } from '../support/proc.js';
import { startJanusCluster } from '../support/consul-sim/index.js';
import { waitFor } from '../support/wait.js';
import {
  startScripted,
  reply,
  isProbe,
  a,
  clientQuery,
  askUdp,
  metricValue,
  scrape,
  type Scripted,
  type Script,
  scriptedProxyArgs,
} from '../support/scripted-upstream.js';

type T = { after(fn: () => unknown): void };

async function scripted(t: T, s: Script): Promise<Scripted> {
  const u = await startScripted(s);
  t.after(() => u.stop());
  return u;
}

/** Rewrites the proxy's config file, sends SIGHUP and waits for the log line `msg` after it. */
async function reload(p: ProxyProc, yaml: string, msg: RegExp): Promise<void> {
  // A reply to anything (here a malformed message, answered locally) proves the proxy has started,
  // so the SIGHUP reloads a running configuration.
  await askUdp(p.port, Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 40]), 1000);
  const from = p.logs.length;
  writeFileSync(p.configPath!, yaml);
  p.proc.kill('SIGHUP');
  await waitFor(() => p.logs.slice(from).some((l) => msg.test(String(l.msg))), { what: `log ${msg}`, timeoutMs: 5000 });
}

const answerA =
  (ip: string): Script =>
  (q) =>
    isProbe(q) ? reply(q) : reply(q, { answers: [a(q.rawName, ip, 300)] });

test('item 19: SIGHUP setting cache.enabled false while a slow cacheable miss is in flight → the process survives and answers', async (t) => {
  const up = await scripted(t, (q) =>
    isProbe(q) ? reply(q) : { bytes: reply(q, { answers: [a(q.rawName, '192.0.2.19', 300)] }), delayMs: 800 },
  );
  const p = await startProxy(await scriptedProxyArgs(up.address), { config: 'cache:\n  enabled: true\n' });
  t.after(() => p.stop());
  const answer = askUdp(p.port, clientQuery(19, 'slow.reload.example', 1), 2500);
  await waitFor(() => up.queriesFor('slow.reload.example').length > 0, { what: 'the miss to reach the upstream' });
  await reload(p, 'cache:\n  enabled: false\n', /configuration reloaded|reload failed/);
  const r = await answer;
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(p.proc.exitCode, null, `the proxy is still running: ${p.stderr.slice(-2000)}`);
  assert.ok(r, 'the in-flight query was answered');
  assert.equal(decodeMessage(r).flags & 0xf, 0, 'NOERROR');
});

test('item 20: SIGHUP adding a forward zone → its UDP queries are labelled transport="udp",zone="<new zone>"', async (t) => {
  const up = await scripted(t, answerA('192.0.2.20'));
  const p = await startProxy(await scriptedProxyArgs(up.address, '127.0.0.1:0'), { config: '{}\n' });
  t.after(() => p.stop());
  await reload(p, `zones:\n  - name: newzone.test\n    upstreams: ["${up.address}"]\n`, /configuration reloaded/);
  for (let i = 0; i < 3; i++) {
    const r = await askUdp(p.port, clientQuery(i, `h${i}.newzone.test`, 1));
    assert.ok(r && (decodeMessage(r).flags & 0xf) === 0, `h${i}.newzone.test answered`);
  }
  const text = await scrape(p.metrics!);
  const v = metricValue(text, 'consul_dns_proxy_requests_total', { transport: 'udp', zone: 'newzone.test' }) ?? 0;
  assert.ok(
    v >= 3,
    `requests_total{transport="udp",zone="newzone.test"} = ${v}\n${text
      .split('\n')
      .filter((l) => l.startsWith('consul_dns_proxy_requests_total'))
      .join('\n')}`,
  );
});

test('item 21: a failed reload (unreadable consul.tls.caFile) starts nothing: the upstream sees no extra probes', async (t) => {
  const up = await scripted(t, answerA('192.0.2.21'));
  const agent = await scripted(t, (q) => reply(q));
  const closed = await freePort();
  const base = `consul:\n  http: ["http://127.0.0.1:${closed}"]\nupstream:\n  probeIntervalMs: 200\n`;
  const p = await startProxy(['--metrics', 'off', '--agent', agent.address, '--recursor', up.address], {
    config: base,
  });
  t.after(() => p.stop());
  const probes = () => up.queries.filter((q) => isProbe(q)).length;
  const rate = async (ms: number) => {
    const n0 = probes();
    await new Promise((r) => setTimeout(r, ms));
    return probes() - n0;
  };
  await new Promise((r) => setTimeout(r, 300));
  const before = await rate(1500);
  await reload(
    p,
    `consul:\n  http: ["https://127.0.0.1:${closed}"]\n  tls:\n    caFile: /nonexistent/consul-ca.pem\n` +
      `upstream:\n  probeIntervalMs: 200\nzones:\n  - name: leak.test\n    upstreams: ["${up.address}"]\n`,
    /reload failed/,
  );
  const after = await rate(1500);
  assert.ok(before >= 3, `probing before the reload: ${before}`);
  assert.ok(after <= before * 1.5 + 2, `probes in 1.5 s: ${before} before the failed reload, ${after} after`);
});

test("item 23: POST /cache/flush?name=janus.service.starlings flushes janus.service.consul's entry", async (t) => {
  const sim = await startJanusCluster();
  t.after(() => sim.stop());
  const p = await startProxy([
    '--metrics',
    '127.0.0.1:0',
    '--agent',
    `127.0.0.1:${sim.dnsPort}`,
    '--consul-http',
    `http://127.0.0.1:${sim.httpPort}`,
  ]);
  t.after(() => p.stop());
  const ask = () => askUdp(p.port, clientQuery(23, 'janus.service.consul', 1));
  // Cached once the health watch is live: a query then no longer reaches the agent.
  await waitFor(
    async () => {
      await ask();
      const n = sim.queries;
      await ask();
      return sim.queries === n;
    },
    { what: 'janus.service.consul to be served from the cache', timeoutMs: 8000 },
  );
  const res = await fetch(`http://${p.metrics}/cache/flush?name=janus.service.starlings`, { method: 'POST' });
  const body = (await res.json()) as { flushed: number };
  const n = sim.queries;
  await ask();
  assert.ok(body.flushed >= 1, `flushed ${body.flushed}`);
  assert.ok(sim.queries > n, 'after the flush the query reached the agent');
});

test('item 24: a malformed query is counted under zone="none", before and after a reload that changes the zones', async (t) => {
  const up = await scripted(t, answerA('192.0.2.24'));
  const p = await startProxy(await scriptedProxyArgs(up.address, '127.0.0.1:0'), { config: '{}\n' });
  t.after(() => p.stop());
  // QDCOUNT 1, then a label length running past the end of the message.
  const bad = Buffer.from([0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 40, 0x61, 0x62]);
  const r = await askUdp(p.port, bad);
  assert.ok(r && (r[3]! & 0xf) === 1, 'FORMERR');
  const text = await scrape(p.metrics!);
  const v = metricValue(text, 'consul_dns_proxy_requests_total', { zone: 'none' }) ?? 0;
  assert.ok(v >= 1, `requests_total{zone="none"} = ${v}`);
  assert.equal(metricValue(text, 'consul_dns_proxy_requests_total', { zone: 'recursor' }) ?? 0, 0, 'not recursor');
  // A reload that adds a zone rebuilds the zone labels: "none" stays and keeps counting.
  await reload(p, `zones:\n  - name: newzone.test\n    upstreams: ["${up.address}"]\n`, /configuration reloaded/);
  const r2 = await askUdp(p.port, bad);
  assert.ok(r2 && (r2[3]! & 0xf) === 1, 'FORMERR after the reload');
  const after = await scrape(p.metrics!);
  const v2 = metricValue(after, 'consul_dns_proxy_requests_total', { zone: 'none' }) ?? 0;
  assert.ok(v2 >= v + 1, `requests_total{zone="none"} ${v} → ${v2} across the reload`);
  const others = ['recursor', 'newzone.test'].map(
    (zone) => metricValue(after, 'consul_dns_proxy_requests_total', { zone }) ?? 0,
  );
  assert.deepEqual(others, [0, 0], 'nothing counted under the recursor or the new zone');
});
