/**
 * Negative Consul answers under a watch (issue 15 item 1), against the simulator, end to end: the
 * real CLI, the simulator's DNS and HTTP API on loopback, an in-process UDP client. NODATA (AAAA
 * of an IPv4-only service) is held under the service's health watch; NXDOMAIN for a service with
 * no healthy instance under its health watch; NXDOMAIN for an unknown service under the one
 * catalog watch. None of them outlives what the watches report: a registration, a check passing,
 * or a lagging agent's DNS still answering NXDOMAIN after the catalog listed the service.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startJanusCluster, type Sim } from '../support/consul-sim/index.js';
import { ask, aAddrs } from '../support/dns-ask.js';
import { startProxy, type ProxyProc } from '../support/proc.js';
import { waitFor } from '../support/wait.js';
import { metricValue, scrape } from '../support/scripted-upstream.js';

let sim: Sim;
let proxy: ProxyProc;
let server: string;
after(async () => {
  await proxy?.stop();
  await sim?.stop();
});
before(async () => {
  sim = await startJanusCluster();
  const q0 = sim.queries;
  proxy = await startProxy(
    [
      '--agent',
      `127.0.0.1:${sim.dnsPort}`,
      '--consul-http',
      `http://127.0.0.1:${sim.httpPort}`,
      '--metrics',
      '127.0.0.1:0',
    ],
    { config: 'upstream:\n  probeIntervalMs: 3600000\n' },
  );
  server = `${proxy.host}:${proxy.port}`;
  await waitFor(() => sim.queries > q0, { timeoutMs: 10_000, what: 'the start-up probe to reach the agent' });
});

const NXDOMAIN = 3;

/** Agent queries caused by `n` repeats of one question, counted from the first. */
async function cost(name: string, type: 'A' | 'AAAA' | 'SRV', n: number, rcode: number): Promise<number> {
  const q0 = sim.queries;
  for (let i = 0; i < n; i++) assert.equal((await ask(server, name, type)).rcode, rcode, `${name} ${type} #${i}`);
  return sim.queries - q0;
}

/** Polls the proxy until `ok`; returns how long after `t0` it first held. */
async function until(t0: number, name: string, ok: (r: Awaited<ReturnType<typeof ask>>) => boolean): Promise<number> {
  let at = 0;
  await waitFor(
    async () => {
      const r = await ask(server, name);
      at = performance.now();
      return ok(r);
    },
    { timeoutMs: 10_000, intervalMs: 1, what: `${name} to change` },
  );
  return at - t0;
}

/** An unlabelled metric of the proxy; NaN when it is not exported. */
async function metric(name: string): Promise<number> {
  return metricValue(await scrape(proxy.metrics!), `consul_dns_proxy_${name}`) ?? NaN;
}

test('10 AAAA of an IPv4-only service (NODATA) cost at most 2 agent queries; then none; dropped with a health change', async () => {
  const first = await cost('janus.service.consul', 'AAAA', 10, 0);
  assert.ok(first <= 2, `10 AAAA from the first: ${first} agent queries`);
  assert.equal(await cost('janus.service.consul', 'AAAA', 10, 0), 0, 'held under the health watch');
  assert.ok((await metric('cache_negative_entries')) >= 1, 'counted as a cached negative answer');
  const h0 = sim.httpRequests;
  sim.setHealth('janus-1', 'critical');
  await waitFor(() => sim.httpRequests > h0, { timeoutMs: 10_000, what: 'the watch to report the change' });
  const q0 = sim.queries;
  await ask(server, 'janus.service.consul', 'AAAA');
  assert.equal(sim.queries, q0 + 1, 'the NODATA went with the health change');
  sim.setHealth('janus-1', 'passing');
});

test('100 repeats of an unknown service (NXDOMAIN) cost at most 2 agent queries; a registration resolves within 100 ms', async () => {
  const first = await cost('nosuch.service.consul', 'A', 100, NXDOMAIN);
  assert.ok(first <= 2, `100 unknown-name queries from the first: ${first} agent queries`);
  assert.equal(await metric('catalog_watch_state'), 1, 'the catalog watch is live');
  assert.equal(await cost('nosuch.service.consul', 'A', 20, NXDOMAIN), 0, 'held under the catalog watch');
  const t0 = performance.now();
  sim.register({ id: 'nosuch-1', name: 'nosuch', node: 'ns-n1', nodeAddress: '127.0.60.1', port: 80 });
  const lag = await until(t0, 'nosuch.service.consul', (r) => r.rcode === 0);
  // The simulator's own DNS answers at once; 100 ms is the bound.
  assert.ok(lag < 100, `resolved ${lag.toFixed(1)} ms after the registration`);
  assert.deepEqual(aAddrs(await ask(server, 'nosuch.service.consul')), ['127.0.60.1']);
});

test('a service registered critical: its NXDOMAIN is held under its health watch and goes the moment the check passes', async () => {
  // Known to the catalog first (another service's registration moves the same index).
  sim.register({
    id: 'late-1',
    name: 'late',
    node: 'late-n1',
    nodeAddress: '127.0.61.1',
    port: 80,
    status: 'critical',
  });
  await waitFor(async () => (await cost('late.service.consul', 'A', 5, NXDOMAIN)) === 0, {
    timeoutMs: 10_000,
    intervalMs: 20,
    what: 'the NXDOMAIN of a critical service held',
  });
  const t0 = performance.now();
  sim.setHealth('late-1', 'passing');
  const lag = await until(t0, 'late.service.consul', (r) => r.rcode === 0);
  assert.ok(lag < 100, `resolved ${lag.toFixed(1)} ms after the check passed`);
});

test('a lagging agent still answering NXDOMAIN after the catalog listed the service: not held', async (t) => {
  await waitFor(async () => (await cost('lagged.service.consul', 'A', 3, NXDOMAIN)) === 0, {
    timeoutMs: 10_000,
    intervalMs: 20,
    what: 'the unknown name held under the catalog watch',
  });
  sim.lagDns(true);
  t.after(() => sim.lagDns(false));
  const h0 = sim.httpRequests;
  sim.register({ id: 'lagged-1', name: 'lagged', node: 'lag-n1', nodeAddress: '127.0.62.1', port: 80 });
  // The catalog watch and the new service's health watch have both read the registration.
  await waitFor(() => sim.httpRequests > h0, { timeoutMs: 10_000, what: 'the catalog watch to report it' });
  for (let i = 0; i < 5; i++) assert.equal((await ask(server, 'lagged.service.consul')).rcode, NXDOMAIN, 'lagging');
  await new Promise((r) => setTimeout(r, 100)); // past any start-up grace of the new watch
  assert.equal((await ask(server, 'lagged.service.consul')).rcode, NXDOMAIN, 'still lagging');
  sim.lagDns(false);
  const r = await ask(server, 'lagged.service.consul');
  assert.equal(r.rcode, 0, 'the first query after the lag reaches the agent: the NXDOMAIN was not held');
  assert.deepEqual(aAddrs(r), ['127.0.62.1']);
});
