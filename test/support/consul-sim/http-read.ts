/*
 * The HTTP API's read endpoints (GET/HEAD): health, catalog and agent views of the catalog, and
 * the status endpoints. The health and catalog lists are blocking queries (HttpCtx.blocking).
 */
import http from 'node:http';
import net from 'node:net';
import type { SimConfig } from './config.js';
import { isHealthy, type Catalog } from './catalog.js';
import { checkJson, cmp, nodeJson, parseBoolParam, send, serviceJson } from './http-json.js';

/** What a route handler returns when the path is not one of its own. */
export const UNMATCHED = Symbol('unmatched');

/** What the endpoint handlers need from the HTTP API. */
export interface HttpCtx {
  readonly cfg: SimConfig;
  readonly catalog: Catalog;
  /** Answer with result() once current() passes ?index= (or ?wait= runs out). */
  blocking(url: URL, res: http.ServerResponse, current: () => number, result: () => unknown): Promise<void>;
}

/** GET/HEAD routes; UNMATCHED when the path is none of them. */
export function serveRead(
  ctx: HttpCtx,
  path: string,
  url: URL,
  res: http.ServerResponse,
): Promise<void> | void | typeof UNMATCHED {
  if (path.startsWith('/v1/health/')) return serveHealth(ctx, path, url, res);
  return serveCatalog(ctx, path, url, res);
}

function serveHealth(
  ctx: HttpCtx,
  path: string,
  url: URL,
  res: http.ServerResponse,
): Promise<void> | void | typeof UNMATCHED {
  let m: RegExpExecArray | null;
  if ((m = /^\/v1\/health\/service\/(.+)$/.exec(path))) {
    const name = decodeURIComponent(m[1]!);
    const passing = parseBoolParam(url.searchParams, 'passing');
    if (passing === null) return send(res, 400, 'Invalid value for ?passing', 'text/plain');
    const tags = url.searchParams.getAll('tag');
    return ctx.blocking(
      url,
      res,
      () => ctx.catalog.svcIndex(name),
      () => {
        let list = ctx.catalog.instances(name, '');
        for (const t of tags) list = list.filter((i) => i.svc.tags.some((x) => x.toLowerCase() === t.toLowerCase()));
        // ?passing drops anything not passing (stricter than DNS, which only drops critical).
        if (passing) list = list.filter((i) => isHealthy(i, true));
        list.sort((a, b) => cmp(a.node.name, b.node.name) || cmp(a.svc.id, b.svc.id));
        return list.map((i) => ({
          Node: nodeJson(ctx.cfg.dc, i.node),
          Service: serviceJson(i.svc, ctx.cfg.consul18),
          Checks: i.checks.map((c) => checkJson(ctx.catalog.services, c)),
        }));
      },
    );
  }
  if ((m = /^\/v1\/health\/state\/([^/]+)$/.exec(path))) {
    const state = m[1]!;
    if (!['any', 'passing', 'warning', 'critical'].includes(state))
      return send(res, 400, 'Invalid state', 'text/plain');
    return ctx.blocking(
      url,
      res,
      () => ctx.catalog.index,
      () =>
        [...ctx.catalog.checks.values()]
          .filter((c) => state === 'any' || c.status === state)
          .map((c) => checkJson(ctx.catalog.services, c)),
    );
  }
  if ((m = /^\/v1\/health\/checks\/(.+)$/.exec(path))) {
    const name = decodeURIComponent(m[1]!);
    return ctx.blocking(
      url,
      res,
      () => ctx.catalog.svcIndex(name),
      () =>
        [...ctx.catalog.checks.values()]
          .filter(
            (c) => c.serviceId && ctx.catalog.services.get(c.serviceId)?.name.toLowerCase() === name.toLowerCase(),
          )
          .map((c) => checkJson(ctx.catalog.services, c)),
    );
  }
  if ((m = /^\/v1\/health\/node\/(.+)$/.exec(path))) {
    const node = decodeURIComponent(m[1]!).toLowerCase();
    return ctx.blocking(
      url,
      res,
      () => ctx.catalog.index,
      () =>
        [...ctx.catalog.checks.values()]
          .filter((c) => c.node.toLowerCase() === node)
          .map((c) => checkJson(ctx.catalog.services, c)),
    );
  }
  return UNMATCHED;
}

