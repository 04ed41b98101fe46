/*
 * The HTTP API's JSON shapes (structs.Node, NodeService, HealthCheck as the agent encodes them)
 * and request helpers: the response writer with the agent's X-Consul-* headers, body and parameter
 * parsing with Go's semantics.
 */
import http from 'node:http';
import net from 'node:net';
import type { CheckRec, NodeRec, ServiceRec } from './catalog.js';

export function nodeJson(dc: string, n: NodeRec): Record<string, unknown> {
  const fam = net.isIPv6(n.address) ? 'ipv6' : 'ipv4';
  return {
    ID: n.id,
    Node: n.name,
    Address: n.address,
    Datacenter: dc,
    TaggedAddresses: { lan: n.address, [`lan_${fam}`]: n.address, wan: n.address, [`wan_${fam}`]: n.address },
    Meta: { ...n.meta },
    CreateIndex: n.createIndex,
    ModifyIndex: n.modifyIndex,
  };
}

/** `consul18`: a service without meta shows `"Meta": null`, as Consul 1.8 encodes an unset map. */
export function serviceJson(s: ServiceRec, consul18 = false): Record<string, unknown> {
  const tagged: Record<string, unknown> = {};
  if (s.address) {
    const fam = net.isIPv6(s.address) ? 'ipv6' : 'ipv4';
    tagged[`lan_${fam}`] = { Address: s.address, Port: s.port };
    tagged[`wan_${fam}`] = { Address: s.address, Port: s.port };
  }
  return {
    ID: s.id,
    Service: s.name,
    Tags: [...s.tags], // normalised to [] (agent/health_endpoint.go)
    Address: s.address,
    TaggedAddresses: tagged,
    Meta: consul18 && Object.keys(s.meta).length === 0 ? null : { ...s.meta },
    Port: s.port,
    Weights: { ...s.weights },
    EnableTagOverride: s.enableTagOverride,
    Proxy: { Mode: '', MeshGateway: {}, Expose: {} },
    Connect: {},
    PeerName: '',
    CreateIndex: s.createIndex,
    ModifyIndex: s.modifyIndex,
  };
}

export function checkJson(services: Map<string, ServiceRec>, c: CheckRec): Record<string, unknown> {
  const s = c.serviceId ? services.get(c.serviceId) : undefined;
  return {
    Node: c.node,
    CheckID: c.checkId,
    Name: c.name,
    Status: c.status,
    Notes: c.notes,
    Output: c.output,
    ServiceID: c.serviceId,
    ServiceName: s?.name ?? '',
    ServiceTags: s ? [...s.tags] : [],
    Type: c.type,
    Interval: c.interval,
    Timeout: '',
    ExposedPort: 0,
    Definition: {},
    CreateIndex: c.createIndex,
    ModifyIndex: c.modifyIndex,
  };
}

export function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export function send(
  res: http.ServerResponse,
  status: number,
  body: string,
  type = 'application/json',
  index?: number,
): void {
  if (res.headersSent || res.destroyed) return;
  const headers: Record<string, string | number> = { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) };
  if (index !== undefined) {
    // agent/http.go setMeta
    headers['X-Consul-Index'] = index;
    headers['X-Consul-KnownLeader'] = 'true';
    headers['X-Consul-LastContact'] = 0;
  }
  res.writeHead(status, headers);
  res.end(body);
}

export function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', () => resolve(''));
  });
}

export function parseJson(body: string): Record<string, unknown> | null {
  try {
    const v: unknown = JSON.parse(body || '{}');
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** CamelCase and snake_case keys both decode (lib.TranslateKeys + case-insensitive JSON). */
export function pick(obj: Record<string, unknown> | null, key: string): unknown {
  if (!obj) return undefined;
  for (const k of Object.keys(obj)) if (k.replace(/_/g, '').toLowerCase() === key) return obj[k];
  return undefined;
}

export function checkType(d: Record<string, unknown>): string {
  if (pick(d, 'ttl')) return 'ttl';
  if (pick(d, 'http')) return 'http';
  if (pick(d, 'tcp')) return 'tcp';
  if (pick(d, 'grpc')) return 'grpc';
  if (pick(d, 'h2ping')) return 'h2ping';
  if (pick(d, 'args') || pick(d, 'scriptargs')) return 'script';
  if (pick(d, 'dockercontainerid')) return 'docker';
  if (pick(d, 'aliasservice') || pick(d, 'aliasnode')) return 'alias';
  return '';
}

/** Go strconv.ParseBool semantics; a bare `?passing` means true. undefined = absent (when
 *  `required`), null = invalid. */
export function parseBoolParam(p: URLSearchParams, name: string, required = false): boolean | null | undefined {
  const v = p.get(name);
  if (v === null) return required ? undefined : false;
  if (v === '') return required ? undefined : true;
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(v)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(v)) return false;
  return null;
}

/** A Go duration ("10s", "1m30s", "250ms") in ms, or null. Used for `?wait=` (blockingquery). */
export function parseGoDuration(s: string): number | null {
  if (s === '0') return 0;
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/gy;
  const unit: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60000, h: 3600000 };
  let total = 0;
  let m: RegExpExecArray | null;
  let pos = 0;
  while ((m = re.exec(s))) {
    total += Number(m[1]) * unit[m[2]!]!;
    pos = re.lastIndex;
  }
  return pos === s.length && s.length > 0 ? total : null;
}
