/*
 * The agent's write endpoints (PUT/POST /v1/agent/...): service and check registration,
 * deregistration, maintenance mode and TTL check updates. Each write ends with catalog.notify(),
 * which wakes the blocking queries it moved.
 */
import http from 'node:http';
import type { Catalog, CheckRec } from './catalog.js';
import { checkType, parseBoolParam, parseJson, pick, send } from './http-json.js';
import { UNMATCHED, type HttpCtx } from './http-read.js';
import type { Health } from './types.js';

/** PUT/POST routes; UNMATCHED when the path is none of them. */
export function serveAgentWrite(
  ctx: HttpCtx,
  path: string,
  url: URL,
  res: http.ServerResponse,
  body: string,
): void | typeof UNMATCHED {
  let m: RegExpExecArray | null;
  if (path === '/v1/agent/service/register') return httpRegister(ctx, url, res, body);
  if ((m = /^\/v1\/agent\/service\/deregister\/(.+)$/.exec(path))) {
    const id = decodeURIComponent(m[1]!);
    if (!ctx.catalog.removeService(id))
      return send(
        res,
        404,
        `Unknown service ID "${id}". Ensure that the service ID is passed, not the service name.`,
        'text/plain',
      );
    ctx.catalog.notify();
    return send(res, 200, '');
  }
  if ((m = /^\/v1\/agent\/service\/maintenance\/(.+)$/.exec(path)))
    return serviceMaintenance(ctx, url, res, decodeURIComponent(m[1]!));
  if (path === '/v1/agent/maintenance') return nodeMaintenance(ctx, url, res);
  if (path === '/v1/agent/check/register') return httpCheckRegister(ctx, res, body);
  if ((m = /^\/v1\/agent\/check\/deregister\/(.+)$/.exec(path))) {
    const c = ctx.catalog.findCheck(decodeURIComponent(m[1]!));
    if (!c) return send(res, 404, `Unknown check ID "${decodeURIComponent(m[1]!)}"`, 'text/plain');
    ctx.catalog.deleteCheck(c.node, c.checkId);
    ctx.catalog.notify();
    return send(res, 200, '');
  }
  if ((m = /^\/v1\/agent\/check\/(pass|warn|fail|update)\/(.+)$/.exec(path)))
    return checkStatus(ctx, url, res, m[1]!, decodeURIComponent(m[2]!), body);
  return UNMATCHED;
}

function serviceMaintenance(ctx: HttpCtx, url: URL, res: http.ServerResponse, id: string): void {
  const enable = parseBoolParam(url.searchParams, 'enable', true);
  if (enable === undefined) return send(res, 400, 'Missing value for enable', 'text/plain');
  if (enable === null) return send(res, 400, 'Invalid value for enable', 'text/plain');
  const s = ctx.catalog.services.get(id);
  if (!s) return send(res, 404, `Unknown service ID "${id}"`, 'text/plain');
  const checkId = `_service_maintenance:${id}`;
  if (enable) {
    ctx.catalog.putCheck({
      node: s.node,
      checkId,
      name: 'Service Maintenance Mode',
      status: 'critical',
      notes:
        url.searchParams.get('reason') ||
        'Maintenance mode is enabled for this service, but no reason was provided. This is a default message.',
      output: '',
      serviceId: id,
      type: 'maintenance',
      interval: '',
    });
  } else ctx.catalog.deleteCheck(s.node, checkId);
  ctx.catalog.notify();
  return send(res, 200, '');
}

function nodeMaintenance(ctx: HttpCtx, url: URL, res: http.ServerResponse): void {
  const enable = parseBoolParam(url.searchParams, 'enable', true);
  if (enable === undefined) return send(res, 400, 'Missing value for enable', 'text/plain');
  if (enable === null) return send(res, 400, 'Invalid value for enable', 'text/plain');
  // Simulator extension: ?node= picks which of the simulated nodes (default: the agent's own).
  const node = ctx.catalog.nodes.get((url.searchParams.get('node') ?? ctx.cfg.nodeName).toLowerCase());
  if (!node) return send(res, 404, 'Unknown node', 'text/plain');
  if (enable) {
    ctx.catalog.putCheck({
      node: node.name,
      checkId: '_node_maintenance',
      name: 'Node Maintenance Mode',
      status: 'critical',
      notes:
        url.searchParams.get('reason') ||
        'Maintenance mode is enabled for this node, but no reason was provided. This is a default message.',
      output: '',
      serviceId: '',
      type: 'maintenance',
      interval: '',
    });
  } else ctx.catalog.deleteCheck(node.name, '_node_maintenance');
  ctx.catalog.notify();
  return send(res, 200, '');
}

/** /v1/agent/check/{pass,warn,fail}/<id>?note= and /v1/agent/check/update/<id> (JSON Status, Output). */
function checkStatus(ctx: HttpCtx, url: URL, res: http.ServerResponse, verb: string, id: string, body: string): void {
  const c = ctx.catalog.findCheck(id);
  if (!c) return send(res, 404, `Unknown check ID "${id}"`, 'text/plain');
  let status: Health;
  let output: string;
  if (verb === 'update') {
    const b = parseJson(body);
    const st = String(pick(b, 'status') ?? '');
    if (st !== 'passing' && st !== 'warning' && st !== 'critical')
      return send(res, 400, `Invalid check status: "${st}"`, 'text/plain');
    status = st;
    output = String(pick(b, 'output') ?? '');
  } else {
    status = verb === 'pass' ? 'passing' : verb === 'warn' ? 'warning' : 'critical';
    output = url.searchParams.get('note') ?? '';
  }
  ctx.catalog.setCheckStatus(c.node, c.checkId, status, output);
  ctx.catalog.notify();
  return send(res, 200, '');
}

