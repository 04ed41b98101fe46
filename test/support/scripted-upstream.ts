/**
 * A loopback DNS server whose every reply is decided by the test: a function of the query that
 * returns the exact bytes to send (any bytes, well formed or not), a delay, or silence. It listens
 * on UDP and TCP on the same port and records every query it got (transport, source address and
 * port, arrival time, bytes, decoded question), so a test can check what the proxy sent upstream:
 * which source ports it used, whether a second query reached it, how often it was probed.
 *
 * Also the client side used with it: raw UDP/TCP exchanges with the proxy, for messages dig cannot
 * send (answer records in a query, a half-closed TCP connection) or for many queries quickly.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { decodeMessage, encodeMessage, nameToWire, type Message, type Record as RR } from '../../src/dns/message.js';
import { a, opt, rr } from './fuzz.js';
import { freePort } from './proc.js';

export { a, opt, rr };

export interface SeenQuery {
  transport: 'udp' | 'tcp';
  address: string;
  port: number;
  /** Date.now() at arrival. */
  at: number;
  bytes: Buffer;
  id: number;
  flags: number;
  /** Lowercase question name without the trailing dot ('' for the root); '' when undecodable. */
  name: string;
  /** The question name exactly as it arrived (case kept). */
  rawName: string;
  type: number;
  /** The decoded query, or null when it did not decode. */
  message: Message | null;
}

/** Bytes to send, bytes after a delay, or null for silence. */
export type Reply = Buffer | { bytes: Buffer; delayMs: number } | null;
export type Script = (q: SeenQuery) => Reply;

export interface Scripted {
  host: string;
  port: number;
  /** "127.0.0.1:PORT" or "[::1]:PORT", as the proxy's flags take it. */
  address: string;
  /** Every query received, in arrival order. */
  readonly queries: SeenQuery[];
  /** Queries for `name` (lowercase, no trailing dot). */
  queriesFor(name: string): SeenQuery[];
  setScript(s: Script): void;
  stop(): Promise<void>;
}

/**
 * The CLI flags for a proxy whose Consul agent and recursor are both the scripted server at
 * `address`, and whose Consul HTTP API is a closed port (no health watch: Consul's TTLs apply).
 * `metrics` is the `--metrics` value ("off", or "127.0.0.1:0" for a test that scrapes).
 */
export async function scriptedProxyArgs(address: string, metrics = 'off'): Promise<string[]> {
  return [
    '--metrics',
    metrics,
    '--consul-http',
    `http://127.0.0.1:${await freePort()}`,
    '--agent',
    address,
    '--recursor',
    address,
  ];
}

const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;
export { RCODE };

/** The health probes the proxy sends by default: `. NS` to recursors and zones, `<domain>. SOA` to agents. */
export function isProbe(q: SeenQuery, domain = 'consul'): boolean {
  return (q.name === '' && q.type === 2) || (q.name === domain && q.type === 6);
}

export interface ReplySpec {
  rcode?: number;
  /** Extra header flag bits (AA 0x0400, TC 0x0200, RA 0x0080, AD 0x0020...); QR and RD are set from the query. */
  flags?: number;
  answers?: RR[];
  authorities?: RR[];
  additionals?: RR[];
  /** Appended after the encoded message. */
  trailing?: Buffer;
}

/** A reply to `q` echoing its ID, RD bit and question. */
export function reply(q: SeenQuery, spec: ReplySpec = {}): Buffer {
  const questions = q.message?.questions ?? [];
  const m: Message = {
    id: q.id,
    flags: 0x8000 | (q.flags & 0x0100) | 0x0080 | (spec.flags ?? 0) | ((spec.rcode ?? 0) & 0xf),
    questions,
    answers: spec.answers ?? [],
    authorities: spec.authorities ?? [],
    additionals: spec.additionals ?? [],
  };
  const bytes = encodeMessage(m);
  return spec.trailing ? Buffer.concat([bytes, spec.trailing]) : bytes;
}

