/*
 * Answering DNS questions the way the agent's legacy v1 DNS server (agent/dns.go) does: routing a
 * name to a handler (ServeMux), dispatch on the rightmost keyword, node, service, prepared-query,
 * addr and PTR lookups. Method names follow that file's function names.
 */
import type { SimConfig } from './config.js';
import { serviceTtl } from './config.js';
import { Catalog, isHealthy, type Instance } from './catalog.js';
import { familyOk, nodeMetaTxt, nodeRecords, setEDNS, soa } from './records.js';
import { T, RCODE, ipBytes, fqdn, reverseAddr, setReply, splitName, type Msg, type Query, type RR } from './wire.js';

const KEYWORDS = new Set(['service', 'connect', 'virtual', 'ingress', 'node', 'query', 'addr']);
/** libdns.InvalidNameRe: node names that cannot be DNS labels are skipped for NS records. */
const INVALID_NAME = /[^A-Za-z0-9\\-]+/;

interface Lookup {
  datacenter: string;
  peer: string;
}

class NotFound extends Error {
  readonly code = 'SIM_NAME_NOT_FOUND'; // errNameNotFound / IsErrNoDCPath / IsErrQueryNotFound -> NXDOMAIN
}
class NoData extends Error {
  readonly code = 'SIM_NO_DATA'; // errNoData -> NOERROR + SOA (RFC 2308 type 2 NODATA)
}

/** Fisher–Yates, as structs.CheckServiceNodes.Shuffle() (math/rand) does on every DNS query. */
function shuffle<X>(a: X[]): X[] {
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    const t = a[i]!;
    a[i] = a[j]!;
    a[j] = t;
  }
  return a;
}

/** Label-wise zone membership, as miekg's ServeMux matches zones. */
function inZone(lname: string, zone: string): boolean {
  return lname === zone || lname.endsWith('.' + zone);
}

/** dispatch's scan: the labels right to left for the first keyword; for SRV only, a label starting
 *  with "_" counts as the service keyword (_janus._tcp.consul). */
function splitAtKeyword(labels: string[], qtype: number): { kind: string; parts: string[]; suffixes: string[] } {
  for (let i = labels.length - 1; i >= 0; i--) {
    const l = labels[i]!;
    if (KEYWORDS.has(l)) return { kind: l, parts: labels.slice(0, i), suffixes: labels.slice(i + 1) };
    if (qtype === T.SRV && l.startsWith('_'))
      return { kind: 'service', parts: labels.slice(0, i + 1), suffixes: labels.slice(i + 1) };
  }
  return { kind: '', parts: [], suffixes: [] };
}

/** The labels left of "service": RFC 2782 _name._tag ("_tcp" means no tag filter), or
 *  tag[.tag].name, where several labels left of the name are joined into one tag. */
function serviceAndTag(parts: string[]): { service: string; tag: string } {
  const n = parts.length;
  if (n === 2 && parts[0]!.startsWith('_') && parts[1]!.startsWith('_')) {
    const tag = parts[1]!.slice(1);
    return { service: parts[0]!.slice(1), tag: tag === 'tcp' ? '' : tag };
  }
  return { service: parts[n - 1]!, tag: n >= 2 ? parts.slice(0, n - 1).join('.') : '' };
}

export class DnsAnswerer {
  constructor(
    private readonly cfg: SimConfig,
    private readonly catalog: Catalog,
  ) {}

  /** Which miekg ServeMux handler a name reaches: the domain(s), "arpa.", "." (recursors) or none. */
  route(labels: string[]): 'consul' | 'arpa' | 'recurse' | 'refused' {
    const lname = labels.join('.').toLowerCase() + '.';
    if (inZone(lname, this.cfg.domain) || (this.cfg.alt && inZone(lname, this.cfg.alt))) return 'consul';
    if (inZone(lname, 'arpa.')) return 'arpa';
    // toggleRecursorHandlerFromConfig: the "." handler exists only with recursors; without it
    // miekg answers REFUSED (handleRefused, miekg/dns PR #1151; Consul #13307).
    return this.cfg.recursors.length ? 'recurse' : 'refused';
  }

  /** getResponseDomain: the domain suffix as the client spelled it (0x20 kept), or the domain. */
  private responseDomain(labels: string[]): string {
    let d = this.cfg.domain;
    for (let i = labels.length - 1; i >= 0; i--) {
      const suffix = labels.slice(i).join('.') + '.';
      const l = suffix.toLowerCase();
      if (l === this.cfg.domain || l === this.cfg.alt) d = suffix;
    }
    return d;
  }