export function httpRegister(ctx: HttpCtx, url: URL, res: http.ServerResponse, body: string): void {
  const b = parseJson(body);
  if (!b) return send(res, 400, 'Request decode failed: invalid JSON', 'text/plain');
  const name = pick(b, 'name');
  if (typeof name !== 'string' || !name) return send(res, 400, 'Missing service name', 'text/plain');
  const id = (pick(b, 'id') as string | undefined) || name;
  const port = pick(b, 'port');
  if (port !== undefined && typeof port !== 'number')
    return send(res, 400, 'Request decode failed: Port', 'text/plain');
  const w = pick(b, 'weights') as Record<string, unknown> | undefined;
  const weights = w
    ? { Passing: Number(pick(w, 'passing') ?? 1), Warning: Number(pick(w, 'warning') ?? 1) }
    : undefined;
  if (weights && weights.Passing < 1) return send(res, 400, 'Passing must be greater than 0', 'text/plain');
  const defs: Record<string, unknown>[] = [];
  const one = pick(b, 'check');
  const many = pick(b, 'checks');
  if (one && typeof one === 'object') defs.push(one as Record<string, unknown>);
  if (Array.isArray(many)) defs.push(...(many as Record<string, unknown>[]));
  const checks: Omit<CheckRec, 'createIndex' | 'modifyIndex' | 'node'>[] = [];
  for (let i = 0; i < defs.length; i++) {
    const d = defs[i]!;
    const type = checkType(d);
    if (!type) return send(res, 400, 'Invalid check: TTL must be > 0 for TTL checks', 'text/plain');
    const status = (pick(d, 'status') as string | undefined) ?? '';
    if (status && status !== 'passing' && status !== 'warning' && status !== 'critical')
      return send(res, 400, `Invalid check status: "${status}"`, 'text/plain');
    // Default IDs: service:<id>, or service:<id>:<n> when several checks are given.
    const cid =
      (pick(d, 'checkid') as string | undefined) ||
      (pick(d, 'id') as string | undefined) ||
      (defs.length > 1 ? `service:${id}:${i + 1}` : `service:${id}`);
    checks.push({
      checkId: cid,
      name: (pick(d, 'name') as string | undefined) || `Service '${name}' check`,
      // Checks start critical unless a status is given ("Initial Health Check Status").
      status: (status || '') as Health,
      notes: String(pick(d, 'notes') ?? ''),
      output: '',
      serviceId: id,
      type,
      interval: String(pick(d, 'interval') ?? ''),
    });
  }
  const node = ctx.cfg.nodeName;
  const args: Parameters<Catalog['putService']>[0] = { id, name, node };
  const addr = pick(b, 'address');
  if (typeof addr === 'string') args.address = addr;
  if (typeof port === 'number') args.port = port;
  const tags = pick(b, 'tags');
  if (Array.isArray(tags)) args.tags = tags.map(String);
  const meta = pick(b, 'meta');
  if (meta && typeof meta === 'object') args.meta = meta as Record<string, string>;
  if (weights) args.weights = weights;
  const eto = pick(b, 'enabletagoverride');
  if (typeof eto === 'boolean') args.enableTagOverride = eto;
  const existing = ctx.catalog.services.get(id);
  const svc = ctx.catalog.putService({ ...args, node: existing?.node ?? node });
  if (url.searchParams.has('replace-existing-checks')) {
    for (const c of [...ctx.catalog.checks.values()])
      if (c.serviceId === id && !checks.some((x) => x.checkId === c.checkId))
        ctx.catalog.deleteCheck(c.node, c.checkId);
  }
  for (const c of checks) {
    const prev = ctx.catalog.checks.get(`${svc.node.toLowerCase()}\0${c.checkId}`);
    ctx.catalog.putCheck({ ...c, node: svc.node, status: c.status || prev?.status || 'critical' });
  }
  ctx.catalog.notify();
  send(res, 200, '');
}

export function httpCheckRegister(ctx: HttpCtx, res: http.ServerResponse, body: string): void {
  const b = parseJson(body);
  if (!b) return send(res, 400, 'Request decode failed: invalid JSON', 'text/plain');
  const name = pick(b, 'name');
  if (typeof name !== 'string' || !name) return send(res, 400, 'Missing check name', 'text/plain');
  const type = checkType(b);
  if (!type) return send(res, 400, 'Invalid check: TTL must be > 0 for TTL checks', 'text/plain');
  const serviceId = String(pick(b, 'serviceid') ?? '');
  const svc = serviceId ? ctx.catalog.services.get(serviceId) : undefined;
  if (serviceId && !svc) return send(res, 400, `ServiceID "${serviceId}" does not exist`, 'text/plain');
  const status = String(pick(b, 'status') ?? '') || 'critical';
  if (status !== 'passing' && status !== 'warning' && status !== 'critical')
    return send(res, 400, `Invalid check status: "${status}"`, 'text/plain');
  ctx.catalog.putCheck({
    node: svc?.node ?? ctx.cfg.nodeName,
    checkId: (pick(b, 'checkid') as string | undefined) || (pick(b, 'id') as string | undefined) || name,
    name,
    status,
    notes: String(pick(b, 'notes') ?? ''),
    output: '',
    serviceId,
    type,
    interval: String(pick(b, 'interval') ?? ''),
  });
  ctx.catalog.notify();
  send(res, 200, '');
}
