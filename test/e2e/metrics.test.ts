/*
 * Tests for the metrics module, the admin HTTP listener and the documentation around them:
 * exact counts in a real scrape over 127.0.0.1 after known increments, `promtool check metrics`
 * on that text, the README metric table against the exported metrics (names, types, labels),
 * every metric the Grafana dashboard queries (and its PromQL syntax, via `promtool check rules`),
 * and the admin routes: health with draining, readiness from the hook, cache endpoints refused to
 * non-loopback clients (through a faked remote address, since every test socket is loopback).
 */

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { MetricsError } from '../../src/errors.js';
import {
  Metrics,
  SOURCE,
  TRANSPORT,
  PREFIX,
  DROPPED_DEFAULT_METRICS,
  MAX_SERVICE_LABELS,
  foldServices,
} from '../../src/observability/metrics.js';
import { AdminError } from '../../src/errors.js';
import { startAdmin, createAdminHandler, type AdminHooks, type AdminCache } from '../../src/server/admin.js';
import { isLoopback } from '../../src/net/address.js';

const ROOT = new URL('../../../', import.meta.url);
const README = new URL('README.md', ROOT);
const DASHBOARD = new URL('config/grafana-dashboard.json', ROOT);
const ZONES = ['consul', 'alias', 'recursor', 'corp.'];

// ---------------------------------------------------------------------------------------------
// helpers

interface Resp {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function httpCall(address: string, method: string, path: string): Promise<Resp> {
  const i = address.lastIndexOf(':');
  const host = address.slice(0, i).replace(/^\[|\]$/g, '');
  const port = Number(address.slice(i + 1));
  return new Promise((resolve, reject) => {
    const req = request({ host, port, method, path, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error(`timeout ${method} ${path}`)));
    req.end();
  });
}

interface Family {
  type: string;
  help: string;
  samples: Map<string, number>;
}

/** Prometheus text format → families keyed by name; sample keys are `name{k="v",...}` with sorted labels. */
function parseExposition(text: string): Map<string, Family> {
  const fams = new Map<string, Family>();
  const fam = (name: string): Family => {
    let f = fams.get(name);
    if (f === undefined) {
      f = { type: 'untyped', help: '', samples: new Map() };
      fams.set(name, f);
    }
    return f;
  };
  let current = '';
  for (const line of text.split('\n')) {
    if (line === '') continue;
    let m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
    if (m) {
      current = m[2]!;
      if (m[1] === 'TYPE') fam(current).type = m[3]!;
      else fam(current).help = m[3]!;
      continue;
    }
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `unparsable exposition line: ${line}`);
    const labels = [...(m[2] ?? '').matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g)]
      .map((x) => `${x[1]}="${x[2]}"`)
      .sort();
    fam(current).samples.set(`${m[1]}{${labels.join(',')}}`, Number(m[3]));
  }
  return fams;
}

function key(name: string, labels: Record<string, string> = {}): string {
  const l = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .sort();
  return `${name}{${l.join(',')}}`;
}

function sample(
  fams: Map<string, Family>,
  family: string,
  labels: Record<string, string> = {},
  series = family,
): number | undefined {
  return fams.get(PREFIX + family)?.samples.get(key(PREFIX + series, labels));
}

