/**
 * An in-process DNS client for the real-Consul suites: one UDP question with a timeout and a
 * small reader of the reply (rcode, TC, and every record's type and data in each section). dig
 * costs a process per question; the traffic and lag loops ask hundreds of times a second.
 */
import dgram from 'node:dgram';
import { queryMessage } from './query.js';

export interface Rr {
  name: string;
  type: number;
  ttl: number;
  data: string;
}
export interface Reply {
  rcode: number;
  tc: boolean;
  answer: Rr[];
  authority: Rr[];
  additional: Rr[];
  ms: number;
}

const TYPES: Record<string, number> = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  TXT: 16,
  AAAA: 28,
  SRV: 33,
  OPT: 41,
  ANY: 255,
};
let nextId = 1;

/** Asks `server` ("host:port") one question over UDP; rejects on timeout (a client timeout). */
export function ask(
  server: string,
  name: string,
  type: keyof typeof TYPES | number = 'A',
  timeoutMs = 2000,
): Promise<Reply> {
  const i = server.lastIndexOf(':');
  const host = server.slice(0, i),
    port = Number(server.slice(i + 1));
  const qtype = typeof type === 'number' ? type : TYPES[type]!;
  const id = (nextId = (nextId + 1) & 0xffff);
  const msg = queryMessage(id, name, qtype);
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    const timer = setTimeout(() => {
      s.close();
      reject(
        Object.assign(new Error(`no reply from ${server} to ${name} ${type} in ${timeoutMs} ms`), { code: 'TIMEOUT' }),
      );
    }, timeoutMs);
    s.on('message', (buf) => {
      if (buf.length < 12 || buf.readUInt16BE(0) !== id) return;
      clearTimeout(timer);
      s.close();
      try {
        resolve({ ...parseReply(buf), ms: performance.now() - t0 });
      } catch (e) {
        reject(e instanceof Error ? e : new Error(String(e)));
      }
    });
    s.on('error', (e) => {
      clearTimeout(timer);
      s.close();
      reject(e);
    });
    s.send(msg, port, host);
  });
}

function readName(buf: Buffer, off: number): { name: string; end: number } {
  const labels: string[] = [];
  let end = -1;
  for (let hops = 0; hops < 64; hops++) {
    const len = buf[off]!;
    if (len === 0) {
      if (end < 0) end = off + 1;
      break;
    }
    if ((len & 0xc0) === 0xc0) {
      if (end < 0) end = off + 2;
      off = buf.readUInt16BE(off) & 0x3fff;
      continue;
    }
    labels.push(buf.toString('latin1', off + 1, off + 1 + len));
    off += 1 + len;
  }
  return { name: labels.join('.').toLowerCase() + '.', end };
}

export function parseReply(buf: Buffer): Omit<Reply, 'ms'> {
  const flags = buf.readUInt16BE(2);
  const counts = [buf.readUInt16BE(4), buf.readUInt16BE(6), buf.readUInt16BE(8), buf.readUInt16BE(10)];
  let off = 12;
  for (let q = 0; q < counts[0]!; q++) off = readName(buf, off).end + 4;
  const sections: Rr[][] = [[], [], []];
  for (let s = 0; s < 3; s++) {
    for (let r = 0; r < counts[s + 1]!; r++) {
      const n = readName(buf, off);
      off = n.end;
      const type = buf.readUInt16BE(off),
        ttl = buf.readUInt32BE(off + 4),
        rdlen = buf.readUInt16BE(off + 8);
      const rd = off + 10;
      let data: string;
      if (type === 1) data = [...buf.subarray(rd, rd + 4)].join('.');
      else if (type === 33)
        data = `${buf.readUInt16BE(rd)} ${buf.readUInt16BE(rd + 2)} ${buf.readUInt16BE(rd + 4)} ${readName(buf, rd + 6).name}`;
      else if (type === 12 || type === 5 || type === 2) data = readName(buf, rd).name;
      else data = buf.subarray(rd, rd + rdlen).toString('hex');
      sections[s]!.push({ name: n.name, type, ttl, data });
      off = rd + rdlen;
    }
  }
  return {
    rcode: flags & 0xf,
    tc: (flags & 0x0200) !== 0,
    answer: sections[0]!,
    authority: sections[1]!,
    additional: sections[2]!,
  };
}

/** The A addresses of a reply's Answer section, sorted. */
export const aAddrs = (r: Reply): string[] =>
  r.answer
    .filter((x) => x.type === 1)
    .map((x) => x.data)
    .sort();

/** Percentile (0-100) of a list of numbers. */
export function percentile(xs: number[], p: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}
