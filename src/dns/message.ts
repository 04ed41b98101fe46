/**
 * DNS message codec for the miss path: decode a whole message (RFC 1035 §4.1) into a plain,
 * self-contained structure and encode it back with name compression (RFC 1035 §4.1.4).
 *
 * We do not use dns2 or dns-packet here: dns2 swallows malformed names
 * and truncation, drops EDNS options and writes bit by bit; dns-packet never compresses, so an
 * aliased Consul reply would grow from ~190 to ~350 octets and hit TC at 512.
 *
 * Rules this codec enforces, and why:
 * - Anything malformed throws WireError (code CDP_ERR_WIRE, becomes FORMERR/SERVFAIL at the edge);
 *   no other exception may escape decodeMessage. Truncation, label types 0x40/0x80 (RFC 6891 §5
 *   retired extended labels), labels > 63 and names > 255 octets (RFC 1035 §2.3.4), RDLENGTH
 *   overruns, RDATA whose names do not fill RDLENGTH exactly, and OPT with a non-root owner
 *   (RFC 6891 §6.1.2) are all errors.
 * - Compression pointers must point strictly before the start of the name segment that contains
 *   them. Real compressors only point at names already written, so this never rejects a genuine
 *   message, and it makes loops impossible: every jump lands lower than the last one. At most 127
 *   pointers per name, so a chain of pointers to pointers cannot make decoding slow.
 * - Trailing octets after the last record are ignored (and not carried), as BIND and miekg/dns do:
 *   RFC 1035 gives no rule, and the counts say where the message ends. Pass {strict: true} to
 *   reject them instead.
 * - Names are presentation strings without the trailing dot, case kept, '' for the root; a '.' or
 *   '\' inside a label is written \. and \\, other bytes outside 0x21..0x7e as \DDD. Compression
 *   matches suffixes byte for byte (case-sensitive), so decode(encode(m)) gives back m exactly and
 *   mixed 0x20 case is never lost by pointing at a differently-cased copy.
 * - RDATA names of the RFC 1035 types (NS, MD, MF, CNAME, SOA, MB, MG, MR, PTR, MINFO, MX) are
 *   compressed on output; the others we know (SRV per RFC 2782, NAPTR, RP, AFSDB, RT, SIG, PX,
 *   NXT, KX, DNAME, SVCB/HTTPS per RFC 9460) are written in full, because RFC 3597 §4 allows
 *   compression only for the well-known types. Later names may still point INTO those full names,
 *   as BIND 9.18 does (in the corpus SRV reply the glue A owner points at the SRV target): a
 *   pointer is decoded by whoever reads the owner, and the RDATA it lands in stays intact, so any
 *   decoder reads the same name.
 * - On decode, names inside those types' RDATA are decompressed (RFC 3597 §4: receivers SHOULD
 *   decompress RP, AFSDB, RT, SIG, PX, NXT, NAPTR and SRV too), so a Record can move to another
 *   message. All other RDATA, unknown types included (RFC 3597), is copied verbatim. RRSIG and
 *   NSEC names are never compressed (RFC 4034 §3.1.7, §4.1.1), so they are verbatim too.
 */
import { FLAG, TYPE } from './constants.js';

/** The only error the codec lets escape. rcode 1 = FORMERR (RFC 1035 §4.1.1). */
export class WireError extends Error {
  readonly code = 'CDP_ERR_WIRE';
  readonly rcode = 1;
  /** Octet offset in the input where the problem was found, -1 when not about input octets. */
  readonly offset: number;
  constructor(message: string, offset = -1) {
    super(offset >= 0 ? `${message} (at octet ${offset})` : message);
    this.name = 'WireError';
    this.offset = offset;
  }
}

interface Question {
  name: string;
  type: number;
  class: number;
}
export interface Record {
  name: string;
  type: number;
  class: number;
  /** Unsigned 32 bits as on the wire; for OPT these are extended RCODE, version and flags. */
  ttl: number;
  /** Raw RDATA; names inside the types rdataNames() knows are stored uncompressed. */
  rdata: Buffer;
}
export interface Message {
  id: number;
  /** The 16 flag bits of the header: QR, opcode, AA, TC, RD, RA, Z, AD, CD, RCODE. */
  flags: number;
  questions: Question[];
  answers: Record[];
  authorities: Record[];
  additionals: Record[];
}

