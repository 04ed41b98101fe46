/**
 * Rendering: turn an upstream reply into the reply a client gets. The upstream's OPT is removed
 * (EDNS is hop by hop, RFC 6891 §6.1.1) and ours appended when the client used EDNS, carrying on
 * the upstream's extended rcode and Extended DNS Errors (they are part of the answer); the header
 * gets the client's ID, RD and CD, RA=1 and the upstream's AA and rcode; the question is the
 * client's exact bytes (so 0x20 case survives). A reply that does not fit its limit (the client's
 * UDP size, 65,535 over TCP) loses Additional records first, without TC (RFC 2181 §9); over UDP,
 * if the answer or authority section still does not fit, it becomes a TC reply: header, question
 * and OPT (RFC 1035 §4.2.1, RFC 6891 §7); over TCP the answers are trimmed instead (as Consul's
 * trimTCPResponse), since a client has nowhere else to retry.
 */
import { buildOpt, type Query, type ReplyLayout } from './wire.js';
import { EDNS_OPTION_EDE, FLAG, HEADER_LEN, RCODE, TYPE } from './constants.js';

/** The reply without its OPT record, with ARCOUNT adjusted; the same buffer if there was none. */
export function stripOpt(reply: Buffer, layout: ReplyLayout): Buffer {
  if (layout.optStart < 0) return reply;
  const cut = layout.optEnd - layout.optStart;
  const out = Buffer.allocUnsafe(reply.length - cut);
  reply.copy(out, 0, 0, layout.optStart);
  reply.copy(out, layout.optStart, layout.optEnd);
  out.writeUInt16BE(reply.readUInt16BE(10) - 1, 10);
  return out;
}

/**
 * The Extended DNS Error options (RFC 8914, option 15) of a reply's OPT, as their raw bytes, or
 * null. They are the one part of an upstream's OPT a client gets: the reason for its SERVFAIL,
 * REFUSED or NXDOMAIN (DNSSEC bogus, blocked, a zone's own failure) belongs to the answer, while
 * the rest of EDNS is hop by hop (RFC 6891 §6.1.1: our own size, DO and cookie replace it).
 */
export function edeOptions(reply: Buffer, layout: ReplyLayout): Buffer | null {
  if (layout.optStart < 0) return null;
  // The owner of a validated OPT: the root (0), or rarely a name (labels, maybe a pointer).
  let p = layout.optStart;
  for (let b = reply[p]!; b !== 0 && (b & 0xc0) !== 0xc0; b = reply[p]!) p += b + 1;
  p += reply[p] === 0 ? 1 : 2;
  const end = layout.optEnd;
  p += 10; // type, class (UDP size), TTL (extended rcode, version, flags), RDLENGTH
  let found: Buffer[] | null = null;
  while (p + 4 <= end) {
    const len = reply.readUInt16BE(p + 2);
    if (p + 4 + len > end) break;
    if (reply.readUInt16BE(p) === EDNS_OPTION_EDE && len >= 2) (found ??= []).push(reply.subarray(p, p + 4 + len));
    p += 4 + len;
  }
  return found === null ? null : Buffer.concat(found);
}

/** TTL offsets of `layout` once the OPT record is cut out of the buffer. */
export function ttlOffsetsWithoutOpt(layout: ReplyLayout): number[] {
  if (layout.optStart < 0) return layout.ttlOffsets;
  const cut = layout.optEnd - layout.optStart;
  return layout.ttlOffsets.map((o) => (o > layout.optStart ? o - cut : o));
}

/** The client's byte limit for a reply over UDP (RFC 6891 §6.2.5; 512 without EDNS). */
export function udpLimit(q: Query, maxUdpSize: number): number {
  return q.edns ? Math.min(q.udpSize, maxUdpSize) : 512;
}

