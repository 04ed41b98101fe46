/*
 * The agent's HTTP API: the listener, the HTTP fault modes, the ACL token check, routing to the
 * read (http-read.ts) and write (http-agent.ts) endpoints, and blocking queries.
 */
import http from 'node:http';
import net from 'node:net';
import { randomInt } from 'node:crypto';
import type { SimConfig } from './config.js';
import type { Catalog, Waiter } from './catalog.js';
import type { FaultState } from './faults.js';
import { serveAgentWrite } from './http-agent.js';
import { parseGoDuration, readBody, send } from './http-json.js';
import { UNMATCHED, leader, peers, serveRead, type HttpCtx } from './http-read.js';

export class HttpApi implements HttpCtx {
  port = 0;
  /** HTTP requests received. */
  requests = 0;
  private server: http.Server | null = null;
  /** Requests held open by the 'hang' fault. */
  private readonly hanging = new Set<http.ServerResponse>();

  constructor(
    readonly cfg: SimConfig,
    readonly catalog: Catalog,
    private readonly faults: FaultState,
  ) {}

  private onHttp(req: http.IncomingMessage, res: http.ServerResponse): void {
    this.requests++;
    const fault = this.faults.http;
    if (fault === 'hang') {
      // Accept and never answer, until the fault is cleared (the socket is then destroyed) or stop().
      this.hanging.add(res);
      res.on('close', () => this.hanging.delete(res));
      return;
    }
    if (fault === '500') {
      // What an agent that lost its servers says (rpc error making call).
      send(res, 500, 'rpc error making call: No cluster leader', 'text/plain');
      return;
    }
    const go = (): void => {
      this.route(req, res).catch((err: unknown) => {
        if (!res.headersSent) send(res, 500, String(err instanceof Error ? err.message : err), 'text/plain');
      });
    };
    if (fault === 'slow') {
      this.faults.later(this.faults.delayMs, go);
    } else go();
  }

  private async route(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://sim');
    const path = url.pathname;
    const method = req.method ?? 'GET';
    const body = await readBody(req);

    if (path === '/v1/status/leader') return send(res, 200, JSON.stringify(leader(this.catalog)));
    if (path === '/v1/status/peers') return send(res, 200, JSON.stringify(peers(this.catalog)));

    // ACL: a token is required once one is configured (agent/http.go; ACL not found / Permission denied).
    if (this.cfg.token !== undefined) {
      const auth = req.headers['authorization'];
      const given =
        (req.headers['x-consul-token'] as string | undefined) ??
        url.searchParams.get('token') ??
        (typeof auth === 'string' && auth.startsWith('Bearer ') ? auth.slice(7) : undefined);
      if (given === undefined || given === '')
        return send(res, 403, 'Permission denied: anonymous token lacks permission', 'text/plain');
      if (given !== this.cfg.token) return send(res, 403, 'ACL not found', 'text/plain');
    }

    const dc = url.searchParams.get('dc');
    if (dc && dc.toLowerCase() !== this.cfg.dc) return send(res, 500, 'No path to datacenter', 'text/plain');

    if (method === 'GET' || method === 'HEAD') {
      const r = serveRead(this, path, url, res);
      if (r !== UNMATCHED) return r;
    }
    if (method === 'PUT' || method === 'POST') {
      if (serveAgentWrite(this, path, url, res, body) !== UNMATCHED) return;
    }
    if (/^\/v1\//.test(path) && (method === 'GET' || method === 'PUT' || method === 'POST')) {
      return send(res, 405, `method ${method} not allowed`, 'text/plain');
    }
    return send(res, 404, 'Not Found', 'text/plain');
  }

  /** Blocking queries (blocking.mdx, agent/blockingquery): wait while the result index is not
   *  greater than ?index=; wait default 5 min, cap 10 min, plus up to wait/16 jitter. */
  async blocking(url: URL, res: http.ServerResponse, current: () => number, result: () => unknown): Promise<void> {
    const idxParam = url.searchParams.get('index');
    const waitParam = url.searchParams.get('wait');
    let min = 0;
    if (idxParam !== null) {
      if (!/^\d+$/.test(idxParam)) return send(res, 400, 'Invalid index', 'text/plain');
      min = Number(idxParam);
    }
    let wait = 5 * 60_000;
    if (waitParam !== null) {
      const w = parseGoDuration(waitParam);
      if (w === null) return send(res, 400, 'Invalid wait time', 'text/plain');
      wait = w;
    }
    if (wait <= 0) wait = 5 * 60_000; // defaultQueryTime
    if (wait > 10 * 60_000) wait = 10 * 60_000; // maxQueryTime
    if (min > 0 && current() <= min) {
      const timeout = wait + (wait >= 16 ? randomInt(Math.floor(wait / 16) + 1) : 0);
      await new Promise<void>((resolve) => {
        const w: Waiter = {
          min,
          current,
          done: resolve,
          timer: setTimeout(() => {
            this.catalog.waiters.delete(w);
            resolve();
          }, timeout),
        };
        this.catalog.waiters.add(w);
        res.on('close', () => {
          if (this.catalog.waiters.delete(w)) {
            clearTimeout(w.timer);
            resolve();
          }
        });
      });
      if (res.destroyed || this.faults.stopped) return;
    }
    send(res, 200, JSON.stringify(result()), 'application/json', Math.max(current(), 1));
  }

  async bind(port: number): Promise<void> {
    const srv = http.createServer((req, res) => this.onHttp(req, res));
    srv.keepAliveTimeout = 30_000;
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(port, this.cfg.host, () => {
        srv.off('error', reject);
        resolve();
      });
    });
    this.server = srv;
    this.port = (srv.address() as net.AddressInfo).port;
  }

  async close(): Promise<void> {
    const srv = this.server;
    this.server = null;
    for (const r of this.hanging) r.destroy();
    this.hanging.clear();
    if (!srv) return;
    const closed = new Promise<void>((r) => srv.close(() => r()));
    srv.closeAllConnections();
    await closed;
  }

  /** Leaving the 'hang' fault: the held requests are cut off, as a restarted agent would. */
  dropHanging(): void {
    for (const r of this.hanging) r.destroy();
    this.hanging.clear();
  }
}