/** RDATA field kinds of an RdataLayout: a positive number is that many fixed octets. */
export const FIELD_NAME = -1;
/** A <character-string>: one length octet and that many octets (RFC 1035 §3.3). */
const FIELD_STRING = -2;
/** Everything up to RDLENGTH. */
const FIELD_REST = -3;

export interface RdataLayout {
  /** Fixed octet counts, FIELD_NAME, FIELD_STRING or FIELD_REST, in wire order. */
  readonly fields: readonly number[];
  /** True only for the RFC 1035 types whose RDATA names may carry pointers on output. */
  readonly compress: boolean;
}

const N = FIELD_NAME;
const ONE_NAME_C: RdataLayout = { fields: [N], compress: true };
const LAYOUTS = new Map<number, RdataLayout>([
  [2, ONE_NAME_C], // NS
  [3, ONE_NAME_C], // MD
  [4, ONE_NAME_C], // MF
  [5, ONE_NAME_C], // CNAME
  [6, { fields: [N, N, 20], compress: true }], // SOA: MNAME RNAME SERIAL REFRESH RETRY EXPIRE MINIMUM
  [7, ONE_NAME_C], // MB
  [8, ONE_NAME_C], // MG
  [9, ONE_NAME_C], // MR
  [12, ONE_NAME_C], // PTR
  [14, { fields: [N, N], compress: true }], // MINFO
  [15, { fields: [2, N], compress: true }], // MX
  [17, { fields: [N, N], compress: false }], // RP (RFC 1183)
  [18, { fields: [2, N], compress: false }], // AFSDB (RFC 1183)
  [21, { fields: [2, N], compress: false }], // RT (RFC 1183)
  [24, { fields: [18, N, FIELD_REST], compress: false }], // SIG (RFC 2535): signer name
  [26, { fields: [2, N, N], compress: false }], // PX (RFC 2163)
  [30, { fields: [N, FIELD_REST], compress: false }], // NXT (RFC 2535)
  [33, { fields: [6, N], compress: false }], // SRV (RFC 2782): priority weight port target
  [35, { fields: [4, FIELD_STRING, FIELD_STRING, FIELD_STRING, N], compress: false }], // NAPTR (RFC 3403)
  [36, { fields: [2, N], compress: false }], // KX (RFC 2230)
  [39, { fields: [N], compress: false }], // DNAME (RFC 6672 §2.5: never compressed)
  [64, { fields: [2, N, FIELD_REST], compress: false }], // SVCB (RFC 9460 §2.2: target never compressed)
  [65, { fields: [2, N, FIELD_REST], compress: false }], // HTTPS (RFC 9460 §9)
]);

/** Where the names are in the RDATA of a type, or undefined when its RDATA is opaque to us. */
export function rdataNames(type: number): RdataLayout | undefined {
  return LAYOUTS.get(type);
}

const MAX_NAME = 255;
const MAX_LABEL = 63;
const MAX_MESSAGE = 65535;
const MAX_POINTER = 0x3fff;
const MAX_POINTERS = 127;

// Scratch space, reused by every call: the codec is synchronous, so nothing can interleave.
const NAME_BUF = Buffer.alloc(MAX_NAME + 1);
const PRES_BUF = Buffer.alloc(MAX_NAME * 4 + 4);
const RDATA_BUF = Buffer.alloc(MAX_MESSAGE + 4 * (MAX_NAME + 1));
const OUT_BUF = Buffer.alloc(MAX_MESSAGE + 1024);
/** Offsets of the labels of the last name parsed, relative to its first octet. */
const labelPos = new Int32Array(128);
let labelCount = 0;
/** Second return value of copyName: where the copied name ends in the output. */
let copyOut = 0;

/**
 * Copy src[s..e) to dst[d]. Small RDATA (A, AAAA, SRV fixed fields) is copied in JS: a native
 * Buffer.copy call costs more than the bytes do.
 */
function copyBytes(src: Buffer, s: number, e: number, dst: Buffer, d: number): void {
  if (e - s > 48) {
    src.copy(dst, d, s, e);
    return;
  }
  for (let i = s; i < e; i++) dst[d++] = src[i] as number;
}

/** A new Buffer (from the pool when small) holding src[s..e). */
function sliceCopy(src: Buffer, s: number, e: number): Buffer {
  const b = Buffer.allocUnsafe(e - s);
  copyBytes(src, s, e, b, 0);
  return b;
}

