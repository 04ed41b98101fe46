/*
 * The admin HTTP listener (`--metrics HOST:PORT`, config metrics.listen): Prometheus scrapes,
 * liveness and readiness probes, and the cache admin endpoints. Plain node:http, no framework:
 * six routes do not need one, and nothing here is on the query path.
 *
 *   GET  /metrics       Prometheus text format (prom-client content type)
 *   GET  /health        200 "ok" while serving, 503 "draining" once shutdown has begun, so a load
 *                       balancer stops sending before the DNS sockets close
 *   GET  /ready         200 {"ready":true} or 503 {"ready":false,"reason":...} from hooks.ready()
 *   GET  /cache         {"entries":N}; with ?name=NAME also {"name":NAME,"matches":[...]}
 *   POST /cache/flush   all entries, or ?name=NAME / ?service=SERVICE → {"flushed":N}
 *
 * The cache endpoints answer only loopback clients (403 otherwise): the Docker image binds the
 * listener on 0.0.0.0 so Prometheus can scrape it, and reading or flushing the cache from the
 * network would leak query names and allow a cheap cache-busting attack. GET also accepts HEAD.
 * A bad request never throws out of the handler: it gets a 4xx, an internal failure a 500.
 */

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Metrics } from '../observability/metrics.js';
import { formatHostPort, isLoopback } from '../net/address.js';
import type { Log } from '../observability/log.js';
import { AdminError } from '../errors.js';

export interface AdminCache {
  count(): number;
  entries(name: string): unknown[];
  flush(sel: { name?: string; service?: string }): number;
}

export interface AdminHooks {
  metrics: Metrics;
  /** true once shutdown has begun (/health turns 503). */
  draining: () => boolean;
  /** Readiness as the upstream health checker sees it (agents, then recursors). */
  ready: () => { ok: boolean; reason?: string; detail?: unknown };
  /** Absent when the cache is disabled: the cache endpoints then answer 404. */
  cache?: AdminCache;
  log?: Pick<Log, 'info' | 'warn'>;
}

export interface AdminServer {
  /** host:port actually bound ("[::1]:9153" for IPv6). */
  address: string;
  close(): Promise<void>;
}

// Query parameters longer than any DNS name (255 octets in presentation form with escapes, RFC
// 1035 §3.1) are refused rather than handed to the cache.
const MAX_PARAM = 1024;

function send(res: ServerResponse, status: number, body: string, type: string, extra?: Record<string, string>): void {
  res.writeHead(status, {
    'Content-Type': type,
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
    ...extra,
  });
  res.end(body);
}

function json(res: ServerResponse, status: number, obj: unknown, extra?: Record<string, string>): void {
  send(res, status, JSON.stringify(obj) + '\n', 'application/json; charset=utf-8', extra);
}

function text(res: ServerResponse, status: number, body: string): void {
  send(res, status, body, 'text/plain; charset=utf-8');
}

const ROUTES: Record<string, string> = {
  '/metrics': 'GET, HEAD',
  '/health': 'GET, HEAD',
  '/ready': 'GET, HEAD',
  '/cache': 'GET, HEAD',
  '/cache/flush': 'POST',
};

/**
 * The request handler, exported so tests can drive it with a fake socket address. It never
 * throws and never rejects.
 */
export function createAdminHandler(hooks: AdminHooks): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    handle(hooks, req, res).catch((err: unknown) => {
      hooks.log?.warn({ err, url: req.url }, 'admin request failed');
      if (!res.headersSent) json(res, 500, { error: 'internal' });
      else res.destroy();
    });
  };
}

async function handle(hooks: AdminHooks, req: IncomingMessage, res: ServerResponse): Promise<void> {
  // Bodies are never read (flush takes its selector from the query); discard what is sent.
  req.resume();
  const raw = req.url ?? '/';
  const q = raw.indexOf('?');
  const path = q < 0 ? raw : raw.slice(0, q);
  const method = req.method ?? 'GET';
  const allow = ROUTES[path];
  if (allow === undefined) return json(res, 404, { error: 'not_found' });
  if (!allow.split(', ').includes(method)) {
    return json(res, 405, { error: 'method_not_allowed' }, { Allow: allow });
  }

  switch (path) {
    case '/metrics': {
      const body = await hooks.metrics.metricsText();
      return send(res, 200, body, hooks.metrics.contentType);
    }
    case '/health':
      return hooks.draining() ? text(res, 503, 'draining\n') : text(res, 200, 'ok\n');
    case '/ready': {
      const r = hooks.ready();
      const body: Record<string, unknown> = { ready: r.ok };
      if (!r.ok) body['reason'] = r.reason ?? 'not ready';
      if (r.detail !== undefined) body['detail'] = r.detail;
      return json(res, r.ok ? 200 : 503, body);
    }
  }

  // /cache and /cache/flush
  if (!isLoopback(req.socket?.remoteAddress)) {
    return json(res, 403, { error: 'forbidden', reason: 'cache endpoints answer loopback clients only' });
  }
  const cache = hooks.cache;
  if (cache === undefined) return json(res, 404, { error: 'cache_disabled' });
  const params = new URLSearchParams(q < 0 ? '' : raw.slice(q + 1));
  const name = params.get('name');
  const service = params.get('service');
  for (const v of [name, service]) {
    if (v !== null && (v.length === 0 || v.length > MAX_PARAM)) return json(res, 400, { error: 'bad_parameter' });
  }

  if (path === '/cache') {
    if (service !== null) return json(res, 400, { error: 'bad_parameter', reason: 'GET /cache takes ?name= only' });
    const body: Record<string, unknown> = { entries: cache.count() };
    if (name !== null) {
      body['name'] = name;
      body['matches'] = cache.entries(name);
    }
    return json(res, 200, body);
  }

  const sel: { name?: string; service?: string } = {};
  if (name !== null) sel.name = name;
  if (service !== null) sel.service = service;
  const flushed = cache.flush(sel);
  hooks.log?.info({ ...sel, flushed }, 'cache flushed');
  return json(res, 200, { flushed });
}

function formatAddress(server: Server): string {
  const a = server.address();
  if (a === null || typeof a === 'string') return String(a);
  return formatHostPort({ host: a.address, port: a.port });
}

/** Start the admin listener; resolves once bound, rejects with AdminError if it cannot bind. */
export function startAdmin(listen: { host: string; port: number }, hooks: AdminHooks): Promise<AdminServer> {
  const server = createServer(createAdminHandler(hooks));
  // Short limits: probes and scrapes are small; a slow client must not hold sockets open.
  server.headersTimeout = 5000;
  server.requestTimeout = 10000;
  server.maxHeadersCount = 64;
  // Malformed HTTP: answer 400 if the socket is still writable, never let it become an
  // unhandled 'error' event.
  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    else socket.destroy();
  });
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      reject(
        new AdminError(`admin listener: cannot listen on ${listen.host}:${listen.port}: ${err.message}`, err.code, {
          cause: err,
        }),
      );
    };
    server.once('error', onError);
    server.listen(listen.port, listen.host, () => {
      server.off('error', onError);
      server.on('error', (err) => hooks.log?.warn({ err }, 'admin listener error'));
      let closing: Promise<void> | undefined;
      resolve({
        address: formatAddress(server),
        close: () => {
          closing ??= new Promise<void>((res) => {
            server.close(() => res());
            server.closeAllConnections();
          });
          return closing;
        },
      });
    });
  });
}
