/**
 * Listeners: UDP and TCP on every configured address, IPv4 and IPv6. TCP follows RFC 7766: the
 * 2-byte length framing copes with any chunking, queries are pipelined and answered as they
 * complete (out of order), at most `maxPipelined` are in flight per connection (reading pauses
 * beyond), an idle connection is closed after `idleTimeoutMs`, a message that does not complete
 * within `readTimeoutMs` (a client dribbling one byte a minute) closes it, and connections are
 * capped in total and per client: at a cap the connection idle or partial longest is closed to
 * make room (RFC 7766 §6.2.3), and only when every one has a query in flight is the new one
 * refused. A client that half-closes (shutdown(SHUT_WR)) after its queries gets every answer,
 * then the close. Every reply to a query carrying a client cookie gets our server cookie
 * (RFC 7873, dns/cookie.ts).
 */
import dgram from 'node:dgram';
import net from 'node:net';
import type { QueryHandler } from '../query/handler.js';
import type { Logger } from '../observability/log.js';
import { formatHostPort, parseIpWords } from '../net/address.js';
import { ServerCookies } from '../dns/cookie.js';
import { findCookie } from '../dns/wire.js';
import { ListenError } from '../errors.js';

export interface ListenAddress {
  host: string;
  port: number;
}

export interface TcpLimits {
  maxConnections: number;
  maxPerClient: number;
  idleTimeoutMs: number;
  readTimeoutMs: number;
  maxPipelined: number;
}

export interface ServerCounters {
  tcpConnections: number;
  tcpRejected: Record<'max_connections' | 'max_per_client', number>;
  tcpEvicted: number;
}

/** One client TCP connection, as the connection limits see it. */
interface Conn {
  sock: net.Socket;
  client: string;
  /** Queries read and not answered yet, plus complete ones buffered behind maxPipelined. */
  busy: () => boolean;
  /** When it last read a whole query or sent an answer (or connected): idle or partial since then. */
  since: number;
}

/** A UDP socket and the misses read from it whose answers are not sent yet. */
interface UdpSocket {
  sock: dgram.Socket;
  /** Misses read and not answered yet (a hit is answered before the next datagram is read). */
  inFlight: number;
  /** A miss was answered (or ended with no answer): made once per socket, not per query. */
  done: () => void;
  /** Retired (drain, or a reload that dropped its address): closed once inFlight is 0 and sent. */
  closing: boolean;
  /** Closed without waiting (shutdown, or a failed open): nothing more is sent. */
  closeNow: boolean;
  /** The next look at the send queue of a retired socket, while replies wait in it. */
  pollTimer: NodeJS.Timeout | null;
  closed: boolean;
}

/** The UDP and TCP sockets of one `listen` address, or one fd inherited from the service manager. */
interface ListenSet {
  /** The configured "host:port" (a reload compares it), or "fd:N" for an inherited socket. */
  key: string;
  udp: UdpSocket | null;
  tcp: net.Server | null;
  udpAddress: string | null;
  tcpAddress: string | null;
}

/** A socket passed by the service manager (see net/listen-fds.ts). */
export interface InheritedSocket {
  fd: number;
  kind: 'udp' | 'tcp';
  ipv6: boolean;
}

/**
 * The `lookup` of every listening UDP socket: the address a reply goes to is the numeric one the
 * query came from, so it is passed on as it is. Node's default runs dns.lookup on it, which checks
 * isIP and defers the callback to the next tick for every datagram sent; listen addresses are IP
 * literals (config checks), so binding needs no lookup either.
 */
export function numericLookup(
  address: string,
  family: unknown,
  cb: (err: NodeJS.ErrnoException | null, address: string, family: number) => void,
): void {
  cb(null, address, typeof family === 'number' ? family : address.includes(':') ? 6 : 4);
}

/** How long a retired UDP socket waits between looks at its send queue before closing. */
const SEND_QUEUE_POLL_MS = 5;