/**
 * Copy the name at buf[off] into out[o], following pointers, as uncompressed wire form.
 * Returns the offset just after the name in buf (after its first pointer, if any).
 */
function copyName(buf: Buffer, off: number, out: Buffer, o: number): number {
  const len = buf.length;
  let p = off;
  let segStart = off;
  let end = -1;
  let w = o;
  let hops = 0;
  for (;;) {
    if (p >= len) throw new WireError('name runs past the end of the message', p);
    const b = buf[p] as number;
    if (b === 0) {
      out[w++] = 0;
      if (end < 0) end = p + 1;
      break;
    }
    const kind = b & 0xc0;
    if (kind === 0xc0) {
      if (p + 1 >= len) throw new WireError('compression pointer runs past the end of the message', p);
      const target = ((b & 0x3f) << 8) | (buf[p + 1] as number);
      // Strictly before the current segment: no forward pointers, no loops (see file header).
      if (target >= segStart) throw new WireError('compression pointer does not point backwards', p);
      // Bound the work per name: a chain of pointers to pointers could otherwise take thousands
      // of hops. A real name has at most 127 labels, so it never needs more pointers than that
      // (miekg/dns and unbound use similar caps).
      if (++hops > MAX_POINTERS) throw new WireError('too many compression pointers in one name', off);
      if (end < 0) end = p + 2;
      p = segStart = target;
      continue;
    }
    if (kind !== 0) throw new WireError(`label type 0x${kind.toString(16)} is not supported`, p);
    if (p + 1 + b > len) throw new WireError('label runs past the end of the message', p);
    if (w - o + b + 2 > MAX_NAME) throw new WireError('name longer than 255 octets', off);
    out[w++] = b;
    for (let i = p + 1, e = p + 1 + b; i < e; i++) out[w++] = buf[i] as number;
    p += b + 1;
  }
  copyOut = w;
  return end;
}

/** Presentation form of the validated, uncompressed wire name at src[s]. */
function wireToPresentation(src: Buffer, s: number): string {
  let i = s;
  let p = 0;
  for (;;) {
    const len = src[i] as number;
    if (len === 0) break;
    if (p > 0) PRES_BUF[p++] = 0x2e;
    const e = i + 1 + len;
    for (let j = i + 1; j < e; j++) {
      const c = src[j] as number;
      if (c > 0x20 && c < 0x7f) {
        if (c === 0x2e || c === 0x5c) PRES_BUF[p++] = 0x5c;
        PRES_BUF[p++] = c;
      } else {
        PRES_BUF[p++] = 0x5c;
        PRES_BUF[p++] = 0x30 + ((c / 100) | 0);
        PRES_BUF[p++] = 0x30 + (((c / 10) | 0) % 10);
        PRES_BUF[p++] = 0x30 + (c % 10);
      }
    }
    i = e;
  }
  return PRES_BUF.toString('latin1', 0, p);
}

/** True when s[i] is preceded by an odd number of backslashes, i.e. is escaped. */
export function isEscapedAt(s: string, i: number): boolean {
  let k = i - 1;
  while (k >= 0 && s.charCodeAt(k) === 0x5c) k--;
  return ((i - 1 - k) & 1) === 1;
}

/**
 * Write the presentation name as uncompressed wire form at out[o] (at most name.length + 2
 * octets); fills labelPos/labelCount. Returns the wire length including the root octet.
 * A single trailing unescaped dot is accepted ('a.b.' and '.' are absolute forms).
 */
