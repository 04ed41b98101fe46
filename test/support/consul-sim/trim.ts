/*
 * Reply size limits: trimUDPResponse and trimTCPResponse with their helpers (indexRRs, syncExtra,
 * dnsBinaryTruncate). Sizes are measured with the simulator's own encoder, compressed or not as
 * Consul measures them.
 */
import { T, encodeMsg, type Msg, type Query, type RR } from './wire.js';

/** trimUDPResponse: maxUDPAnswerLimit and maxUDPDatagramSize (math.MaxUint16 - 68). */
const MAX_UDP_ANSWER_LIMIT = 8;
const MAX_UDP_DATAGRAM = 65535 - 68;

/** trimUDPResponse: count cap for 512-byte (non-EDNS) clients measured uncompressed, then the
 *  size limit (advertised EDNS size, capped at 65467) minus 8 for the UDP header. */
export function trimUDP(q: Query, m: Msg, udpLimit: number): boolean {
  const numAnswers = m.answer.length;
  const hasExtra = m.extra.length > 0;
  let maxSize = 512;
  if (q.edns && q.edns.udpSize > maxSize) maxSize = q.edns.udpSize;
  if (maxSize > MAX_UDP_DATAGRAM) maxSize = MAX_UDP_DATAGRAM;
  const index = hasExtra ? indexRRs(m.extra) : null;
  const maxAnswers = Math.min(MAX_UDP_ANSWER_LIMIT, udpLimit);
  let compress = true;
  if (maxSize === 512 && numAnswers > maxAnswers) {
    // "We disable computation of Len ONLY for non-eDNS request (512 bytes)"
    compress = false;
    m.answer = m.answer.slice(0, maxAnswers);
    if (index) syncExtra(index, m);
  }
  while (m.answer.length > 1 && encodeMsg(m, compress).length > maxSize - 8) {
    if (m.ns.length) m.ns = []; // first try to drop the NS section
    if (encodeMsg(m, compress).length - maxSize > 100)
      m.answer = m.answer.slice(0, binaryTruncate(m, maxSize, index, compress));
    else m.answer = m.answer.slice(0, -1);
    if (index) syncExtra(index, m);
  }
  return m.answer.length < numAnswers;
}

/** trimTCPResponse: 65523 bytes, at most 4096 answers (1024 for SRV). */
export function trimTCP(q: Query, m: Msg): boolean {
  const maxSize = 65523;
  const hasExtra = m.extra.length > 0;
  const truncateAt = q.qtype === T.SRV ? 1024 : 4096;
  if (m.answer.length > truncateAt) m.answer = m.answer.slice(0, truncateAt);
  const index = hasExtra ? indexRRs(m.extra) : null;
  let truncated = false;
  while (m.answer.length > 1 && encodeMsg(m, true).length > maxSize) {
    truncated = true;
    if (m.ns.length) m.ns = [];
    if (encodeMsg(m, true).length - maxSize > 100)
      m.answer = m.answer.slice(0, binaryTruncate(m, maxSize, index, true));
    else m.answer = m.answer.slice(0, -1);
    if (index) syncExtra(index, m);
  }
  return truncated;
}

/** indexRRs: first RR per lowercased owner name (the OPT record, owner ".", included). */
function indexRRs(rrs: RR[]): Map<string, RR> {
  const idx = new Map<string, RR>();
  for (const rr of rrs) {
    const k = rr.name.toLowerCase();
    if (!idx.has(k)) idx.set(k, rr);
  }
  return idx;
}

/** syncExtra: keep only the Additional records SRV targets still need (CNAME chains followed).
 *  Everything else - node-meta TXT, and the OPT record itself - is dropped, as in Consul. */
function syncExtra(index: Map<string, RR>, m: Msg): void {
  const extra: RR[] = [];
  const resolved = new Set<string>();
  for (const a of m.answer) {
    if (a.d.k !== 'srv') continue;
    let target = a.d.target.toLowerCase();
    for (;;) {
      if (resolved.has(target)) break;
      resolved.add(target);
      const rr = index.get(target);
      if (!rr) break;
      extra.push(rr);
      if (rr.d.k === 'name' && rr.type === T.CNAME) target = rr.d.n.toLowerCase();
      else break;
    }
  }
  m.extra = extra;
}

/** dnsBinaryTruncate: the largest answer count that fits maxSize. */
function binaryTruncate(m: Msg, maxSize: number, index: Map<string, RR> | null, compress: boolean): number {
  const original = m.answer;
  let start = 0;
  let end = original.length + 1;
  while (end - start > 1) {
    const median = start + Math.floor((end - start) / 2);
    m.answer = original.slice(0, median);
    if (index) syncExtra(index, m);
    const len = encodeMsg(m, compress).length;
    if (len <= maxSize) {
      if (maxSize - len < 10) {
        m.answer = original;
        return median;
      }
      start = median;
    } else end = median;
  }
  m.answer = original;
  return start;
}
