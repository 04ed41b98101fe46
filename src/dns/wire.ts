/**
 * Raw-byte DNS for the query path: read the header, question and OPT of a query, walk the records
 * of a reply without decoding them, and build the few replies the proxy authors itself (FORMERR,
 * NOTIMP, REFUSED, SERVFAIL with an Extended DNS Error, TC). Nothing here allocates a decoded
 * message: the hot path relays and patches bytes. Full decode/encode (with compression) lives in
 * dns/message.ts and is used on the miss path only.
 *
 * Why not dns2 or dns-packet here: a decode+encode with either costs a hundred times or more what
 * reading a question key from raw bytes does; dns2 also drops EDNS options and accepts malformed
 * names.
 */

import { nameToWire } from './message.js';
import { OPCODE, CLASS_IN, EDNS_OPTION_COOKIE, EDNS_OPTION_EDE, FLAG, HEADER_LEN, RCODE, TYPE } from './constants.js';

/** What parseQuery learned from a client's query. One object per query; fields are plain values. */
export interface Query {
  id: number;
  flags: number;
  opcode: number;
  /** Question bytes [HEADER_LEN, qEnd): name, type and class, exactly as the client sent them. */
  qEnd: number;
  /** Offset just past the question name (qEnd - 4). */
  nameEnd: number;
  /**
   * Lowercased presentation name without the trailing dot ('' for the root). Odd bytes are \DDD.
   * Empty when parseQuery was asked not to build it (the handler takes it from its memo).
   */
  name: string;
  qtype: number;
  qclass: number;
  edns: boolean;
  /** The client's advertised UDP payload size, 512 without EDNS (RFC 6891 §6.2.3: below 512 counts as 512). */
  udpSize: number;
  ednsVersion: number;
  dnssecOk: boolean;
  /** A well-formed COOKIE option came with the query (the reply carries our server cookie). */
  cookie: boolean;
}

/** Outcome of parseQuery: a query to answer, an rcode to answer with at once, or silence. */
export type ParseOutcome =
  | { kind: 'query'; q: Query }
  | { kind: 'error'; rcode: number; q: Query | null; id: number; flags: number }
  | { kind: 'drop' };

const DROP: ParseOutcome = { kind: 'drop' };

function escapeByte(b: number): string {
  return '\\' + String(b).padStart(3, '0');
}

/**
 * Validates an uncompressed name at `off` without building it (a question name never needs a
 * pointer, so a query carrying one is malformed: RFC 1035 §4.1.4 allows pointers only to earlier
 * names). Returns the offset past the name, or -1 on anything malformed.
 */
function scanQuestionName(buf: Buffer, off: number): number {
  let wireLen = 1;
  for (;;) {
    if (off >= buf.length) return -1;
    const len = buf[off]!;
    if (len === 0) return off + 1;
    if (len > 63) return -1; // pointer or reserved label type
    wireLen += len + 1;
    if (wireLen > 255) return -1; // RFC 1035 §3.1: 255 octets at most
    off += len + 1;
  }
}

/**
 * The lowercased presentation form of a question name already validated by scanQuestionName,
 * without the trailing dot ('' for the root); bytes that are not plain printable ASCII, and '.'
 * or '\\' inside a label, are written \DDD so distinct wire names stay distinct strings.
 */
export function questionName(buf: Buffer, off: number = HEADER_LEN): string {
  let name = '';
  for (;;) {
    const len = buf[off];
    // Validated by the caller; the guard only keeps a misuse from looping past the end.
    if (len === undefined || len === 0) return name.toLowerCase();
    const start = off + 1;
    const end = start + len;
    let plain = true;
    for (let i = start; i < end; i++) {
      const c = buf[i]!;
      if (c <= 0x20 || c >= 0x7f || c === 0x2e || c === 0x5c) {
        plain = false;
        break;
      }
    }
    let label: string;
    if (plain) {
      label = buf.toString('latin1', start, end);
    } else {
      label = '';
      for (let i = start; i < end; i++) {
        const c = buf[i]!;
        label += c <= 0x20 || c >= 0x7f || c === 0x2e || c === 0x5c ? escapeByte(c) : String.fromCharCode(c);
      }
    }
    name = name === '' ? label : name + '.' + label;
    off = end;
  }
}