function presentationToWire(name: string, out: Buffer, o: number): number {
  let end = name.length;
  if (end > 0 && name.charCodeAt(end - 1) === 0x2e && !isEscapedAt(name, end - 1)) end--;
  labelCount = 0;
  if (end === 0) {
    out[o] = 0;
    return 1;
  }
  let w = o; // length octet of the current label
  let p = o + 1;
  let len = 0;
  let i = 0;
  labelPos[labelCount++] = 0;
  while (i < end) {
    let c = name.charCodeAt(i++);
    if (c === 0x2e) {
      if (len === 0) throw new WireError(`empty label in name "${name}"`);
      out[w] = len;
      w = p++;
      len = 0;
      labelPos[labelCount++] = w - o; // at most 127 labels fit in 255 octets, checked below
      continue;
    }
    if (c === 0x5c) {
      if (i >= end) throw new WireError(`dangling backslash in name "${name}"`);
      c = name.charCodeAt(i++);
      if (c >= 0x30 && c <= 0x39) {
        const d1 = name.charCodeAt(i) - 0x30;
        const d2 = name.charCodeAt(i + 1) - 0x30;
        if (i + 2 > end || !(d1 >= 0 && d1 <= 9) || !(d2 >= 0 && d2 <= 9)) {
          throw new WireError(`bad \\DDD escape in name "${name}"`);
        }
        c = (c - 0x30) * 100 + d1 * 10 + d2;
        i += 2;
        if (c > 255) throw new WireError(`\\DDD escape above 255 in name "${name}"`);
      }
    } else if (c > 0xff) {
      throw new WireError(`character U+${c.toString(16)} cannot be written in a DNS name`);
    }
    if (++len > MAX_LABEL) throw new WireError(`label longer than 63 octets in name "${name}"`);
    if (p - o + 2 > MAX_NAME) throw new WireError('name longer than 255 octets');
    out[p++] = c;
  }
  if (len === 0) throw new WireError(`empty label in name "${name}"`);
  out[w] = len;
  out[p++] = 0;
  return p - o;
}

/**
 * Validate an uncompressed wire name at src[s] that must end before `limit`; fills
 * labelPos/labelCount. Returns its length including the root octet. Stored RDATA must not carry
 * pointers: they would mean nothing once the record sits in another message.
 */
function plainNameLength(src: Buffer, s: number, limit: number): number {
  let p = s;
  labelCount = 0;
  for (;;) {
    if (p >= limit) throw new WireError('name in RDATA runs past RDLENGTH');
    const b = src[p] as number;
    if (b === 0) return p + 1 - s;
    if (b > MAX_LABEL) throw new WireError('compressed or invalid label in stored RDATA');
    if (p + 1 - s + b + 1 > MAX_NAME) throw new WireError('name in RDATA longer than 255 octets');
    labelPos[labelCount++] = p - s;
    p += b + 1;
  }
}

/** Decode the (possibly compressed) name at buf[off]. */
export function readName(buf: Buffer, off: number): { name: string; end: number } {
  if (!Number.isInteger(off) || off < 0) throw new WireError(`bad name offset ${off}`);
  const end = copyName(buf, off, NAME_BUF, 0);
  return { name: wireToPresentation(NAME_BUF, 0), end };
}

/** Uncompressed wire form of a presentation name (throws WireError when it is not a valid name). */
export function nameToWire(name: string): Buffer {
  const len = presentationToWire(name, NAME_BUF, 0);
  return sliceCopy(NAME_BUF, 0, len);
}

let nameEnd = 0;
function readNameStr(buf: Buffer, off: number): string {
  nameEnd = copyName(buf, off, NAME_BUF, 0);
  return wireToPresentation(NAME_BUF, 0);
}

function u16(buf: Buffer, p: number): number {
  return ((buf[p] as number) << 8) | (buf[p + 1] as number);
}

/** Rebuild RDATA buf[rs..re) of a type with names, writing those names uncompressed. */
function decompressRdata(buf: Buffer, rs: number, re: number, layout: RdataLayout): Buffer {
  const fields = layout.fields;
  let p = rs;
  let o = 0;
  for (let f = 0; f < fields.length; f++) {
    const kind = fields[f] as number;
    if (kind === FIELD_NAME) {
      p = copyName(buf, p, RDATA_BUF, o);
      if (p > re) throw new WireError('name in RDATA runs past RDLENGTH', rs);
      o = copyOut;
    } else if (kind === FIELD_STRING) {
      if (p >= re) throw new WireError('character-string runs past RDLENGTH', rs);
      const n = 1 + (buf[p] as number);
      if (p + n > re) throw new WireError('character-string runs past RDLENGTH', p);
      copyBytes(buf, p, p + n, RDATA_BUF, o);
      p += n;
      o += n;
    } else {
      const n = kind === FIELD_REST ? re - p : kind;
      if (p + n > re) throw new WireError('RDATA shorter than its type requires', rs);
      copyBytes(buf, p, p + n, RDATA_BUF, o);
      p += n;
      o += n;
    }
  }
  if (p !== re) throw new WireError('RDATA longer than its type allows', rs);
  if (o > MAX_MESSAGE) throw new WireError('decompressed RDATA longer than 65535 octets', rs);
  return sliceCopy(RDATA_BUF, 0, o);
}