export class DnsServer {
  private sets: ListenSet[] = [];
  /** Retired UDP sockets still sending the answers of queries read before they were retired. */
  private retiring = new Set<UdpSocket>();
  private conns = new Set<Conn>();
  private perClient = new Map<string, Set<Conn>>();
  private draining = false;
  private readonly cookies = new ServerCookies();
  private readonly ipWords = new Uint32Array(4);
  private readonly ipBytes = Buffer.alloc(16);

  constructor(
    private readonly proxy: QueryHandler,
    private limits: TcpLimits,
    private readonly counters: ServerCounters,
    private readonly log: Logger,
  ) {}

  setLimits(l: TcpLimits): void {
    this.limits = l;
  }

  get udpAddresses(): string[] {
    return this.sets.flatMap((s) => (s.udpAddress ? [s.udpAddress] : []));
  }

  get tcpAddresses(): string[] {
    return this.sets.flatMap((s) => (s.tcpAddress ? [s.tcpAddress] : []));
  }

  /** Whether every retired UDP socket has sent its last answer and closed. */
  get retired(): boolean {
    return this.retiring.size === 0;
  }

  /**
   * Binds UDP and TCP on every address. On a failure nothing this call opened stays open, and
   * the error names the address.
   */
  async listen(addrs: ListenAddress[]): Promise<void> {
    const opened: ListenSet[] = [];
    try {
      for (const a of addrs) opened.push(await this.open(a));
    } catch (err) {
      for (const set of opened) this.closeNow(set);
      throw err;
    }
    this.sets.push(...opened);
  }

  /**
   * A reload's `listen`: opens the addresses not open yet, then retires those no longer listed
   * (no new TCP connection; UDP closes once its in-flight queries are answered). A bind failure
   * throws before anything changes, so the running set keeps answering.
   */
  async relisten(
    keys: string[],
    parse: (key: string) => ListenAddress,
  ): Promise<{ opened: string[]; retired: string[] }> {
    const have = new Set(this.sets.map((s) => s.key));
    const want = new Set(keys);
    const added = keys.filter((k) => !have.has(k));
    const opened: ListenSet[] = [];
    try {
      for (const k of added) opened.push(await this.open(parse(k), k));
    } catch (err) {
      for (const set of opened) this.closeNow(set);
      throw err;
    }
    const gone = this.sets.filter((s) => !want.has(s.key));
    this.sets = [...this.sets.filter((s) => want.has(s.key)), ...opened];
    for (const set of gone) this.retire(set);
    return { opened: added, retired: gone.map((s) => s.key) };
  }

  /** Takes sockets inherited from the service manager in place of `listen`. */
  async adopt(inherited: InheritedSocket[]): Promise<void> {
    for (const s of inherited) {
      const set: ListenSet = { key: `fd:${s.fd}`, udp: null, tcp: null, udpAddress: null, tcpAddress: null };
      if (s.kind === 'tcp') {
        const srv = net.createServer({ allowHalfOpen: true }, (sock) => this.onConnection(sock));
        await new Promise<void>((resolve, reject) => {
          srv.once('error', reject);
          // Node calls listen(2) again on the fd, which resets its backlog: ask for the most, which
          // the kernel caps at net.core.somaxconn, rather than Node's 511 below the unit's Backlog=.
          // (With a handle, Node takes the backlog from the arguments, not from the options.)
          srv.listen({ fd: s.fd }, 65535, () => {
            srv.off('error', reject);
            resolve();
          });
        });
        set.tcp = srv;
        const a = srv.address() as net.AddressInfo;
        set.tcpAddress = formatHostPort({ host: a.address, port: a.port });
      } else {
        const sock = dgram.createSocket({ type: s.ipv6 ? 'udp6' : 'udp4', lookup: numericLookup });
        await new Promise<void>((resolve, reject) => {
          sock.once('error', reject);
          sock.bind({ fd: s.fd }, () => {
            sock.off('error', reject);
            resolve();
          });
        });
        set.udp = this.serveUdp(sock);
        const a = sock.address();
        set.udpAddress = formatHostPort({ host: a.address, port: a.port });
      }
      this.sets.push(set);
    }
  }

