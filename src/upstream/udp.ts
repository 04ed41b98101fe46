/** The outgoing UDP sockets every pool shares. */
import dgram from 'node:dgram';
import { scanReply, sameQuestion } from '../dns/wire.js';
import { RandomIds } from './ids.js';
import type { Pending } from './types.js';
import { FLAG, HEADER_LEN } from '../dns/constants.js';

/**
 * Outgoing UDP sockets bound to OS-chosen random ports. A handful are shared by all pools (one per
 * query would cost the miss path a bind and a close each time); each is replaced after a number
 * of queries so the source port keeps changing (RFC 5452 §9.3).
 */
interface SocketEntry {
  s: dgram.Socket;
  pending: Map<number, Pending>;
  uses: number;
  retired: boolean;
}

export class UdpSocketSet {
  private socks: SocketEntry[] = [];
  /** Retired sockets still waiting for answers to queries sent from them. */
  private retiring = new Set<SocketEntry>();
  private next = 0;
  constructor(
    private readonly family: 4 | 6,
    private readonly size: number,
    private readonly maxUses: number,
    private readonly onMismatch: (host: string, port: number) => void,
    private readonly ids: RandomIds,
  ) {}

  private open(): SocketEntry {
    const s = dgram.createSocket(this.family === 4 ? 'udp4' : 'udp6');
    const entry: SocketEntry = { s, pending: new Map<number, Pending>(), uses: 0, retired: false };
    s.on('message', (msg, rinfo) => this.onMessage(entry, msg, rinfo));
    s.on('error', () => {
      /* per-send errors are reported through the send callback */
    });
    s.bind(0);
    s.unref();
    return entry;
  }

  /** Forgets a pending query; a retired socket closes with its last one. */
  private settle(entry: SocketEntry, p: Pending): void {
    entry.pending.delete(p.id);
    clearTimeout(p.timer);
    if (entry.retired && entry.pending.size === 0) {
      this.retiring.delete(entry);
      entry.s.close();
    }
  }

  private onMessage(entry: SocketEntry, msg: Buffer, rinfo: dgram.RemoteInfo) {
    if (msg.length < HEADER_LEN) return;
    const p = entry.pending.get(msg.readUInt16BE(0));
    if (!p || rinfo.address !== p.host || rinfo.port !== p.port) {
      this.onMismatch(rinfo.address, rinfo.port);
      return;
    }
    const layout = msg.readUInt16BE(2) & FLAG.QR ? scanReply(msg) : null;
    if (!layout || !sameQuestion(msg, layout.qEnd, p.query, p.qEnd)) {
      // A spoofed or broken reply must not end the wait for the real one.
      this.onMismatch(rinfo.address, rinfo.port);
      return;
    }
    this.settle(entry, p);
    p.done(msg, layout, null);
  }

  send(host: string, port: number, query: Buffer, qEnd: number, timeoutMs: number, done: Pending['done']): void {
    if (this.socks.length < this.size) this.socks.push(this.open());
    const i = (this.next = (this.next + 1) % this.socks.length);
    let entry = this.socks[i]!;
    if (entry.uses >= this.maxUses) {
      // Retire the socket (RFC 5452 §9.3: keep source ports moving); it closes once its pending
      // queries are answered or timed out.
      entry.retired = true;
      if (entry.pending.size === 0) entry.s.close();
      else this.retiring.add(entry);
      entry = this.socks[i] = this.open();
    }
    entry.uses++;
    let id = this.ids.next();
    for (let tries = 0; entry.pending.has(id) && tries < 8; tries++) id = this.ids.next();
    if (entry.pending.has(id)) {
      done(null, null, 'network');
      return;
    }
    query.writeUInt16BE(id, 0);
    const e = entry;
    const p: Pending = {
      id,
      host,
      port,
      query,
      qEnd,
      done,
      timer: setTimeout(() => {
        this.settle(e, p);
        done(null, null, 'timeout');
      }, timeoutMs),
    };
    e.pending.set(id, p);
    e.s.send(query, port, host, (err) => {
      if (err && e.pending.get(id) === p) {
        this.settle(e, p);
        done(null, null, 'network');
      }
    });
  }

  close(): void {
    for (const e of [...this.socks, ...this.retiring]) {
      for (const p of e.pending.values()) {
        clearTimeout(p.timer);
        p.done(null, null, 'network');
      }
      e.pending.clear();
      try {
        e.s.close();
      } catch {
        /* already closed */
      }
    }
    this.socks = [];
    this.retiring.clear();
  }
}

/** Shared outgoing sockets for every pool. */
export class UpstreamSockets {
  readonly udp4: UdpSocketSet;
  readonly udp6: UdpSocketSet;
  readonly ids = new RandomIds();
  mismatches = 0;
  constructor(size = 8, maxUses = 20_000) {
    const mm = () => {
      this.mismatches++;
    };
    this.udp4 = new UdpSocketSet(4, size, maxUses, mm, this.ids);
    this.udp6 = new UdpSocketSet(6, size, maxUses, mm, this.ids);
  }
  close(): void {
    this.udp4.close();
    this.udp6.close();
  }
}