function decodeRecords(buf: Buffer, p: number, count: number, out: Record[]): number {
  const len = buf.length;
  for (let k = 0; k < count; k++) {
    const start = p;
    const name = readNameStr(buf, p);
    p = nameEnd;
    if (p + 10 > len) throw new WireError('record header runs past the end of the message', p);
    const type = u16(buf, p);
    const klass = u16(buf, p + 2);
    const ttl = buf.readUInt32BE(p + 4);
    const rdlength = u16(buf, p + 8);
    p += 10;
    const re = p + rdlength;
    if (re > len) throw new WireError('RDLENGTH runs past the end of the message', p - 2);
    if (type === TYPE.OPT && name !== '') throw new WireError('OPT record with a non-root owner', start);
    const layout = rdlength === 0 ? undefined : LAYOUTS.get(type);
    // An empty RDATA is legal for any type (RFC 2136 deletions), so it is carried as is.
    const rdata = layout ? decompressRdata(buf, p, re, layout) : sliceCopy(buf, p, re);
    out.push({ name, type, class: klass, ttl, rdata });
    p = re;
  }
  return p;
}

/**
 * Decode a whole message. Throws WireError on anything malformed (see the file header for the
 * rules). Trailing octets after the last record are ignored unless opts.strict.
 */
export function decodeMessage(buf: Buffer, opts?: { strict?: boolean }): Message {
  const len = buf.length;
  if (len < 12) throw new WireError(`message of ${len} octets is shorter than the 12-octet header`);
  const qd = u16(buf, 4);
  const an = u16(buf, 6);
  const ns = u16(buf, 8);
  const ar = u16(buf, 10);
  // Cheap bound before any allocation: a question takes >= 5 octets, a record >= 11.
  if (12 + qd * 5 + (an + ns + ar) * 11 > len) {
    throw new WireError('section counts need more octets than the message has');
  }
  const m: Message = {
    id: u16(buf, 0),
    flags: u16(buf, 2),
    questions: [],
    answers: [],
    authorities: [],
    additionals: [],
  };
  let p = 12;
  for (let k = 0; k < qd; k++) {
    const name = readNameStr(buf, p);
    p = nameEnd;
    if (p + 4 > len) throw new WireError('question runs past the end of the message', p);
    m.questions.push({ name, type: u16(buf, p), class: u16(buf, p + 2) });
    p += 4;
  }
  p = decodeRecords(buf, p, an, m.answers);
  p = decodeRecords(buf, p, ns, m.authorities);
  p = decodeRecords(buf, p, ar, m.additionals);
  if (opts?.strict && p !== len) throw new WireError(`${len - p} trailing octets after the last record`, p);
  return m;
}

// ---------------------------------------------------------------------------------------------
// Encoding

const labelHash = new Int32Array(128);

/**
 * True when the name written at out[ptr] (possibly compressed, written by us, so well formed)
 * has exactly the octets of the uncompressed suffix at out[at..]: guards against hash collisions.
 */
function sameName(out: Buffer, ptr: number, at: number): boolean {
  let c = ptr;
  let q = at;
  for (;;) {
    let b = out[c] as number;
    while (b >= 0xc0) {
      c = ((b & 0x3f) << 8) | (out[c + 1] as number);
      b = out[c] as number;
    }
    if (b !== out[q]) return false;
    if (b === 0) return true;
    for (let i = 1; i <= b; i++) if (out[c + i] !== out[q + i]) return false;
    c += b + 1;
    q += b + 1;
  }
}

/**
 * The name's uncompressed wire form sits at out[o..o+wireLen) with labelPos filled. Replace the
 * longest suffix already written by a pointer (when `compress`), and remember every suffix written
 * in full so later names can point at it. Suffixes are keyed by a hash of their exact octets
 * (case-sensitive, see the file header) and confirmed octet by octet, so no strings are built.
 * Returns the new end of the name in out.
 */
function compressAt(out: Buffer, o: number, wireLen: number, compress: boolean, dict: Map<number, number>): number {
  // Suffix hashes from the last label back: FNV-1a over the label octets, seeded by the parent.
  let h = 0x811c9dc5;
  for (let i = labelCount - 1; i >= 0; i--) {
    const s = o + (labelPos[i] as number);
    const e = s + 1 + (out[s] as number);
    for (let j = s; j < e; j++) h = Math.imul(h ^ (out[j] as number), 0x01000193);
    labelHash[i] = h;
  }
  for (let i = 0; i < labelCount; i++) {
    const at = o + (labelPos[i] as number);
    const key = labelHash[i] as number;
    const ptr = dict.get(key);
    if (ptr === undefined) {
      if (at <= MAX_POINTER) dict.set(key, at);
    } else if (compress && sameName(out, ptr, at)) {
      out[at] = 0xc0 | (ptr >> 8);
      out[at + 1] = ptr & 0xff;
      return at + 2;
    }
  }
  return o + wireLen;
}