/** An SOA record with explicit TTL and MINIMUM (RFC 2308 §5: the negative TTL is the smaller). */
export function soaRecord(owner: string, ttl: number, minimum: number): RR {
  const fixed = Buffer.alloc(20);
  fixed.writeUInt32BE(2026120201, 0);
  fixed.writeUInt32BE(3600, 4);
  fixed.writeUInt32BE(600, 8);
  fixed.writeUInt32BE(86400, 12);
  fixed.writeUInt32BE(minimum, 16);
  return rr(owner, 6, ttl, Buffer.concat([nameToWire('ns.' + owner), nameToWire('hostmaster.' + owner), fixed]));
}

/** An EDNS option: code, length, data. */
export function ednsOption(code: number, data: Buffer): Buffer {
  const h = Buffer.alloc(4);
  h.writeUInt16BE(code, 0);
  h.writeUInt16BE(data.length, 2);
  return Buffer.concat([h, data]);
}

/** An Extended DNS Error option (RFC 8914): INFO-CODE then UTF-8 text. */
export function edeOption(code: number, text = ''): Buffer {
  const d = Buffer.alloc(2);
  d.writeUInt16BE(code, 0);
  return ednsOption(15, Buffer.concat([d, Buffer.from(text, 'utf8')]));
}

/** An OPT record with a given extended RCODE (upper 8 bits of the 12-bit RCODE) and options. */
export function optRecord(udpSize = 1232, options: Buffer = Buffer.alloc(0), extRcode = 0, doBit = false): RR {
  const r = opt(udpSize, options);
  r.ttl = ((extRcode & 0xff) << 24) + (doBit ? 0x8000 : 0);
  return r;
}

/** Starts a scripted server on `host` port 0 (UDP and TCP on the same port). */
export async function startScripted(script: Script, host = '127.0.0.1'): Promise<Scripted> {
  let current = script;
  const queries: SeenQuery[] = [];
  const timers = new Set<NodeJS.Timeout>();
  const family = net.isIPv6(host) ? 'udp6' : 'udp4';

  const seen = (transport: 'udp' | 'tcp', bytes: Buffer, address: string, port: number): SeenQuery => {
    let message: Message | null = null;
    try {
      message = decodeMessage(bytes);
    } catch {
      /* recorded as undecodable */
    }
    const rawName = message?.questions[0]?.name.replace(/\.$/, '') ?? '';
    const q: SeenQuery = {
      transport,
      address,
      port,
      at: Date.now(),
      bytes: Buffer.from(bytes),
      id: bytes.length >= 2 ? bytes.readUInt16BE(0) : 0,
      flags: bytes.length >= 4 ? bytes.readUInt16BE(2) : 0,
      name: rawName.toLowerCase(),
      rawName,
      type: message?.questions[0]?.type ?? 0,
      message,
    };
    queries.push(q);
    return q;
  };
  const later = (r: Reply, send: (b: Buffer) => void): void => {
    if (r === null) return;
    if (Buffer.isBuffer(r)) {
      send(r);
      return;
    }
    const t = setTimeout(() => {
      timers.delete(t);
      send(r.bytes);
    }, r.delayMs);
    timers.add(t);
  };

  for (let attempt = 0; ; attempt++) {
    const udp = dgram.createSocket(family);
    const port = await new Promise<number>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind(0, host, () => resolve(udp.address().port));
    });
    const sockets = new Set<net.Socket>();
    const tcp = net.createServer((s) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        /* the proxy may reset */
      });
      let buf = Buffer.alloc(0);
      s.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          const msg = buf.subarray(2, 2 + buf.readUInt16BE(0));
          buf = buf.subarray(2 + msg.length);
          const q = seen('tcp', msg, s.remoteAddress ?? '', s.remotePort ?? 0);
          later(current(q), (b) => {
            if (s.destroyed) return;
            const len = Buffer.alloc(2);
            len.writeUInt16BE(b.length);
            s.write(Buffer.concat([len, b]));
          });
        }
      });
    });
    const ok = await new Promise<boolean>((resolve) => {
      tcp.once('error', () => resolve(false));
      tcp.listen(port, host, () => resolve(true));
    });
    if (!ok) {
      udp.close();
      if (attempt > 20) throw new Error('scripted upstream: no port free for both UDP and TCP');
      continue;
    }
    udp.on('message', (msg, rinfo) => {
      const q = seen('udp', msg, rinfo.address, rinfo.port);
      later(current(q), (b) => {
        try {
          udp.send(b, rinfo.port, rinfo.address);
        } catch {
          /* closed */
        }
      });
    });
    const address = family === 'udp6' ? `[${host}]:${port}` : `${host}:${port}`;
    return {
      host,
      port,
      address,
      queries,
      queriesFor: (name) => queries.filter((q) => q.name === name),
      setScript(s) {
        current = s;
      },
      async stop() {
        for (const t of timers) clearTimeout(t);
        for (const s of sockets) s.destroy();
        await new Promise<void>((r) => tcp.close(() => r()));
        await new Promise<void>((r) => udp.close(() => r()));
      },
    };
  }
}