/**
 * Skips a (possibly compressed) name in a message. Returns the offset past it, or -1 if it runs
 * off the end, uses a reserved label type, or a pointer that does not point backwards.
 */
function skipName(buf: Buffer, off: number): number {
  const start = off;
  let total = 0;
  for (;;) {
    if (off >= buf.length) return -1;
    const len = buf[off]!;
    if (len === 0) return off + 1;
    if ((len & 0xc0) === 0xc0) {
      if (off + 2 > buf.length) return -1;
      const ptr = ((len & 0x3f) << 8) | buf[off + 1]!;
      // A pointer must point to an earlier name (RFC 1035 §4.1.4), which also rules out loops here.
      if (ptr >= start || ptr < HEADER_LEN) return -1;
      return off + 2;
    }
    if (len > 63) return -1;
    total += len + 1;
    if (total > 255) return -1;
    off += len + 1;
  }
}

/** What the OPT walk of a query found: nothing wrong, or the rcode to answer with. */
const OPT_OK = -1;

/**
 * Walks the records after the question(s) of a query from `off`; fills q's EDNS fields when an
 * OPT is found (RFC 6891 §6.1.1: at most one, owner root, in Additional). Returns OPT_OK or the
 * rcode to answer with: FORMERR for a malformed record, a second OPT, or a malformed COOKIE
 * option (RFC 7873 §5.2.2: a client cookie of 8 octets, a server cookie of 8 to 32).
 */
function walkRecords(buf: Buffer, off: number, q: Query, an: number, ns: number, ar: number): number {
  const total = an + ns + ar;
  for (let i = 0; i < total; i++) {
    const ownerStart = off;
    off = skipName(buf, off);
    if (off < 0 || off + 10 > buf.length) return RCODE.FORMERR;
    const type = buf.readUInt16BE(off);
    const rdlen = buf.readUInt16BE(off + 8);
    const rdStart = off + 10;
    if (rdStart + rdlen > buf.length) return RCODE.FORMERR;
    if (type === TYPE.OPT) {
      if (q.edns || i < an + ns || buf[ownerStart] !== 0) return RCODE.FORMERR;
      q.edns = true;
      const size = buf.readUInt16BE(off + 2);
      q.udpSize = size < 512 ? 512 : size;
      q.ednsVersion = buf[off + 5]!;
      q.dnssecOk = (buf[off + 6]! & 0x80) !== 0;
      if (rdlen > 0 && !optionsWellFormed(buf, rdStart, rdStart + rdlen, q)) return RCODE.FORMERR;
    }
    off = rdStart + rdlen;
  }
  return OPT_OK;
}

/** Checks the options of an OPT RDATA [p, end); notes a client cookie in q.cookie. */
function optionsWellFormed(buf: Buffer, p: number, end: number, q: Query): boolean {
  while (p < end) {
    if (p + 4 > end) return false;
    const code = buf.readUInt16BE(p);
    const len = buf.readUInt16BE(p + 2);
    if (p + 4 + len > end) return false;
    if (code === EDNS_OPTION_COOKIE) {
      if (len !== 8 && (len < 16 || len > 40)) return false;
      q.cookie = true;
    }
    p += 4 + len;
  }
  return true;
}

/**
 * Parses and validates a client query, answering what BIND 9 and unbound would for bad ones:
 * unreadable header or a response → drop; opcode other than QUERY → NOTIMP (checked first,
 * whatever the counts); QDCOUNT = 0 with a COOKIE option → NOERROR (RFC 7873 §5.4, the reply
 * carries our server cookie); QDCOUNT ≠ 1, a malformed question or record, records in the answer
 * or authority section, a malformed COOKIE → FORMERR; EDNS version ≠ 0 → BADVERS (RFC 6891 §6.1.3).
 */