  /** handleQuery: everything under the domain or alt_domain. */
  handleQuery(q: Query, remote: string): Msg {
    const m = setReply(q);
    m.aa = true; // every reply Consul builds itself
    m.ra = this.cfg.recursors.length > 0;
    let ecsGlobal = true;
    switch (q.qtype) {
      case T.SOA: {
        // Any name under the domain: SOA + NS + glue, NOERROR even if the name does not exist (#15739).
        const { ns, glue } = this.nameservers(q);
        m.answer.push(soa(this.cfg, q.name));
        m.ns.push(...ns);
        m.extra.push(...glue);
        break;
      }
      case T.NS: {
        const { ns, glue } = this.nameservers(q);
        m.answer = ns;
        m.extra = glue;
        break;
      }
      case T.AXFR:
        m.rcode = RCODE.NOTIMP;
        break;
      default:
        try {
          ecsGlobal = this.dispatch(q, m, remote);
        } catch (err) {
          if (err instanceof NotFound) {
            m.rcode = RCODE.NXDOMAIN;
            m.ns.push(soa(this.cfg, q.name));
          } else if (err instanceof NoData) {
            m.ns.push(soa(this.cfg, q.name));
          } else throw err;
        }
    }
    setEDNS(q, m, ecsGlobal);
    return m;
  }

  /** getNameserversAndNodeRecord: up to 3 shuffled healthy "consul" servers, glue in Additional. */
  private nameservers(q: Query): { ns: RR[]; glue: RR[] } {
    const ns: RR[] = [];
    const glue: RR[] = [];
    const respDomain = this.responseDomain(q.labels);
    const servers = shuffle(this.catalog.instances('consul', '').filter((i) => isHealthy(i, this.cfg.onlyPassing)));
    for (const s of servers) {
      if (INVALID_NAME.test(s.node.name)) continue;
      const target = `${s.node.name}.node.${this.cfg.dc}.${respDomain}`.toLowerCase();
      ns.push({ name: respDomain, type: T.NS, cls: 1, ttl: this.cfg.nodeTtl, d: { k: 'name', n: target } });
      glue.push(...nodeRecords(s.node, T.ANY, target, this.cfg.nodeTtl));
      if (ns.length >= 3) break;
    }
    return { ns, glue };
  }

  /** dispatch: parse the labels right to left for the first keyword. Returns ecsGlobal. */
  private dispatch(q: Query, m: Msg, remote: string): boolean {
    const respDomain = this.responseDomain(q.labels);
    const lname = q.name.toLowerCase();
    const trimmed = this.trimDomain(lname);
    const labels = splitName(trimmed);
    const { kind, parts, suffixes } = splitAtKeyword(labels, q.qtype);
    switch (kind) {
      case 'service': {
        const n = parts.length;
        if (n < 1) throw new NotFound();
        const lookup = this.locality(suffixes);
        const { service, tag } = serviceAndTag(parts);
        this.serviceQuery(q, m, lookup, service, tag, serviceTtl(this.cfg, service));
        return true;
      }
      case 'connect':
      case 'ingress':
        // No service mesh in the simulator: no proxies or gateways, so no instances.
        this.locality(suffixes);
        if (parts.length < 1) throw new NotFound();
        throw new NotFound();
      case 'virtual':
        // No virtual IPs: NOERROR, empty (dispatch "virtual" with out == "").
        if (parts.length < 1) throw new NotFound();
        this.locality(suffixes);
        return true;
      case 'node': {
        if (parts.length < 1) throw new NotFound();
        const lookup = this.locality(suffixes);
        this.nodeQuery(q, m, lookup, parts.join('.'));
        return true;
      }
      case 'query': {
        const n = parts.length;
        if (n < 1 || suffixes.length > 1) throw new NotFound(); // parseDatacenter
        const dc = suffixes[0] ?? this.cfg.dc;
        let name: string;
        if (n >= 2 && parts[0]!.startsWith('_') && parts[n - 1]!.startsWith('_'))
          name = parts
            .slice(0, n - 1)
            .join('.')
            .slice(1);
        else name = parts.join('.');
        this.preparedQuery(q, m, dc, name, remote);
        // ecsNotGlobalError wraps every prepared query result: ECS scope = source prefix.
        return false;
      }
      case 'addr': {
        this.addrQuery(q, m, parts, trimmed + respDomain);
        return true;
      }
      default:
        throw new NotFound(); // no keyword: "QName invalid"
    }
  }

