// Consul query-name parser: says what a question under the Consul domain looks up, so the cache can
// tie service answers to that service's health watch and leave every other answer on Consul's TTL.
// It mirrors `dispatch` in hashicorp/consul agent/dns.go (the v1 server, which 1.19.2 restored as
// the default) and `parseLocality` in agent/dns_ce.go; a parse that Consul rejects ("QName invalid",
// answered NXDOMAIN) comes back as {kind: 'other'}. Cold-ish path: called once per cache miss.

/** What a Consul DNS name looks up. `dc` is the datacenter named in the query (absent = the agent's own). */
export type ConsulLookup =
  | { kind: 'service'; service: string; tag?: string; dc?: string }
  | { kind: 'node' | 'addr' | 'query' | 'virtual' | 'connect' | 'ingress' | 'other'; dc?: string };

import { TYPE } from '../dns/constants.js';

/** Consul's query keywords (agent/dns.go dispatch: `case "service", "connect", ...`). */
const KEYWORDS = new Set(['service', 'connect', 'virtual', 'ingress', 'node', 'query', 'addr']);

type Locality = { dc?: string; peer?: string };

/**
 * Locality labels right of the keyword (agent/dns_ce.go parseLocality, CE build):
 * none; one label (a datacenter, or a peer for `.virtual.`); or one/two `<name>.dc` / `<name>.peer`
 * pairs, never both kinds. `.ns`/`.ap` are Enterprise-only and invalid here, as in CE Consul.
 */
function parseLocality(labels: string[]): Locality | null {
  if (labels.length === 0) return {};
  if (labels.length === 1) return { dc: labels[0] };
  if (labels.length !== 2 && labels.length !== 4) return null;
  const loc: Locality = {};
  for (let i = 0; i < labels.length; i += 2) {
    const value = labels[i] as string;
    switch (labels[i + 1]) {
      case 'dc':
        loc.dc = value;
        break;
      case 'peer':
        loc.peer = value;
        break;
      default:
        return null;
    }
  }
  // "Return error when both datacenter and peer are specified."
  if (loc.dc !== undefined && loc.peer !== undefined) return null;
  return loc;
}

function normDomain(domain: string): string {
  let d = domain.toLowerCase();
  while (d.endsWith('.')) d = d.slice(0, -1);
  while (d.startsWith('.')) d = d.slice(1);
  return d;
}

const OTHER: ConsulLookup = Object.freeze({ kind: 'other' });

/**
 * Parse a canonical (lowercase, no trailing dot) question name under `domain`.
 * Returns null when the name is not under the domain; {kind:'other'} for names Consul answers with
 * NXDOMAIN (no keyword, nothing left of it, bad locality).
 *
 * `.connect.` and `.ingress.` are reported by kind only and must NOT be tied to the plain service
 * watch: they return the service's mesh proxies (`<svc>-sidecar-proxy` or native instances) and the
 * ingress gateways routing to it, whose addresses, ports and health come from other catalog entries
 * (/v1/health/connect/<svc>, /v1/health/ingress/<svc>). A watch on /v1/health/service/<svc> would not
 * see a proxy or gateway going critical, so holding those answers past Consul's TTL would serve dead
 * endpoints. Peered service lookups (`.<peer>.peer`) are 'other' for the same reason: the watch
 * engine watches a local or `?dc=` catalog, not the peer's imported one.
 */
export function parseConsulName(nameLower: string, domain: string, qtype: number): ConsulLookup | null {
  const rest = underDomain(nameLower, normDomain(domain));
  if (rest === null) return null;
  if (rest === '') return OTHER; // "consul." itself: no keyword → NXDOMAIN + SOA
  const k = findKeyword(rest.split('.'), qtype);
  if (k === null || k.parts.length < 1) return OTHER;
  switch (k.kind) {
    case 'service':
      return serviceLookup(k.parts, k.suffixes);
    case 'connect':
    case 'ingress':
    case 'node': {
      const loc = parseLocality(k.suffixes);
      if (loc === null) return OTHER;
      // Peering is not supported for connect/ingress; a peered node lookup keeps its kind.
      return loc.dc !== undefined ? { kind: k.kind, dc: loc.dc } : { kind: k.kind };
    }
    case 'virtual':
      // The single locality label of a .virtual. lookup names a peer, not a datacenter
      // ("virtual IPs should not be shared between datacenters").
      return parseLocality(k.suffixes) === null ? OTHER : { kind: 'virtual' };
    case 'query':
      // parseDatacenter: zero or one label only.
      if (k.suffixes.length > 1) return OTHER;
      return k.suffixes.length === 1 ? { kind: 'query', dc: k.suffixes[0] as string } : { kind: 'query' };
    case 'addr': {
      // <hex>.addr[...]: exactly one query label of 8 or 32 hex digits; Consul ignores the suffixes.
      const h = k.parts.length === 1 ? (k.parts[0] as string) : '';
      if ((h.length !== 8 && h.length !== 32) || !/^[0-9a-f]+$/.test(h)) return OTHER;
      return k.suffixes.length === 1 ? { kind: 'addr', dc: k.suffixes[0] as string } : { kind: 'addr' };
    }
    default:
      return OTHER;
  }
}

/** The labels of `nameLower` left of the domain `dom` ('' for the domain itself); null when outside it. */
function underDomain(nameLower: string, dom: string): string | null {
  if (dom === '') return nameLower;
  if (nameLower === dom) return '';
  if (nameLower.endsWith(dom) && nameLower.charCodeAt(nameLower.length - dom.length - 1) === 0x2e /* . */)
    return nameLower.slice(0, nameLower.length - dom.length - 1);
  return null;
}

/**
 * Scans from the right for the first keyword: the labels left of it are the query parts, those
 * right of it the locality. SRV only: a label starting with "_" also counts as the service keyword
 * and stays part of the query (agent/dns.go: "If this is a SRV query the 'service' label is
 * optional").
 */
function findKeyword(labels: string[], qtype: number): { kind: string; parts: string[]; suffixes: string[] } | null {
  for (let i = labels.length - 1; i >= 0; i--) {
    const l = labels[i] as string;
    if (KEYWORDS.has(l)) return { kind: l, parts: labels.slice(0, i), suffixes: labels.slice(i + 1) };
    if (qtype === TYPE.SRV && l.charCodeAt(0) === 0x5f /* _ */)
      return { kind: 'service', parts: labels.slice(0, i + 1), suffixes: labels.slice(i + 1) };
  }
  return null;
}

/** `[tag.]service` or the RFC 2782 form `_service._tag`, then the locality. */
function serviceLookup(parts: string[], suffixes: string[]): ConsulLookup {
  const loc = parseLocality(suffixes);
  if (loc === null || loc.peer !== undefined) return OTHER;
  const n = parts.length;
  let service: string;
  let tag = '';
  const p0 = parts[0] as string;
  const last = parts[n - 1] as string;
  if (n === 2 && p0.charCodeAt(0) === 0x5f && last.charCodeAt(0) === 0x5f) {
    // RFC 2782 form _<service>._<tag>; "_tcp" means no tag filter.
    service = p0.slice(1);
    tag = last.slice(1);
    if (tag === 'tcp') tag = '';
  } else {
    // [tag.]service: labels left of the service name are re-joined into one tag (Consul 0.3 form).
    service = last;
    if (n >= 2) tag = parts.slice(0, n - 1).join('.');
  }
  const out: { kind: 'service'; service: string; tag?: string; dc?: string } = { kind: 'service', service };
  if (tag !== '') out.tag = tag;
  if (loc.dc !== undefined) out.dc = loc.dc;
  return out;
}
