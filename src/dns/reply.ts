/**
 * Rendering: turn an upstream reply into the reply a client gets. The upstream's OPT is removed
 * (EDNS is hop by hop, RFC 6891 §6.1.1) and ours appended when the client used EDNS; the header
 * gets the client's ID, RD and CD, RA=1 and the upstream's AA and rcode; the question is the
 * client's exact bytes (so 0x20 case survives). A reply that does not fit the client's UDP limit
 * becomes a well-formed TC reply: header, question and OPT (RFC 1035 §4.2.1, RFC 6891 §7).
 */
import { buildOpt, type Query, type ReplyLayout } from './wire.js';
import { FLAG, HEADER_LEN } from './constants.js';

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
}

/**
 * Finishes a reply body (no OPT, question already the client's) for one client: ID, flags, OPT,
 * size limit. `body` is not modified when a new buffer is needed; otherwise it is patched in place
 * (callers pass a private copy).
 */
export function finish(body: Buffer, q: Query, flags: number, opts: FinishOptions): Buffer {
  let out = body;
  if (q.edns) {
    const opt = buildOpt(opts.maxUdpSize, 0, q.dnssecOk, opts.ede);
    out = Buffer.allocUnsafe(body.length + opt.length);
    body.copy(out, 0);
    opt.copy(out, body.length);
    out.writeUInt16BE(body.readUInt16BE(10) + 1, 10);
  }
  out.writeUInt16BE(q.id, 0);
  out.writeUInt16BE(flags & 0xffff, 2);
  if (opts.udp && out.length > udpLimit(q, opts.maxUdpSize)) return truncated(out, q, flags, opts);
  return out;
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