  /** dispatch "addr": <hex>.addr[.anything].<domain>; the suffixes are not checked at all. The owner
   *  is the lowercased qname + response domain (qName + respDomain in dispatch). */
  private addrQuery(q: Query, m: Msg, parts: string[], owner: string): void {
    if (parts.length !== 1) throw new NotFound();
    const hex = parts[0]!;
    const size = Math.floor(hex.length / 2);
    if ((size !== 4 && size !== 16) || !/^[0-9a-f]*$/.test(hex) || hex.length % 2) throw new NotFound();
    const b = Buffer.from(hex, 'hex');
    const rr: RR = { name: owner, type: size === 4 ? T.A : T.AAAA, cls: 1, ttl: this.cfg.nodeTtl, d: { k: 'ip', b } };
    // A mismatched type puts the record in Additional: NOERROR, no answer, no SOA (#10393); 1.8
    // answered with it whatever the type.
    if (q.qtype === rr.type || q.qtype === T.ANY || this.cfg.consul18) m.answer.push(rr);
    else m.extra.push(rr);
  }

  /** trimDomain: strip the longer of domain/alt_domain if it matches, else the shorter. */
  private trimDomain(lname: string): string {
    let longer = this.cfg.domain;
    let shorter = this.cfg.alt ?? '.';
    if (shorter.length > longer.length) [longer, shorter] = [shorter, longer];
    const cut = (s: string, suffix: string): string => (s.endsWith(suffix) ? s.slice(0, s.length - suffix.length) : s);
    if (lname.endsWith('.' + longer) || lname === longer) return cut(lname, longer);
    return cut(lname, shorter);
  }

  /** parseLocality (dns_ce.go): [.<dc>] | [.<dc>.dc] | [.<peer>.peer]. Unknown DC = "No path to
   *  datacenter" = NXDOMAIN; the simulator has no peers, so a peer is unknown too. */
  private locality(suffixes: string[]): Lookup {
    let dc = '';
    let peer = '';
    if (suffixes.length === 1) dc = suffixes[0]!;
    else if (suffixes.length === 2 || suffixes.length === 4) {
      for (let i = 0; i < suffixes.length; i += 2) {
        const kind = suffixes[i + 1];
        if (kind === 'dc') dc = suffixes[i]!;
        else if (kind === 'peer') peer = suffixes[i]!;
        else throw new NotFound();
      }
      if (dc && peer) throw new NotFound();
    } else if (suffixes.length !== 0) throw new NotFound();
    if (peer) throw new NotFound();
    if (dc && dc !== this.cfg.dc) throw new NotFound();
    return { datacenter: dc || this.cfg.dc, peer };
  }

  /** handleNodeQuery. */
  private nodeQuery(q: Query, m: Msg, lookup: Lookup, node: string): void {
    const qt = q.qtype;
    // Only ANY, A, AAAA and TXT; anything else is NOERROR, empty, no SOA (even for unknown nodes:
    // the check comes before the catalog lookup).
    if (qt !== T.ANY && qt !== T.A && qt !== T.AAAA && qt !== T.TXT) return;
    void lookup;
    const n = this.catalog.nodes.get(node);
    if (!n) throw new NotFound();
    if (qt !== T.TXT) m.answer.push(...nodeRecords(n, qt, q.name, this.cfg.nodeTtl));
    // enable_additional_node_meta_txt (default true): meta TXT in Additional for A/AAAA, in Answer
    // for TXT/ANY.
    const txt = nodeMetaTxt(q.name, n, this.cfg.nodeTtl);
    if (qt === T.TXT || qt === T.ANY) m.answer.push(...txt);
    else m.extra.push(...txt);
  }

  /** handleServiceQuery / handlePreparedQuery share the record building. */
  private serviceQuery(
    q: Query,
    m: Msg,
    lookup: Lookup,
    service: string,
    tag: string,
    ttl: number,
    onlyPassing = this.cfg.onlyPassing,
  ): void {
    const nodes = this.catalog
      .instances(service, tag, this.catalog.dnsTables())
      .filter((i) => isHealthy(i, onlyPassing));
    // No instance left: NXDOMAIN, indistinguishable from a service that does not exist.
    if (nodes.length === 0) throw new NotFound();
    shuffle(nodes);
    if (q.qtype === T.SRV) this.addSRV(q, m, lookup, nodes, ttl);
    else this.addNodeRecords(q, m, nodes, ttl);
    if (m.answer.length === 0) throw new NoData();
  }

  /** The address DNS uses: the service address if set, else the node address. */
  private static addrOf(i: Instance): { addr: string; own: boolean } {
    return i.svc.address ? { addr: i.svc.address, own: true } : { addr: i.node.address, own: false };
  }

  /** addServiceNodeRecordsToMessage: one record per distinct address, owner = qname as sent. */
  private addNodeRecords(q: Query, m: Msg, nodes: Instance[], ttl: number): void {
    const seen = new Set<string>();
    let cname: RR | null = null;
    for (const i of nodes) {
      const { addr } = DnsAnswerer.addrOf(i);
      const b = ipBytes(addr);
      if (!b) {
        if (!cname) cname = { name: q.name, type: T.CNAME, cls: 1, ttl, d: { k: 'name', n: fqdn(addr) } };
        continue;
      }
      if (!familyOk(q.qtype, b.length === 4)) continue;
      if (seen.has(addr)) continue; // "Avoid duplicate entries"
      seen.add(addr);
      m.answer.push({ name: q.name, type: b.length === 4 ? T.A : T.AAAA, cls: 1, ttl, d: { k: 'ip', b } });
    }
    if (m.answer.length === 0 && cname) m.answer.push(cname);
  }