export function parseQuery(buf: Buffer, withName = true): ParseOutcome {
  if (buf.length < HEADER_LEN) return DROP;
  const id = buf.readUInt16BE(0);
  const flags = buf.readUInt16BE(2);
  if (flags & FLAG.QR) return DROP; // never answer a response: that is how reflection loops start
  const opcode = (flags >> 11) & 0xf;
  if (opcode !== OPCODE.QUERY) return { kind: 'error', rcode: RCODE.NOTIMP, q: null, id, flags };
  const qd = buf.readUInt16BE(4);
  if (qd === 0) return cookieOnly(buf, id, flags);
  if (qd !== 1) return { kind: 'error', rcode: RCODE.FORMERR, q: null, id, flags };
  const nameEnd = scanQuestionName(buf, HEADER_LEN);
  if (nameEnd < 0 || nameEnd + 4 > buf.length) return { kind: 'error', rcode: RCODE.FORMERR, q: null, id, flags };
  const q: Query = {
    id,
    flags,
    opcode,
    qEnd: nameEnd + 4,
    nameEnd,
    name: withName ? questionName(buf) : '',
    qtype: buf.readUInt16BE(nameEnd),
    qclass: buf.readUInt16BE(nameEnd + 2),
    edns: false,
    udpSize: 512,
    ednsVersion: 0,
    dnssecOk: false,
    cookie: false,
  };
  const an = buf.readUInt16BE(6),
    ns = buf.readUInt16BE(8),
    ar = buf.readUInt16BE(10);
  const bad = walkRecords(buf, q.qEnd, q, an, ns, ar);
  if (bad !== OPT_OK) return { kind: 'error', rcode: bad, q, id, flags };
  if (q.edns && q.ednsVersion !== 0) return { kind: 'error', rcode: RCODE.BADVERS, q, id, flags };
  // A query carries no answer or authority records (unbound and BIND answer FORMERR).
  if (an !== 0 || ns !== 0) return { kind: 'error', rcode: RCODE.FORMERR, q, id, flags };
  // Meta types in a question (RFC 6895 §3.1): OPT can never be asked; zone transfers, TSIG and
  // TKEY are not something a forwarder serves; MAILA/MAILB are obsolete.
  const t = q.qtype;
  if (t === TYPE.OPT) return { kind: 'error', rcode: RCODE.FORMERR, q, id, flags };
  if (t === TYPE.AXFR || t === TYPE.IXFR || t === TYPE.TSIG || t === TYPE.TKEY)
    return { kind: 'error', rcode: RCODE.REFUSED, q, id, flags };
  if (t === TYPE.MAILA || t === TYPE.MAILB) return { kind: 'error', rcode: RCODE.NOTIMP, q, id, flags };
  return { kind: 'query', q };
}

/** QDCOUNT = 0: NOERROR when the query carries a well-formed COOKIE (RFC 7873 §5.4), else FORMERR. */
function cookieOnly(buf: Buffer, id: number, flags: number): ParseOutcome {
  const probe = emptyQuery(id, flags);
  const bad = walkRecords(buf, HEADER_LEN, probe, buf.readUInt16BE(6), buf.readUInt16BE(8), buf.readUInt16BE(10));
  const ok = bad === OPT_OK && probe.cookie && probe.ednsVersion === 0;
  return { kind: 'error', rcode: ok ? RCODE.NOERROR : RCODE.FORMERR, q: null, id, flags };
}

function emptyQuery(id: number, flags: number): Query {
  return {
    id,
    flags,
    opcode: (flags >> 11) & 0xf,
    qEnd: HEADER_LEN,
    nameEnd: HEADER_LEN,
    name: '',
    qtype: 0,
    qclass: 0,
    edns: false,
    udpSize: 512,
    ednsVersion: 0,
    dnssecOk: false,
    cookie: false,
  };
}

/**
 * The EDNS facts of a message whose question could not be parsed (an unknown opcode, QDCOUNT ≠ 1,
 * a malformed question): every question is skipped as a name plus 4 octets, then the records are
 * walked. Null when the message cannot be walked or has no OPT: its error reply then has no OPT.
 */
function ednsOf(buf: Buffer): Query | null {
  if (buf.length < HEADER_LEN) return null;
  const q = emptyQuery(buf.readUInt16BE(0), buf.readUInt16BE(2));
  let off = HEADER_LEN;
  const qd = buf.readUInt16BE(4);
  for (let i = 0; i < qd; i++) {
    off = skipName(buf, off);
    if (off < 0 || off + 4 > buf.length) return null;
    off += 4;
  }
  walkRecords(buf, off, q, buf.readUInt16BE(6), buf.readUInt16BE(8), buf.readUInt16BE(10));
  return q.edns ? q : null;
}