function checkU(v: number, max: number, what: string): number {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new WireError(`${what} ${v} out of range`);
  return v;
}

function put16(out: Buffer, o: number, v: number): void {
  out[o] = v >>> 8;
  out[o + 1] = v & 0xff;
}

function put32(out: Buffer, o: number, v: number): void {
  out[o] = v >>> 24;
  out[o + 1] = (v >>> 16) & 0xff;
  out[o + 2] = (v >>> 8) & 0xff;
  out[o + 3] = v & 0xff;
}

/** Write RDATA with its names (compressing only where layout.compress). Returns the new offset. */
function writeRdata(out: Buffer, o: number, rd: Buffer, layout: RdataLayout, dict: Map<number, number>): number {
  const fields = layout.fields;
  const rl = rd.length;
  let p = 0;
  for (let f = 0; f < fields.length; f++) {
    const kind = fields[f] as number;
    if (kind === FIELD_NAME) {
      const n = plainNameLength(rd, p, rl);
      copyBytes(rd, p, p + n, out, o);
      o = compressAt(out, o, n, layout.compress, dict);
      p += n;
    } else if (kind === FIELD_STRING) {
      if (p >= rl) throw new WireError('character-string runs past RDATA');
      const n = 1 + (rd[p] as number);
      if (p + n > rl) throw new WireError('character-string runs past RDATA');
      copyBytes(rd, p, p + n, out, o);
      p += n;
      o += n;
    } else {
      const n = kind === FIELD_REST ? rl - p : kind;
      if (p + n > rl) throw new WireError('RDATA shorter than its type requires');
      copyBytes(rd, p, p + n, out, o);
      p += n;
      o += n;
    }
  }
  if (p !== rl) throw new WireError('RDATA longer than its type allows');
  return o;
}

function writeRecord(out: Buffer, o: number, r: Record, dict: Map<number, number>): number {
  const type = checkU(r.type, 0xffff, 'type');
  if (type === TYPE.OPT) {
    out[o++] = 0; // RFC 6891 §6.1.2: the OPT owner is the root
  } else {
    const wl = presentationToWire(r.name, out, o);
    o = compressAt(out, o, wl, true, dict);
  }
  put16(out, o, type);
  put16(out, o + 2, checkU(r.class, 0xffff, 'class'));
  put32(out, o + 4, checkU(r.ttl, 0xffffffff, 'ttl'));
  const rs = o + 10;
  const rd = r.rdata;
  const layout = rd.length === 0 ? undefined : LAYOUTS.get(type);
  let re: number;
  if (layout) {
    re = writeRdata(out, rs, rd, layout, dict);
  } else {
    copyBytes(rd, 0, rd.length, out, rs);
    re = rs + rd.length;
  }
  if (re - rs > 0xffff) throw new WireError('RDATA longer than 65535 octets');
  put16(out, o + 8, re - rs);
  return re;
}

/** Octets this message can take at most, uncompressed (a name takes <= its length + 2). */
function sizeBound(m: Message): number {
  let n = 12;
  for (const q of m.questions) n += q.name.length + 6;
  for (const sec of [m.answers, m.authorities, m.additionals]) {
    for (const r of sec) n += r.name.length + 12 + r.rdata.length;
  }
  return n;
}

/**
 * Encode with name compression. With opts.maxSize (a UDP payload size; RFC 6891 §6.2.5 treats
 * values below 512 as 512) a message that does not fit first loses whole additional records from
 * the end, keeping OPT, without TC (RFC 2181 §9: missing additional data does not need TC); if
 * the answer and authority sections still do not fit, the result is the header and question (and
 * OPT) with TC set and no records, so the client retries over TCP (RFC 7766 §5).
 * With opts.trimAnswers (a TCP reply, at most 65,535 octets) the answers that fit are kept
 * instead, authority dropped, and no TC: over TCP there is nowhere else to retry (Consul's
 * trimTCPResponse does the same).
 */
