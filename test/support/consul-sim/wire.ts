/*
 * DNS wire format (RFC 1035 §4.1; OPT RFC 6891; ECS RFC 7871). The simulator's own small codec,
 * so that it can measure uncompressed sizes the way miekg's Msg.Len() does in trimUDPResponse, and
 * so that it shares no code with the proxy it is the reference for.
 */
import net from 'node:net';

export const T = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  TXT: 16,
  AAAA: 28,
  SRV: 33,
  OPT: 41,
  AXFR: 252,
  ANY: 255,
} as const;
export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;

export type RData =
  | { k: 'ip'; b: Buffer }
  | { k: 'name'; n: string }
  | { k: 'srv'; priority: number; weight: number; port: number; target: string }
  | {
      k: 'soa';
      mname: string;
      rname: string;
      serial: number;
      refresh: number;
      retry: number;
      expire: number;
      minimum: number;
    }
  | { k: 'txt'; s: string[] }
  | { k: 'raw'; b: Buffer };

export interface RR {
  name: string;
  type: number;
  cls: number;
  ttl: number;
  d: RData;
}

export interface Ecs {
  family: number;
  source: number;
  addr: Buffer;
}

export interface Query {
  id: number;
  opcode: number;
  rd: boolean;
  cd: boolean;
  /** Question labels as received (case kept: 0x20). */
  labels: string[];
  /** Question name as received, FQDN with trailing dot. */
  name: string;
  qtype: number;
  qclass: number;
  edns: { udpSize: number; ecs: Ecs | null } | null;
}

export interface Msg {
  id: number;
  opcode: number;
  aa: boolean;
  tc: boolean;
  rd: boolean;
  ra: boolean;
  cd: boolean;
  rcode: number;
  q: { labels: string[]; qtype: number; qclass: number } | null;
  answer: RR[];
  ns: RR[];
  extra: RR[];
}

class DecodeError extends Error {
  readonly code = 'SIM_DNS_DECODE';
}

export function readName(buf: Buffer, off: number): { labels: string[]; end: number } {
  const labels: string[] = [];
  let end = -1;
  let jumps = 0;
  for (;;) {
    if (off >= buf.length) throw new DecodeError('name past end');
    const len = buf[off]!;
    if (len === 0) {
      if (end < 0) end = off + 1;
      break;
    }
    if ((len & 0xc0) === 0xc0) {
      if (off + 1 >= buf.length) throw new DecodeError('pointer past end');
      if (end < 0) end = off + 2;
      if (++jumps > 64) throw new DecodeError('compression loop');
      off = ((len & 0x3f) << 8) | buf[off + 1]!;
      continue;
    }
    if (len > 63 || off + 1 + len > buf.length) throw new DecodeError('bad label');
    labels.push(buf.toString('latin1', off + 1, off + 1 + len));
    off += 1 + len;
  }
  return { labels, end };
}