/** The layout of a reply, learned by walking it once without decoding names or RDATA. */
export interface ReplyLayout {
  rcode: number;
  flags: number;
  an: number;
  ns: number;
  ar: number;
  /** Offset just past the question section. */
  qEnd: number;
  /** Offsets of the TTL field of every record but OPT, in wire order. */
  ttlOffsets: number[];
  /** Start and end of the OPT record, or -1. */
  optStart: number;
  optEnd: number;
  /** Extended rcode bits from OPT (upper 8 bits of the 12-bit rcode). */
  extRcode: number;
  /** For negative caching (RFC 2308 §5): min(SOA TTL, SOA MINIMUM) of the first SOA in authority, or -1. */
  negTtl: number;
  /** Smallest TTL over answer+authority records (OPT excluded), or -1 if none. */
  minTtl: number;
  /** End of the last record: bytes after it are not part of the message. */
  end: number;
}

/**
 * Walks a whole reply; returns null unless every record it counts is there and well formed (a
 * truncated datagram is refused: caching half an answer is worse than none). Bytes after the last
 * record are not part of the message: `end` says where it ends, and the caller keeps only that
 * (BIND and unbound accept such a reply and ignore the excess).
 */
export function scanReply(buf: Buffer): ReplyLayout | null {
  if (buf.length < HEADER_LEN) return null;
  const flags = buf.readUInt16BE(2);
  const qd = buf.readUInt16BE(4);
  const an = buf.readUInt16BE(6),
    ns = buf.readUInt16BE(8),
    ar = buf.readUInt16BE(10);
  let off = HEADER_LEN;
  for (let i = 0; i < qd; i++) {
    off = skipName(buf, off);
    if (off < 0 || off + 4 > buf.length) return null;
    off += 4;
  }
  const layout: ReplyLayout = {
    rcode: flags & 0xf,
    flags,
    an,
    ns,
    ar,
    qEnd: off,
    ttlOffsets: [],
    optStart: -1,
    optEnd: -1,
    extRcode: 0,
    negTtl: -1,
    minTtl: -1,
    end: 0,
  };
  const total = an + ns + ar;
  for (let i = 0; i < total; i++) {
    const rrStart = off;
    off = skipName(buf, off);
    if (off < 0 || off + 10 > buf.length) return null;
    const type = buf.readUInt16BE(off);
    const rdlen = buf.readUInt16BE(off + 8);
    const rdStart = off + 10;
    if (rdStart + rdlen > buf.length) return null;
    if (type === TYPE.OPT) {
      if (layout.optStart >= 0 || i < an + ns) return null;
      layout.optStart = rrStart;
      layout.optEnd = rdStart + rdlen;
      layout.extRcode = buf[off + 4]!;
    } else {
      layout.ttlOffsets.push(off + 4);
      if (i < an + ns) {
        const ttl = buf.readUInt32BE(off + 4);
        if (layout.minTtl < 0 || ttl < layout.minTtl) layout.minTtl = ttl;
        if (type === TYPE.SOA && i >= an && layout.negTtl < 0) {
          // SOA RDATA: MNAME, RNAME, then serial refresh retry expire minimum (5 × u32).
          let p = skipName(buf, rdStart);
          if (p >= 0) p = skipName(buf, p);
          if (p >= 0 && p + 20 === rdStart + rdlen) {
            const minimum = buf.readUInt32BE(p + 16);
            layout.negTtl = Math.min(ttl, minimum);
          }
        }
      }
    }
    off = rdStart + rdlen;
  }
  layout.end = off;
  return layout;
}