function serveCatalog(
  ctx: HttpCtx,
  path: string,
  url: URL,
  res: http.ServerResponse,
): Promise<void> | void | typeof UNMATCHED {
  let m: RegExpExecArray | null;
  if (path === '/v1/catalog/services') {
    return ctx.blocking(
      url,
      res,
      () => Math.max(ctx.catalog.servicesTableIndex, ctx.catalog.floor),
      () => {
        // name -> union of its tags (catalog.mdx)
        const out: Record<string, string[]> = {};
        for (const s of ctx.catalog.services.values()) {
          const tags = (out[s.name] ??= []);
          for (const t of s.tags) if (!tags.includes(t)) tags.push(t);
        }
        return out;
      },
    );
  }
  if ((m = /^\/v1\/catalog\/service\/(.+)$/.exec(path))) {
    const name = decodeURIComponent(m[1]!);
    return ctx.blocking(
      url,
      res,
      () => ctx.catalog.svcIndex(name),
      () =>
        ctx.catalog.instances(name, url.searchParams.get('tag') ?? '').map((i) => ({
          ID: i.node.id,
          Node: i.node.name,
          Address: i.node.address,
          Datacenter: ctx.cfg.dc,
          TaggedAddresses: (nodeJson(ctx.cfg.dc, i.node) as { TaggedAddresses: unknown }).TaggedAddresses,
          NodeMeta: { ...i.node.meta },
          ServiceID: i.svc.id,
          ServiceName: i.svc.name,
          ServiceTags: [...i.svc.tags],
          ServiceAddress: i.svc.address,
          ServicePort: i.svc.port,
          ServiceMeta: { ...i.svc.meta },
          ServiceWeights: { ...i.svc.weights },
          ServiceEnableTagOverride: i.svc.enableTagOverride,
          CreateIndex: i.svc.createIndex,
          ModifyIndex: i.svc.modifyIndex,
        })),
    );
  }
  if (path === '/v1/catalog/nodes')
    return ctx.blocking(
      url,
      res,
      () => ctx.catalog.index,
      () => [...ctx.catalog.nodes.values()].map((n) => nodeJson(ctx.cfg.dc, n)),
    );
  if (path === '/v1/agent/services') {
    const out: Record<string, unknown> = {};
    for (const s of ctx.catalog.services.values())
      out[s.id] = { ...serviceJson(s, ctx.cfg.consul18), Datacenter: ctx.cfg.dc };
    return send(res, 200, JSON.stringify(out));
  }
  if (path === '/v1/agent/checks') {
    const out: Record<string, unknown> = {};
    for (const c of ctx.catalog.checks.values())
      if (c.checkId !== 'serfHealth') out[c.checkId] = checkJson(ctx.catalog.services, c);
    return send(res, 200, JSON.stringify(out));
  }
  if (path === '/v1/agent/self') {
    const n = ctx.catalog.nodes.get(ctx.cfg.nodeName.toLowerCase())!;
    return send(
      res,
      200,
      JSON.stringify({
        Config: { Datacenter: ctx.cfg.dc, NodeName: n.name, NodeID: n.id, Server: true, Version: '1.19.2-sim' },
        Member: { Name: n.name, Addr: n.address, Port: 8301, Status: 1 },
        Meta: n.meta,
      }),
    );
  }
  return UNMATCHED;
}

/** /v1/status/leader: the first server's RPC address ("" without one). */
export function leader(catalog: Catalog): string {
  const s = catalog.instances('consul', '')[0];
  return s ? `${net.isIPv6(s.node.address) ? `[${s.node.address}]` : s.node.address}:8300` : '';
}

/** /v1/status/peers: every server's RPC address. */
export function peers(catalog: Catalog): string[] {
  return catalog.instances('consul', '').map((s) => `${s.node.address}:8300`);
}
