/**
 * The admin HTTP listener (src/admin.ts) on its own: startAdmin on 127.0.0.1 port 0 with real
 * Metrics and a recording cache, asked over real HTTP. Routes, methods, the readiness and draining
 * paths, the Prometheus content type, the cache endpoints' parameters and their loopback-only rule.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { isLoopback } from '../../src/net/address.js';
import { AdminError } from '../../src/errors.js';
import { startAdmin, createAdminHandler, type AdminHooks, type AdminCache } from '../../src/server/admin.js';
import { Metrics, PREFIX } from '../../src/observability/metrics.js';

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function call(address: string, method: string, path: string): Promise<Reply> {
  const m = /^(.*):(\d+)$/.exec(address)!;
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: m[1]!.replace(/^\[|\]$/g, ''), port: Number(m[2]), method, path, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }),
        );
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** A cache that answers from a fixed list and records every flush selector. */
function recordingCache(names: string[]): AdminCache & { flushes: { name?: string; service?: string }[] } {
  const flushes: { name?: string; service?: string }[] = [];
  return {
    flushes,
    count: () => names.length,
    entries: (name) => names.filter((n) => n === name).map((n) => ({ name: n, type: 'A' })),
    flush: (sel) => {
      flushes.push({ ...sel });
      if (sel.name !== undefined) return names.filter((n) => n === sel.name).length;
      if (sel.service !== undefined) return names.filter((n) => n.startsWith(sel.service + '.')).length;
      return names.length;
    },
  };
}

function quietLog() {
  const warns: unknown[] = [];
  return {
    warns,
    log: {
      info: () => {},
      warn: (o: object) => {
        warns.push(o);
      },
    },
  };
}

async function admin(t: TestContext, hooks: Partial<AdminHooks> = {}) {
  const full: AdminHooks = {
    metrics: hooks.metrics ?? new Metrics({ version: 'x', zones: ['consul'], enabled: false }),
    draining: hooks.draining ?? (() => false),
    ready: hooks.ready ?? (() => ({ ok: true })),
    ...(hooks.cache ? { cache: hooks.cache } : {}),
    ...(hooks.log ? { log: hooks.log } : {}),
  };
  const a = await startAdmin({ host: '127.0.0.1', port: 0 }, full);
  t.after(() => a.close());
  return a;
}

test('/health: 200 "ok" while serving, 503 "draining" once shutdown began; HEAD too', async (t) => {
  let draining = false;
  const a = await admin(t, { draining: () => draining });
  assert.match(a.address, /^127\.0\.0\.1:\d+$/);
  let r = await call(a.address, 'GET', '/health');
  assert.equal(r.status, 200);
  assert.equal(r.body, 'ok\n');
  assert.match(r.headers['content-type'] ?? '', /^text\/plain/);
  assert.equal(r.headers['cache-control'], 'no-store');
  assert.equal((await call(a.address, 'HEAD', '/health')).status, 200);
  draining = true;
  r = await call(a.address, 'GET', '/health');
  assert.equal(r.status, 503);
  assert.equal(r.body, 'draining\n');
});

test('/ready: 200 {"ready":true}; 503 with the hook\'s reason and detail, or "not ready"', async (t) => {
  let state: ReturnType<AdminHooks['ready']> = { ok: true };
  const a = await admin(t, { ready: () => state });
  let r = await call(a.address, 'GET', '/ready');
  assert.equal(r.status, 200);
  assert.deepEqual(JSON.parse(r.body), { ready: true });
  assert.match(r.headers['content-type'] ?? '', /^application\/json/);
  state = { ok: false, reason: 'no_agent', detail: { agents: ['127.0.0.1:8600'] } };
  r = await call(a.address, 'GET', '/ready');
  assert.equal(r.status, 503);
  assert.deepEqual(JSON.parse(r.body), { ready: false, reason: 'no_agent', detail: { agents: ['127.0.0.1:8600'] } });
  state = { ok: false };
  r = await call(a.address, 'GET', '/ready');
  assert.equal(r.status, 503);
  assert.deepEqual(JSON.parse(r.body), { ready: false, reason: 'not ready' });
});