/** True when a reply's question equals the one asked (name compared without case: RFC 5452 §9.1). */
export function sameQuestion(reply: Buffer, replyQEnd: number, query: Buffer, qEnd: number): boolean {
  if (replyQEnd - HEADER_LEN !== qEnd - HEADER_LEN) return false;
  if (reply.readUInt16BE(4) !== 1) return false;
  for (let i = HEADER_LEN; i < qEnd; i++) {
    let a = reply[i]!,
      b = query[i]!;
    if (a === b) continue;
    if (a >= 0x41 && a <= 0x5a) a |= 0x20;
    if (b >= 0x41 && b <= 0x5a) b |= 0x20;
    if (a !== b) return false;
  }
  return true;
}

/**
 * Bytes of an OPT record advertising `udpSize`, with extended rcode bits, DO, an optional EDE of
 * ours and, after it, `extra`: options passed on as they came (an upstream's EDE options).
 */
export function buildOpt(
  udpSize: number,
  extRcode: number,
  dnssecOk: boolean,
  ede?: { code: number; text?: string },
  extra?: Buffer | null,
): Buffer {
  const text = ede?.text ? Buffer.from(ede.text, 'utf8') : null;
  const ownLen = ede ? 4 + 2 + (text ? text.length : 0) : 0;
  const optLen = ownLen + (extra ? extra.length : 0);
  const b = Buffer.alloc(11 + optLen);
  // owner root (0), type OPT, class = payload size, TTL = ext-rcode|version|DO|Z, rdlen
  b.writeUInt16BE(TYPE.OPT, 1);
  b.writeUInt16BE(udpSize, 3);
  b[5] = extRcode;
  b[6] = 0;
  b[7] = dnssecOk ? 0x80 : 0;
  b.writeUInt16BE(optLen, 9);
  if (ede) {
    b.writeUInt16BE(EDNS_OPTION_EDE, 11);
    b.writeUInt16BE(2 + (text ? text.length : 0), 13);
    b.writeUInt16BE(ede.code, 15);
    if (text) text.copy(b, 17);
  }
  if (extra) extra.copy(b, 11 + ownLen);
  return b;
}

export interface ErrorReplyOptions {
  /** Advertised size in our OPT when the client used EDNS. */
  udpSize: number;
  ra: boolean;
  ede?: { code: number; text?: string } | undefined;
}

/**
 * A reply the proxy authors: header, the client's question (when it could be parsed) and, if the
 * client sent EDNS, our OPT (with the extended rcode for BADVERS and an EDE when given): every
 * reply to an EDNS query carries an OPT (RFC 6891 §7), so when the question could not be parsed
 * the OPT is looked for in the raw message. RD is echoed for QUERY only (it is defined for that
 * opcode alone): NOTIMP to an unknown opcode echoes ID and opcode and sets nothing else.
 */
export function buildErrorReply(
  query: Buffer,
  id: number,
  flags: number,
  q: Query | null,
  rcode: number,
  opts: ErrorReplyOptions,
): Buffer {
  const withQuestion = q !== null && q.qEnd > HEADER_LEN;
  const qLen = withQuestion ? q.qEnd - HEADER_LEN : 0;
  const e = q !== null ? q : ednsOf(query);
  const opt = e !== null && e.edns ? buildOpt(opts.udpSize, rcode >> 4, e.dnssecOk, opts.ede) : null;
  const out = Buffer.allocUnsafe(HEADER_LEN + qLen + (opt ? opt.length : 0));
  out.writeUInt16BE(id, 0);
  const opcode = (flags >> 11) & 0xf;
  let f = FLAG.QR | (flags & (0x7800 | (opcode === OPCODE.QUERY ? FLAG.RD : 0))) | (rcode & 0xf);
  if (opts.ra && opcode === OPCODE.QUERY) f |= FLAG.RA;
  if (q !== null && rcode !== RCODE.NOTIMP && flags & FLAG.CD) f |= FLAG.CD;
  out.writeUInt16BE(f, 2);
  out.writeUInt16BE(withQuestion ? 1 : 0, 4);
  out.writeUInt16BE(0, 6);
  out.writeUInt16BE(0, 8);
  out.writeUInt16BE(opt ? 1 : 0, 10);
  if (withQuestion) query.copy(out, HEADER_LEN, HEADER_LEN, q.qEnd);
  if (opt) opt.copy(out, HEADER_LEN + qLen);
  return out;
}