function promtool(args: string[], input?: string): { status: number | null; out: string } | null {
  const r = spawnSync('promtool', args, { input, encoding: 'utf8', timeout: 30_000 });
  if (r.error && (r.error as NodeJS.ErrnoException).code === 'ENOENT') return null;
  return { status: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

/** promtool missing: fail on CI (it installs the Debian package), skip with a message elsewhere. */
function promtoolMissing(t: { skip(msg: string): void }): void {
  const msg = 'promtool not found (Debian package "prometheus": apt-get install -y --no-install-recommends prometheus)';
  if (process.env['CI']) assert.fail(msg);
  t.skip(msg);
}

function readmeMetricRows(): Map<string, { type: string; labels: string[] }> {
  const text = readFileSync(README, 'utf8');
  const start = text.indexOf('<!-- metrics:start -->');
  const end = text.indexOf('<!-- metrics:end -->');
  assert.ok(start >= 0 && end > start, 'README.md has the <!-- metrics:start --> ... <!-- metrics:end --> markers');
  const rows = new Map<string, { type: string; labels: string[] }>();
  for (const line of text.slice(start, end).split('\n')) {
    const m = /^\|\s*`([a-z0-9_]+)`\s*\|\s*([a-z]+)\s*\|([^|]*)\|/.exec(line);
    if (!m) continue;
    assert.ok(!rows.has(m[1]!), `README lists ${m[1]} twice`);
    rows.set(m[1]!, { type: m[2]!, labels: [...m[3]!.matchAll(/`([a-z_]+)`/g)].map((x) => x[1]!) });
  }
  return rows;
}

function dashboardExprs(): string[] {
  const dash = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as {
    panels: { targets?: { expr?: string }[] }[];
    templating: { list: { definition?: string }[] };
  };
  const exprs: string[] = [];
  for (const p of dash.panels) for (const t of p.targets ?? []) if (t.expr) exprs.push(t.expr);
  return exprs;
}

/** A fully populated Metrics instance with known figures, the same for every test that scrapes. */
function loadedMetrics(): Metrics {
  const m = new Metrics({ version: '1.2.3-test', zones: ZONES });
  const consul = m.zoneIndex('consul');
  const recursor = m.zoneIndex('recursor');
  const corp = m.zoneIndex('corp.');
  for (let i = 0; i < 3; i++) m.request(TRANSPORT.udp, consul, 1); // A
  m.request(TRANSPORT.tcp, consul, 33); // SRV
  m.request(TRANSPORT.udp, recursor, 28); // AAAA
  m.request(TRANSPORT.udp, recursor, 99); // SPF: not in the list
  m.request(TRANSPORT.udp, recursor, 65535); // other too
  m.request(TRANSPORT.tcp, corp, 65); // HTTPS
  m.response(consul, 0, SOURCE.cache);
  m.response(consul, 0, SOURCE.cache);
  m.response(consul, 3, SOURCE.upstream); // NXDOMAIN
  m.response(recursor, 2, SOURCE.stale); // SERVFAIL
  m.response(recursor, 16, SOURCE.upstream); // BADVERS (extended)
  m.response(corp, 9, SOURCE.local); // NOTAUTH → other
  m.response(corp, 5, SOURCE.local); // REFUSED
  m.cacheHits += 7;
  m.cacheMisses += 4;
  m.servedStale++;
  m.eviction('capacity');
  m.eviction('health', 5);
  m.eviction('flush', 2);
  const agent = m.upstream('consul', '127.0.0.1:8600');
  assert.equal(m.upstream('consul', '127.0.0.1:8600'), agent, 'upstream() caches its object');
  agent.requestsUdp += 4;
  agent.requestsTcp += 1;
  agent.failures.timeout += 2;
  agent.failures.mismatch += 1;
  agent.observe(0.0003);
  agent.observe(0.003);
  const rec = m.upstream('recursor', '127.0.0.2:53');
  rec.requestsUdp += 1;
  rec.healthy = 0;
  m.hedged('consul');
  m.hedged('consul');
  m.pool('recursor').overflow += 3;
  m.invalidationLag(0.0004);
  m.acl.refuse += 2;
  m.acl.drop += 1;
  m.ratelimited.tc += 4;
  m.tcpConnections += 3;
  m.tcpConnections--;
  m.tcpRejected.max_per_client += 6;
  m.sources.cacheEntries = () => 42;
  m.sources.healthWatches = () => 3;
  m.sources.healthChanges = () => 11;
  m.sources.serviceInstances = () =>
    new Map([
      ['web', 3],
      ['db', 2],
    ]);
  return m;
}

const noCache: AdminHooks['cache'] = undefined;

/** What the registry holds, with the fields prom-client's typings leave out. */
interface RegisteredMetric {
  name: string;
  labelNames: string[];
  get(): Promise<{ type: string }>;
}
function registered(m: Metrics): RegisteredMetric[] {
  return m.registry.getMetricsAsArray() as unknown as RegisteredMetric[];
}

function hooks(m: Metrics, over: Partial<AdminHooks> = {}): AdminHooks {
  return { metrics: m, draining: () => false, ready: () => ({ ok: true }), cache: noCache, ...over };
}

// ---------------------------------------------------------------------------------------------
// metrics

test('a scrape over HTTP shows exactly the counts recorded', async (t) => {
  const m = loadedMetrics();
  const admin = await startAdmin({ host: '127.0.0.1', port: 0 }, hooks(m));
  t.after(() => admin.close());
  assert.match(admin.address, /^127\.0\.0\.1:\d+$/);

  const r = await httpCall(admin.address, 'GET', '/metrics');
  assert.equal(r.status, 200);
  assert.equal(r.headers['content-type'], m.contentType);
  const f = parseExposition(r.body);

  assert.equal(sample(f, 'build_info', { version: '1.2.3-test' }), 1);
  assert.equal(f.get(PREFIX + 'requests_total')?.type, 'counter');
  assert.equal(sample(f, 'requests_total', { transport: 'udp', zone: 'consul', type: 'A' }), 3);
  assert.equal(sample(f, 'requests_total', { transport: 'tcp', zone: 'consul', type: 'SRV' }), 1);
  assert.equal(sample(f, 'requests_total', { transport: 'udp', zone: 'recursor', type: 'AAAA' }), 1);
  assert.equal(sample(f, 'requests_total', { transport: 'udp', zone: 'recursor', type: 'other' }), 2);
  assert.equal(sample(f, 'requests_total', { transport: 'tcp', zone: 'corp.', type: 'HTTPS' }), 1);
  // Cells never counted are not exported (bounded, and no zero series for 160 combinations).
  assert.equal(f.get(PREFIX + 'requests_total')?.samples.size, 5);

  assert.equal(sample(f, 'responses_total', { zone: 'consul', rcode: 'NOERROR', source: 'cache' }), 2);
  assert.equal(sample(f, 'responses_total', { zone: 'consul', rcode: 'NXDOMAIN', source: 'upstream' }), 1);
  assert.equal(sample(f, 'responses_total', { zone: 'recursor', rcode: 'SERVFAIL', source: 'stale' }), 1);
  assert.equal(sample(f, 'responses_total', { zone: 'recursor', rcode: 'BADVERS', source: 'upstream' }), 1);
  assert.equal(sample(f, 'responses_total', { zone: 'corp.', rcode: 'other', source: 'local' }), 1);
  assert.equal(sample(f, 'responses_total', { zone: 'corp.', rcode: 'REFUSED', source: 'local' }), 1);
  assert.equal(f.get(PREFIX + 'responses_total')?.samples.size, 6);

  assert.equal(sample(f, 'cache_entries'), 42);
  assert.equal(sample(f, 'cache_hits_total'), 7);
  assert.equal(sample(f, 'cache_misses_total'), 4);
  assert.equal(sample(f, 'cache_served_stale_total'), 1);
  assert.equal(sample(f, 'cache_evictions_total', { reason: 'capacity' }), 1);
  assert.equal(sample(f, 'cache_evictions_total', { reason: 'expired' }), 0);
  assert.equal(sample(f, 'cache_evictions_total', { reason: 'health' }), 5);
  assert.equal(sample(f, 'cache_evictions_total', { reason: 'flush' }), 2);

  const a = { pool: 'consul', upstream: '127.0.0.1:8600' };
  const rc = { pool: 'recursor', upstream: '127.0.0.2:53' };
  assert.equal(sample(f, 'upstream_requests_total', { ...a, transport: 'udp' }), 4);
  assert.equal(sample(f, 'upstream_requests_total', { ...a, transport: 'tcp' }), 1);
  assert.equal(sample(f, 'upstream_requests_total', { ...rc, transport: 'udp' }), 1);
  assert.equal(sample(f, 'upstream_failures_total', { ...a, reason: 'timeout' }), 2);
  assert.equal(sample(f, 'upstream_failures_total', { ...a, reason: 'mismatch' }), 1);
  assert.equal(sample(f, 'upstream_failures_total', { ...a, reason: 'network' }), 0);
  assert.equal(sample(f, 'upstream_healthy', a), 1);
  assert.equal(sample(f, 'upstream_healthy', rc), 0);
  const h = 'upstream_request_duration_seconds';
  assert.equal(f.get(PREFIX + h)?.type, 'histogram');
  assert.equal(sample(f, h, a, h + '_count'), 2);
  assert.ok(Math.abs(sample(f, h, a, h + '_sum')! - 0.0033) < 1e-12);
  assert.equal(sample(f, h, { ...a, le: '0.00025' }, h + '_bucket'), 0);
  assert.equal(sample(f, h, { ...a, le: '0.0005' }, h + '_bucket'), 1);
  assert.equal(sample(f, h, { ...a, le: '0.004' }, h + '_bucket'), 2);
  assert.equal(sample(f, h, { ...a, le: '+Inf' }, h + '_bucket'), 2);
  assert.equal(sample(f, h, rc, h + '_count'), 0, 'a known upstream exports empty buckets before its first miss');
  assert.equal(sample(f, 'upstream_hedged_total', { pool: 'consul' }), 2);
  assert.equal(sample(f, 'upstream_overflow_total', { pool: 'recursor' }), 3);

  assert.equal(sample(f, 'health_watches'), 3);
  assert.equal(sample(f, 'health_changes_total'), 11);
  assert.equal(sample(f, 'invalidation_lag_seconds', {}, 'invalidation_lag_seconds_count'), 1);
  assert.equal(sample(f, 'service_instances', { service: 'web' }), 3);
  assert.equal(sample(f, 'service_instances', { service: 'db' }), 2);

  assert.equal(sample(f, 'acl_refused_total', { action: 'refuse' }), 2);
  assert.equal(sample(f, 'acl_refused_total', { action: 'drop' }), 1);
  assert.equal(sample(f, 'ratelimited_total', { action: 'tc' }), 4);
  assert.equal(sample(f, 'ratelimited_total', { action: 'refuse' }), 0);
  assert.equal(sample(f, 'tcp_connections'), 2);
  assert.equal(sample(f, 'tcp_connections_rejected_total', { reason: 'max_per_client' }), 6);
  assert.equal(sample(f, 'tcp_connections_rejected_total', { reason: 'max_connections' }), 0);

  // Node process metrics under the same prefix, event-loop lag included; the `_total` gauges gone.
  assert.ok(f.has(PREFIX + 'process_resident_memory_bytes'));
  assert.ok(f.has(PREFIX + 'nodejs_eventloop_lag_p99_seconds'));
  for (const d of DROPPED_DEFAULT_METRICS) assert.ok(!f.has(PREFIX + d), `${d} is dropped`);

  // A second scrape republishes, never accumulates what collect() already published.
  m.request(TRANSPORT.udp, 0, 1);
  m.cacheHits++;
  m.sources.serviceInstances = () => new Map([['web', 1]]);
  const f2 = parseExposition((await httpCall(admin.address, 'GET', '/metrics')).body);
  assert.equal(sample(f2, 'requests_total', { transport: 'udp', zone: 'consul', type: 'A' }), 4);
  assert.equal(sample(f2, 'cache_hits_total'), 8);
  assert.equal(sample(f2, 'upstream_hedged_total', { pool: 'consul' }), 2);
  assert.equal(sample(f2, 'service_instances', { service: 'web' }), 1);
  assert.equal(
    sample(f2, 'service_instances', { service: 'db' }),
    undefined,
    'a service gone from the cache is no longer exported',
  );
});

test('promtool check metrics accepts the exposition', async (t) => {
  const m = loadedMetrics();
  m.sources.serviceInstances = () =>
    new Map(Array.from({ length: 150 }, (_, i) => [`svc-${i}`, i + 1] as [string, number]));
  const text = await m.metricsText();
  const r = promtool(['check', 'metrics'], text);
  if (r === null) return promtoolMissing(t);
  assert.equal(r.status, 0, `promtool check metrics:\n${r.out}`);
  assert.equal(r.out.trim(), '', `promtool reported problems:\n${r.out}`);
});

test('service_instances names the 100 largest services and folds the rest into _other', async () => {
  const m = new Metrics({ version: 'x', zones: ['consul'] });
  const map = new Map<string, number>();
  for (let i = 1; i <= 150; i++) map.set(`svc-${String(i).padStart(3, '0')}`, i);
  m.sources.serviceInstances = () => map;
  const f = parseExposition(await m.metricsText());
  const s = f.get(PREFIX + 'service_instances')!.samples;
  assert.equal(s.size, MAX_SERVICE_LABELS + 1);
  assert.equal(sample(f, 'service_instances', { service: 'svc-150' }), 150);
  assert.equal(sample(f, 'service_instances', { service: 'svc-051' }), 51);
  assert.equal(sample(f, 'service_instances', { service: 'svc-050' }), undefined);
  assert.equal(sample(f, 'service_instances', { service: '_other' }), (50 * 51) / 2);
  // Exactly 100 services: nothing folded, no _other.
  assert.equal(
    foldServices(new Map(Array.from({ length: 100 }, (_, i) => [`s${i}`, 1] as [string, number]))).length,
    100,
  );
});

test('a failing source does not break the scrape', async () => {
  const m = new Metrics({ version: 'x', zones: ['consul'] });
  m.sources.cacheEntries = () => {
    throw new Error('boom');
  };
  m.sources.serviceInstances = () => {
    throw new Error('boom');
  };
  m.cacheHits = 1;
  const f = parseExposition(await m.metricsText());
  assert.equal(sample(f, 'cache_hits_total'), 1);
  assert.equal(sample(f, 'cache_entries'), 0);
});

test('disabled metrics: counting calls are no-ops and nothing is registered', async () => {
  const m = new Metrics({ version: 'x', zones: ['consul'], enabled: false });
  m.request(TRANSPORT.udp, 0, 1);
  m.response(0, 0, SOURCE.cache);
  m.eviction('flush');
  m.invalidationLag(1);
  m.upstream('consul', 'a:1').observe(0.1);
  assert.equal(m.registry.getMetricsAsArray().length, 0);
  assert.equal((await m.metricsText()).trim(), '');
});

test('bad zone lists are refused with a code', () => {
  assert.throws(
    () => new Metrics({ version: 'x', zones: [] }),
    (e: unknown) => e instanceof MetricsError && e.code === 'CDP_ERR_METRICS_CONFIG',
  );
  assert.throws(() => new Metrics({ version: 'x', zones: ['consul', 'consul'] }), { code: 'CDP_ERR_METRICS_CONFIG' });
});

// ---------------------------------------------------------------------------------------------
// documentation and dashboard

test('the README metric table lists exactly the exported metrics, with their types and labels', async () => {
  const m = loadedMetrics();
  const exported = new Map(registered(m).map((x) => [x.name, x]));
  const rows = readmeMetricRows();
  // Linux-only process metrics (prom-client reads /proc) may be absent elsewhere.
  const linuxOnly = new Set(
    ['process_open_fds', 'process_max_fds', 'process_virtual_memory_bytes', 'process_heap_bytes'].map(
      (n) => PREFIX + n,
    ),
  );
  for (const name of exported.keys())
    assert.ok(rows.has(name), `metric ${name} is exported but missing from the README table`);
  for (const [name, row] of rows) {
    const x = exported.get(name);
    if (x === undefined && process.platform !== 'linux' && linuxOnly.has(name)) continue;
    assert.ok(x, `README lists ${name}, which is not exported`);
    const type = (await x.get()).type;
    assert.equal(row.type, type, `README type of ${name}`);
    assert.deepEqual(row.labels, [...x.labelNames], `README labels of ${name}`);
  }
});

test('every metric the Grafana dashboard queries exists', async () => {
  const dash = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as {
    schemaVersion: number;
    uid: string;
    panels: { id: number; type: string; datasource?: { uid: string }; targets?: { expr: string }[] }[];
    templating: { list: { name: string; type: string; query: unknown; definition?: string }[] };
  };
  assert.ok(dash.schemaVersion >= 36, 'schemaVersion for Grafana 9+');
  const ds = dash.templating.list.find((v) => v.name === 'datasource');
  assert.ok(ds && ds.type === 'datasource' && ds.query === 'prometheus', 'a Prometheus datasource variable');
  const ids = dash.panels.map((p) => p.id);
  assert.equal(new Set(ids).size, ids.length, 'panel ids are unique');
  for (const p of dash.panels)
    if (p.type !== 'row')
      assert.equal(p.datasource?.uid, '${datasource}', `panel ${p.id} uses the datasource variable`);

  const m = loadedMetrics();
  const families = new Map<string, string>();
  for (const x of registered(m)) families.set(x.name, (await x.get()).type);
  const exprs = dashboardExprs();
  for (const v of dash.templating.list) if (v.definition) exprs.push(v.definition);
  assert.ok(exprs.length >= 20);
  const used = new Set<string>();
  for (const e of exprs) for (const x of e.matchAll(/consul_dns_proxy_[a-z0-9_]+/g)) used.add(x[0]);
  for (const name of used) {
    const base = name.replace(/_(bucket|sum|count)$/, '');
    const ok = families.has(name) || (base !== name && families.get(base) === 'histogram');
    assert.ok(ok, `the dashboard queries ${name}, which is not exported`);
  }
  // The topics the issue asks for are all on the board.
  for (const n of [
    'requests_total',
    'responses_total',
    'cache_hits_total',
    'upstream_healthy',
    'upstream_request_duration_seconds_bucket',
    'upstream_hedged_total',
    'health_watches',
    'health_changes_total',
    'service_instances',
    'invalidation_lag_seconds_bucket',
    'nodejs_eventloop_lag_p99_seconds',
    'process_resident_memory_bytes',
  ]) {
    assert.ok(used.has(PREFIX + n), `the dashboard shows ${n}`);
  }
});

test('the dashboard PromQL parses (promtool check rules)', (t) => {
  const exprs = dashboardExprs().map((e) => e.replaceAll('$__rate_interval', '5m').replaceAll('$instance', '.*'));
  const dir = mkdtempSync(join(tmpdir(), 'cdp-dash-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'rules.yml');
  const rules = exprs
    .map((e, i) => `      - record: dashboard:expr_${i}\n        expr: ${JSON.stringify(e)}`)
    .join('\n');
  writeFileSync(file, `groups:\n  - name: dashboard\n    rules:\n${rules}\n`);
  const r = promtool(['check', 'rules', file]);
  if (r === null) return promtoolMissing(t);
  assert.equal(r.status, 0, `promtool check rules:\n${r.out}`);
});

// ---------------------------------------------------------------------------------------------
// admin listener

test('/health is 200 while serving and 503 while draining; HEAD works', async (t) => {
  let draining = false;
  const admin = await startAdmin(
    { host: '127.0.0.1', port: 0 },
    hooks(new Metrics({ version: 'x', zones: ['consul'], enabled: false }), { draining: () => draining }),
  );
  t.after(() => admin.close());
  let r = await httpCall(admin.address, 'GET', '/health');
  assert.equal(r.status, 200);
  assert.equal(r.body, 'ok\n');
  assert.equal((await httpCall(admin.address, 'HEAD', '/health')).status, 200);
  draining = true;
  r = await httpCall(admin.address, 'GET', '/health');
  assert.equal(r.status, 503);
  assert.equal(r.body, 'draining\n');
});

test('/ready follows the hook: 503 with a reason, then 200', async (t) => {
  let state: ReturnType<AdminHooks['ready']> = {
    ok: false,
    reason: 'no agent answered a probe',
    detail: { agents: ['127.0.0.1:8600'] },
  };
  const admin = await startAdmin(
    { host: '127.0.0.1', port: 0 },
    hooks(new Metrics({ version: 'x', zones: ['consul'], enabled: false }), { ready: () => state }),
  );
  t.after(() => admin.close());
  let r = await httpCall(admin.address, 'GET', '/ready');
  assert.equal(r.status, 503);
  assert.match(String(r.headers['content-type']), /^application\/json/);
  assert.deepEqual(JSON.parse(r.body), {
    ready: false,
    reason: 'no agent answered a probe',
    detail: { agents: ['127.0.0.1:8600'] },
  });
  state = { ok: true };
  r = await httpCall(admin.address, 'GET', '/ready');
  assert.equal(r.status, 200);
  assert.deepEqual(JSON.parse(r.body), { ready: true });
});

function fakeCache(): AdminCache & { flushes: { name?: string; service?: string }[] } {
  const flushes: { name?: string; service?: string }[] = [];
  return {
    flushes,
    count: () => 12,
    entries: (name) => (name === 'web.service.consul.' ? [{ type: 'A', ttl: 30 }] : []),
    flush: (sel) => {
      flushes.push(sel);
      return sel.name ? 1 : sel.service ? 4 : 12;
    },
  };
}

test('cache endpoints over loopback: count, entries for a name, flush by name, service or all', async (t) => {
  const cache = fakeCache();
  const admin = await startAdmin(
    { host: '127.0.0.1', port: 0 },
    hooks(new Metrics({ version: 'x', zones: ['consul'], enabled: false }), { cache }),
  );
  t.after(() => admin.close());
  let r = await httpCall(admin.address, 'GET', '/cache');
  assert.equal(r.status, 200);
  assert.deepEqual(JSON.parse(r.body), { entries: 12 });
  r = await httpCall(admin.address, 'GET', '/cache?name=web.service.consul.');
  assert.deepEqual(JSON.parse(r.body), { entries: 12, name: 'web.service.consul.', matches: [{ type: 'A', ttl: 30 }] });
  r = await httpCall(admin.address, 'POST', '/cache/flush?name=web.service.consul.');
  assert.deepEqual([r.status, JSON.parse(r.body)], [200, { flushed: 1 }]);
  r = await httpCall(admin.address, 'POST', '/cache/flush?service=web');
  assert.deepEqual(JSON.parse(r.body), { flushed: 4 });
  r = await httpCall(admin.address, 'POST', '/cache/flush');
  assert.deepEqual(JSON.parse(r.body), { flushed: 12 });
  assert.deepEqual(cache.flushes, [{ name: 'web.service.consul.' }, { service: 'web' }, {}]);
  assert.equal((await httpCall(admin.address, 'GET', '/cache?name=')).status, 400);
  assert.equal((await httpCall(admin.address, 'GET', '/cache/flush')).status, 405);
  assert.equal((await httpCall(admin.address, 'POST', '/cache')).status, 405);
  assert.equal(cache.flushes.length, 3, 'refused requests flush nothing');
});

test('unknown paths 404, wrong methods 405 with Allow, cache disabled 404', async (t) => {
  const admin = await startAdmin(
    { host: '127.0.0.1', port: 0 },
    hooks(new Metrics({ version: 'x', zones: ['consul'], enabled: false })),
  );
  t.after(() => admin.close());
  assert.equal((await httpCall(admin.address, 'GET', '/nope')).status, 404);
  assert.equal((await httpCall(admin.address, 'GET', '//metrics')).status, 404);
  const r = await httpCall(admin.address, 'DELETE', '/metrics');
  assert.equal(r.status, 405);
  assert.equal(r.headers['allow'], 'GET, HEAD');
  assert.equal((await httpCall(admin.address, 'GET', '/cache')).status, 404);
});

test('malformed HTTP gets 400 and the listener keeps serving', async (t) => {
  const admin = await startAdmin(
    { host: '127.0.0.1', port: 0 },
    hooks(new Metrics({ version: 'x', zones: ['consul'], enabled: false })),
  );
  t.after(() => admin.close());
  const port = Number(admin.address.split(':')[1]);
  const reply = await new Promise<string>((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => s.write('GARBAGE \x00\x01 nonsense\r\n\r\n'));
    let buf = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      buf += d;
    });
    s.on('end', () => resolve(buf));
    s.on('close', () => resolve(buf));
    s.on('error', reject);
    s.setTimeout(10_000, () => s.destroy(new Error('no reply to garbage')));
  });
  assert.match(reply, /^HTTP\/1\.1 400/);
  assert.equal((await httpCall(admin.address, 'GET', '/health')).status, 200);
});

test('a failing hook becomes a 500, not a crash', async (t) => {
  const admin = await startAdmin(
    { host: '127.0.0.1', port: 0 },
    hooks(new Metrics({ version: 'x', zones: ['consul'], enabled: false }), {
      ready: () => {
        throw new Error('boom');
      },
      log: { info: () => {}, warn: () => {} },
    }),
  );
  t.after(() => admin.close());
  assert.equal((await httpCall(admin.address, 'GET', '/ready')).status, 500);
  assert.equal((await httpCall(admin.address, 'GET', '/health')).status, 200);
});

test('isLoopback: 127/8, ::1 and IPv4-mapped 127.x only', () => {
  for (const a of [
    '127.0.0.1',
    '127.255.3.4',
    '::1',
    '::ffff:127.0.0.1',
    '::FFFF:127.1.2.3',
    '0:0:0:0:0:0:0:1',
    '0:0:0:0:0:ffff:127.0.0.1',
  ]) {
    assert.equal(isLoopback(a), true, a);
  }
  for (const a of [
    '10.0.0.1',
    '128.0.0.1',
    '1.127.0.0',
    '::ffff:10.0.0.1',
    '::2',
    'fe80::1%lo',
    '',
    undefined,
    null,
    'localhost',
    '127.0.0.1.evil',
    '::ffff:127.0.0.256',
  ]) {
    assert.equal(isLoopback(a), false, String(a));
  }
});

/** Drive the handler directly with a fake request whose socket reports `remoteAddress`. */
function callHandler(
  h: AdminHooks,
  method: string,
  url: string,
  remoteAddress: string,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve) => {
    const req = Object.assign(Readable.from([]), {
      method,
      url,
      headers: {},
      socket: { remoteAddress },
    }) as unknown as IncomingMessage;
    let status = 0;
    const res: { headersSent: boolean; writeHead(s: number): unknown; end(b?: string): void; destroy(): void } = {
      headersSent: false,
      writeHead(s: number) {
        status = s;
        res.headersSent = true;
        return res;
      },
      end(body?: string) {
        resolve({ status, body: body ?? '' });
      },
      destroy() {
        resolve({ status: -1, body: '' });
      },
    };
    createAdminHandler(h)(req, res as unknown as ServerResponse);
  });
}

