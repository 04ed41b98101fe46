/*
 * handleRecurse: names outside the domain (and unanswered PTRs) go to the configured recursors,
 * which the configuration guarantees are loopback addresses.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import type { SimConfig } from './config.js';
import { setEDNS } from './records.js';
import { SimError } from './types.js';
import { RCODE, setReply, type Msg, type Query } from './wire.js';

export class Recursor {
  /** Exchanges in flight, closed by stop(). */
  private readonly sockets = new Set<dgram.Socket | net.Socket>();

  constructor(private readonly cfg: SimConfig) {}

  /** handleRecurse: the original message over the client's transport, recursors in order; accept
   *  NOERROR/NXDOMAIN or truncated, relay verbatim; else SERVFAIL with RA, no AA (#4426). */
  async recurse(q: Query, raw: Buffer, transport: 'udp' | 'tcp'): Promise<{ msg?: Msg; raw?: Buffer }> {
    for (const r of this.cfg.recursors) {
      try {
        const reply = transport === 'tcp' ? await this.exchangeTcp(raw, r) : await this.exchangeUdp(raw, r);
        if (reply.length < 12 || reply.readUInt16BE(0) !== q.id) continue; // miekg ErrId
        const rcode = reply[3]! & 0xf;
        if (rcode !== RCODE.NOERROR && rcode !== RCODE.NXDOMAIN) continue;
        return { raw: reply };
      } catch {
        continue;
      }
    }
    const m = setReply(q);
    m.ra = true;
    m.rcode = RCODE.SERVFAIL;
    setEDNS(q, m, true);
    return { msg: m };
  }

  private exchangeUdp(query: Buffer, to: { host: string; port: number }): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const s = dgram.createSocket(net.isIPv6(to.host) ? 'udp6' : 'udp4');
      this.sockets.add(s);
      const done = (err: Error | null, b?: Buffer): void => {
        clearTimeout(timer);
        this.sockets.delete(s);
        try {
          s.close();
        } catch {
          /* already closed by stop() */
        }
        if (err) reject(err);
        else resolve(b!);
      };
      const timer = setTimeout(
        () => done(new SimError('SIM_RECURSOR_TIMEOUT', 'recursor timeout')),
        this.cfg.recursorTimeout,
      );
      s.on('error', (e) => done(e));
      s.on('message', (b) => done(null, b));
      s.send(query, to.port, to.host);
    });
  }

  private exchangeTcp(query: Buffer, to: { host: string; port: number }): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host: to.host, port: to.port });
      this.sockets.add(s);
      let acc = Buffer.alloc(0);
      const done = (err: Error | null, b?: Buffer): void => {
        clearTimeout(timer);
        this.sockets.delete(s);
        s.destroy();
        if (err) reject(err);
        else resolve(b!);
      };
      const timer = setTimeout(
        () => done(new SimError('SIM_RECURSOR_TIMEOUT', 'recursor timeout')),
        this.cfg.recursorTimeout,
      );
      s.on('error', (e) => done(e));
      s.on('close', () => done(new SimError('SIM_RECURSOR_CLOSED', 'recursor closed the connection')));
      s.on('data', (d) => {
        acc = Buffer.concat([acc, d]);
        if (acc.length >= 2 && acc.length >= 2 + acc.readUInt16BE(0))
          done(null, acc.subarray(2, 2 + acc.readUInt16BE(0)));
      });
      const len = Buffer.alloc(2);
      len.writeUInt16BE(query.length);
      s.write(Buffer.concat([len, query]));
    });
  }

  closeAll(): void {
    for (const s of this.sockets) {
      if (s instanceof net.Socket) s.destroy();
      else
        try {
          s.close();
        } catch {
          /* closed */
        }
    }
    this.sockets.clear();
  }
}
