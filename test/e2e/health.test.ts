// Tests for the Consul health watch engine (src/health.ts): the DNS-view rules against Consul's
// filtering, and the blocking-query loop against a small fake Consul HTTP server defined here
// (node:http on 127.0.0.1:0) that implements /v1/health/service/<name> with blocking semantics:
// reply at once without ?index or when the index moved past it, else hold until a write or ?wait.
// Every test waits on conditions with a generous ceiling; nothing sleeps to "let things settle".

import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startSim } from '../support/consul-sim/index.js';
import { waitFor } from '../support/wait.js';
import { HealthWatcher, dnsView, dnsWeight, backoffDelay, type WatchOptions } from '../../src/consul/health.js';
import { serviceKey } from '../../src/consul/service-key.js';

// ---------------------------------------------------------------------------------------------
// helpers

/** The shared waitFor, with this file's (condition, what, timeout) argument order. */
const waitUntil = (fn: () => boolean, what: string, timeoutMs = 5000): Promise<void> =>
  waitFor(fn, { what, timeoutMs, intervalMs: 5 });

type Status = 'passing' | 'warning' | 'critical';
interface InstSpec {
  node: string;
  addr: string;
  port: number;
  status?: Status;
  nodeStatus?: Status;
  tags?: string[];
  weights?: { Passing: number; Warning: number };
  svcAddr?: string;
  output?: string;
  extraChecks?: { CheckID: string; Status: Status; ServiceName?: string }[];
}
/** One /v1/health/service entry, shaped like Consul's (health.mdx). */
function inst(service: string, s: InstSpec): unknown {
  const id = `${service}-${s.node}-${s.port}`;
  return {
    Node: {
      ID: `id-${s.node}`,
      Node: s.node,
      Address: s.addr,
      Datacenter: 'dc1',
      TaggedAddresses: { lan: s.addr, wan: s.addr },
      Meta: { 'consul-network-segment': '' },
      CreateIndex: 5,
      ModifyIndex: 5,
    },
    Service: {
      ID: id,
      Service: service,
      Tags: s.tags ?? [],
      Address: s.svcAddr ?? '',
      Meta: {},
      Port: s.port,
      Weights: s.weights ?? { Passing: 1, Warning: 1 },
      EnableTagOverride: false,
      CreateIndex: 7,
      ModifyIndex: 7,
    },
    Checks: [
      {
        Node: s.node,
        CheckID: 'serfHealth',
        Name: 'Serf Health Status',
        Status: s.nodeStatus ?? 'passing',
        Notes: '',
        Output: 'Agent alive and reachable',
        ServiceID: '',
        ServiceName: '',
        ServiceTags: [],
        Type: '',
        CreateIndex: 5,
        ModifyIndex: 5,
      },
      {
        Node: s.node,
        CheckID: `service:${id}`,
        Name: 'check',
        Status: s.status ?? 'passing',
        Notes: '',
        Output: s.output ?? 'ok',
        ServiceID: id,
        ServiceName: service,
        ServiceTags: s.tags ?? [],
        Type: 'ttl',
        CreateIndex: 7,
        ModifyIndex: 7,
      },
      ...(s.extraChecks ?? []).map((c) => ({
        Node: s.node,
        ServiceID: '',
        ServiceName: '',
        Output: '',
        Notes: '',
        ...c,
      })),
    ],
  };
}

interface Seen {
  path: string;
  service: string;
  index: number | null;
  wait: string | null;
  dc: string | null;
  token: string | undefined;
  at: number;
}

/** Fake Consul HTTP API: blocking /v1/health/service/<name>. */
class FakeConsul {
  index = 10;
  readonly data = new Map<string, unknown[]>();
  readonly seen: Seen[] = [];
  /** '500': every request fails; 'noindex': 200 without X-Consul-Index; 'hang': accept, never answer;
   *  'spin': ignore blocking, answer at once with a new index each time. */
  fault: null | '500' | 'noindex' | 'hang' | 'spin' | '429' | 'close' = null;
  /** Services the fault applies to (default all). */
  faultOnly: Set<string> | null = null;
  private readonly waiters = new Set<{ min: number; fire: () => void }>();
  private readonly sockets = new Set<net.Socket>();
  server: http.Server | https.Server;
  port = 0;