/**
 * Builds the upstream form of a client query: our own ID, the client's RD/CD/AD bits (TC, Z and
 * anything else a client set are not passed on), the question bytes (possibly rewritten by the
 * alias stage), and our own OPT: hop-by-hop options such as cookies are not forwarded (RFC 7873
 * §5.4), and the buffer size is ours (large for the agents, so one reply holds every instance).
 */
export function buildUpstreamQuery(
  question: Buffer,
  qStart: number,
  qEnd: number,
  clientFlags: number,
  dnssecOk: boolean,
  udpSize: number,
): Buffer {
  const qLen = qEnd - qStart;
  const out = Buffer.allocUnsafe(HEADER_LEN + qLen + 11);
  out.writeUInt16BE(0, 0); // ID set per try by the pool
  out.writeUInt16BE(clientFlags & (FLAG.RD | FLAG.CD | FLAG.AD), 2);
  out.writeUInt16BE(1, 4);
  out.writeUInt16BE(0, 6);
  out.writeUInt16BE(0, 8);
  out.writeUInt16BE(1, 10);
  question.copy(out, HEADER_LEN, qStart, qEnd);
  const o = HEADER_LEN + qLen;
  out[o] = 0;
  out.writeUInt16BE(TYPE.OPT, o + 1);
  out.writeUInt16BE(udpSize, o + 3);
  out.writeUInt32BE(dnssecOk ? 0x8000 : 0, o + 5);
  out.writeUInt16BE(0, o + 9);
  return out;
}

/** Question bytes (name, type, class IN) for a probe such as `consul. SOA`. */
export function buildQuestion(name: string, qtype: number): Buffer {
  const n = nameToWire(name);
  const out = Buffer.alloc(n.length + 4);
  n.copy(out, 0);
  out.writeUInt16BE(qtype, n.length);
  out.writeUInt16BE(CLASS_IN, n.length + 2);
  return out;
}

/**
 * Offset of the (last) COOKIE option (its code) in a query's OPT, or -1: the listener's check for a
 * client cookie, one header read for a query with no Additional record.
 */
export function findCookie(buf: Buffer): number {
  const n = buf.length;
  if (n < HEADER_LEN || (buf[10] === 0 && buf[11] === 0)) return -1;
  // The usual query: one Additional record, last, an OPT with no options (root owner, type 41,
  // RDLENGTH 0). Whatever that record is, it then holds no COOKIE: no walk.
  if (
    buf.readUInt32BE(6) === 0 &&
    buf[11] === 1 &&
    buf[10] === 0 &&
    n >= HEADER_LEN + 11 &&
    buf[n - 11] === 0 &&
    buf.readUInt16BE(n - 10) === TYPE.OPT &&
    buf.readUInt16BE(n - 2) === 0
  )
    return -1;
  const opt = findOptRecord(buf);
  if (opt < 0) return -1;
  const e = opt + 1;
  let p = e + 10;
  const end = p + buf.readUInt16BE(e + 8);
  if (end > buf.length) return -1;
  // With several COOKIE options the last one counts (as BIND, where each overwrites the one before).
  let at = -1;
  while (p + 4 <= end) {
    if (buf.readUInt16BE(p) === EDNS_OPTION_COOKIE) at = p;
    p += 4 + buf.readUInt16BE(p + 2);
  }
  return at;
}

/** Start of the OPT record (owner root) of a message, or -1 (none, or the message cannot be walked). */
export function findOptRecord(buf: Buffer): number {
  let off = HEADER_LEN;
  const qd = buf.readUInt16BE(4);
  for (let i = 0; i < qd; i++) {
    off = skipName(buf, off);
    if (off < 0 || off + 4 > buf.length) return -1;
    off += 4;
  }
  const total = buf.readUInt16BE(6) + buf.readUInt16BE(8) + buf.readUInt16BE(10);
  for (let i = 0; i < total; i++) {
    const start = off;
    off = skipName(buf, off);
    if (off < 0 || off + 10 > buf.length) return -1;
    if (buf.readUInt16BE(off) === TYPE.OPT && buf[start] === 0 && off === start + 1) return start;
    off += 10 + buf.readUInt16BE(off + 8);
  }
  return -1;
}
