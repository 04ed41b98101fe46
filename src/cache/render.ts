/**
 * Rendering a reply for a client, on the hit and the miss path alike: names mapped under the
 * client's alias, rotations of the answer set, trimming to udpAnswerLimit for UDP clients without
 * EDNS, TTL aging, our OPT, the size limit and the header flags. The byte-level pieces (OPT
 * strip, flags, truncation) are in dns/reply.ts; the codec in dns/message.ts.
 *
 * The alias mapping: a query for `<x>.<alias>` is asked upstream as `<x>.<domain>` (query/alias.ts),
 * and the canonical reply is mapped back so that the client sees only alias names, as Consul's own
 * alt_domain does: the question exactly as the client sent it (same bytes, so 0x20 mixed case
 * survives), every owner name, and the names in RDATA (CNAME, SRV target, NS, PTR, MX, SOA MNAME
 * and RNAME, ...), so an NXDOMAIN carries the SOA of `<alias>.`.
 */
import { buildOpt, buildQuestion, scanReply, type Query } from '../dns/wire.js';
import { HEADER_LEN, EDE, TYPE } from '../dns/constants.js';
import { MAX_TCP, fitReply, replyFlags, udpLimit } from '../dns/reply.js';
import {
  WireError,
  decodeMessage,
  encodeMessage,
  mapNames,
  readName,
  type Message,
  type Record as RR,
} from '../dns/message.js';
import { bareLength, isUnder } from '../dns/names.js';

/**
 * A rendering: a reply body without OPT at buf[off, off+len), followed in the same buffer by its
 * TTL table, nTtl entries of (u16 offset of a TTL field in the body, u32 TTL as received). Plain
 * numbers and a shared buffer rather than a Buffer view and an array: each JS object per cache
 * entry is heap and GC marking work, and 100k entries made both show.
 */
export interface Rendering {
  buf: Buffer;
  off: number;
  len: number;
  nTtl: number;
  qEnd: number;
}

/** `full`: EDNS and TCP clients; `trimmed`: UDP clients without EDNS. Same length, same order. */
export interface Variant {
  full: Rendering[];
  trimmed: Rendering[];
  next: number;
}

/**
 * Cache-owned memory for reply bodies and their TTL tables. Small ones are packed into 64 KiB
 * slabs that hold only cache data: a slice of Node's shared 8 KiB pool would pin a slab full of
 * per-query garbage, and a buffer of its own costs an ArrayBuffer and a malloc per entry. A slab
 * is freed once none of its entries remains. One per cache, so a cache dropped on reload takes
 * its slabs with it.
 */
export class Slab {
  static readonly SIZE = 64 * 1024;
  private slab: Buffer = Buffer.allocUnsafeSlow(Slab.SIZE);
  private used = 0;

  /** Copies `body` and its TTL table into slab memory, setting r.buf/off/len/nTtl. */
  keep(r: Rendering, body: Buffer, ttlOffsets: readonly number[]): void {
    const need = body.length + 6 * ttlOffsets.length;
    let buf: Buffer;
    let off: number;
    if (need > 2048) {
      buf = Buffer.allocUnsafeSlow(need);
      off = 0;
    } else {
      if (this.used + need > Slab.SIZE) {
        this.slab = Buffer.allocUnsafeSlow(Slab.SIZE);
        this.used = 0;
      }
      buf = this.slab;
      off = this.used;
      this.used += (need + 7) & ~7;
    }
    body.copy(buf, off);
    let t = off + body.length;
    for (const o of ttlOffsets) {
      buf.writeUInt16BE(o, t);
      buf.writeUInt32BE(body.readUInt32BE(o), t + 2);
      t += 6;
    }
    r.buf = buf;
    r.off = off;
    r.len = body.length;
    r.nTtl = ttlOffsets.length;
  }
}

/** Picks the next rendering of a variant for this client (rotating through the orders). */
export function pick(v: Variant, q: Query, udp: boolean): Rendering {
  // Consul trims to udp_answer_limit only for UDP without EDNS (trimUDPResponse); TCP gets all.
  const list = q.edns || !udp ? v.full : v.trimmed;
  const r = list[v.next % list.length]!;
  v.next = v.next >= 0x3fffffff ? 0 : v.next + 1;
  return r;
}

/** Most orders kept per entry: n rotations for n ≤ 16 answers, else 16 (evenly spaced starts). */
export const MAX_ROTATIONS = 16;
/** RFC 8767 §4: a stale answer carries TTL 30. */
const STALE_TTL = 30;

/** What the hit path needs from the cache's settings: the client UDP limit and our OPT records, built once. */
export interface HitOptions {
  maxUdpSize: number;
  optPlain: Buffer;
  optDo: Buffer;
  optStale: Buffer;
  optStaleDo: Buffer;
}