/** Header flags of our reply to a client, from the upstream's flags and rcode. */
export function replyFlags(q: Query, upstreamFlags: number): number {
  let f = FLAG.QR | FLAG.RA | (q.flags & (FLAG.RD | FLAG.CD)) | (upstreamFlags & (FLAG.AA | 0xf));
  // RFC 6840 §5.8: set AD only for clients that asked for it (DO or AD).
  if (upstreamFlags & FLAG.AD && (q.dnssecOk || q.flags & FLAG.AD)) f |= FLAG.AD;
  return f;
}

export interface FinishOptions {
  maxUdpSize: number;
  udp: boolean;
  ede?: { code: number; text?: string } | undefined;
  /** The upstream's extended rcode bits (BADVERS, BADCOOKIE…), passed on in our OPT. */
  extRcode?: number;
  /** The upstream's EDE options (edeOptions), passed on in our OPT. */
  upstreamEde?: Buffer | null;
}

/**
 * Finishes a reply body (no OPT, question already the client's) for one client: ID, flags, OPT,
 * size limit. `body` is not modified when a new buffer is needed; otherwise it is patched in place
 * (callers pass a private copy).
 */
export function finish(body: Buffer, q: Query, flags: number, opts: FinishOptions): Buffer {
  let out = body;
  const ext = opts.extRcode ?? 0;
  if (q.edns) {
    const opt = buildOpt(opts.maxUdpSize, ext, q.dnssecOk, opts.ede, opts.upstreamEde);
    out = Buffer.allocUnsafe(body.length + opt.length);
    body.copy(out, 0);
    opt.copy(out, body.length);
    out.writeUInt16BE(body.readUInt16BE(10) + 1, 10);
  }
  out.writeUInt16BE(q.id, 0);
  // An extended rcode cannot be said without an OPT: its low four bits alone would read as
  // another rcode (BADVERS as NOERROR), so a client without EDNS gets SERVFAIL.
  out.writeUInt16BE((ext !== 0 && !q.edns ? (flags & ~0xf) | RCODE.SERVFAIL : flags) & 0xffff, 2);
  const limit = opts.udp ? udpLimit(q, opts.maxUdpSize) : MAX_TCP;
  if (out.length > limit) return fitReply(out, limit, !opts.udp);
  return out;
}

/** The most a TCP message can hold (RFC 1035 §4.2.2: a 16-bit length prefix). */
export const MAX_TCP = 65535;

/** End of the name at `off` (compressed or not; the message is one we already validated). */
function nameEnd(buf: Buffer, off: number): number {
  for (;;) {
    const b = buf[off]!;
    if (b === 0) return off + 1;
    if ((b & 0xc0) === 0xc0) return off + 2;
    off += b + 1;
  }
}

/** Whether the owner names at a and b are equal (ASCII case-insensitive), following pointers. */
function sameOwner(buf: Buffer, a: number, b: number): boolean {
  for (;;) {
    while ((buf[a]! & 0xc0) === 0xc0) a = ((buf[a]! & 0x3f) << 8) | buf[a + 1]!;
    while ((buf[b]! & 0xc0) === 0xc0) b = ((buf[b]! & 0x3f) << 8) | buf[b + 1]!;
    const len = buf[a]!;
    if (len !== buf[b]!) return false;
    if (len === 0) return true;
    for (let i = 1; i <= len; i++) {
      let x = buf[a + i]!,
        y = buf[b + i]!;
      if (x >= 0x41 && x <= 0x5a) x |= 0x20;
      if (y >= 0x41 && y <= 0x5a) y |= 0x20;
      if (x !== y) return false;
    }
    a += len + 1;
    b += len + 1;
  }
}

/** Same RRset: owner, type and class (RFC 2181 §5). */
function sameRRset(buf: Buffer, a: number, b: number): boolean {
  const ea = nameEnd(buf, a),
    eb = nameEnd(buf, b);
  return buf.readUInt32BE(ea) === buf.readUInt32BE(eb) && sameOwner(buf, a, b);
}

