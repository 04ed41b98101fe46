/*
 * SimOptions resolved once into the agent configuration every part of the simulator reads
 * (the equivalent of Consul's RuntimeConfig), with Consul's defaults filled in.
 */
import net from 'node:net';
import { SimError, type SimOptions } from './types.js';
import { fqdnLower } from './wire.js';

export interface PreparedQuery {
  id: string;
  name: string;
  service: string;
  tag?: string;
  ttl?: number;
}

export interface SimConfig {
  host: string;
  /** Lowercase FQDN, "consul.". */
  domain: string;
  alt: string | null;
  dc: string;
  nodeName: string;
  nodeAddress: string;
  servers: { name: string; address: string }[];
  nodeTtl: number;
  ttlStrict: Map<string, number>;
  /** `prefix*` keys, longest first. */
  ttlPrefix: [string, number][];
  soaMin: number;
  udpLimit: number;
  onlyPassing: boolean;
  token: string | undefined;
  recursors: { host: string; port: number }[];
  recursorTimeout: number;
  enableTruncate: boolean;
  prepared: PreparedQuery[];
  /** SimOptions.consulVersion === '1.8'. */
  consul18: boolean;
}

export function resolveConfig(opts: SimOptions): SimConfig {
  const ttlStrict = new Map<string, number>();
  const ttlPrefix: [string, number][] = [];
  // GetDNSConfig: keys ending in '*' go to a radix tree (longest prefix), others are exact.
  for (const [k, v] of Object.entries(opts.serviceTtl ?? {})) {
    if (k.endsWith('*')) ttlPrefix.push([k.slice(0, -1), v]);
    else ttlStrict.set(k, v);
  }
  ttlPrefix.sort((a, b) => b[0].length - a[0].length);
  const nodeName = opts.nodeName ?? 'sim-agent';
  const nodeAddress = opts.nodeAddress ?? '127.0.0.1';
  return {
    host: opts.host ?? '127.0.0.1',
    domain: fqdnLower(opts.domain ?? 'consul'),
    alt: opts.altDomain ? fqdnLower(opts.altDomain) : null,
    dc: (opts.datacenter ?? 'dc1').toLowerCase(),
    nodeName,
    nodeAddress,
    servers: opts.servers ?? [{ name: nodeName, address: nodeAddress }],
    nodeTtl: opts.nodeTtl ?? 0,
    ttlStrict,
    ttlPrefix,
    soaMin: opts.soaMinTtl ?? 0,
    udpLimit: opts.udpAnswerLimit ?? 3, // agent/config/default.go
    onlyPassing: opts.onlyPassing ?? false,
    token: opts.token,
    recursorTimeout: opts.recursorTimeoutMs ?? 2000,
    enableTruncate: opts.enableTruncate ?? false,
    // recursorAddr: port 53 when omitted. Loopback only: a test must never send packets off the machine.
    recursors: (opts.recursors ?? []).map((r) => {
      const hp = parseHostPort(r, 53);
      if (!isLoopback(hp.host)) throw new SimError('SIM_NON_LOOPBACK_RECURSOR', `recursor ${r} is not loopback`);
      return hp;
    }),
    consul18: opts.consulVersion === '1.8',
    prepared: (opts.preparedQueries ?? []).map((p, i) => ({ ...p, id: uuidFor(`pq-${i}-${p.name}`) })),
  };
}

/** GetTTLForService: exact name beats the longest `prefix*` (radix LongestPrefix). */
export function serviceTtl(cfg: SimConfig, service: string): number {
  const exact = cfg.ttlStrict.get(service);
  if (exact !== undefined) return exact;
  for (const [p, v] of cfg.ttlPrefix) if (service.startsWith(p)) return v;
  return 0;
}

/** Stable, fake IDs (node IDs, prepared query IDs): readable in JSON, no randomness between runs. */
export function uuidFor(s: string): string {
  const h = Buffer.alloc(16);
  for (let i = 0; i < s.length; i++) h[i % 16] = (h[i % 16]! * 31 + s.charCodeAt(i)) & 0xff;
  const x = h.toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

function isLoopback(host: string): boolean {
  return /^127\.\d+\.\d+\.\d+$/.test(host) || host === '::1';
}

function parseHostPort(s: string, defPort: number): { host: string; port: number } {
  let m = /^\[([^\]]+)\](?::(\d+))?$/.exec(s);
  if (m) return { host: m[1]!, port: m[2] ? Number(m[2]) : defPort };
  if (net.isIPv6(s)) return { host: s, port: defPort };
  m = /^([^:]+)(?::(\d+))?$/.exec(s);
  if (m) return { host: m[1]!, port: m[2] ? Number(m[2]) : defPort };
  throw new SimError('SIM_BAD_ADDRESS', `expected host[:port], got ${JSON.stringify(s)}`);
}