test("/metrics: the registry's content type, build_info and a counter the hot path bumps", async (t) => {
  const m = new Metrics({ version: '9.8.7-admin', zones: ['consul', 'recursor'] });
  m.cacheHits = 41;
  const a = await admin(t, { metrics: m });
  const r = await call(a.address, 'GET', '/metrics');
  assert.equal(r.status, 200);
  assert.equal(r.headers['content-type'], m.contentType);
  assert.match(m.contentType, /^text\/plain; version=0\.0\.4/);
  assert.match(r.body, new RegExp(`^${PREFIX}build_info\\{version="9\\.8\\.7-admin"\\} 1$`, 'm'));
  assert.match(r.body, new RegExp(`^${PREFIX}cache_hits_total 41$`, 'm'));
  m.cacheHits++;
  assert.match(
    (await call(a.address, 'GET', '/metrics')).body,
    new RegExp(`^${PREFIX}cache_hits_total 42$`, 'm'),
    'read at scrape time',
  );
  const head = await call(a.address, 'HEAD', '/metrics');
  assert.equal(head.status, 200);
  assert.equal(head.body, '');
});

test('unknown paths 404, wrong methods 405 with Allow', async (t) => {
  const a = await admin(t, { cache: recordingCache([]) });
  for (const p of ['/', '/metricsx', '/health/', '/cache/flush/x', '/v1/health/service/janus']) {
    const r = await call(a.address, 'GET', p);
    assert.equal(r.status, 404, p);
    assert.deepEqual(JSON.parse(r.body), { error: 'not_found' });
  }
  let r = await call(a.address, 'POST', '/metrics');
  assert.equal(r.status, 405);
  assert.equal(r.headers['allow'], 'GET, HEAD');
  r = await call(a.address, 'GET', '/cache/flush');
  assert.equal(r.status, 405, 'a flush is never a GET (a crawler or prefetch must not empty the cache)');
  assert.equal(r.headers['allow'], 'POST');
  r = await call(a.address, 'DELETE', '/cache');
  assert.equal(r.status, 405);
});

test('/cache and /cache/flush: counts, name and service selectors, bad parameters', async (t) => {
  const cache = recordingCache(['janus.service.consul', 'janus.service.consul', 'web.service.consul']);
  const a = await admin(t, { cache, log: quietLog().log });
  let r = await call(a.address, 'GET', '/cache');
  assert.deepEqual(JSON.parse(r.body), { entries: 3 });
  r = await call(a.address, 'GET', '/cache?name=web.service.consul');
  assert.deepEqual(JSON.parse(r.body), {
    entries: 3,
    name: 'web.service.consul',
    matches: [{ name: 'web.service.consul', type: 'A' }],
  });
  r = await call(a.address, 'GET', '/cache?service=janus');
  assert.equal(r.status, 400, 'GET /cache takes ?name= only');

  r = await call(a.address, 'POST', '/cache/flush?name=janus.service.consul');
  assert.equal(r.status, 200);
  assert.deepEqual(JSON.parse(r.body), { flushed: 2 });
  r = await call(a.address, 'POST', '/cache/flush?service=web');
  assert.deepEqual(JSON.parse(r.body), { flushed: 1 });
  r = await call(a.address, 'POST', '/cache/flush');
  assert.deepEqual(JSON.parse(r.body), { flushed: 3 });
  assert.deepEqual(cache.flushes, [{ name: 'janus.service.consul' }, { service: 'web' }, {}]);

  for (const bad of ['/cache/flush?name=', `/cache/flush?name=${'a'.repeat(1025)}`, '/cache/flush?service=']) {
    r = await call(a.address, 'POST', bad);
    assert.equal(r.status, 400, bad.slice(0, 40));
    assert.equal((JSON.parse(r.body) as { error: string }).error, 'bad_parameter');
  }
  assert.equal(cache.flushes.length, 3, 'a bad request flushes nothing');
});