// ---------------------------------------------------------------------------------------------
// Client side

/** A query message: one question, optional extra records (OPT, or an answer record), flags RD by default. */
export function clientQuery(
  id: number,
  name: string,
  type: number,
  o: { flags?: number; answers?: RR[]; additionals?: RR[]; questions?: number } = {},
): Buffer {
  const questions = o.questions === 0 ? [] : [{ name, type, class: 1 }];
  return encodeMessage({
    id,
    flags: o.flags ?? 0x0100,
    questions,
    answers: o.answers ?? [],
    authorities: [],
    additionals: o.additionals ?? [],
  });
}

/** Sends one datagram to host:port and resolves with the first reply, or null after `timeoutMs`. */
export function askUdp(port: number, msg: Buffer, timeoutMs = 3000, host = '127.0.0.1'): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const s = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
    const t = setTimeout(() => {
      s.close();
      resolve(null);
    }, timeoutMs);
    s.on('message', (m) => {
      clearTimeout(t);
      s.close();
      resolve(m);
    });
    s.on('error', () => {
      clearTimeout(t);
      try {
        s.close();
      } catch {
        /* closed */
      }
      resolve(null);
    });
    s.send(msg, port, host);
  });
}

/**
 * One TCP exchange; with `halfClose` the client shuts its write side right after the query
 * (shutdown(SHUT_WR)) and still waits for the answer.
 */
export function askTcp(
  port: number,
  msg: Buffer,
  o: { timeoutMs?: number; halfClose?: boolean; host?: string } = {},
): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: o.host ?? '127.0.0.1', allowHalfOpen: true });
    let buf = Buffer.alloc(0);
    const done = (r: Buffer | null) => {
      clearTimeout(t);
      s.destroy();
      resolve(r);
    };
    const t = setTimeout(() => done(null), o.timeoutMs ?? 3000);
    s.on('connect', () => {
      const len = Buffer.alloc(2);
      len.writeUInt16BE(msg.length);
      s.write(Buffer.concat([len, msg]));
      if (o.halfClose) s.end();
    });
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) done(buf.subarray(2, 2 + buf.readUInt16BE(0)));
    });
    s.on('error', () => done(null));
    s.on('end', () => {
      if (buf.length < 2 || buf.length < 2 + buf.readUInt16BE(0)) done(null);
    });
  });
}

/** The 12-bit RCODE of a reply: header bits plus the OPT record's extended bits (RFC 6891 §6.1.3). */
export function fullRcode(m: Message): number {
  const o = m.additionals.find((r) => r.type === 41);
  return (m.flags & 0xf) | (o ? (o.ttl >>> 24) << 4 : 0);
}

/** Reads one sample of a metric from a Prometheus text exposition; labels must all match. */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number | null {
  let sum: number | null = null;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    const v = Number(line.slice(line.lastIndexOf(' ') + 1));
    sum = (sum ?? 0) + v;
  }
  return sum;
}

export async function scrape(metricsAddress: string): Promise<string> {
  const res = await fetch(`http://${metricsAddress}/metrics`);
  return res.text();
}