  /** findWeight: Weights.Warning if the aggregated status is warning, else Weights.Passing. */
  private static weight(i: Instance): number {
    const warn = i.checks.some((c) => c.status === 'warning');
    return warn ? i.svc.weights.Warning : i.svc.weights.Passing;
  }

  /** addServiceSRVRecordsToMessage + makeRecordFromServiceNode / makeRecordFromIP. */
  private addSRV(q: Query, m: Msg, lookup: Lookup, nodes: Instance[], ttl: number): void {
    const respDomain = this.responseDomain(q.labels);
    const seen = new Set<string>();
    for (const i of nodes) {
      const { addr, own } = DnsAnswerer.addrOf(i);
      const tuple = `${i.node.name}:${i.svc.address}:${i.svc.port}`;
      if (seen.has(tuple)) continue; // duplicates on node, address and port
      seen.add(tuple);
      const nodeFqdn = `${i.node.name}.node.${lookup.datacenter}.${respDomain}`;
      const b = ipBytes(addr);
      let target: string;
      if (!b) {
        target = fqdn(addr); // makeRecordFromFQDN, unresolved
      } else if (own) {
        // An explicit service IP gives <hex-ip>.addr.<dc>.<domain> (1.7.0, #7360 / #6792).
        target = `${b.toString('hex')}.addr.${lookup.datacenter}.${respDomain}`;
      } else {
        target = nodeFqdn;
      }
      m.answer.push({
        name: q.name,
        type: T.SRV,
        cls: 1,
        ttl,
        d: { k: 'srv', priority: 1, weight: DnsAnswerer.weight(i), port: i.svc.port, target },
      });
      if (b) m.extra.push({ name: target, type: b.length === 4 ? T.A : T.AAAA, cls: 1, ttl, d: { k: 'ip', b } });
      // Node meta TXT, owned by the node FQDN, even when the target is an .addr name.
      m.extra.push(...nodeMetaTxt(nodeFqdn, i.node, ttl));
    }
  }

  /** handlePreparedQuery for the configured set; unknown query = IsErrQueryNotFound = NXDOMAIN. */
  private preparedQuery(q: Query, m: Msg, dc: string, name: string, remote: string): void {
    void remote; // the source IP (or ECS address) only matters for `near` sorting
    if (dc !== this.cfg.dc) throw new NotFound();
    const pq = this.cfg.prepared.find((p) => p.name.toLowerCase() === name || p.id === name);
    if (!pq) throw new NotFound();
    // DNS.TTL of the query, else service_ttl, else 0 (dns-cache.mdx).
    const ttl = pq.ttl ?? serviceTtl(this.cfg, pq.service);
    this.serviceQuery(q, m, { datacenter: this.cfg.dc, peer: '' }, pq.service, pq.tag ?? '', ttl, false);
  }

  /** handlePtr: node address first, then service address; TTL 0 (#10577); primary domain only. */
  handlePtr(q: Query): Msg | null {
    const m = setReply(q);
    m.aa = true;
    m.ra = this.cfg.recursors.length > 0;
    if (q.qtype === T.SOA) m.ns.push(soa(this.cfg, q.name));
    const lname = q.name.toLowerCase();
    for (const n of this.catalog.nodes.values()) {
      if (reverseAddr(n.address) === lname) {
        m.answer.push({
          name: q.name,
          type: T.PTR,
          cls: 1,
          ttl: 0,
          d: { k: 'name', n: `${n.name}.node.${this.cfg.dc}.${this.cfg.domain}` },
        });
        break;
      }
    }
    if (m.answer.length === 0) {
      for (const s of this.catalog.services.values()) {
        if (s.address && reverseAddr(s.address) === lname) {
          m.answer.push({
            name: q.name,
            type: T.PTR,
            cls: 1,
            ttl: 0,
            d: { k: 'name', n: `${s.name}.service.${this.cfg.dc}.${this.cfg.domain}` },
          });
          break;
        }
      }
    }
    if (m.answer.length === 0) {
      if (this.cfg.recursors.length) return null; // recurse
      // PR #20679: NXDOMAIN + SOA (was SERVFAIL before, #20413).
      m.rcode = RCODE.NXDOMAIN;
      m.ns.push(soa(this.cfg, q.name));
    }
    setEDNS(q, m, true);
    return m;
  }
}