/**
 * A well-formed reply (ours: names point backwards only) cut to at most `limit` octets. Whole
 * Additional RRsets go first, from the end, keeping OPT, with no TC (RFC 2181 §9). If the answer
 * and authority sections still do not fit: `trimAnswers` (TCP) keeps the answers that fit and
 * drops authority, as Consul does; otherwise (UDP) the reply is the header, question and OPT with
 * TC set. Cold path: only replies that overflow come here.
 */
export function fitReply(buf: Buffer, limit: number, trimAnswers: boolean): Buffer {
  if (buf.length <= limit) return buf;
  const qd = buf.readUInt16BE(4),
    an = buf.readUInt16BE(6),
    ns = buf.readUInt16BE(8),
    ar = buf.readUInt16BE(10);
  let off = HEADER_LEN;
  for (let i = 0; i < qd; i++) off = nameEnd(buf, off) + 4;
  const qEnd = off;
  const starts: number[] = [];
  let opt: Buffer | null = null;
  for (let i = 0; i < an + ns + ar; i++) {
    const start = off;
    const e = nameEnd(buf, off);
    off = e + 10 + buf.readUInt16BE(e + 8);
    if (i >= an + ns && buf.readUInt16BE(e) === TYPE.OPT) opt = buf.subarray(start, off);
    else starts.push(start);
  }
  starts.push(off); // records are starts[i]..starts[i+1], OPT aside (it is last in our replies)
  const optLen = opt ? opt.length : 0;
  const room = limit - optLen;
  const authEnd = starts[an + ns]!;
  const keep = (end: number, counts: [number, number, number], tc: boolean): Buffer => {
    const out = Buffer.allocUnsafe(end + optLen);
    buf.copy(out, 0, 0, end);
    if (opt) opt.copy(out, end);
    if (tc) out.writeUInt16BE(out.readUInt16BE(2) | FLAG.TC, 2);
    out.writeUInt16BE(counts[0], 6);
    out.writeUInt16BE(counts[1], 8);
    out.writeUInt16BE(counts[2] + (opt ? 1 : 0), 10);
    return out;
  };
  if (authEnd <= room) {
    const nAr = starts.length - 1 - an - ns;
    let k = nAr;
    while (k > 0 && starts[an + ns + k]! > room) k--;
    // Never leave part of an RRset behind: a resolver would take it for the whole set.
    if (k < nAr) while (k > 0 && sameRRset(buf, starts[an + ns + k - 1]!, starts[an + ns + k]!)) k--;
    return keep(starts[an + ns + k]!, [an, ns, k], false);
  }
  if (trimAnswers) {
    let k = an;
    while (k > 0 && starts[k]! > room) k--;
    return keep(starts[k]!, [k, 0, 0], false);
  }
  return keep(qEnd, [0, 0, 0], true);
}

/** A TC reply: header and question, plus our OPT for EDNS clients. */
export function truncated(body: Buffer, q: Query, flags: number, opts: FinishOptions): Buffer {
  const qEnd = q.qEnd;
  const opt = q.edns ? buildOpt(opts.maxUdpSize, 0, q.dnssecOk, opts.ede) : null;
  const out = Buffer.allocUnsafe(qEnd + (opt ? opt.length : 0));
  body.copy(out, 0, 0, qEnd);
  out.writeUInt16BE(q.id, 0);
  out.writeUInt16BE((flags | FLAG.TC) & 0xffff, 2);
  out.writeUInt16BE(1, 4);
  out.writeUInt16BE(0, 6);
  out.writeUInt16BE(0, 8);
  out.writeUInt16BE(opt ? 1 : 0, 10);
  if (opt) opt.copy(out, qEnd);
  return out;
}

/** Copies the client's question bytes over a same-length question (case may differ). */
export function putQuestion(body: Buffer, clientQuery: Buffer, q: Query): void {
  clientQuery.copy(body, HEADER_LEN, HEADER_LEN, q.qEnd);
}