  private async open(a: ListenAddress, key = formatHostPort(a)): Promise<ListenSet> {
    const where = formatHostPort(a);
    // Bind TCP first when the port is 0, then UDP on the same port, so both share one number.
    const srv = net.createServer({ allowHalfOpen: true }, (sock) => this.onConnection(sock));
    await new Promise<void>((resolve, reject) => {
      srv.once('error', (err: NodeJS.ErrnoException) =>
        reject(new ListenError(`cannot listen on ${where} (tcp): ${err.message}`, err.code, { cause: err })),
      );
      srv.listen({ host: a.host, port: a.port, exclusive: true }, () => {
        srv.removeAllListeners('error');
        resolve();
      });
    });
    const port = (srv.address() as net.AddressInfo).port;
    const sock = dgram.createSocket({
      type: net.isIPv6(a.host) ? 'udp6' : 'udp4',
      ipv6Only: net.isIPv6(a.host),
      lookup: numericLookup,
    });
    try {
      await new Promise<void>((resolve, reject) => {
        sock.once('error', (err: NodeJS.ErrnoException) =>
          reject(
            new ListenError(
              `cannot listen on ${formatHostPort({ host: a.host, port })} (udp): ${err.message}`,
              err.code,
              {
                cause: err,
              },
            ),
          ),
        );
        sock.bind({ address: a.host, port, exclusive: true }, () => {
          sock.removeAllListeners('error');
          resolve();
        });
      });
    } catch (err) {
      srv.close();
      throw err;
    }
    return {
      key,
      udp: this.serveUdp(sock),
      tcp: srv,
      udpAddress: formatHostPort({ host: a.host, port }),
      tcpAddress: formatHostPort({ host: a.host, port }),
    };
  }

  private serveUdp(sock: dgram.Socket): UdpSocket {
    const u: UdpSocket = {
      sock,
      inFlight: 0,
      closing: false,
      closeNow: false,
      pollTimer: null,
      closed: false,
      done: () => {
        u.inFlight--;
        if (u.closing) this.settle(u);
      },
    };
    sock.on('error', (err) => this.log.warn({ err }, 'udp socket error'));
    sock.on('message', (msg, rinfo) => this.onDatagram(u, msg, rinfo));
    return u;
  }

  /**
   * Every datagram read is answered, draining or not: a retired socket is closed only once nothing
   * read from it is in flight, and what arrives meanwhile is answered too. Whatever the kernel still
   * queues then stays for the next owner of an inherited socket (or is refused once the port closes).
   */
  private onDatagram(u: UdpSocket, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const r = this.proxy.handle(msg, rinfo.address, true);
    if (r === null) return;
    const cookieAt = findCookie(msg);
    // Sent without a per-datagram callback: a UDP send has no failure to act on (the client asks
    // again), and a callback costs a request object and a completion per reply. A reply the
    // kernel could not take at once stays in the socket's send queue, which settle() waits out.
    if (r instanceof Promise) {
      // Counted until answered, so that a retiring socket is not closed under a miss.
      u.inFlight++;
      void r.then((reply) => {
        if (reply && cookieAt >= 0) reply = this.withCookie(reply, msg, cookieAt, rinfo.address, false);
        if (reply && !u.closed) u.sock.send(reply, rinfo.port, rinfo.address);
        u.done();
      });
    } else {
      u.sock.send(
        cookieAt >= 0 ? this.withCookie(r, msg, cookieAt, rinfo.address, false) : r,
        rinfo.port,
        rinfo.address,
      );
    }
  }

  /** The reply with our server cookie for this client (RFC 7873 §5.2.3). */
  private withCookie(reply: Buffer, query: Buffer, cookieAt: number, address: string, tcp: boolean): Buffer {
    const w = this.ipWords;
    const family = parseIpWords(address, w);
    if (family === 0) return reply;
    const ip = this.ipBytes;
    for (let i = 0; i < 4; i++) ip.writeUInt32BE(w[i]!, 4 * i);
    return this.cookies.addTo(reply, query, cookieAt, family === 4 ? ip.subarray(12) : ip, tcp);
  }