  constructor(tls?: { key: Buffer; cert: Buffer }) {
    const h = (req: http.IncomingMessage, res: http.ServerResponse): void => this.handle(req, res);
    this.server = tls ? https.createServer(tls, h) : http.createServer(h);
    this.server.on('connection', (s: net.Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    this.server.on('secureConnection', (s: net.Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
  }

  async listen(port = 0): Promise<this> {
    await new Promise<void>((r) => this.server.listen(port, '127.0.0.1', r));
    this.port = (this.server.address() as net.AddressInfo).port;
    return this;
  }
  get url(): string {
    return `${this.server instanceof https.Server ? 'https' : 'http'}://127.0.0.1:${this.port}`;
  }

  /** A write: new index, blocked queries return. */
  set(service: string, entries: unknown[]): void {
    this.data.set(service, entries);
    this.write();
  }
  write(): void {
    this.index++;
    this.wake();
  }
  /** Index goes backwards (snapshot restore). Wakes blocked queries so they see it. */
  restore(toIndex: number): void {
    this.index = toIndex;
    for (const w of [...this.waiters]) {
      this.waiters.delete(w);
      w.fire();
    }
  }
  private wake(): void {
    for (const w of [...this.waiters])
      if (this.index > w.min) {
        this.waiters.delete(w);
        w.fire();
      }
  }
  requests(service?: string): Seen[] {
    return service ? this.seen.filter((s) => s.service === service) : this.seen;
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const u = new URL(req.url ?? '/', 'http://x');
    const m = /^\/v1\/health\/service\/([^/]+)$/.exec(u.pathname);
    const idx = u.searchParams.get('index');
    const seen: Seen = {
      path: req.url ?? '',
      service: m ? decodeURIComponent(m[1] as string) : '',
      index: idx === null ? null : Number(idx),
      wait: u.searchParams.get('wait'),
      dc: u.searchParams.get('dc'),
      token: req.headers['x-consul-token'] as string | undefined,
      at: Date.now(),
    };
    this.seen.push(seen);
    const fault = this.faultOnly === null || this.faultOnly.has(seen.service) ? this.fault : null;
    if (fault === 'close') {
      req.socket.destroy(); // accepted, closed without a response (http_max_conns_per_client)
      return;
    }
    if (fault === '429') {
      res.writeHead(429, { 'content-type': 'text/plain' });
      res.end('Your IP is issuing too many concurrent connections, please rate limit your calls');
      return;
    }
    if (this.fault === 'hang') return; // never answered; destroyed by close()
    if (this.fault === '500') {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end('rpc error: No cluster leader');
      return;
    }
    if (!m) {
      res.writeHead(404);
      res.end();
      return;
    }
    const reply = (): void => {
      if (this.fault === '500') {
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end('rpc error: No cluster leader');
        return;
      }
      const headers: Record<string, string> = { 'content-type': 'application/json', 'x-consul-knownleader': 'true' };
      if (this.fault !== 'noindex') headers['x-consul-index'] = String(this.index);
      res.writeHead(200, headers);
      res.end(JSON.stringify(this.data.get(seen.service) ?? []));
    };
    if (this.fault === 'spin') {
      this.index++;
      reply();
      return;
    }
    if (idx === null || this.index > Number(idx)) {
      reply();
      return;
    }
    const waitMs = /^(\d+)s$/.test(seen.wait ?? '')
      ? Number(/^(\d+)s$/.exec(seen.wait as string)?.[1]) * 1000
      : 300_000;
    const w = {
      min: Number(idx),
      fire: (): void => {
        clearTimeout(timer);
        reply();
      },
    };
    const timer = setTimeout(() => {
      this.waiters.delete(w);
      reply();
    }, waitMs);
    this.waiters.add(w);
    res.on('close', () => {
      clearTimeout(timer);
      this.waiters.delete(w);
    });
  }

  async close(): Promise<void> {
    for (const w of this.waiters) w.fire();
    this.waiters.clear();
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

/** A loopback port with nothing listening (connections are refused). */
async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const p = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}

interface Harness {
  w: HealthWatcher;
  changes: { service: string; instances: number; index: number; at: number; dc?: string }[];
  live: [string, boolean][];
}
function watcher(urls: string[], over: Partial<WatchOptions> = {}): Harness {
  const changes: Harness['changes'] = [];
  const live: Harness['live'] = [];
  const w = new HealthWatcher({
    httpUrls: urls,
    onlyPassing: false,
    minIntervalMs: 10,
    idleMs: 300_000,
    maxWatches: 256,
    waitSeconds: 5,
    backoffBaseMs: 20,
    backoffMaxMs: 200,
    timeoutMarginMs: 1000,
    onChange: (service, d) => {
      const c: Harness['changes'][number] = { service, instances: d.instances, index: d.index, at: performance.now() };
      if (d.dc !== undefined) c.dc = d.dc;
      changes.push(c);
    },
    onLiveChange: (service, l) => live.push([service, l]),
    ...over,
  });
  return { w, changes, live };
}

const two = (status1: Status = 'passing', over1: Partial<InstSpec> = {}): unknown[] => [
  inst('web', { node: 'n1', addr: '10.0.0.1', port: 80, status: status1, ...over1 }),
  inst('web', { node: 'n2', addr: '10.0.0.2', port: 80 }),
];

// ---------------------------------------------------------------------------------------------
// DNS view (pure)

test('dnsView: any critical check hides the instance, node checks included', () => {
  const base = dnsView(two(), false);
  assert.equal(base.instances, 2);
  assert.equal(dnsView(two('critical'), false).instances, 1, 'service check critical');
  assert.equal(dnsView(two('passing', { nodeStatus: 'critical' }), false).instances, 1, 'serfHealth critical');
  const maint = two('passing', { extraChecks: [{ CheckID: '_node_maintenance', Status: 'critical' }] });
  assert.equal(dnsView(maint, false).instances, 1, '_node_maintenance');
  const smaint = two('passing', {
    extraChecks: [{ CheckID: '_service_maintenance:web-n1-80', Status: 'critical', ServiceName: 'web' }],
  });
  assert.equal(dnsView(smaint, false).instances, 1, '_service_maintenance');
  assert.equal(dnsView([], false).instances, 0);
  assert.throws(() => dnsView({}, false), { code: 'CDP_ERR_CONSUL_BAD_BODY' });
});

test('dnsView: warning is served unless onlyPassing; weight follows Weights.Warning like findWeight', () => {
  const pass = dnsView(two(), false);
  const warn = dnsView(two('warning'), false);
  assert.equal(warn.instances, 2);
  assert.equal(warn.hash, pass.hash, 'passing→warning with equal weights: DNS shows the same thing');
  assert.equal(dnsView(two('warning'), true).instances, 1, 'only_passing drops warning');
  const w = { Passing: 10, Warning: 1 };
  assert.notEqual(
    dnsView(two('warning', { weights: w }), false).hash,
    dnsView(two('passing', { weights: w }), false).hash,
    'SRV weight changes 10→1',
  );
  // findWeight: maintenance or critical → 0, unknown status → 1, no checks → Passing weight.
  const svc = { Service: 'web', Weights: { Passing: 7, Warning: 3 } };
  assert.equal(dnsWeight(svc, []), 7);
  assert.equal(dnsWeight(svc, [{ Status: 'warning', ServiceName: 'web' }]), 3);
  assert.equal(dnsWeight(svc, [{ Status: 'warning', ServiceName: 'other' }]), 7, "other services' checks do not count");
  assert.equal(dnsWeight(svc, [{ Status: 'bogus', ServiceName: '' }]), 1);
  assert.equal(dnsWeight(svc, [{ CheckID: '_node_maintenance', Status: 'critical' }]), 0);
  assert.equal(dnsWeight({ Service: 'web' }, []), 1, 'no Weights: 1/1');
});

test('dnsView: order, check output and indexes are not DNS-visible; address, port, tags are', () => {
  const a = two();
  const base = dnsView(a, false).hash;
  assert.equal(dnsView([...a].reverse(), false).hash, base, 'instance order');
  assert.equal(dnsView(two('passing', { output: 'HTTP 200 in 3ms' }), false).hash, base, 'check output');
  assert.notEqual(dnsView(two('passing', { port: 81 }), false).hash, base, 'port');
  assert.notEqual(dnsView(two('passing', { addr: '10.0.0.9' }), false).hash, base, 'node address');
  assert.notEqual(dnsView(two('passing', { svcAddr: '10.1.1.1' }), false).hash, base, 'service address');
  assert.notEqual(dnsView(two('passing', { tags: ['primary'] }), false).hash, base, 'tags');
  assert.equal(
    dnsView(two('passing', { tags: ['a', 'b'] }), false).hash,
    dnsView(two('passing', { tags: ['b', 'a'] }), false).hash,
    'tag order',
  );
});

test('backoffDelay: exponential, capped, jittered within [d/2, d]', () => {
  assert.equal(
    backoffDelay(1, 100, 1000, () => 0),
    50,
  );
  assert.equal(
    backoffDelay(1, 100, 1000, () => 1),
    100,
  );
  assert.equal(
    backoffDelay(3, 100, 1000, () => 0),
    200,
  );
  assert.equal(
    backoffDelay(20, 100, 1000, () => 0.5),
    750,
  );
  assert.equal(
    backoffDelay(10_000, 250, 30_000, () => 1),
    30_000,
  );
  assert.equal(serviceKey('web'), 'web');
  assert.equal(serviceKey('web', 'dc2'), 'web@dc2');
});

// ---------------------------------------------------------------------------------------------
// The loop against the fake server

test('first reply makes the watch live without onChange; a critical instance calls onChange within one round trip', async (t) => {
  const c = await new FakeConsul().listen();
  c.set('web', two());
  const h = watcher([c.url], { token: 's3cr3t' });
  t.after(async () => {
    await h.w.stop();
    await c.close();
  });

  assert.equal(h.w.isLive('web'), false);
  h.w.ensure('web');
  await waitUntil(() => h.w.isLive('web'), 'watch live');
  assert.equal(h.changes.length, 0, 'the first reply is the baseline');
  assert.deepEqual([...h.w.instanceCounts()], [['web', 2]]);
  assert.equal(h.w.size, 1);
  const first = c.requests('web')[0] as Seen;
  assert.equal(first.index, null, 'first request does not block');
  assert.equal(first.token, 's3cr3t', 'X-Consul-Token sent');
  assert.ok(first.path.includes('stale'), 'stale reads, like DNS allow_stale');

  // Wait until the watch is blocked on the current index, then make n1 critical.
  await waitUntil(() => c.requests('web').some((s) => s.index === c.index), 'blocking request on current index');
  const t0 = performance.now();
  c.set('web', two('critical'));
  await waitUntil(() => h.changes.length === 1, 'onChange after critical');
  const lag = (h.changes[0]?.at ?? 0) - t0;
  t.diagnostic(`critical → onChange: ${lag.toFixed(2)} ms (fake server, loopback)`);
  assert.equal(h.changes[0]?.service, 'web');
  assert.equal(h.changes[0]?.instances, 1);
  assert.equal(h.changes[0]?.index, c.index);
  assert.equal(h.w.changes, 1);
  assert.ok(c.requests('web').every((s) => s.token === 's3cr3t'));
  assert.ok(
    c
      .requests('web')
      .slice(1)
      .every((s) => s.index !== null && s.index >= 1 && s.wait === '5s'),
    'blocking with wait after the first reply',
  );

  // Back to passing: a change again.
  c.set('web', two());
  await waitUntil(() => h.changes.length === 2, 'onChange after recovery');
  assert.equal(h.changes[1]?.instances, 2);
});

test('warning with equal weights and an index bump change nothing DNS-visible: no onChange', async (t) => {
  const c = await new FakeConsul().listen();
  c.set('web', two());
  const h = watcher([c.url]);
  t.after(async () => {
    await h.w.stop();
    await c.close();
  });
  h.w.ensure('web');
  await waitUntil(() => h.w.isLive('web'), 'live');

  c.set('web', two('warning'));
  // The reply carrying this index has been processed once a request blocks on it.
  await waitUntil(() => c.requests('web').some((s) => s.index === c.index), 'watch saw the warning write');
  c.write(); // idempotent write: index bump only
  await waitUntil(() => c.requests('web').some((s) => s.index === c.index), 'watch saw the bump');
  c.set('web', two('passing', { output: 'new output' }));
  await waitUntil(() => c.requests('web').some((s) => s.index === c.index), 'watch saw the output change');
  assert.equal(h.changes.length, 0);
  assert.equal(h.w.isLive('web'), true);

  // New Weights while passing: the SRV weight is still Weights.Passing = 1, nothing visible.
  const weights = { Passing: 1, Warning: 5 };
  c.set('web', two('passing', { weights }));
  await waitUntil(() => c.requests('web').some((s) => s.index === c.index), 'watch saw the weights write');
  assert.equal(h.changes.length, 0);
  // Now warning: SRV weight becomes Weights.Warning = 5 (findWeight): onChange.
  c.set('web', two('warning', { weights }));
  await waitUntil(() => h.changes.length === 1, 'weight change seen');
});

test('onlyPassing: warning hides the instance', async (t) => {
  const c = await new FakeConsul().listen();
  c.set('web', two());
  const h = watcher([c.url], { onlyPassing: true });
  t.after(async () => {
    await h.w.stop();
    await c.close();
  });
  h.w.ensure('web');
  await waitUntil(() => h.w.isLive('web'), 'live');
  c.set('web', two('warning'));
  await waitUntil(() => h.changes.length === 1, 'onChange');
  assert.equal(h.changes[0]?.instances, 1);
});

test('index going backwards resets to 0: next request blocks on index 1, not 0; no spurious onChange', async (t) => {
  const c = await new FakeConsul().listen();
  c.index = 500;
  c.set('web', two());
  const h = watcher([c.url]);
  t.after(async () => {
    await h.w.stop();
    await c.close();
  });
  h.w.ensure('web');
  await waitUntil(() => c.requests('web').some((s) => s.index === 501), 'blocked on 501');
  const before = c.requests('web').length;
  c.restore(7); // snapshot restore: same data, lower index
  await waitUntil(() => c.requests('web').some((s) => s.index === 7), 'blocked on the restored index');
  const after = c
    .requests('web')
    .slice(before)
    .map((s) => s.index);
  assert.deepEqual(after.slice(0, 2), [1, 7], 'reset: index=1 (never 0), then the new index');
  assert.equal(h.w.resets, 1);
  assert.equal(h.changes.length, 0, 'same data after reset: no change (the consul package emits twice here)');
  assert.ok(
    c
      .requests('web')
      .slice(1)
      .every((s) => s.index !== 0),
  );
  // And changes keep flowing after the reset.
  c.set('web', two('critical'));
  await waitUntil(() => h.changes.length === 1, 'change after reset');
});

test('HTTP 500: not live, jittered exponential backoff; recovery makes it live again and reports what changed', async (t) => {
  const c = await new FakeConsul().listen();
  c.set('web', two());
  let r = 0;
  const h = watcher([c.url], { backoffBaseMs: 40, backoffMaxMs: 320, random: () => [0, 1, 0.5][r++ % 3] as number });
  t.after(async () => {
    await h.w.stop();
    await c.close();
  });
  h.w.ensure('web');
  await waitUntil(() => h.w.isLive('web'), 'live');
  await waitUntil(() => c.requests('web').some((s) => s.index === c.index), 'blocking');

  c.fault = '500';
  const n0 = c.requests('web').length;
  c.set('web', two('critical')); // wakes the blocked request, which gets a 500
  await waitUntil(() => !h.w.isLive('web'), 'not live after 500');
  assert.deepEqual(h.live.at(-1), ['web', false]);
  await waitUntil(() => c.requests('web').length >= n0 + 6, 'six failing requests');
  const at = c
    .requests('web')
    .slice(n0)
    .map((s) => s.at);
  const gaps = at.slice(1).map((v, i) => v - (at[i] as number));
  // The woken blocked request is failure 1 (delay 20 ms). Failures 2..6 then wait d/2 + random·d/2 with
  // d = 40·2^(n-1) capped at 320 and random 1, 0.5, 0, 1, 0.5: 80, 120, 160, 320, 240 ms.
  const expected = [80, 120, 160, 320, 240];
  // Lower bounds only (a loaded machine can only make gaps longer); server-side arrival times, so
  // allow for connection latency differences.
  gaps
    .slice(0, 5)
    .forEach((g, i) =>
      assert.ok(g >= (expected[i] as number) * 0.8, `gap ${i} = ${g.toFixed(1)} ms ≥ 0.8 × ${expected[i]} ms`),
    );
  t.diagnostic(`backoff gaps (ms): ${gaps.map((g) => g.toFixed(0)).join(' ')}`);
  assert.equal(h.changes.length, 0);
  assert.ok(h.w.errors >= 5);

  c.fault = null;
  await waitUntil(() => h.w.isLive('web'), 'live again', 10_000);
  await waitUntil(() => h.changes.length === 1, 'the change made during the outage is reported');
  assert.equal(h.changes[0]?.instances, 1);
});

test('after a failed round the next read is non-blocking: the watch is live again at once, not after the old index times out', async (t) => {
  const c = await new FakeConsul().listen();
  c.set('web', two());
  // A 60 s blocking wait, as the app uses: a blocking read with the old index would hold that long.
  const h = watcher([c.url], { waitSeconds: 60, backoffBaseMs: 20, backoffMaxMs: 40 });
  t.after(async () => {
    await h.w.stop();
    await c.close();
  });
  h.w.ensure('web');
  await waitUntil(() => h.w.isLive('web'), 'live');
  await waitUntil(() => c.requests('web').some((s) => s.index === c.index), 'blocking');
  const lastGood = c.index;

  c.fault = '500';
  c.write(); // wakes the blocked request, which gets a 500
  await waitUntil(() => !h.w.isLive('web'), 'not live after 500');
  await waitUntil(() => c.requests('web').length >= 4, 'a few failing requests');
  // The agent is back with nothing changed (its index where the watch last saw it).
  c.index = lastGood;
  const n0 = c.requests('web').length;
  c.fault = null;
  await waitUntil(() => h.w.isLive('web'), 'live again within 5 s of the API returning', 5000);
  const after = c.requests('web').slice(n0);
  assert.equal(after[0]?.index, null, `the first read after the outage is non-blocking (${after[0]?.path})`);
  assert.equal(h.changes.length, 0, 'nothing changed: no onChange');
  // Then it blocks again on the index it just read.
  await waitUntil(
    () =>
      c
        .requests('web')
        .slice(n0)
        .some((s) => s.index === lastGood),
    'blocking again',
  );
});

test('at maxWatches the least recently used idle watch makes room; with every watch in use the new one is refused', async (t) => {
  const c = await new FakeConsul().listen();
  for (const n of ['a', 'b', 'c', 'd', 'e']) c.set(n, two());
  const h = watcher([c.url], { maxWatches: 3 });
  t.after(async () => {
    await h.w.stop();
    await c.close();
  });
  for (const n of ['a', 'b', 'c']) h.w.ensure(n);
  await waitUntil(() => ['a', 'b', 'c'].every((n) => h.w.isLive(n)), 'three live');
  h.w.touch('b');
  h.w.touch('c');
  h.w.ensure('d'); // 'a' is the only one not asked for since: it goes
  assert.equal(h.w.size, 3, 'never more than maxWatches');
  assert.equal(h.w.isLive('a'), false);
  assert.equal(h.w.evicted, 1);
  assert.ok(
    h.live.some(([s, l]) => s === 'a' && !l),
    "the evicted watch's entries fall back to Consul's TTL",
  );
  await waitUntil(() => h.w.isLive('d'), 'd live');
  h.w.touch('d');
  h.w.ensure('e'); // b, c, d all in use: refused, no churn
  assert.equal(h.w.size, 3);
  assert.equal(h.w.rejected, 1);
  assert.ok(!h.w.isLive('e'));
});

test('HTTP 429 or a new connection closed without a response: over the limit, the watch stops and is counted; no failover; others keep working', async (t) => {
  const c = await new FakeConsul().listen();
  const other = await new FakeConsul().listen();
  for (const n of ['a', 'x', 'y', 'z']) {
    c.set(n, two());
    other.set(n, two());
  }
  const h = watcher([c.url, other.url], { backoffBaseMs: 40, backoffMaxMs: 80 });
  t.after(async () => {
    await h.w.stop();
    await c.close();
    await other.close();
  });
  h.w.ensure('a');
  await waitUntil(() => h.w.isLive('a'), 'a live');
  c.faultOnly = new Set(['x', 'y', 'z']);
  c.fault = '429';
  h.w.ensure('x');
  await waitUntil(() => h.w.overLimit === 1, 'x over the limit');
  assert.equal(h.w.size, 1, 'x stopped');
  assert.ok(!h.w.isLive('x'));
  assert.equal(other.requests('x').length, 0, 'no failover: the other agent is not asked');
  h.w.ensure('y'); // within the backoff: not started
  assert.equal(h.w.size, 1);
  assert.ok(h.w.rejected >= 1);
  c.fault = 'close';
  await waitUntil(() => {
    h.w.ensure('z');
    return h.w.overLimit === 2;
  }, 'z refused by a closed connection once the backoff ended');
  assert.ok(h.w.isLive('a'), 'the watch that fit keeps working');
  c.fault = null;
  await waitUntil(() => {
    h.w.ensure('y');
    return h.w.isLive('y');
  }, 'a new watch starts again once the agent accepts it');
});

test('reply without X-Consul-Index is an error (no busy loop), not the end of the watch', async (t) => {
  const c = await new FakeConsul().listen();
  c.set('web', two());
  c.fault = 'noindex';
  const h = watcher([c.url]);
  t.after(async () => {
    await h.w.stop();
    await c.close();
  });
  h.w.ensure('web');
  await waitUntil(() => c.requests('web').length >= 3, 'retries');
  assert.equal(h.w.isLive('web'), false);
  c.fault = null;
  await waitUntil(() => h.w.isLive('web'), 'live once the header is back', 10_000);
});

test('fails over to the second URL when the first refuses, and goes back to the first when it returns', async (t) => {
  const port = await closedPort();
  const b = await new FakeConsul().listen();
  b.set('web', two());
  const a = new FakeConsul();
  a.set('web', two());
  const h = watcher([`http://127.0.0.1:${port}`, b.url], { failbackMs: 150, probeWaitSeconds: 1, waitSeconds: 1 });
  t.after(async () => {
    await h.w.stop();
    await b.close();
    await a.close();
  });
  h.w.ensure('web');
  await waitUntil(() => h.w.isLive('web'), 'live via the second URL');
  assert.equal(
    h.live.filter(([, l]) => !l).length,
    0,
    'a refused first URL with a working second never made the watch not-live',
  );
  await waitUntil(() => b.requests('web').some((s) => s.index === b.index), 'blocking on the second URL');
  b.set('web', two('critical'));
  await waitUntil(() => h.changes.length === 1, 'change seen through the second URL');

  // The first agent comes back on its port; after failbackMs the next request probes it.
  await a.listen(port);
  await waitUntil(() => a.requests('web').length > 0, 'failback probe reached the first URL', 10_000);
  await waitUntil(() => a.requests('web').some((s) => s.index === a.index), 'blocking on the first URL again', 10_000);
  a.set('web', two()); // a's view differs from b's last one: onChange through the first URL
  await waitUntil(() => h.changes.length === 2, 'change seen through the first URL');
  assert.equal(h.w.isLive('web'), true);
});

test('a hung agent is abandoned after the request budget and the next URL is used', async (t) => {
  const a = await new FakeConsul().listen();
  a.fault = 'hang';
  const b = await new FakeConsul().listen();
  b.set('web', two());
  const h = watcher([a.url, b.url], { timeoutMarginMs: 150 });
  t.after(async () => {
    await h.w.stop();
    await a.close();
    await b.close();
  });
  const t0 = performance.now();
  h.w.ensure('web');
  await waitUntil(() => h.w.isLive('web'), 'live via the second URL');
  t.diagnostic(`hung first URL → live via second after ${(performance.now() - t0).toFixed(0)} ms (budget 150 ms)`);
  assert.equal(a.requests('web').length, 1);
});

test('datacenter: ?dc= is sent and watches are keyed per dc', async (t) => {
  const c = await new FakeConsul().listen();
  c.set('web', two());
  const h = watcher([c.url]);
  t.after(async () => {
    await h.w.stop();
    await c.close();
  });
  h.w.ensure('web', 'dc2');
  h.w.ensure('web');
  await waitUntil(() => h.w.isLive('web', 'dc2') && h.w.isLive('web'), 'both live');
  assert.equal(h.w.size, 2);
  assert.ok(c.requests('web').some((s) => s.dc === 'dc2'));
  assert.deepEqual([...h.w.instanceCounts().keys()].sort(), ['web', 'web@dc2']);
  await waitUntil(() => c.requests('web').filter((s) => s.index === c.index).length >= 2, 'both blocking');
  c.set('web', two('critical'));
  await waitUntil(() => h.changes.length === 2, 'both report the change');
  assert.deepEqual(h.changes.map((x) => x.dc ?? '').sort(), ['', 'dc2']);
});

test('idle watches stop; touch() keeps a watch alive', async (t) => {
  const c = await new FakeConsul().listen();
  c.set('web', two());
  c.set('api', two());
  const h = watcher([c.url], { idleMs: 120 });
  t.after(async () => {
    await h.w.stop();
    await c.close();
  });
  h.w.ensure('web');
  h.w.ensure('api');
  await waitUntil(() => h.w.isLive('web') && h.w.isLive('api'), 'live');
  // Touch `api` (as cache hits do) until `web` has gone idle.
  const touching = setInterval(() => h.w.touch('api'), 10);
  try {
    await waitUntil(() => h.w.size === 1, 'idle web watch stopped');
  } finally {
    clearInterval(touching);
  }
  assert.equal(h.w.isLive('web'), false);
  assert.equal(h.w.isLive('api'), true, 'touched watch still running');
  assert.ok(
    h.live.some(([s, l]) => s === 'web' && !l),
    'onLiveChange(false) on idle stop',
  );
  await waitUntil(() => h.w.size === 0, 'untouched api watch stops too');
  h.w.touch('web'); // touch of a stopped watch is a no-op
  assert.equal(h.w.size, 0);
});

test('maxWatches: beyond the cap, every watch in use, no watch starts and isLive stays false', async (t) => {
  const c = await new FakeConsul().listen();
  for (const s of ['a', 'b', 'c']) c.set(s, two());
  const h = watcher([c.url], { maxWatches: 2 });
  t.after(async () => {
    await h.w.stop();
    await c.close();
  });
  h.w.ensure('a');
  h.w.ensure('b');
  h.w.touch('b'); // both asked for again: none is idle, none makes room
  h.w.ensure('a');
  h.w.ensure('c');
  assert.equal(h.w.size, 2);
  assert.equal(h.w.rejected, 1);
  await waitUntil(() => h.w.isLive('a') && h.w.isLive('b'), 'a and b live');
  assert.equal(h.w.isLive('c'), false);
  assert.equal(c.requests('c').length, 0);
});

test('minimum interval: a server that answers at once with a new index each time gets at most duration/minInterval + 2 requests', async (t) => {
  const c = await new FakeConsul().listen();
  c.set('web', two());
  c.fault = 'spin';
  const minIntervalMs = 50;
  const h = watcher([c.url], { minIntervalMs });
  t.after(async () => {
    await h.w.stop();
    await c.close();
  });
  const t0 = performance.now();
  h.w.ensure('web');
  await waitUntil(() => c.requests('web').length >= 8, 'eight requests');
  await h.w.stop();
  const dt = performance.now() - t0;
  const n = c.requests('web').length;
  t.diagnostic(`spin server: ${n} requests in ${dt.toFixed(0)} ms with minInterval ${minIntervalMs} ms`);
  assert.ok(n <= dt / minIntervalMs + 2, `${n} requests in ${dt.toFixed(0)} ms`);
  assert.ok(h.w.throttled >= n - 2, 'every request after an immediate reply was held back');
});

test('minimum interval never delays the first reaction: after a long block the next request is not held back', async (t) => {
  const c = await new FakeConsul().listen();
  c.set('web', two());
  const minIntervalMs = 200;
  const h = watcher([c.url], { minIntervalMs });
  t.after(async () => {
    await h.w.stop();
    await c.close();
  });
  h.w.ensure('web');
  // The request right after the (non-blocking) first reply is held back: the first started < 200 ms ago.
  await waitUntil(() => c.requests('web').some((s) => s.index === c.index), 'blocking');
  assert.equal(h.w.throttled, 1);
  const blocked = c.requests('web').at(-1) as Seen;
  await waitUntil(() => Date.now() - blocked.at > minIntervalMs + 50, 'blocked longer than the interval');
  c.set('web', two('critical'));
  await waitUntil(() => h.changes.length === 1, 'change seen');
  await waitUntil(() => c.requests('web').some((s) => s.index === c.index), 'next request');
  assert.equal(h.w.throttled, 1, 'the request after a long block started at once');
  // Two changes in quick succession: the second is still seen, at most one interval later.
  c.set('web', two());
  await waitUntil(() => h.changes.length === 2, 'second change');
  c.set('web', two('critical'));
  await waitUntil(() => h.changes.length === 3, 'third change right after');
  assert.ok(h.w.throttled >= 2, 'the request after a quick change was held back');
});

test('https with caFile: TLS options reach the agent; a wrong CA fails, insecureSkipVerify passes', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'health-tls-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  try {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=127.0.0.1',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
      ],
      { stdio: 'ignore' },
    );
  } catch {
    t.skip('openssl not available');
    return;
  }
  const c = await new FakeConsul({
    key: readFileSync(join(dir, 'key.pem')),
    cert: readFileSync(join(dir, 'cert.pem')),
  }).listen();
  c.set('web', two());
  const good = watcher([c.url], { tls: { caFile: join(dir, 'cert.pem') } });
  const bad = watcher([c.url]);
  const skip = watcher([c.url], { tls: { insecureSkipVerify: true } });
  t.after(async () => {
    await good.w.stop();
    await bad.w.stop();
    await skip.w.stop();
    await c.close();
  });
  good.w.ensure('web');
  bad.w.ensure('web');
  skip.w.ensure('web');
  await waitUntil(() => good.w.isLive('web') && skip.w.isLive('web'), 'live over TLS');
  await waitUntil(() => bad.w.errors >= 1, 'untrusted certificate refused');
  assert.equal(bad.w.isLive('web'), false);
  assert.throws(() => watcher(['https://127.0.0.1:1'], { tls: { caFile: join(dir, 'missing.pem') } }), {
    code: 'CDP_ERR_CONSUL_TLS_FILE',
  });
});

test('stop() aborts blocked requests and leaves no timers or sockets behind', async () => {
  const c = await new FakeConsul().listen();
  for (const s of ['a', 'b', 'c']) c.set(s, two());
  const h = watcher([c.url]);
  const before = new Set(process.getActiveResourcesInfo());
  h.w.ensure('a');
  h.w.ensure('b');
  h.w.ensure('c');
  await waitUntil(() => ['a', 'b', 'c'].every((s) => c.requests(s).some((x) => x.index === c.index)), 'all blocking');
  await h.w.stop();
  assert.equal(h.w.size, 0);
  assert.equal(h.w.isLive('a'), false);
  h.w.ensure('d'); // after stop: nothing starts
  assert.equal(h.w.size, 0);
  await c.close();
  await waitUntil(
    () => {
      const r = process.getActiveResourcesInfo();
      return (
        !r.includes('TCPSocketWrap') &&
        r.filter((x) => x === 'Timeout').length <= [...before].filter((x) => x === 'Timeout').length
      );
    },
    'no sockets or extra timers',
    2000,
  );
});

// ---------------------------------------------------------------------------------------------
// Against the team's Consul simulator (test/support/consul-sim/)

async function simWatch(
  t: { after: (fn: () => Promise<void>) => void },
  over: Partial<WatchOptions> = {},
  simOpts: Parameters<typeof startSim>[0] = {},
) {
  const sim = await startSim(simOpts);
  for (const n of [1, 2, 3]) {
    sim.register({
      id: `web-${n}`,
      name: 'web',
      node: `node-${n}`,
      nodeAddress: `127.0.0.${10 + n}`,
      port: 8080,
      tags: ['v1'],
      status: 'passing',
    });
  }
  const h = watcher([`http://127.0.0.1:${sim.httpPort}`], over);
  t.after(async () => {
    await h.w.stop();
    await sim.stop();
  });
  h.w.ensure('web');
  await waitUntil(() => h.w.isLive('web'), 'live against the simulator');
  return { sim, h };
}

test('simulator: critical/passing flips are reported within one round trip (lag measured), warning and index bumps are not', async (t) => {
  const { sim, h } = await simWatch(t, { token: 'tok' }, { token: 'tok' });
  assert.deepEqual([...h.w.instanceCounts()], [['web', 3]]);
  const lags: number[] = [];
  // First (non-blocking) request, then the blocking one.
  await waitUntil(() => sim.httpRequests >= 2, 'watch blocking');
  for (let i = 0; i < 20; i++) {
    const want = h.changes.length + 1;
    const reqs = sim.httpRequests;
    const t0 = performance.now();
    sim.setHealth('web-2', i % 2 === 0 ? 'critical' : 'passing');
    await waitUntil(() => h.changes.length === want, `flip ${i} reported`);
    lags.push((h.changes.at(-1)?.at ?? 0) - t0);
    assert.equal(h.changes.at(-1)?.instances, i % 2 === 0 ? 2 : 3);
    // The reply has been handled and the next blocking request is in before the next flip.
    await waitUntil(() => sim.httpRequests > reqs, 'next blocking request');
  }
  lags.sort((a, b) => a - b);
  t.diagnostic(
    `simulator setHealth → onChange lag over 20 flips: median ${(lags[10] as number).toFixed(2)} ms, worst ${(lags[19] as number).toFixed(2)} ms`,
  );

  const n = h.changes.length;
  let before = sim.httpRequests;
  sim.setHealth('web-1', 'warning');
  await waitUntil(() => sim.httpRequests > before, 'watch saw the warning');
  before = sim.httpRequests;
  sim.bumpIndex();
  await waitUntil(() => sim.httpRequests > before, 'watch saw the bump');
  assert.equal(h.changes.length, n, 'warning (equal weights) and a bare index bump are not DNS-visible');
  sim.setNodeHealth('node-3', 'critical');
  await waitUntil(() => h.changes.length === n + 1, 'node serfHealth critical hides its instance');
  assert.equal(h.changes.at(-1)?.instances, 2);
});

test('simulator: HTTP 500 and a refused API make the watch not live; it recovers when the fault clears', async (t) => {
  const { sim, h } = await simWatch(t, { waitSeconds: 1, timeoutMarginMs: 300 });
  for (const fault of ['500', 'refuse'] as const) {
    await sim.setFault({ http: fault });
    await waitUntil(() => !h.w.isLive('web'), `not live under ${fault}`, 10_000);
    await sim.setFault({ http: null });
    await waitUntil(() => h.w.isLive('web'), `live again after ${fault}`, 10_000);
  }
  assert.equal(h.changes.length, 0);
  sim.setHealth('web-1', 'critical');
  await waitUntil(() => h.changes.length === 1, 'changes still flow after the faults');
});
