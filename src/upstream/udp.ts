/**
 * The outgoing UDP sockets: per upstream, a ring of sockets connected to it, each on a port the OS
 * picked at random, one drawn at random (from the CSPRNG batch) for every query (RFC 5452 §9.2:
 * a spoofer must guess the port as well as the ID).
 *
 * Why connected sockets, one ring per upstream, rather than one shared set sending anywhere:
 * - an ICMP port-unreachable reaches a connected socket only, as ECONNREFUSED, at once: an
 *   upstream whose port is closed (a killed agent) costs a round trip on loopback instead of a
 *   timeout, and the error names the upstream, since the socket talks to it alone;
 * - the kernel itself drops datagrams from any other address or port.
 * Sockets are opened lazily, one per query until the ring holds `size` (so an upstream that gets
 * a handful of queries holds a handful of sockets, and start-up opens none), and each is retired
 * after `maxUses` queries and replaced by a new one on a new random port (RFC 5452 §9.3). A
 * socket per query, as BIND does, would cost the miss path a bind, a connect and a close each.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { scanReply, sameQuestion } from '../dns/wire.js';
import { RandomIds } from './ids.js';
import type { Cancel, Pending } from './types.js';
import { FLAG, HEADER_LEN } from '../dns/constants.js';

/** Sockets in rotation per upstream. */
const RING_SIZE = 256;
/** Queries a socket carries before it is replaced (its port retired). */
const MAX_USES = 500;

interface SocketEntry {
  s: dgram.Socket;
  pending: Map<number, Pending>;
  uses: number;
  retired: boolean;
  /** Sends waiting for the connect to finish (dgram cannot send on a connecting socket). */
  queued: (() => void)[] | null;
}

/** The sockets connected to one upstream. */
export class UdpRing {
  private socks: SocketEntry[] = [];
  /** Retired sockets still waiting for answers to queries sent from them. */
  private retiring = new Set<SocketEntry>();
  /** Pools using this ring; it closes when the last one lets go. */
  refs = 0;
  constructor(
    readonly host: string,
    readonly port: number,
    private readonly size: number,
    private readonly maxUses: number,
    private readonly onMismatch: () => void,
    private readonly ids: RandomIds,
  ) {}

  /** Sockets open now (in rotation and retiring), for tests. */
  get open(): number {
    return this.socks.length + this.retiring.size;
  }

  private openSocket(): SocketEntry {
    const s = dgram.createSocket(net.isIPv6(this.host) ? 'udp6' : 'udp4');
    const entry: SocketEntry = { s, pending: new Map<number, Pending>(), uses: 0, retired: false, queued: [] };
    s.on('message', (msg, rinfo) => this.onMessage(entry, msg, rinfo));
    // A connected socket reports the ICMP error of an earlier datagram (ECONNREFUSED: the port is
    // closed) as an error of the socket: every query waiting on it went to that closed port.
    s.on('error', () => {
      if (entry.queued !== null) this.drop(entry); // the connect itself failed: never usable
      this.failAll(entry);
    });
    s.connect(this.port, this.host, () => {
      const q = entry.queued;
      entry.queued = null;
      if (q) for (const f of q) f();
    });
    s.unref();
    return entry;
  }

  /** Takes a socket that could not connect out of rotation. */
  private drop(entry: SocketEntry): void {
    entry.queued = null;
    entry.retired = true;
    const i = this.socks.indexOf(entry);
    if (i >= 0) this.socks.splice(i, 1);
    if (entry.pending.size > 0) this.retiring.add(entry);
    else this.closeEntry(entry);
  }

  private failAll(entry: SocketEntry): void {
    const list = [...entry.pending.values()];
    for (const p of list) {
      this.settle(entry, p);
      p.done(null, null, 'network');
    }
  }

  /** Forgets a pending query; a retired socket closes with its last one. */
  private settle(entry: SocketEntry, p: Pending): void {
    entry.pending.delete(p.id);
    clearTimeout(p.timer);
    if (entry.retired && entry.pending.size === 0) this.closeEntry(entry);
  }

  private closeEntry(entry: SocketEntry): void {
    this.retiring.delete(entry);
    try {
      entry.s.close();
    } catch {
      /* already closed */
    }
  }