  /**
   * Room for a new connection from `client` at a cap: closes the connection idle or partial
   * longest (of this client at the per-client cap, of all at the total cap). False when every
   * candidate has a query in flight: the new connection is refused.
   */
  private makeRoom(candidates: Iterable<Conn>): boolean {
    let oldest: Conn | null = null;
    for (const c of candidates) if (!c.busy() && (oldest === null || c.since < oldest.since)) oldest = c;
    if (oldest === null) return false;
    this.forget(oldest);
    oldest.sock.destroy();
    this.counters.tcpEvicted++;
    return true;
  }

  /** Takes a connection out of the limits' books (at its close, or at once when evicted). */
  private forget(c: Conn): void {
    if (!this.conns.delete(c)) return;
    this.counters.tcpConnections = this.conns.size;
    const set = this.perClient.get(c.client);
    set?.delete(c);
    if (set?.size === 0) this.perClient.delete(c.client);
  }

  /** Closes a retired UDP socket once it has nothing in flight and its send queue is empty. */
  private settle(u: UdpSocket): void {
    if (!u.closing || u.closed) return;
    if (!u.closeNow) {
      if (u.inFlight > 0) return; // done() settles again
      if (u.sock.getSendQueueCount() > 0) {
        // Replies the kernel has not taken yet would be cancelled by close(): wait for them.
        u.pollTimer ??= setTimeout(() => {
          u.pollTimer = null;
          this.settle(u);
        }, SEND_QUEUE_POLL_MS);
        return;
      }
    }
    u.closed = true;
    if (u.pollTimer !== null) clearTimeout(u.pollTimer);
    this.retiring.delete(u);
    try {
      u.sock.close();
    } catch {
      /* closed */
    }
  }

  /** No new TCP connection on this set; its UDP socket closes once its in-flight queries are answered. */
  private retire(set: ListenSet): void {
    set.tcp?.close();
    if (set.udp && !set.udp.closed) {
      set.udp.closing = true;
      this.retiring.add(set.udp);
      this.settle(set.udp);
    }
  }

  private closeNow(set: ListenSet): void {
    set.tcp?.close();
    if (set.udp) {
      set.udp.closing = true;
      set.udp.closeNow = true;
      this.settle(set.udp);
    }
  }

  /** Admits a new connection under the limits (evicting to make room), or refuses it. */
  private admit(sock: net.Socket, client: string, busy: () => boolean): Conn | null {
    const l = this.limits;
    if (this.conns.size >= l.maxConnections && !this.makeRoom(this.conns)) {
      this.counters.tcpRejected.max_connections++;
      sock.destroy();
      return null;
    }
    let mine = this.perClient.get(client);
    if (mine && mine.size >= l.maxPerClient && !this.makeRoom(mine)) {
      this.counters.tcpRejected.max_per_client++;
      sock.destroy();
      return null;
    }
    const c: Conn = { sock, client, busy, since: Date.now() };
    if (!mine) this.perClient.set(client, (mine = new Set()));
    mine.add(c);
    this.conns.add(c);
    this.counters.tcpConnections = this.conns.size;
    return c;
  }