/** The OPT records a cache puts on its replies, built once per cache. */
export function hitOptions(maxUdpSize: number): HitOptions {
  return {
    maxUdpSize,
    optPlain: buildOpt(maxUdpSize, 0, false),
    optDo: buildOpt(maxUdpSize, 0, true),
    optStale: buildOpt(maxUdpSize, 0, false, { code: EDE.STALE_ANSWER }),
    optStaleDo: buildOpt(maxUdpSize, 0, true, { code: EDE.STALE_ANSWER }),
  };
}

/**
 * A cached rendering for one client: copy, then patch ID, flags, the client's question bytes and
 * the TTLs (aged since `storedAt`, or 30 s when stale), add our OPT (with the upstream's EDE
 * options `ede`, if it had any), enforce the UDP limit. No decode, no encode. `upstreamFlags` are
 * the flags the upstream answered with. Null when the client's question has another length than
 * the rendering's.
 */
export function renderHit(
  r: Rendering,
  upstreamFlags: number,
  storedAt: number,
  q: Query,
  query: Buffer,
  udp: boolean,
  now: number,
  stale: boolean,
  o: HitOptions,
  ede: Buffer | null = null,
): Buffer | null {
  // The question is copied byte for byte, so it must have the same length (always, unless the
  // name held escapes the presentation round trip changed): else a miss.
  if (r.qEnd !== q.qEnd) return null;
  const opt = !q.edns
    ? null
    : ede !== null
      ? // The upstream's EDE options stay with the answer they explain (rare: built per hit).
        buildOpt(o.maxUdpSize, 0, q.dnssecOk, stale ? { code: EDE.STALE_ANSWER } : undefined, ede)
      : stale
        ? q.dnssecOk
          ? o.optStaleDo
          : o.optStale
        : q.dnssecOk
          ? o.optDo
          : o.optPlain;
  const bodyLen = r.len;
  const out = Buffer.allocUnsafe(bodyLen + (opt ? opt.length : 0));
  const src = r.buf;
  src.copy(out, 0, r.off, r.off + bodyLen);
  // The client's exact question bytes (0x20 case), its ID, RD and CD; the upstream's AA and rcode.
  query.copy(out, HEADER_LEN, HEADER_LEN, q.qEnd);
  out.writeUInt16BE(q.id, 0);
  const flags = replyFlags(q, upstreamFlags);
  out.writeUInt16BE(flags, 2);
  // Age the TTLs (RFC 1035 §7.3, RFC 2181 §8); a stale answer says 30 s (RFC 8767 §4).
  const table = r.off + bodyLen;
  const end = table + 6 * r.nTtl;
  if (stale) {
    for (let t = table; t < end; t += 6) out.writeUInt32BE(STALE_TTL, src.readUInt16BE(t));
  } else {
    const age = Math.floor((now - storedAt) / 1000);
    if (age > 0) {
      for (let t = table; t < end; t += 6) {
        const v = src.readUInt32BE(t + 2) - age;
        out.writeUInt32BE(v > 0 ? v : 0, src.readUInt16BE(t));
      }
    }
  }
  if (opt) {
    opt.copy(out, bodyLen);
    out.writeUInt16BE(out.readUInt16BE(10) + 1, 10);
  }
  const limit = udp ? udpLimit(q, o.maxUdpSize) : MAX_TCP;
  if (out.length > limit) return fitReply(out, limit, !udp);
  return out;
}

/**
 * Builds every rendering of a canonical reply for one alias: rotations of the answer set (full,
 * for EDNS and TCP clients), and the same trimmed to `limit` answers for UDP clients without EDNS
 * (Consul's udp_answer_limit), with Additional resynced to the SRV targets
 * that remain as Consul's syncExtra does (agent/dns.go: the first extra record per target name).
 * Answers holding a CNAME are never rotated: the chain must stay in order.
 */
export function buildVariant(
  canonical: Message,
  alias: string | null,
  domain: string,
  limit: number,
  maxRotations: number,
  slab: Slab | null,
): Variant {
  const n = canonical.answers.length;
  const chain = canonical.answers.some((a) => a.type === TYPE.CNAME);
  const rotations = n <= 1 || chain ? 1 : Math.min(n, maxRotations);
  const step = n <= maxRotations ? 1 : Math.floor(n / maxRotations);
  const full: Rendering[] = [];
  const trimmed: Rendering[] = [];
  for (let i = 0; i < rotations; i++) {
    const k = (i * step) % Math.max(1, n);
    const answers = canonical.answers.slice(k).concat(canonical.answers.slice(0, k));
    const f = renderOne({ ...canonical, answers }, alias, domain, slab);
    full.push(f);
    if (answers.length > limit) {
      const kept = answers.slice(0, limit);
      const targets = new Set<string>();
      for (const a of kept) if (a.type === TYPE.SRV) targets.add(srvTarget(a.rdata));
      const additionals: RR[] = [];
      for (const r of canonical.additionals) {
        const name = r.name.toLowerCase();
        if (targets.delete(name)) additionals.push(r);
      }
      trimmed.push(renderOne({ ...canonical, answers: kept, additionals }, alias, domain, slab));
    } else {
      trimmed.push(f);
    }
  }
  // Nothing to trim (the usual case): one array serves both client classes.
  return { full, trimmed: trimmed.every((r, i) => r === full[i]) ? full : trimmed, next: 0 };
}