/** Parse a query. Returns null for messages we must ignore (responses, shorter than a header). */
export function parseQuery(buf: Buffer): Query | { formerr: true; id: number; opcode: number } | null {
  if (buf.length < 12) return null;
  const id = buf.readUInt16BE(0);
  const flags = buf.readUInt16BE(2);
  if (flags & 0x8000) return null; // a response: miekg's DefaultMsgAcceptFunc ignores it
  const opcode = (flags >> 11) & 0xf;
  const qd = buf.readUInt16BE(4);
  if (qd !== 1) return { formerr: true, id, opcode };
  try {
    const n = readName(buf, 12);
    let off = n.end;
    if (off + 4 > buf.length) throw new DecodeError('short question');
    const qtype = buf.readUInt16BE(off);
    const qclass = buf.readUInt16BE(off + 2);
    off += 4;
    const skip = buf.readUInt16BE(6) + buf.readUInt16BE(8);
    const ar = buf.readUInt16BE(10);
    let edns: Query['edns'] = null;
    for (let i = 0; i < skip + ar; i++) {
      const rn = readName(buf, off);
      off = rn.end;
      if (off + 10 > buf.length) throw new DecodeError('short rr');
      const type = buf.readUInt16BE(off);
      const cls = buf.readUInt16BE(off + 2);
      const rdlen = buf.readUInt16BE(off + 8);
      const rdStart = off + 10;
      off = rdStart + rdlen;
      if (off > buf.length) throw new DecodeError('short rdata');
      if (i >= skip && type === T.OPT && edns === null) {
        let ecs: Ecs | null = null;
        for (let o = rdStart; o + 4 <= rdStart + rdlen;) {
          const code = buf.readUInt16BE(o);
          const olen = buf.readUInt16BE(o + 2);
          if (code === 8 && olen >= 4) {
            ecs = {
              family: buf.readUInt16BE(o + 4),
              source: buf[o + 6]!,
              addr: Buffer.from(buf.subarray(o + 8, o + 4 + olen)),
            };
          }
          o += 4 + olen;
        }
        edns = { udpSize: cls, ecs };
      }
    }
    const name = n.labels.length ? n.labels.join('.') + '.' : '.';
    return { id, opcode, rd: !!(flags & 0x100), cd: !!(flags & 0x10), labels: n.labels, name, qtype, qclass, edns };
  } catch (err) {
    if (err instanceof DecodeError) return { formerr: true, id, opcode };
    throw err;
  }
}

export function splitName(name: string): string[] {
  if (name === '.' || name === '') return [];
  const s = name.endsWith('.') ? name.slice(0, -1) : name;
  return s.split('.');
}

/** Encoder with optional name compression (RFC 1035 §4.1.4), keyed on lowercased suffixes. */
class Writer {
  buf = Buffer.allocUnsafe(512);
  pos = 0;
  private names: Map<string, number> | null;
  constructor(compress: boolean) {
    this.names = compress ? new Map() : null;
  }
  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const nb = Buffer.allocUnsafe(size);
    this.buf.copy(nb, 0, 0, this.pos);
    this.buf = nb;
  }
  u8(v: number): void {
    this.ensure(1);
    this.buf[this.pos++] = v & 0xff;
  }
  u16(v: number): void {
    this.ensure(2);
    this.buf.writeUInt16BE(v & 0xffff, this.pos);
    this.pos += 2;
  }
  u32(v: number): void {
    this.ensure(4);
    this.buf.writeUInt32BE(v >>> 0, this.pos);
    this.pos += 4;
  }
  bytes(b: Buffer): void {
    this.ensure(b.length);
    b.copy(this.buf, this.pos);
    this.pos += b.length;
  }
  /** `usePtr` false: the name may be pointed to later but is itself written in full. */
  labels(labels: string[], usePtr = true): void {
    for (let i = 0; i < labels.length; i++) {
      if (this.names) {
        const key = labels.slice(i).join('.').toLowerCase();
        const at = this.names.get(key);
        if (at !== undefined && usePtr) {
          this.u16(0xc000 | at);
          return;
        }
        if (this.pos < 0x3fff) this.names.set(key, this.pos);
      }
      const l = Buffer.from(labels[i]!, 'latin1');
      this.u8(Math.min(l.length, 63));
      this.bytes(l.subarray(0, 63));
    }
    this.u8(0);
  }
  name(n: string): void {
    this.labels(splitName(n));
  }
}

export function encodeMsg(m: Msg, compress: boolean): Buffer {
  const w = new Writer(compress);
  w.u16(m.id);
  w.u16(
    0x8000 |
      ((m.opcode & 0xf) << 11) |
      (m.aa ? 0x400 : 0) |
      (m.tc ? 0x200 : 0) |
      (m.rd ? 0x100 : 0) |
      (m.ra ? 0x80 : 0) |
      (m.cd ? 0x10 : 0) |
      (m.rcode & 0xf),
  );
  w.u16(m.q ? 1 : 0);
  w.u16(m.answer.length);
  w.u16(m.ns.length);
  w.u16(m.extra.length);
  if (m.q) {
    w.labels(m.q.labels);
    w.u16(m.q.qtype);
    w.u16(m.q.qclass);
  }
  for (const sec of [m.answer, m.ns, m.extra]) for (const rr of sec) writeRR(w, rr);
  return w.buf.subarray(0, w.pos);
}