export function encodeMessage(m: Message, opts?: { maxSize?: number; trimAnswers?: boolean }): Buffer {
  const qd = m.questions.length;
  const an = m.answers.length;
  const ns = m.authorities.length;
  const ar = m.additionals.length;
  if (qd > 0xffff || an > 0xffff || ns > 0xffff || ar > 0xffff)
    throw new WireError('section with more than 65535 entries');
  const bound = sizeBound(m);
  const out = bound <= OUT_BUF.length ? OUT_BUF : Buffer.alloc(bound);
  const dict = new Map<number, number>();
  put16(out, 0, checkU(m.id, 0xffff, 'id'));
  put16(out, 2, checkU(m.flags, 0xffff, 'flags'));
  put16(out, 4, qd);
  put16(out, 6, an);
  put16(out, 8, ns);
  put16(out, 10, ar);
  let o = 12;
  for (let k = 0; k < qd; k++) {
    const q = m.questions[k] as Question;
    const wl = presentationToWire(q.name, out, o);
    o = compressAt(out, o, wl, true, dict);
    put16(out, o, checkU(q.type, 0xffff, 'type'));
    put16(out, o + 2, checkU(q.class, 0xffff, 'class'));
    o += 4;
  }
  const afterQuestion = o;
  for (let k = 0; k < an; k++) o = writeRecord(out, o, m.answers[k] as Record, dict);
  for (let k = 0; k < ns; k++) o = writeRecord(out, o, m.authorities[k] as Record, dict);
  const afterAuthority = o;
  const max = opts?.maxSize === undefined ? MAX_MESSAGE : Math.min(MAX_MESSAGE, Math.max(512, opts.maxSize));
  for (let k = 0; k < ar; k++) o = writeRecord(out, o, m.additionals[k] as Record, dict);
  if (o <= max) {
    // Not from the shared pool: the result is often cached for long, and a pooled slice would
    // pin its whole 8 KiB slab (and hide from the cache's byte accounting).
    const res = Buffer.allocUnsafeSlow(o);
    copyBytes(out, 0, o, res, 0);
    return res;
  }
  if (o > MAX_MESSAGE && opts?.maxSize === undefined && !opts?.trimAnswers)
    throw new WireError('message longer than 65535 octets');
  return truncate(out, m, max, afterQuestion, afterAuthority, opts?.trimAnswers === true);
}

/** Cut an encoded message that exceeds `max` (see encodeMessage). Re-walks the additionals. */
function truncate(
  out: Buffer,
  m: Message,
  max: number,
  afterQuestion: number,
  afterAuthority: number,
  trimAnswers: boolean,
): Buffer {
  const adds = m.additionals;
  const optIdx = adds.findIndex((r) => r.type === TYPE.OPT);
  const opt = optIdx >= 0 ? (adds[optIdx] as Record) : undefined;
  const optLen = opt ? 11 + opt.rdata.length : 0;
  // Keep additional records from the front while they (and OPT, wherever it sits) still fit.
  const ends: number[] = [afterAuthority];
  let kept = 0;
  for (let k = 0; k < adds.length; k++) {
    const e = skipRecord(out, ends[k] as number);
    const need = e + (!opt || optIdx <= k ? 0 : optLen);
    if (need > max) break;
    ends.push(e);
    kept++;
  }
  // Never leave part of an RRset behind (RFC 2181 §5): a resolver would take it as the whole set.
  const cut = adds[kept];
  if (cut) {
    const cutName = cut.name.toLowerCase();
    for (let k = kept - 1; k >= 0; k--) {
      const r = adds[k] as Record;
      if (r.type !== cut.type || r.class !== cut.class || r.type === TYPE.OPT || r.name.toLowerCase() !== cutName)
        break;
      kept--;
    }
  }
  const p = ends[kept] as number;
  let optKept = optIdx >= 0 && optIdx < kept;
  let head: number;
  let flags = m.flags;
  let counts: [number, number, number];
  if (afterAuthority + (opt ? optLen : 0) <= max) {
    head = p;
    counts = [m.answers.length, m.authorities.length, kept + (opt && !optKept ? 1 : 0)];
  } else if (trimAnswers) {
    head = afterQuestion;
    let n = 0;
    while (n < m.answers.length) {
      const next = skipRecord(out, head);
      if (next + optLen > max) break;
      head = next;
      n++;
    }
    optKept = false;
    counts = [n, 0, opt ? 1 : 0];
  } else {
    head = afterQuestion;
    optKept = false;
    flags |= FLAG.TC;
    counts = [0, 0, opt ? 1 : 0];
  }
  const total = head + (opt && !optKept ? optLen : 0);
  const res = Buffer.allocUnsafeSlow(total);
  out.copy(res, 0, 0, head);
  put16(res, 2, flags);
  put16(res, 6, counts[0]);
  put16(res, 8, counts[1]);
  put16(res, 10, counts[2]);
  if (opt && !optKept) {
    // OPT is position independent: root owner, no names in its RDATA.
    res[head] = 0;
    put16(res, head + 1, TYPE.OPT);
    put16(res, head + 3, opt.class);
    put32(res, head + 5, opt.ttl);
    put16(res, head + 9, opt.rdata.length);
    opt.rdata.copy(res, head + 11);
  }
  return res;
}