  private onMessage(entry: SocketEntry, msg: Buffer, rinfo: dgram.RemoteInfo) {
    if (msg.length < HEADER_LEN) return;
    const p = entry.pending.get(msg.readUInt16BE(0));
    if (!p || rinfo.address !== p.host || rinfo.port !== p.port) {
      this.onMismatch();
      return;
    }
    const layout = msg.readUInt16BE(2) & FLAG.QR ? scanReply(msg) : null;
    if (!layout || !sameQuestion(msg, layout.qEnd, p.query, p.qEnd)) {
      // A spoofed or broken reply must not end the wait for the real one.
      this.onMismatch();
      return;
    }
    this.settle(entry, p);
    // Bytes after the last record are ignored (as BIND and unbound): the message ends there.
    p.done(layout.end < msg.length ? msg.subarray(0, layout.end) : msg, layout, null);
  }

  /** The socket for the next query: a new one while the ring fills (if `grow`), else one at random. */
  private pick(grow: boolean): SocketEntry {
    if (this.socks.length < this.size && (grow || this.socks.length === 0)) {
      const e = this.openSocket();
      this.socks.push(e);
      return e;
    }
    const i = this.ids.next() % this.socks.length;
    const entry = this.socks[i]!;
    if (entry.uses < this.maxUses) return entry;
    // Retire the socket (RFC 5452 §9.3: keep source ports moving); it closes once its pending
    // queries are answered, cancelled or timed out.
    entry.retired = true;
    if (entry.pending.size === 0) this.closeEntry(entry);
    else this.retiring.add(entry);
    return (this.socks[i] = this.openSocket());
  }

  /**
   * Sends `query` (its ID is set here) and waits up to `waitMs` for the matching reply; `done` is
   * called once, unless the returned function cancels the wait first. `grow` false (health
   * probes): use a socket already open, so an idle upstream's probes do not fill its ring.
   */
  send(query: Buffer, qEnd: number, waitMs: number, done: Pending['done'], grow = true): Cancel {
    const entry = this.pick(grow);
    entry.uses++;
    let id = this.ids.next();
    for (let tries = 0; entry.pending.has(id) && tries < 8; tries++) id = this.ids.next();
    if (entry.pending.has(id)) {
      done(null, null, 'network');
      return noop;
    }
    query.writeUInt16BE(id, 0);
    const p: Pending = {
      id,
      host: this.host,
      port: this.port,
      query,
      qEnd,
      done,
      timer: setTimeout(() => {
        this.settle(entry, p);
        done(null, null, 'timeout');
      }, waitMs),
    };
    entry.pending.set(id, p);
    const go = () => {
      if (entry.pending.get(id) !== p) return; // cancelled or failed while connecting
      entry.s.send(query, (err) => {
        if (err && entry.pending.get(id) === p) {
          this.settle(entry, p);
          done(null, null, 'network');
        }
      });
    };
    if (entry.queued) entry.queued.push(go);
    else go();
    return () => {
      if (entry.pending.get(id) === p) this.settle(entry, p);
    };
  }

  close(): void {
    for (const e of [...this.socks, ...this.retiring]) {
      for (const p of e.pending.values()) {
        clearTimeout(p.timer);
        p.done(null, null, 'network');
      }
      e.pending.clear();
      e.queued = null;
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

function noop(): void {}

/**
 * The rings of every pool, one per upstream address, shared by the pools that name the same
 * upstream (and kept across a reload that keeps it). The query IDs come from one CSPRNG batch.
 */
export class UpstreamSockets {
  readonly ids = new RandomIds();
  mismatches = 0;
  private readonly rings = new Map<string, UdpRing>();
  private readonly mm = () => {
    this.mismatches++;
  };
  constructor(
    private readonly size = RING_SIZE,
    private readonly maxUses = MAX_USES,
  ) {}

  /** The ring for an upstream; release() it when done. */
  acquire(host: string, port: number): UdpRing {
    const key = `${host}|${port}`;
    let r = this.rings.get(key);
    if (!r) this.rings.set(key, (r = new UdpRing(host, port, this.size, this.maxUses, this.mm, this.ids)));
    r.refs++;
    return r;
  }

  release(ring: UdpRing): void {
    if (--ring.refs > 0) return;
    ring.close();
    const key = `${ring.host}|${ring.port}`;
    if (this.rings.get(key) === ring) this.rings.delete(key);
  }

  close(): void {
    for (const r of this.rings.values()) r.close();
    this.rings.clear();
  }
}