/** The target of an SRV record (RDATA: priority, weight, port, then the name), lowercased. */
function srvTarget(rdata: Buffer): string {
  return readName(rdata, 6).name.toLowerCase();
}

const TRIM = { trimAnswers: true } as const;

/** Encodes one rendering: into cache memory (`slab`), or (null: a one-off miss reply) as is. */
function renderOne(m: Message, alias: string | null, domain: string, slab: Slab | null): Rendering {
  // Trimmed to 65,535 octets (the alias form can be longer than the canonical one it maps).
  const body =
    alias === null ? encodeMessage(m, TRIM) : toAliasReply(m, alias, domain, aliasQuestion(m, alias, domain), TRIM);
  const layout = scanReply(body);
  if (!layout) throw new Error('rendering did not scan');
  const r: Rendering = { buf: body, off: 0, len: body.length, nTtl: 0, qEnd: layout.qEnd };
  if (slab !== null) slab.keep(r, body, layout.ttlOffsets);
  return r;
}

/** The question bytes under the alias (its case is replaced by the client's on every hit). */
function aliasQuestion(m: Message, alias: string, domain: string): Buffer {
  const q = m.questions[0]!;
  const lower = q.name.toLowerCase();
  const name = lower === domain ? alias : lower.slice(0, lower.length - domain.length) + alias;
  return buildQuestion(name, q.type); // only class IN reaches the cache (others are REFUSED)
}

/**
 * One reply body for a miss that is not served from a cache entry: names mapped back under the
 * alias, and (`full` false: a UDP client without EDNS) the answers trimmed to `limit` as Consul
 * would. Null if the reply cannot be decoded.
 */
export function renderOnce(
  stripped: Buffer,
  alias: string | null,
  domain: string,
  limit: number,
  full: boolean,
): Buffer | null {
  let m: Message;
  try {
    m = decodeMessage(stripped);
  } catch {
    return null;
  }
  try {
    const v = buildVariant(m, alias, domain, full ? Number.MAX_SAFE_INTEGER : limit, 1, null);
    const r = full ? v.full[0]! : v.trimmed[0]!;
    return Buffer.from(r.buf.subarray(r.off, r.off + r.len));
  } catch {
    return null;
  }
}

/**
 * A new Message with every name under `from` (case-insensitive, label boundaries) moved under
 * `to`, in the question, owners and RDATA names. The input is not modified.
 */
export function mapSuffix(msg: Message, from: string, to: string): Message {
  const fromLower = from.toLowerCase();
  return mapNames(msg, (name) => {
    const n = bareLength(name);
    return isUnder(name, n, fromLower) ? name.slice(0, n - fromLower.length) + to : name;
  });
}

/**
 * The alias rendering of a canonical reply: every name under `domain` moved under `alias`, the
 * question replaced by the client's exact question bytes (name, type, class), and names equal to
 * the client's question name written with the client's case (Consul echoes the question name as
 * sent, so its owners carry that case too). ID and flags are the canonical reply's: the caller
 * patches ID and RD. Names are re-compressed; opts.maxSize applies encodeMessage's truncation.
 * Throws WireError when the reply or the question bytes are malformed.
 */
export function toAliasReply(
  canonicalReply: Buffer | Message,
  alias: string,
  domain: string,
  clientQuestion: Buffer,
  opts?: { maxSize?: number; trimAnswers?: boolean },
): Buffer {
  const m = Buffer.isBuffer(canonicalReply) ? decodeMessage(canonicalReply) : canonicalReply;
  const q = readName(clientQuestion, 0);
  if (q.end + 4 !== clientQuestion.length) throw new WireError('client question is not exactly name, type and class');
  const qname = q.name;
  const qn = qname.length;
  const qLower = qname.toLowerCase();
  const domainLower = domain.toLowerCase();
  const out = mapNames(m, (name) => {
    const n = bareLength(name);
    if (!isUnder(name, n, domainLower)) return name;
    const to = name.slice(0, n - domainLower.length) + alias;
    return to.length === qn && isUnder(to, qn, qLower) ? qname : to;
  });
  out.questions = [
    { name: qname, type: clientQuestion.readUInt16BE(q.end), class: clientQuestion.readUInt16BE(q.end + 2) },
  ];
  return encodeMessage(out, opts);
}

/** The reverse of toAliasReply, for tests and tools: names under `alias` moved back under `domain`. */
export function toDomainReply(
  aliasReply: Buffer | Message,
  alias: string,
  domain: string,
  opts?: { maxSize?: number },
): Buffer {
  const m = Buffer.isBuffer(aliasReply) ? decodeMessage(aliasReply) : aliasReply;
  return encodeMessage(mapSuffix(m, alias, domain), opts);
}
