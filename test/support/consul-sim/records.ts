/*
 * Resource records the DNS side builds from the catalog (makeSOARecord, makeARecord,
 * makeRecordFromNode, makeTXTRecordFromNodeMeta) and the OPT record of a reply (setEDNS).
 */
import type { SimConfig } from './config.js';
import type { NodeRec } from './catalog.js';
import { T, RCODE, ipBytes, fqdn, type Msg, type Query, type RR } from './wire.js';

/** makeSOARecord. Note the case-sensitive HasSuffix(questionName, "."+altDomain) (PR #10431). */
export function soa(cfg: SimConfig, qname: string): RR {
  const domain = cfg.alt && qname.endsWith('.' + cfg.alt) ? cfg.alt : cfg.domain;
  return {
    name: domain,
    type: T.SOA,
    cls: 1,
    ttl: cfg.soaMin, // "Has to be consistent with MinTTL to avoid invalidation"
    d: {
      k: 'soa',
      mname: 'ns.' + domain,
      rname: 'hostmaster.' + domain, // not "postmaster" any more (#2301, #15739)
      serial: Math.floor(Date.now() / 1000),
      refresh: 3600, // builder.go RuntimeSOAConfig{Refresh: 3600, Retry: 600, Expire: 86400, Minttl: 0}
      retry: 600,
      expire: 86400,
      minimum: cfg.soaMin,
    },
  };
}

/** makeARecord: which address families a query type accepts. */
export function familyOk(qtype: number, v4: boolean): boolean {
  if (qtype === T.SRV || qtype === T.ANY || qtype === T.NS || qtype === T.TXT) return true;
  return v4 ? qtype === T.A : qtype === T.AAAA;
}

/** makeRecordFromNode (IP node addresses only). */
export function nodeRecords(n: NodeRec, qtype: number, name: string, ttl: number): RR[] {
  const b = ipBytes(n.address);
  if (!b) {
    // A hostname node address: a CNAME (external node); no internal resolution in the simulator.
    return [{ name, type: T.CNAME, cls: 1, ttl, d: { k: 'name', n: fqdn(n.address) } }];
  }
  if (!familyOk(qtype, b.length === 4)) return [];
  return [{ name, type: b.length === 4 ? T.A : T.AAAA, cls: 1, ttl, d: { k: 'ip', b } }];
}

/** makeTXTRecordFromNodeMeta: RFC 1464 key=value, bare value for `rfc1035-` keys. */
export function nodeMetaTxt(name: string, n: NodeRec, ttl: number): RR[] {
  return Object.entries(n.meta).map(([k, v]) => ({
    name,
    type: T.TXT,
    cls: 1,
    ttl,
    d: { k: 'txt' as const, s: [k.toLowerCase().startsWith('rfc1035-') ? v : encodeKVasRFC1464(k, v)] },
  }));
}

/** setEDNS: echo the client's UDP size, version 0, no flags (DO not echoed); ECS echoed with
 *  scope 0 for global answers and the source prefix otherwise. No OPT in, no OPT out. */
export function setEDNS(q: Query, m: Msg, ecsGlobal: boolean): void {
  if (!q.edns) return;
  let opts = Buffer.alloc(0);
  const ecs = q.edns.ecs;
  if (ecs) {
    const global =
      ecsGlobal ||
      m.rcode === RCODE.NXDOMAIN ||
      m.rcode === RCODE.SERVFAIL ||
      m.rcode === RCODE.REFUSED ||
      m.rcode === RCODE.NOTIMP;
    const addrLen = Math.ceil(ecs.source / 8);
    const addr = Buffer.alloc(addrLen);
    ecs.addr.copy(addr, 0, 0, Math.min(addrLen, ecs.addr.length));
    opts = Buffer.alloc(8 + addrLen);
    opts.writeUInt16BE(8, 0);
    opts.writeUInt16BE(4 + addrLen, 2);
    opts.writeUInt16BE(ecs.family, 4);
    opts[6] = ecs.source;
    opts[7] = global ? 0 : ecs.source;
    addr.copy(opts, 8);
  }
  m.extra.push({ name: '.', type: T.OPT, cls: q.edns.udpSize, ttl: 0, d: { k: 'raw', b: opts } });
}

// ------------------------------------------------------------------ DNS: size limits

/** encodeKVasRFC1464: backquote ` and = in keys and leading/trailing spaces; ` in values. */
export function encodeKVasRFC1464(key: string, value: string): string {
  let k = key.replace(/`/g, '``').replace(/=/g, '`=');
  k = k.replace(/^ +/, (sp) => '` '.repeat(sp.length)).replace(/ +$/, (sp) => '` '.repeat(sp.length));
  return `${k}=${value.replace(/`/g, '``')}`;
}

/** indexRRs: first RR per lowercased owner name (the OPT record, owner ".", included). */
