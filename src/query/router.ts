/**
 * Routing: which upstream pool answers a name. Longest-suffix match on label boundaries over the
 * Consul domain and its aliases (→ agents), the reverse zones of configured CIDRs (→ agents, like
 * dnsmasq's rev-server), the forward zones (→ their upstreams) and the root (→ recursors, or
 * REFUSED when there are none, as Consul does without recursors). `.consul` names never reach the
 * recursors. Built once per configuration; a lookup walks the name's suffixes from the longest.
 */

type RouteKind = 'consul' | 'zone' | 'recursor' | 'refused';

export interface Route {
  kind: RouteKind;
  /** Metric label: 'consul', 'alias', the zone name, or 'recursor'. */
  zoneLabel: string;
  /** Index of zoneLabel in Router.zoneLabels (for allocation-free counters). */
  zoneIndex: number;
  /** Pool name to ask ('consul', 'recursor', or 'zone:<name>'). */
  pool: string;
  /** The alias the name is under (its suffix is to be swapped for the Consul domain), or null. */
  alias: string | null;
}

export interface RouterConfig {
  domain: string;
  aliases: string[];
  reverseZones: string[]; // in-addr.arpa / ip6.arpa names
  zones: string[];
  hasRecursors: boolean;
}

export class Router {
  private readonly table = new Map<string, Route>();
  private readonly root: Route;
  readonly zoneLabels: string[];

  constructor(cfg: RouterConfig) {
    this.zoneLabels = ['consul', 'alias', 'recursor', ...cfg.zones];
    const consul: Route = { kind: 'consul', zoneLabel: 'consul', zoneIndex: 0, pool: 'consul', alias: null };
    this.table.set(cfg.domain, consul);
    for (const a of cfg.aliases)
      this.table.set(a, { kind: 'consul', zoneLabel: 'alias', zoneIndex: 1, pool: 'consul', alias: a });
    for (const r of cfg.reverseZones) this.table.set(r, consul);
    cfg.zones.forEach((z, i) =>
      this.table.set(z, { kind: 'zone', zoneLabel: z, zoneIndex: 3 + i, pool: 'zone:' + z, alias: null }),
    );
    this.root = cfg.hasRecursors
      ? { kind: 'recursor', zoneLabel: 'recursor', zoneIndex: 2, pool: 'recursor', alias: null }
      : { kind: 'refused', zoneLabel: 'recursor', zoneIndex: 2, pool: '', alias: null };
  }

  /** `name` is lowercased, without the trailing dot. */
  route(name: string): Route {
    let n = name;
    for (;;) {
      const r = this.table.get(n);
      if (r) return r;
      const dot = n.indexOf('.');
      if (dot < 0) return this.root;
      n = n.slice(dot + 1);
    }
  }
}

/**
 * The reverse zones covering a CIDR (RFC 1035 §3.5, RFC 3596 §2.5): octet-aligned for IPv4,
 * nibble-aligned for IPv6; a prefix between boundaries expands to every zone under it
 * (172.16.0.0/12 → 16.172.in-addr.arpa … 31.172.in-addr.arpa).
 */
export function reverseZonesOf(family: 4 | 6, bytes: Buffer, prefix: number): string[] {
  if (family === 4) {
    const octets = Math.ceil(prefix / 8);
    const spare = octets * 8 - prefix;
    const out: string[] = [];
    for (let k = 0; k < 1 << spare; k++) {
      const parts: number[] = [];
      for (let i = 0; i < octets; i++) parts.push(bytes[i]!);
      if (octets > 0) parts[octets - 1] = (parts[octets - 1]! & (0xff << spare) & 0xff) + k;
      out.push([...parts.reverse().map(String), 'in-addr', 'arpa'].join('.'));
    }
    return out;
  }
  const nibbles: number[] = [];
  for (const b of bytes) nibbles.push(b >> 4, b & 0xf);
  const count = Math.ceil(prefix / 4);
  const spare = count * 4 - prefix;
  const out: string[] = [];
  for (let k = 0; k < 1 << spare; k++) {
    const parts = nibbles.slice(0, count);
    if (count > 0) parts[count - 1] = (parts[count - 1]! & (0xf << spare) & 0xf) + k;
    out.push([...parts.reverse().map((n) => n.toString(16)), 'ip6', 'arpa'].join('.'));
  }
  return out;
}
