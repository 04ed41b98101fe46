import net from 'node:net';
import { scanReply, sameQuestion } from '../dns/wire.js';
import type { RandomIds } from './ids.js';
import type { Cancel, Pending } from './types.js';
import { FLAG, HEADER_LEN } from '../dns/constants.js';

/**
 * A kept-open TCP connection to one upstream (RFC 7766 §6.2.1: reuse connections, pipeline,
 * accept answers out of order). Closed after 10 s idle or on any error.
 */
export class TcpConnection {
  private sock: net.Socket | null = null;
  private pending = new Map<number, Pending>();
  private buf: Buffer = Buffer.alloc(0);
  private idle: NodeJS.Timeout | null = null;
  constructor(
    private readonly host: string,
    private readonly port: number,
    private readonly ids: RandomIds,
  ) {}

  /**
   * Sends `query` (its ID is set here) and waits up to `waitMs` for the matching reply; `done` is
   * called once, unless the returned function cancels the wait first.
   */
  send(query: Buffer, qEnd: number, waitMs: number, done: Pending['done']): Cancel {
    if (!this.sock) this.connect();
    let id = this.ids.next();
    while (this.pending.has(id)) id = this.ids.next();
    query.writeUInt16BE(id, 0);
    const p: Pending = {
      id,
      host: this.host,
      port: this.port,
      query,
      qEnd,
      done,
      timer: setTimeout(() => {
        this.pending.delete(id);
        done(null, null, 'timeout');
        this.armIdle();
      }, waitMs),
    };
    this.pending.set(id, p);
    if (this.idle) {
      clearTimeout(this.idle);
      this.idle = null;
    }
    const frame = Buffer.allocUnsafe(2 + query.length);
    frame.writeUInt16BE(query.length, 0);
    query.copy(frame, 2);
    this.sock!.write(frame);
    return () => {
      if (this.pending.get(id) !== p) return;
      this.pending.delete(id);
      clearTimeout(p.timer);
      this.armIdle();
    };
  }

  private connect() {
    const s = net.connect({ host: this.host, port: this.port });
    s.setNoDelay(true);
    s.unref();
    this.sock = s;
    this.buf = Buffer.alloc(0);
    s.on('data', (d: Buffer) => this.onData(d));
    const fail = () => this.fail(s);
    s.on('error', fail);
    s.on('close', fail);
  }

  private onData(d: Buffer) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    while (this.buf.length >= 2) {
      const len = this.buf.readUInt16BE(0);
      if (this.buf.length < 2 + len) break;
      const msg = this.buf.subarray(2, 2 + len);
      this.buf = this.buf.subarray(2 + len);
      if (msg.length < HEADER_LEN) continue;
      const p = this.pending.get(msg.readUInt16BE(0));
      if (!p) continue;
      const layout = msg.readUInt16BE(2) & FLAG.QR ? scanReply(msg) : null;
      if (!layout || !sameQuestion(msg, layout.qEnd, p.query, p.qEnd)) continue;
      this.pending.delete(p.id);
      clearTimeout(p.timer);
      // Bytes after the last record are ignored (as BIND and unbound): the message ends there.
      p.done(Buffer.from(msg.subarray(0, layout.end)), layout, null);
    }
    this.armIdle();
  }

  private armIdle() {
    if (this.pending.size > 0 || this.idle || !this.sock) return;
    this.idle = setTimeout(() => this.close(), 10_000);
    this.idle.unref();
  }

  private fail(s: net.Socket) {
    if (this.sock !== s) return;
    this.sock = null;
    if (this.idle) {
      clearTimeout(this.idle);
      this.idle = null;
    }
    const pend = [...this.pending.values()];
    this.pending.clear();
    for (const p of pend) {
      clearTimeout(p.timer);
      p.done(null, null, 'network');
    }
  }

  close(): void {
    const s = this.sock;
    if (s) {
      this.fail(s);
      s.destroy();
    }
  }
}