/** End of the encoded record at out[p] (already known to be well formed: we wrote it). */
function skipRecord(out: Buffer, p: number): number {
  for (;;) {
    const b = out[p] as number;
    if (b === 0) {
      p += 1;
      break;
    }
    if ((b & 0xc0) === 0xc0) {
      p += 2;
      break;
    }
    p += b + 1;
  }
  return p + 10 + u16(out, p + 8);
}

// ---------------------------------------------------------------------------------------------
// Name mapping (used by the alias rewrite)

const mapped: string[] = [];

/**
 * RDATA of `type` with every name it holds passed through fn; the same Buffer when fn changed
 * nothing (or the type has no names we know). Throws WireError when the RDATA is malformed.
 */
export function mapRdataNames(type: number, rdata: Buffer, fn: (name: string) => string): Buffer {
  const layout = rdata.length === 0 ? undefined : LAYOUTS.get(type);
  if (!layout) return rdata;
  const fields = layout.fields;
  const rl = rdata.length;
  let changed = false;
  let p = 0;
  let names = 0;
  for (let f = 0; f < fields.length; f++) {
    const kind = fields[f] as number;
    if (kind === FIELD_NAME) {
      const n = plainNameLength(rdata, p, rl);
      const name = wireToPresentation(rdata, p);
      const to = fn(name);
      if (to !== name) changed = true;
      mapped[names++] = to;
      p += n;
    } else if (kind === FIELD_STRING) {
      if (p >= rl) throw new WireError('character-string runs past RDATA');
      p += 1 + (rdata[p] as number);
    } else {
      p += kind === FIELD_REST ? rl - p : kind;
    }
    if (p > rl) throw new WireError('RDATA shorter than its type requires');
  }
  if (p !== rl) throw new WireError('RDATA longer than its type allows');
  if (!changed) return rdata;
  let o = 0;
  p = 0;
  names = 0;
  for (let f = 0; f < fields.length; f++) {
    const kind = fields[f] as number;
    if (kind === FIELD_NAME) {
      p += plainNameLength(rdata, p, rl);
      o += presentationToWire(mapped[names++] as string, RDATA_BUF, o);
    } else {
      const n = kind === FIELD_STRING ? 1 + (rdata[p] as number) : kind === FIELD_REST ? rl - p : kind;
      copyBytes(rdata, p, p + n, RDATA_BUF, o);
      p += n;
      o += n;
    }
  }
  return sliceCopy(RDATA_BUF, 0, o);
}

function mapRecords(rs: Record[], fn: (name: string) => string): Record[] {
  const out = new Array<Record>(rs.length);
  for (let k = 0; k < rs.length; k++) {
    const r = rs[k] as Record;
    const name = r.type === TYPE.OPT ? r.name : fn(r.name);
    const rdata = mapRdataNames(r.type, r.rdata, fn);
    out[k] = name === r.name && rdata === r.rdata ? r : { name, type: r.type, class: r.class, ttl: r.ttl, rdata };
  }
  return out;
}

/**
 * A new Message with fn applied to every name: questions, owners, and names in RDATA of the types
 * rdataNames() knows. The input is not modified; unchanged records are shared, not copied.
 */
export function mapNames(m: Message, fn: (name: string) => string): Message {
  return {
    id: m.id,
    flags: m.flags,
    questions: m.questions.map((q) => {
      const name = fn(q.name);
      return name === q.name ? q : { name, type: q.type, class: q.class };
    }),
    answers: mapRecords(m.answers, fn),
    authorities: mapRecords(m.authorities, fn),
    additionals: mapRecords(m.additionals, fn),
  };
}