test('cache endpoints: 404 when the cache is disabled; a cache failure is a 500, not a crash', async (t) => {
  const a = await admin(t);
  let r = await call(a.address, 'POST', '/cache/flush');
  assert.equal(r.status, 404);
  assert.deepEqual(JSON.parse(r.body), { error: 'cache_disabled' });

  const { warns, log } = quietLog();
  const broken: AdminCache = {
    count: () => {
      throw new Error('boom');
    },
    entries: () => [],
    flush: () => 0,
  };
  const b = await admin(t, { cache: broken, log });
  r = await call(b.address, 'GET', '/cache');
  assert.equal(r.status, 500);
  assert.deepEqual(JSON.parse(r.body), { error: 'internal' });
  assert.equal(warns.length, 1);
  assert.equal((await call(b.address, 'GET', '/health')).status, 200, 'still serving');
});

test('cache endpoints answer loopback clients only; metrics and probes answer anyone', async (t) => {
  // The client connects over loopback; the handler is shown a LAN peer address, as it would see
  // behind a 0.0.0.0 binding in a container.
  const cache = recordingCache(['janus.service.consul']);
  const handler = createAdminHandler({
    metrics: new Metrics({ version: 'x', zones: ['consul'], enabled: false }),
    draining: () => false,
    ready: () => ({ ok: true }),
    cache,
  });
  let peer = '10.1.2.3';
  const srv = http.createServer((req, res) => {
    Object.defineProperty(req.socket, 'remoteAddress', { value: peer, configurable: true });
    handler(req, res);
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  t.after(
    () =>
      new Promise<void>((resolve) => {
        srv.close(() => resolve());
        srv.closeAllConnections();
      }),
  );
  const address = `127.0.0.1:${(srv.address() as net.AddressInfo).port}`;

  for (const p of ['10.1.2.3', '::ffff:10.1.2.3', '192.168.1.1', 'fe80::1%eth0', '128.0.0.1']) {
    peer = p;
    const r = await call(address, 'POST', '/cache/flush');
    assert.equal(r.status, 403, p);
    assert.equal((JSON.parse(r.body) as { error: string }).error, 'forbidden');
    assert.equal((await call(address, 'GET', '/cache')).status, 403, p);
    assert.equal((await call(address, 'GET', '/health')).status, 200, p);
    assert.equal((await call(address, 'GET', '/metrics')).status, 200, p);
  }
  assert.deepEqual(cache.flushes, []);
  for (const p of ['127.0.0.1', '127.9.8.7', '::1', '::ffff:127.0.0.1']) {
    peer = p;
    assert.equal((await call(address, 'POST', '/cache/flush')).status, 200, p);
  }
  assert.equal(cache.flushes.length, 4);
});

test('isLoopback: 127/8, ::1 and their mapped forms; nothing else, nothing unparsable', () => {
  for (const a of [
    '127.0.0.1',
    '127.255.255.254',
    '::1',
    '0:0:0:0:0:0:0:1',
    '::FFFF:127.0.0.1',
    '0:0:0:0:0:ffff:127.1.2.3',
    '::1%lo',
  ]) {
    assert.equal(isLoopback(a), true, a);
  }
  for (const a of [
    '',
    null,
    undefined,
    '10.0.0.1',
    '128.0.0.1',
    '::2',
    '::ffff:10.0.0.1',
    'localhost',
    '127.0.0.1.nip.io',
    '127.1',
    '1127.0.0.1',
  ]) {
    assert.equal(isLoopback(a), false, String(a));
  }
});

test('a port already taken is an AdminError with the system code', async (t) => {
  const a = await admin(t);
  const port = Number(/:(\d+)$/.exec(a.address)![1]);
  await assert.rejects(
    startAdmin(
      { host: '127.0.0.1', port },
      {
        metrics: new Metrics({ version: 'x', zones: ['consul'], enabled: false }),
        draining: () => false,
        ready: () => ({ ok: true }),
      },
    ),
    (err: unknown) =>
      err instanceof AdminError &&
      err.code === 'CDP_ERR_ADMIN_LISTEN' &&
      err.syscallCode === 'EADDRINUSE' &&
      err.message.includes(`127.0.0.1:${port}`),
  );
});
