/**
 * The rules every upstream reply goes through before the cache keeps it or a client sees it, in
 * place on the reply's bytes, once per exchange (AnswerCache.store, or the handler when there is
 * no cache):
 *
 * - TTLs (applyTtlRules): every TTL read from an upstream (answer, authority, additional; the
 *   OPT's TTL field is flags, not a TTL) goes through ttlRule: a TTL with the top bit set is 0
 *   (RFC 2181 §8), and none is above `cache.maxTtl` (as BIND's max-cache-ttl). The SOA of a
 *   negative answer gets the negative TTL, min(SOA TTL, SOA MINIMUM) (RFC 2308 §5), capped by
 *   `cache.negativeMaxTtl` (as BIND's max-ncache-ttl): what a downstream cache may hold it for is
 *   what we hold it for.
 * - Names (lowerNames): the names outside the question (owners, and the RDATA names of the types
 *   the codec knows) are kept lowercase, so one client's letter case never reaches another; the
 *   question is the client's own bytes on every reply.
 */
import type { ReplyLayout } from '../dns/wire.js';
import { HEADER_LEN, RCODE, TYPE } from '../dns/constants.js';
import { FIELD_NAME, rdataNames } from '../dns/message.js';

export interface TtlLimits {
  /** Seconds: no TTL a client sees is above this (cache.maxTtl). */
  maxTtl: number;
  /** Seconds: the cap on a negative answer's TTL (cache.negativeMaxTtl). */
  negativeMaxTtl: number;
}

/** One TTL as received → the TTL we use: top bit set means 0 (RFC 2181 §8), at most `max`. */
function ttlRule(raw: number, max: number): number {
  return raw > 0x7fffffff ? 0 : raw < max ? raw : max;
}

/**
 * Applies ttlRule to every TTL of `reply` in place, and the negative TTL to the SOA of a negative
 * answer (NXDOMAIN, or NOERROR without answers); recomputes layout.minTtl and layout.negTtl from
 * what it wrote. Idempotent.
 */
export function applyTtlRules(reply: Buffer, layout: ReplyLayout, limits: TtlLimits): void {
  const offs = layout.ttlOffsets;
  // ttlOffsets skips only the OPT, which is in Additional: its first an+ns entries are Answer and Authority.
  const an = layout.an;
  const upper = an + layout.ns;
  const negative = layout.rcode === RCODE.NXDOMAIN || (layout.rcode === RCODE.NOERROR && an === 0);
  const hadSoa = layout.negTtl >= 0; // scanReply found a well-formed SOA in Authority
  let minTtl = -1;
  let negTtl = -1;
  for (let i = 0; i < offs.length; i++) {
    const o = offs[i]!;
    let ttl = ttlRule(reply.readUInt32BE(o), limits.maxTtl);
    if (i < upper) {
      if (hadSoa && negTtl < 0 && i >= an && reply.readUInt16BE(o - 4) === TYPE.SOA) {
        // SOA RDATA ends with MINIMUM (RDLENGTH follows the TTL).
        const minimum = ttlRule(reply.readUInt32BE(o + 6 + reply.readUInt16BE(o + 4) - 4), limits.maxTtl);
        negTtl = ttl < minimum ? ttl : minimum;
        if (negative) ttl = negTtl < limits.negativeMaxTtl ? negTtl : limits.negativeMaxTtl;
      }
      if (minTtl < 0 || ttl < minTtl) minTtl = ttl;
    }
    reply.writeUInt32BE(ttl, o);
  }
  layout.minTtl = minTtl;
  layout.negTtl = negTtl;
}

/**
 * Lowercases (ASCII, RFC 4343) the names of a reply body at buf[off, off+len) in place: owner
 * names, the RDATA names of the types rdataNames() knows, and (`question`) the question's. A
 * compression pointer is not followed: it points back at a name already lowercased here, or into
 * the question, which is the client's own bytes on every reply made from the body (so a name
 * compressed against it shows each client its own case, as the upstream would). The body must
 * have been scanned (scanReply) already; a malformed one is left as it is from where it stops
 * making sense.
 */
export function lowerNames(buf: Buffer, off: number, len: number, qEnd: number, question: boolean): void {
  const end = off + len;
  if (qEnd < HEADER_LEN || len < qEnd) return;
  if (question) {
    let q = off + HEADER_LEN;
    for (let i = buf.readUInt16BE(off + 4); i > 0 && q >= 0; i--) {
      q = lowerName(buf, q, off + qEnd);
      if (q >= 0) q += 4;
    }
  }
  const total = buf.readUInt16BE(off + 6) + buf.readUInt16BE(off + 8) + buf.readUInt16BE(off + 10);
  let p = off + qEnd;
  for (let i = 0; i < total; i++) {
    p = lowerName(buf, p, end);
    if (p < 0 || p + 10 > end) return;
    const type = buf.readUInt16BE(p);
    const rdStart = p + 10;
    const rdEnd = rdStart + buf.readUInt16BE(p + 8);
    if (rdEnd > end) return;
    const layout = type === TYPE.OPT ? undefined : rdataNames(type);
    if (layout !== undefined) lowerRdata(buf, rdStart, rdEnd, layout.fields);
    p = rdEnd;
  }
}

/** The names in one record's RDATA, by its type's field layout (fixed sizes, names, strings, rest). */
function lowerRdata(buf: Buffer, p: number, rdEnd: number, fields: readonly number[]): void {
  for (const kind of fields) {
    if (p >= rdEnd) return;
    if (kind === FIELD_NAME) p = lowerName(buf, p, rdEnd);
    else if (kind >= 0) p += kind;
    else if (kind === -2)
      p += 1 + buf[p]!; // <character-string>
    else return; // the rest of RDATA: no names
    if (p < 0) return;
  }
}

/** Lowercases the labels of the name at p (up to its end or first pointer); returns the offset past it, or -1. */
function lowerName(buf: Buffer, p: number, end: number): number {
  while (p < end) {
    const l = buf[p]!;
    if (l === 0) return p + 1;
    if ((l & 0xc0) === 0xc0) return p + 2 <= end ? p + 2 : -1;
    if (l > 63 || p + 1 + l > end) return -1;
    for (let k = p + 1; k <= p + l; k++) {
      const c = buf[k]!;
      if (c >= 0x41 && c <= 0x5a) buf[k] = c | 0x20;
    }
    p += 1 + l;
  }
  return -1;
}
