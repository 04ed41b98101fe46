/**
 * A minimal DNS client for the scenarios dnsperf cannot express: asking one question and reading
 * the rcode and the A addresses of the answer (failover lag: "does the answer still name the
 * instance marked critical?"), and counting answers. It builds queries and reads replies from raw
 * bytes (RFC 1035 §4.1) so the bench depends on nothing outside Node.
 */
import dgram from 'node:dgram';

export interface Reply {
  rcode: number;
  addresses: string[];
  ttls: number[];
}

/** The wire query for `name` (no trailing dot needed) and `qtype`, with RD set. */
function buildQuery(id: number, name: string, qtype: number): Buffer {
  const labels = name
    .replace(/\.$/, '')
    .split('.')
    .filter((l) => l.length > 0);
  let len = 12 + 1 + 4;
  for (const l of labels) len += 1 + l.length;
  const b = Buffer.alloc(len);
  b.writeUInt16BE(id, 0);
  b.writeUInt16BE(0x0100, 2);
  b.writeUInt16BE(1, 4);
  let off = 12;
  for (const l of labels) {
    b[off++] = l.length;
    off += b.write(l, off, 'latin1');
  }
  b[off++] = 0;
  b.writeUInt16BE(qtype, off);
  b.writeUInt16BE(1, off + 2);
  return b;
}

function skipName(b: Buffer, off: number): number {
  for (;;) {
    const len = b[off];
    if (len === undefined) return -1;
    if (len === 0) return off + 1;
    if ((len & 0xc0) === 0xc0) return off + 2;
    off += len + 1;
  }
}

/** Reads the rcode and the A records of the answer section. */
function parseReply(b: Buffer): Reply | null {
  if (b.length < 12) return null;
  const rcode = b[3]! & 0xf;
  const qd = b.readUInt16BE(4),
    an = b.readUInt16BE(6);
  let off = 12;
  for (let i = 0; i < qd; i++) {
    off = skipName(b, off);
    if (off < 0) return null;
    off += 4;
  }
  const addresses: string[] = [];
  const ttls: number[] = [];
  for (let i = 0; i < an; i++) {
    off = skipName(b, off);
    if (off < 0 || off + 10 > b.length) return null;
    const type = b.readUInt16BE(off),
      ttl = b.readUInt32BE(off + 4),
      rdlen = b.readUInt16BE(off + 8);
    off += 10;
    if (type === 1 && rdlen === 4) addresses.push(`${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`);
    ttls.push(ttl);
    off += rdlen;
  }
  return { rcode, addresses, ttls };
}

/**
 * One UDP socket that asks questions one at a time (the callers here are sequential probes, not
 * load generators) with a timeout; `null` on timeout.
 */
export class Asker {
  private readonly sock = dgram.createSocket('udp4');
  private waiting: { id: number; resolve: (r: Reply | null) => void; timer: NodeJS.Timeout } | null = null;
  private nextId = 1;
  private ready: Promise<void>;

  constructor() {
    this.sock.on('message', (msg) => {
      const w = this.waiting;
      if (!w || msg.length < 12 || msg.readUInt16BE(0) !== w.id) return;
      this.waiting = null;
      clearTimeout(w.timer);
      w.resolve(parseReply(msg));
    });
    this.sock.on('error', () => {
      /* per-query errors end as timeouts */
    });
    this.ready = new Promise((r) => this.sock.bind({ address: '127.0.0.1', port: 0 }, () => r()));
  }

  async ask(port: number, name: string, qtype = 1, timeoutMs = 500): Promise<Reply | null> {
    await this.ready;
    const id = (this.nextId = (this.nextId % 65535) + 1);
    return new Promise<Reply | null>((resolve) => {
      const timer = setTimeout(() => {
        this.waiting = null;
        resolve(null);
      }, timeoutMs);
      this.waiting = { id, resolve, timer };
      this.sock.send(buildQuery(id, name, qtype), port, '127.0.0.1');
    });
  }

  close(): void {
    if (this.waiting) {
      clearTimeout(this.waiting.timer);
      this.waiting.resolve(null);
      this.waiting = null;
    }
    try {
      this.sock.close();
    } catch {
      /* closed */
    }
  }
}

/** A UDP "agent" that reads every query and never answers (the silent-first-agent scenario). */
export async function startSilentAgent(): Promise<{ port: number; received: () => number; close(): void }> {
  const sock = dgram.createSocket('udp4');
  let n = 0;
  sock.on('message', () => {
    n++;
  });
  await new Promise<void>((r) => sock.bind({ address: '127.0.0.1', port: 0 }, () => r()));
  return {
    port: sock.address().port,
    received: () => n,
    close: () => {
      try {
        sock.close();
      } catch {
        /* closed */
      }
    },
  };
}