function writeRR(w: Writer, rr: RR): void {
  w.name(rr.name);
  w.u16(rr.type);
  w.u16(rr.cls);
  w.u32(rr.ttl);
  const lenAt = w.pos;
  w.u16(0);
  const d = rr.d;
  switch (d.k) {
    case 'ip':
    case 'raw':
      w.bytes(d.b);
      break;
    case 'name':
      w.name(d.n);
      break;
    case 'srv':
      w.u16(d.priority);
      w.u16(d.weight);
      w.u16(d.port);
      // RFC 2782: the SRV target is not compressed (miekg packs it with compress=false).
      w.labels(splitName(d.target), false);
      break;
    case 'soa':
      w.name(d.mname);
      w.name(d.rname);
      w.u32(d.serial);
      w.u32(d.refresh);
      w.u32(d.retry);
      w.u32(d.expire);
      w.u32(d.minimum);
      break;
    case 'txt':
      for (const s of d.s) {
        const b = Buffer.from(s, 'utf8');
        for (let o = 0; o === 0 || o < b.length; o += 255) {
          const part = b.subarray(o, o + 255);
          w.u8(part.length);
          w.bytes(part);
        }
      }
      break;
  }
  w.buf.writeUInt16BE(w.pos - lenAt - 2, lenAt);
}

/** miekg SetReply: ID, opcode, RD and CD copied, question echoed, QR set. */
export function setReply(q: Query): Msg {
  return {
    id: q.id,
    opcode: q.opcode,
    aa: false,
    tc: false,
    rd: q.rd,
    ra: false,
    cd: q.cd,
    rcode: RCODE.NOERROR,
    q: { labels: q.labels, qtype: q.qtype, qclass: q.qclass },
    answer: [],
    ns: [],
    extra: [],
  };
}

export function ipBytes(ip: string): Buffer | null {
  const fam = net.isIP(ip);
  if (fam === 4) return Buffer.from(ip.split('.').map(Number));
  if (fam !== 6) return null;
  const out = Buffer.alloc(16);
  let s = ip;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (v4) {
    const parts = v4[1]!.split('.').map(Number);
    s =
      s.slice(0, -v4[1]!.length) +
      (((parts[0]! << 8) | parts[1]!).toString(16) + ':' + ((parts[2]! << 8) | parts[3]!).toString(16));
  }
  const [head, tail] = s.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

export function ipFromBytes(b: Buffer): string {
  if (b.length === 4) return Array.from(b).join('.');
  const g: string[] = [];
  for (let i = 0; i < 16; i += 2) g.push(b.readUInt16BE(i).toString(16));
  return g.join(':');
}

/** dns.ReverseAddr: the in-addr.arpa / ip6.arpa name of an address, lowercase. */
export function reverseAddr(ip: string): string | null {
  const b = ipBytes(ip);
  if (!b) return null;
  if (b.length === 4) return `${b[3]}.${b[2]}.${b[1]}.${b[0]}.in-addr.arpa.`;
  const nibbles: string[] = [];
  for (let i = 15; i >= 0; i--) nibbles.push((b[i]! & 0xf).toString(16), (b[i]! >> 4).toString(16));
  return nibbles.join('.') + '.ip6.arpa.';
}

// ---------------------------------------------------------------------------------------------
// Catalog state
// ---------------------------------------------------------------------------------------------

/** A name as Consul keeps its configured domains: lowercase, no leading dots, one trailing dot. */
export function fqdnLower(s: string): string {
  const l = s.toLowerCase().replace(/^\.+/, '');
  return l.endsWith('.') ? l : l + '.';
}

export function fqdn(s: string): string {
  return s.endsWith('.') ? s : s + '.';
}
