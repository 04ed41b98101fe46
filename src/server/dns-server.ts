/**
 * Listeners: UDP and TCP on every configured address, IPv4 and IPv6. TCP follows RFC 7766: the
 * 2-byte length framing copes with any chunking, queries are pipelined and answered as they
 * complete (out of order), at most `maxPipelined` are in flight per connection (reading pauses
 * beyond), an idle connection is closed after `idleTimeoutMs`, a message that does not complete
 * within `readTimeoutMs` (a client dribbling one byte a minute) closes it, and connections are
 * capped in total and per client.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import type { QueryHandler } from '../query/handler.js';
import type { Logger } from '../observability/log.js';
import { formatHostPort } from '../net/address.js';

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
}

export class DnsServer {
  private udp: dgram.Socket[] = [];
  private tcp: net.Server[] = [];
  private conns = new Set<net.Socket>();
  private perClient = new Map<string, number>();
  private draining = false;
  udpAddresses: string[] = [];
  tcpAddresses: string[] = [];

  constructor(
    private readonly proxy: QueryHandler,
    private limits: TcpLimits,
    private readonly counters: ServerCounters,
    private readonly log: Logger,
  ) {}

  setLimits(l: TcpLimits): void {
    this.limits = l;
  }

  async listen(addrs: ListenAddress[]): Promise<void> {
    for (const a of addrs) {
      // Bind TCP first when the port is 0, then UDP on the same port, so both share one number.
      const srv = net.createServer((sock) => this.onConnection(sock));
      await new Promise<void>((resolve, reject) => {
        srv.once('error', reject);
        srv.listen({ host: a.host, port: a.port, exclusive: true }, () => {
          srv.off('error', reject);
          resolve();
        });
      });
      const port = (srv.address() as net.AddressInfo).port;
      this.tcp.push(srv);
      this.tcpAddresses.push(formatHostPort({ host: a.host, port }));
      const sock = dgram.createSocket({ type: net.isIPv6(a.host) ? 'udp6' : 'udp4', ipv6Only: net.isIPv6(a.host) });
      await new Promise<void>((resolve, reject) => {
        sock.once('error', reject);
        sock.bind({ address: a.host, port, exclusive: true }, () => {
          sock.off('error', reject);
          resolve();
        });
      });
      sock.on('error', (err) => this.log.warn({ err }, 'udp socket error'));
      sock.on('message', (msg, rinfo) => this.onDatagram(sock, msg, rinfo));
      this.udp.push(sock);
      this.udpAddresses.push(formatHostPort({ host: a.host, port }));
    }
  }

  private onDatagram(sock: dgram.Socket, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (this.draining) return;
    const r = this.proxy.handle(msg, rinfo.address, true);
    if (r === null) return;
    if (r instanceof Promise) {
      void r.then((reply) => {
        if (reply) sock.send(reply, rinfo.port, rinfo.address, noop);
      });
    } else {
      sock.send(r, rinfo.port, rinfo.address, noop);
    }
  }

  private onConnection(sock: net.Socket): void {
    const client = sock.remoteAddress ?? '';
    const l = this.limits;
    if (this.conns.size >= l.maxConnections) {
      this.counters.tcpRejected.max_connections++;
      sock.destroy();
      return;
    }
    const n = this.perClient.get(client) ?? 0;
    if (n >= l.maxPerClient) {
      this.counters.tcpRejected.max_per_client++;
      sock.destroy();
      return;
    }
    this.perClient.set(client, n + 1);
    this.conns.add(sock);
    this.counters.tcpConnections = this.conns.size;
    sock.setNoDelay(true);

    let buf: Buffer = Buffer.alloc(0);
    let inFlight = 0;
    let readTimer: NodeJS.Timeout | null = null;
    let idleTimer: NodeJS.Timeout | null = null;
    let waitingDrain = false;
    const armIdle = () => {
      if (idleTimer) clearTimeout(idleTimer);
      idleTimer =
        inFlight === 0 && buf.length === 0 ? setTimeout(() => sock.destroy(), this.limits.idleTimeoutMs) : null;
    };
    const armRead = () => {
      // A partial message must complete in time: one byte a minute keeps no connection open.
      // Complete queries waiting behind maxPipelined in flight are not partial.
      const partial = buf.length > 0 && (buf.length < 2 || buf.length < 2 + buf.readUInt16BE(0));
      if (partial && !readTimer) readTimer = setTimeout(() => sock.destroy(), this.limits.readTimeoutMs);
      if (!partial && readTimer) {
        clearTimeout(readTimer);
        readTimer = null;
      }
    };
    const send = (reply: Buffer) => {
      if (sock.destroyed) return;
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
      while (!this.draining && buf.length >= 2 && inFlight < this.limits.maxPipelined && !sock.writableNeedDrain) {
        const len = buf.readUInt16BE(0);
        if (buf.length < 2 + len) break;
        const msg = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        if (readTimer) {
          clearTimeout(readTimer);
          readTimer = null;
        }
        const r = this.proxy.handle(msg, client, false);
        if (r instanceof Promise) {
          inFlight++;
          void r.then((reply) => {
            inFlight--;
            if (reply) send(reply);
            if (!this.draining && sock.isPaused() && inFlight < this.limits.maxPipelined && !sock.writableNeedDrain)
              sock.resume();
            pump();
            armIdle();
          });
        } else if (r) {
          send(r);
        }
      }
      if (inFlight >= this.limits.maxPipelined) sock.pause();
      armRead();
      armIdle();
    };
    sock.on('data', (d: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      pump();
    });
    sock.on('error', noop);
    sock.on('close', () => {
      if (readTimer) clearTimeout(readTimer);
      if (idleTimer) clearTimeout(idleTimer);
      this.conns.delete(sock);
      this.counters.tcpConnections = this.conns.size;
      const c = (this.perClient.get(client) ?? 1) - 1;
      if (c <= 0) this.perClient.delete(client);
      else this.perClient.set(client, c);
    });
    armIdle();
  }

  /** Stops taking new queries; sockets stay open so in-flight answers can still be sent. */
  drain(): void {
    this.draining = true;
    for (const s of this.tcp) s.close();
    for (const c of this.conns) c.pause();
  }

  /** Stops accepting and closes open TCP connections (the caller drains in-flight queries first). */
  async close(): Promise<void> {
    for (const s of this.udp) {
      try {
        s.close();
      } catch {
        /* closed */
      }
    }
    this.udp = [];
    const closing = this.tcp.map(
      (s) =>
        new Promise<void>((r) => {
          if (!s.listening) r();
          else s.close(() => r());
        }),
    );
    this.tcp = [];
    for (const c of this.conns) c.destroy();
    await Promise.all(closing);
  }
}

function noop(): void {
  /* fire and forget */
}