  // eslint-disable-next-line max-lines-per-function -- one connection's state (read buffer, answers in flight, idle and read timers) shared by its event handlers
  private onConnection(sock: net.Socket): void {
    const client = sock.remoteAddress ?? '';
    let buf: Buffer = Buffer.alloc(0);
    let inFlight = 0;
    let readTimer: NodeJS.Timeout | null = null;
    let idleTimer: NodeJS.Timeout | null = null;
    let waitingDrain = false;
    /** The client shut its write side: answer what was read, then close. */
    let ended = false;
    const complete = () => buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0);
    const conn = this.admit(sock, client, () => inFlight > 0 || complete());
    if (conn === null) return;
    sock.setNoDelay(true);
    const armIdle = () => {
      if (idleTimer) clearTimeout(idleTimer);
      idleTimer =
        inFlight === 0 && buf.length === 0 ? setTimeout(() => sock.destroy(), this.limits.idleTimeoutMs) : null;
    };
    const armRead = () => {
      // A partial message must complete in time: one byte a minute keeps no connection open.
      // Complete queries waiting behind maxPipelined in flight are not partial.
      const partial = buf.length > 0 && !complete();
      if (partial && !readTimer) readTimer = setTimeout(() => sock.destroy(), this.limits.readTimeoutMs);
      if (!partial && readTimer) {
        clearTimeout(readTimer);
        readTimer = null;
      }
    };
    const finishIfEnded = () => {
      if (ended && inFlight === 0 && !complete() && !sock.destroyed) sock.end();
    };
    const send = (reply: Buffer, msg: Buffer) => {
      if (sock.destroyed) return;
      conn.since = Date.now();
      const cookieAt = findCookie(msg);
      if (cookieAt >= 0) reply = this.withCookie(reply, msg, cookieAt, client, true);
      const frame = Buffer.allocUnsafe(2 + reply.length);
      frame.writeUInt16BE(reply.length, 0);
      reply.copy(frame, 2);
      // Backpressure: a client that pipelines and never reads must not make us buffer every answer.
      if (!sock.write(frame) && !waitingDrain) {
        waitingDrain = true;
        sock.pause();
        sock.once('drain', () => {
          waitingDrain = false;
          if (!this.draining && inFlight < this.limits.maxPipelined) sock.resume();
          pump();
        });
      }
    };
    const pump = () => {
      // While draining for shutdown, finish what is in flight but take no new query.
      while (!this.draining && complete() && inFlight < this.limits.maxPipelined && !sock.writableNeedDrain) {
        const len = buf.readUInt16BE(0);
        const msg = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        conn.since = Date.now();
        const r = this.proxy.handle(msg, client, false);
        if (r instanceof Promise) {
          inFlight++;
          void r.then((reply) => {
            inFlight--;
            if (reply) send(reply, msg);
            if (!this.draining && sock.isPaused() && inFlight < this.limits.maxPipelined && !sock.writableNeedDrain)
              sock.resume();
            pump();
          });
        } else if (r) {
          send(r, msg);
        }
      }
      if (inFlight >= this.limits.maxPipelined) sock.pause();
      armRead();
      armIdle();
      finishIfEnded();
    };
    sock.on('data', (d: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      pump();
    });
    sock.on('end', () => {
      // allowHalfOpen: our side stays writable for the answers still to come.
      ended = true;
      if (!complete()) buf = Buffer.alloc(0); // a partial message can never complete now
      pump();
    });
    sock.on('error', noop);
    sock.on('close', () => {
      if (readTimer) clearTimeout(readTimer);
      if (idleTimer) clearTimeout(idleTimer);
      this.forget(conn);
    });
    armIdle();
  }

  /**
   * Stops taking new work: no new TCP connection (an inherited listening socket stays open in the
   * service manager, which queues connections for the next process), no new query read from open
   * connections; UDP sockets close as soon as what was read from them is answered.
   */
  drain(): void {
    this.draining = true;
    for (const set of this.sets) this.retire(set);
    for (const c of this.conns) c.sock.pause();
  }

  /**
   * Closes what is left (the caller drains in-flight queries first). TCP connections are ended
   * after their last answer is written, never cut in the middle of one; a client that then
   * reconnects resends only what was not answered.
   */
  async close(): Promise<void> {
    for (const u of [...this.retiring]) {
      u.closeNow = true;
      this.settle(u);
    }
    for (const set of this.sets) this.closeNow(set);
    const closing = this.sets.flatMap((set) =>
      set.tcp
        ? [
            new Promise<void>((r) => {
              if (!set.tcp!.listening) r();
              else set.tcp!.close(() => r());
            }),
          ]
        : [],
    );
    this.sets = [];
    const ending = [...this.conns].map(
      ({ sock: c }) =>
        new Promise<void>((r) => {
          if (c.destroyed) return r();
          // A peer that never reads would hold its unsent answers forever: cut it after a grace.
          const timer = setTimeout(() => c.destroy(), 1000);
          c.once('close', () => {
            clearTimeout(timer);
            r();
          });
          // FIN after the last answer, then keep reading (and ignoring: draining takes no query)
          // until the peer closes too. Closing with unread queries in the kernel's buffer would
          // send a RST, which can discard answers the peer has not read yet.
          c.end();
          c.resume();
        }),
    );
    await Promise.all([...closing, ...ending]);
  }
}

function noop(): void {
  /* fire and forget */
}