test('cache endpoints refuse a non-loopback client (handler called with a faked remote address)', async () => {
  const cache = fakeCache();
  const h = hooks(new Metrics({ version: 'x', zones: ['consul'], enabled: false }), { cache });
  for (const remote of ['10.1.2.3', '192.0.2.7', '::ffff:10.0.0.1', '2001:db8::1']) {
    assert.equal((await callHandler(h, 'POST', '/cache/flush', remote)).status, 403, remote);
    assert.equal((await callHandler(h, 'GET', '/cache?name=x.', remote)).status, 403, remote);
  }
  assert.equal(cache.flushes.length, 0, 'nothing flushed for remote clients');
  // The other routes answer anyone (Prometheus and load balancers scrape from the network).
  assert.equal((await callHandler(h, 'GET', '/health', '10.1.2.3')).status, 200);
  // Loopback through the same path is allowed, IPv4-mapped included.
  const ok = await callHandler(h, 'POST', '/cache/flush?service=web', '::ffff:127.0.0.1');
  assert.deepEqual([ok.status, JSON.parse(ok.body)], [200, { flushed: 4 }]);
});

test('cache endpoints refuse a non-loopback client (real socket, remote address overridden)', async (t) => {
  const cache = fakeCache();
  const handler = createAdminHandler(
    hooks(new Metrics({ version: 'x', zones: ['consul'], enabled: false }), { cache }),
  );
  const server: Server = createServer((req, res) => {
    Object.defineProperty(req.socket, 'remoteAddress', { value: '203.0.113.9', configurable: true });
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  );
  const addr = server.address() as { port: number };
  const r = await httpCall(`127.0.0.1:${addr.port}`, 'POST', '/cache/flush');
  assert.equal(r.status, 403);
  assert.equal((JSON.parse(r.body) as { error: string }).error, 'forbidden');
  assert.equal(cache.flushes.length, 0);
});

test('startAdmin reports a busy port as AdminError with the system code; IPv6 address format', async (t) => {
  const h = hooks(new Metrics({ version: 'x', zones: ['consul'], enabled: false }));
  const first = await startAdmin({ host: '127.0.0.1', port: 0 }, h);
  t.after(() => first.close());
  const port = Number(first.address.split(':')[1]);
  await assert.rejects(
    startAdmin({ host: '127.0.0.1', port }, h),
    (e: unknown) => e instanceof AdminError && e.code === 'CDP_ERR_ADMIN_LISTEN' && e.syscallCode === 'EADDRINUSE',
  );
  let v6;
  try {
    v6 = await startAdmin({ host: '::1', port: 0 }, h);
  } catch {
    t.diagnostic('no ::1 on this host; IPv6 address format not checked');
    return;
  }
  t.after(() => v6.close());
  assert.match(v6.address, /^\[::1\]:\d+$/);
  assert.equal((await httpCall(v6.address, 'GET', '/health')).status, 200);
});
