/*
 * The agent's DNS listeners: one UDP socket and one TCP server on the same port, a query counter,
 * and one query end to end (parse, route, answer or recurse, trim, apply the current fault).
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import type { SimConfig } from './config.js';
import type { DnsAnswerer } from './dns.js';
import { FaultState, garbageReply, mangleMsg, mangleRaw, servfailReply, wrongId } from './faults.js';
import type { Recursor } from './recursor.js';
import { trimTCP, trimUDP } from './trim.js';
import { RCODE, encodeMsg, parseQuery, setReply, type Msg, type Query } from './wire.js';

type Resolved = { q: Query | null; msg?: Msg; raw?: Buffer } | null;

export class DnsServer {
  port = 0;
  /** DNS queries received, all transports. */
  queries = 0;
  private udp: dgram.Socket | null = null;
  private tcp: net.Server | null = null;
  private readonly tcpConns = new Set<net.Socket>();

  constructor(
    private readonly cfg: SimConfig,
    private readonly answerer: DnsAnswerer,
    private readonly recursor: Recursor,
    private readonly faults: FaultState,
  ) {}

  /** Build the reply the agent would send: a Msg we authored, or raw bytes relayed from a recursor. */
  private async resolve(buf: Buffer, transport: 'udp' | 'tcp', remote: string): Promise<Resolved> {
    const q = parseQuery(buf);
    if (q === null) return null;
    if ('formerr' in q) {
      // miekg answers unparseable queries / QDCOUNT != 1 with a bare FORMERR header.
      return {
        q: null,
        msg: {
          id: q.id,
          opcode: q.opcode,
          aa: false,
          tc: false,
          rd: false,
          ra: false,
          cd: false,
          rcode: RCODE.FORMERR,
          q: null,
          answer: [],
          ns: [],
          extra: [],
        },
      };
    }
    if (q.opcode !== 0 && q.opcode !== 4) {
      // DefaultMsgAcceptFunc: MsgRejectNotImplemented for anything but QUERY and NOTIFY.
      const m = setReply(q);
      m.q = null;
      m.rcode = RCODE.NOTIMP;
      return { q, msg: m };
    }
    // ServeMux.match: for DS the zone apex handler is only a fallback, "." (recursors) wins.
    let where = this.answerer.route(q.labels);
    if (q.qtype === 43 && where === 'consul' && this.cfg.recursors.length) where = 'recurse';
    switch (where) {
      case 'consul': {
        const m = this.answerer.handleQuery(q, remote);
        const trimmed = transport === 'udp' ? trimUDP(q, m, this.cfg.udpLimit) : trimTCP(q, m);
        if (trimmed && this.cfg.enableTruncate) m.tc = true;
        return { q, msg: m };
      }
      case 'arpa': {
        const m = this.answerer.handlePtr(q);
        if (m) return { q, msg: m };
        return { q, ...(await this.recursor.recurse(q, buf, transport)) };
      }
      case 'recurse':
        return { q, ...(await this.recursor.recurse(q, buf, transport)) };
      case 'refused': {
        // handleRefused: SetRcode(req, RcodeRefused) - question echoed, no AA, RA or OPT.
        const m = setReply(q);
        m.rcode = RCODE.REFUSED;
        return { q, msg: m };
      }
    }
  }

  /** One query: count it, apply the current fault; null means "send nothing". */
  private async serve(buf: Buffer, transport: 'udp' | 'tcp', remote: string): Promise<Buffer | null> {
    this.queries++;
    const fault = this.faults.dns;
    if (fault === 'silent') return null;
    if (fault === 'garbage') return garbageReply(buf, randomBytes(40));
    let res: Resolved;
    if (fault === 'servfail') {
      const q = parseQuery(buf);
      res = !q || 'formerr' in q ? await this.resolve(buf, transport, remote) : { q, msg: servfailReply(this.cfg, q) };
    } else res = await this.resolve(buf, transport, remote);
    if (!res) return null;
    const out = res.msg
      ? encodeMsg(mangleMsg(fault, res.msg, transport), true)
      : mangleRaw(fault, Buffer.from(res.raw!), transport);
    if (fault === 'wrongid') wrongId(out);
    return this.faults.delayed(out, fault === 'slow' ? this.faults.delayMs : 0);
  }

  private onUdp(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const sock = this.udp;
    void Promise.resolve(this.serve(msg, 'udp', rinfo.address))
      .then((reply) => {
        if (reply && sock && sock === this.udp && !this.faults.stopped) sock.send(reply, rinfo.port, rinfo.address);
      })
      .catch(() => {
        /* a bug here must not kill the test process; the query just goes unanswered */
      });
  }

  private onTcpConn(sock: net.Socket): void {
    this.tcpConns.add(sock);
    let acc = Buffer.alloc(0);
    // miekg dns.Server closes idle TCP connections (IdleTimeout 8 s).
    sock.setTimeout(8000, () => sock.destroy());
    sock.on('close', () => this.tcpConns.delete(sock));
    sock.on('error', () => sock.destroy());
    sock.on('data', (d) => {
      acc = acc.length ? Buffer.concat([acc, d]) : d;
      while (acc.length >= 2) {
        const len = acc.readUInt16BE(0);
        if (acc.length < 2 + len) break;
        const frame = Buffer.from(acc.subarray(2, 2 + len));
        acc = acc.subarray(2 + len);
        void Promise.resolve(this.serve(frame, 'tcp', sock.remoteAddress ?? ''))
          .then((reply) => {
            if (!reply || sock.destroyed) return;
            const l = Buffer.alloc(2);
            l.writeUInt16BE(reply.length);
            sock.write(Buffer.concat([l, reply]));
          })
          .catch(() => sock.destroy());
      }
    });
  }

  async bind(port: number): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const udp = dgram.createSocket(net.isIPv6(this.cfg.host) ? 'udp6' : 'udp4');
      await new Promise<void>((resolve, reject) => {
        udp.once('error', reject);
        udp.bind(port, this.cfg.host, () => {
          udp.off('error', reject);
          resolve();
        });
      });
      udp.on('error', () => {
        /* ICMP errors for gone clients */
      });
      const actual = udp.address().port;
      const tcp = net.createServer((s) => this.onTcpConn(s));
      try {
        await new Promise<void>((resolve, reject) => {
          tcp.once('error', reject);
          tcp.listen(actual, this.cfg.host, () => {
            tcp.off('error', reject);
            resolve();
          });
        });
      } catch (err) {
        udp.close();
        // Port 0: the UDP port's TCP twin may be taken; pick another pair.
        if (port === 0 && attempt < 20 && (err as NodeJS.ErrnoException).code === 'EADDRINUSE') continue;
        throw err;
      }
      udp.on('message', (msg, rinfo) => this.onUdp(msg, rinfo));
      this.udp = udp;
      this.tcp = tcp;
      this.port = actual;
      return;
    }
  }

  async close(): Promise<void> {
    const udp = this.udp;
    const tcp = this.tcp;
    this.udp = null;
    this.tcp = null;
    if (udp) await new Promise<void>((r) => udp.close(() => r()));
    for (const s of this.tcpConns) s.destroy();
    this.tcpConns.clear();
    if (tcp) await new Promise<void>((r) => tcp.close(() => r()));
  }
}
