/**
 * Upstream pools: an ordered list of DNS servers (the Consul agents, the recursors, or a forward
 * zone's servers) asked over UDP from a shared set of random-port sockets, with TCP when a reply
 * is truncated. One exchange asks the first healthy upstream, hedges to the next one after
 * `hedgeMs` without an answer, fails over on timeout, SERVFAIL, REFUSED or a network error, and
 * gives up at `deadlineMs`. Replies are accepted only when they match what we sent (RFC 5452):
 * the address and port asked, the ID, QR set, and the same question; anything else is dropped
 * and counted as a mismatch. Every upstream is probed on a timer; `maxFails` consecutive failures
 * mark it down until a probe succeeds.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { randomFillSync } from 'node:crypto';
import { scanReply, sameQuestion, buildUpstreamQuery, type ReplyLayout } from '../dns/wire.js';
import { FLAG, HEADER_LEN, RCODE } from '../dns/constants.js';
import { formatHostPort } from '../net/address.js';
import type { Log } from '../observability/log.js';
import type { FailureReason } from '../observability/metrics.js';

export interface UpstreamAddress { host: string; port: number }


/** Hooks the pool calls so the metrics module can count without the pool knowing about it. */
export interface PoolObserver {
  request(pool: string, upstream: string, transport: 'udp' | 'tcp'): void;
  failure(pool: string, upstream: string, reason: FailureReason): void;
  duration(pool: string, upstream: string, seconds: number): void;
  hedged(pool: string): void;
  health(pool: string, upstream: string, healthy: boolean): void;
  overflow(pool: string): void;
}

export interface PoolOptions {
  timeoutMs: number;
  hedgeMs: number;
  deadlineMs: number;
  maxFails: number;
  probeIntervalMs: number;
  /** Question bytes (name, type, class) asked by the health probe. */
  probeQuestion: Buffer;
  /** EDNS buffer size we advertise upstream. */
  udpSize: number;
  maxInFlight: number;
}

export interface Answer { reply: Buffer; layout: ReplyLayout; upstream: string }
export interface Failure { failure: FailureReason | 'overflow'; upstream?: string }
export type ExchangeResult = Answer | Failure;

type Logger = Pick<Log, 'info' | 'warn' | 'debug'>;

/**
 * One pending UDP or TCP question. `done` is called once, with a reply or a failure reason.
 */
interface Pending {
  id: number;
  host: string;
  port: number;
  query: Buffer; // the exact bytes sent (for the question check)
  qEnd: number;
  timer: NodeJS.Timeout;
  done: (reply: Buffer | null, layout: ReplyLayout | null, reason: FailureReason | null) => void;
}

// ---------------------------------------------------------------------------------------------
// Random IDs, drawn in batches from the CSPRNG (RFC 5452 §9.2) to keep crypto off the per-query cost.
const idBuf = Buffer.allocUnsafe(8192);
let idPos = idBuf.length;
function randomId(): number {
  if (idPos >= idBuf.length) { randomFillSync(idBuf); idPos = 0; }
  const v = idBuf.readUInt16BE(idPos);
  idPos += 2;
  return v;
}

/**
 * Outgoing UDP sockets bound to OS-chosen random ports. A handful are shared by all pools (one per
 * query would cost the miss path a bind and a close each time); each is replaced after a number
 * of queries so the source port keeps changing (RFC 5452 §9.3).
 */
interface SocketEntry { s: dgram.Socket; pending: Map<number, Pending>; uses: number; retired: boolean }

class UdpSocketSet {
  private socks: SocketEntry[] = [];
  /** Retired sockets still waiting for answers to queries sent from them. */
  private retiring = new Set<SocketEntry>();
  private next = 0;
  constructor(private readonly family: 4 | 6, private readonly size: number, private readonly maxUses: number,
    private readonly onMismatch: (host: string, port: number) => void) {}

  private open(): SocketEntry {
    const s = dgram.createSocket(this.family === 4 ? 'udp4' : 'udp6');
    const entry: SocketEntry = { s, pending: new Map<number, Pending>(), uses: 0, retired: false };
    s.on('message', (msg, rinfo) => this.onMessage(entry, msg, rinfo));
    s.on('error', () => { /* per-send errors are reported through the send callback */ });
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
    const layout = (msg.readUInt16BE(2) & FLAG.QR) ? scanReply(msg) : null;
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
    const i = this.next = (this.next + 1) % this.socks.length;
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
    let id = randomId();
    for (let tries = 0; entry.pending.has(id) && tries < 8; tries++) id = randomId();
    if (entry.pending.has(id)) { done(null, null, 'network'); return; }
    query.writeUInt16BE(id, 0);
    const e = entry;
    const p: Pending = {
      id, host, port, query, qEnd, done,
      timer: setTimeout(() => { this.settle(e, p); done(null, null, 'timeout'); }, timeoutMs),
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
      for (const p of e.pending.values()) { clearTimeout(p.timer); p.done(null, null, 'network'); }
      e.pending.clear();
      try { e.s.close(); } catch { /* already closed */ }
    }
    this.socks = [];
    this.retiring.clear();
  }
}

/**
 * A kept-open TCP connection to one upstream (RFC 7766 §6.2.1: reuse connections, pipeline,
 * accept answers out of order). Closed after 10 s idle or on any error.
 */
class TcpConnection {
  private sock: net.Socket | null = null;
  private pending = new Map<number, Pending>();
  private buf: Buffer = Buffer.alloc(0);
  private idle: NodeJS.Timeout | null = null;
  constructor(private readonly host: string, private readonly port: number) {}

  send(query: Buffer, qEnd: number, timeoutMs: number, done: Pending['done']): void {
    if (!this.sock) this.connect();
    let id = randomId();
    while (this.pending.has(id)) id = randomId();
    query.writeUInt16BE(id, 0);
    const p: Pending = {
      id, host: this.host, port: this.port, query, qEnd, done,
      timer: setTimeout(() => { this.pending.delete(id); done(null, null, 'timeout'); this.armIdle(); }, timeoutMs),
    };
    this.pending.set(id, p);
    if (this.idle) { clearTimeout(this.idle); this.idle = null; }
    const frame = Buffer.allocUnsafe(2 + query.length);
    frame.writeUInt16BE(query.length, 0);
    query.copy(frame, 2);
    this.sock!.write(frame);
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
      const layout = (msg.readUInt16BE(2) & FLAG.QR) ? scanReply(msg) : null;
      if (!layout || !sameQuestion(msg, layout.qEnd, p.query, p.qEnd)) continue;
      this.pending.delete(p.id);
      clearTimeout(p.timer);
      p.done(Buffer.from(msg), layout, null);
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
    if (this.idle) { clearTimeout(this.idle); this.idle = null; }
    const pend = [...this.pending.values()];
    this.pending.clear();
    for (const p of pend) { clearTimeout(p.timer); p.done(null, null, 'network'); }
  }

  close(): void {
    const s = this.sock;
    if (s) { this.fail(s); s.destroy(); }
  }
}

/** Shared outgoing sockets for every pool. */
export class UpstreamSockets {
  readonly udp4: UdpSocketSet;
  readonly udp6: UdpSocketSet;
  mismatches = 0;
  constructor(size = 8, maxUses = 20_000) {
    const mm = () => { this.mismatches++; };
    this.udp4 = new UdpSocketSet(4, size, maxUses, mm);
    this.udp6 = new UdpSocketSet(6, size, maxUses, mm);
  }
  close(): void { this.udp4.close(); this.udp6.close(); }
}

/** One try of an exchange at one upstream. */
interface Try { u: Upstream; at: number; done: boolean; counted: boolean }

class Upstream {
  readonly label: string;
  fails = 0;
  down = false;
  lastOkAt = 0;
  tcp: TcpConnection;
  readonly family: 4 | 6;
  constructor(readonly host: string, readonly port: number) {
    this.family = net.isIPv6(host) ? 6 : 4;
    this.label = formatHostPort({ host, port });
    this.tcp = new TcpConnection(host, port);
  }
}

export const NULL_OBSERVER: PoolObserver = {
  request() {}, failure() {}, duration() {}, hedged() {}, health() {}, overflow() {},
};

export class UpstreamPool {
  readonly upstreams: Upstream[];
  private inFlight = 0;
  private probeTimer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(readonly name: string, addrs: UpstreamAddress[], private readonly opts: PoolOptions,
    private readonly transport: UpstreamSockets, private readonly observer: PoolObserver = NULL_OBSERVER,
    private readonly log?: Logger) {
    this.upstreams = addrs.map((a) => new Upstream(a.host, a.port));
  }

  /** Time of the most recent good reply from any upstream of the pool (probe or query), 0 if never. */
  lastOkAt(): number {
    let t = 0;
    for (const u of this.upstreams) if (u.lastOkAt > t) t = u.lastOkAt;
    return t;
  }

  status(): { upstream: string; healthy: boolean; lastOkAt: number }[] {
    return this.upstreams.map((u) => ({ upstream: u.label, healthy: !u.down, lastOkAt: u.lastOkAt }));
  }

  /**
   * Asks the pool one question. `question` holds the name/type/class bytes in [qStart, qEnd).
   * Resolves, never rejects: with an accepted answer, or with the reason the last try failed.
   */
  exchange(question: Buffer, qStart: number, qEnd: number, clientFlags: number, dnssecOk: boolean): Promise<ExchangeResult> {
    if (this.inFlight >= this.opts.maxInFlight) {
      this.observer.overflow(this.name);
      return Promise.resolve({ failure: 'overflow' });
    }
    this.inFlight++;
    const queryTemplate = buildUpstreamQuery(question, qStart, qEnd, clientFlags, dnssecOk, this.opts.udpSize);
    const qEndInQuery = HEADER_LEN + (qEnd - qStart);
    return new Promise<ExchangeResult>((resolve) => {
      const order = this.order();
      const maxTries = order.length * 2;
      let tries = 0;
      let outstanding = 0;
      let finished = false;
      let lastFailure: Failure = { failure: 'timeout' };
      let hedge: NodeJS.Timeout | null = null;
      const started = Date.now();
      const running: Try[] = [];
      const finish = (r: ExchangeResult) => {
        if (finished) return;
        finished = true;
        this.inFlight--;
        clearTimeout(deadline);
        if (hedge) clearTimeout(hedge);
        resolve(r);
      };
      const deadline = setTimeout(() => finish(lastFailure), this.opts.deadlineMs);
      const launch = () => {
        if (finished || tries >= maxTries) return;
        const u = order[tries % order.length]!;
        tries++;
        outstanding++;
        const now = Date.now();
        const remaining = this.opts.deadlineMs - (now - started);
        const t: Try = { u, at: now, done: false, counted: false };
        running.push(t);
        this.ask(t, Buffer.from(queryTemplate), qEndInQuery, Math.max(1, Math.min(this.opts.timeoutMs, remaining)), (r) => {
          outstanding--;
          t.done = true;
          if (finished) return;
          if ('reply' in r) {
            // Someone else answered while an earlier upstream stayed silent past hedgeMs: count that
            // as its failure now rather than at its timeout, so maxFails marks a silent agent down
            // after a couple of queries instead of after maxFails whole timeouts of hedging.
            const late = Date.now() - this.opts.hedgeMs;
            for (const o of running) {
              if (o !== t && !o.done && !o.counted && o.at <= late) { o.counted = true; this.markFailure(o.u, 'timeout'); }
            }
            finish(r);
            return;
          }
          lastFailure = r;
          // Fail over at once unless another try is still running (it may yet answer).
          if (outstanding === 0) {
            if (tries >= maxTries) finish(lastFailure);
            else launch();
          }
        });
        if (hedge) clearTimeout(hedge);
        if (tries < order.length) {
          // A silent upstream should cost hedgeMs, not a whole timeout: ask the next one too.
          hedge = setTimeout(() => {
            hedge = null;
            if (!finished) { this.observer.hedged(this.name); launch(); }
          }, this.opts.hedgeMs);
        }
      };
      launch();
    });
  }

  /** Healthy upstreams in configured order; when all are down, all of them (someone may be back). */
  private order(): Upstream[] {
    const up = this.upstreams.filter((u) => !u.down);
    return up.length ? up : this.upstreams;
  }

  /** One try at one upstream: UDP, then TCP to the same upstream if the UDP reply is truncated. */
  private ask(t: Try, query: Buffer, qEnd: number, timeoutMs: number, cb: (r: ExchangeResult) => void): void {
    const u = t.u;
    const t0 = process.hrtime.bigint();
    this.observer.request(this.name, u.label, 'udp');
    const sockets = u.family === 6 ? this.transport.udp6 : this.transport.udp4;
    sockets.send(u.host, u.port, query, qEnd, timeoutMs, (reply, layout, reason) => {
      if (reply && layout && (layout.flags & FLAG.TC)) {
        // RFC 7766 §5: a truncated UDP answer is retried over TCP to the same server.
        this.observer.request(this.name, u.label, 'tcp');
        u.tcp.send(Buffer.from(query), qEnd, timeoutMs, (r2, l2, reason2) => this.settle(t, t0, r2, l2, reason2, cb));
        return;
      }
      this.settle(t, t0, reply, layout, reason, cb);
    });
  }

  private settle(t: Try, t0: bigint, reply: Buffer | null, layout: ReplyLayout | null, reason: FailureReason | null, cb: (r: ExchangeResult) => void) {
    const u = t.u;
    if (reply && layout) {
      this.observer.duration(this.name, u.label, Number(process.hrtime.bigint() - t0) / 1e9);
      const rcode = layout.rcode | (layout.extRcode << 4);
      // SERVFAIL and REFUSED mean "ask someone else" (Consul's own recursor rule, GH-4426).
      if (rcode === RCODE.SERVFAIL || rcode === RCODE.REFUSED) {
        const why: FailureReason = rcode === RCODE.SERVFAIL ? 'servfail' : 'refused';
        if (!t.counted) this.markFailure(u, why);
        cb({ failure: why, upstream: u.label });
        return;
      }
      this.markOk(u);
      cb({ reply, layout, upstream: u.label });
      return;
    }
    const why = reason ?? 'network';
    if (!t.counted) this.markFailure(u, why); // a try already counted when a hedge beat it is not counted twice
    cb({ failure: why, upstream: u.label });
  }

  private markOk(u: Upstream) {
    u.fails = 0;
    u.lastOkAt = Date.now();
    if (u.down) {
      u.down = false;
      this.observer.health(this.name, u.label, true);
      this.log?.info({ pool: this.name, upstream: u.label }, 'upstream up');
    }
  }

  /** A failed query, or a failed probe (`query` false: probing already, no new round is started). */
  private markFailure(u: Upstream, why: FailureReason, query = true) {
    this.observer.failure(this.name, u.label, why);
    u.fails++;
    if (!u.down && u.fails >= this.opts.maxFails) {
      u.down = true;
      this.observer.health(this.name, u.label, false);
      this.log?.warn({ pool: this.name, upstream: u.label, reason: why, probe: !query }, 'upstream down');
      if (query) this.scheduleProbe(0);
    }
  }

  /** Starts probing: at once, then every probeIntervalMs (a fifth of that while an upstream is down). */
  startProbes(): void {
    this.scheduleProbe(0);
  }

  private scheduleProbe(delay: number) {
    if (this.closed) return;
    if (this.probeTimer) clearTimeout(this.probeTimer);
    this.probeTimer = setTimeout(() => this.probeAll(), delay);
    this.probeTimer.unref();
  }

  private probeAll() {
    this.probeTimer = null;
    let remaining = this.upstreams.length;
    const after = () => {
      if (--remaining > 0) return;
      const anyDown = this.upstreams.some((u) => u.down);
      this.scheduleProbe(anyDown ? Math.max(200, Math.floor(this.opts.probeIntervalMs / 5)) : this.opts.probeIntervalMs);
    };
    const q = this.opts.probeQuestion;
    for (const u of this.upstreams) {
      const query = buildUpstreamQuery(q, 0, q.length, 0, false, this.opts.udpSize);
      const sockets = u.family === 6 ? this.transport.udp6 : this.transport.udp4;
      sockets.send(u.host, u.port, query, HEADER_LEN + q.length, this.opts.timeoutMs, (reply, layout, reason) => {
        // Any well-formed matching reply proves the server is alive and answering.
        if (reply && layout) this.markOk(u);
        else this.markFailure(u, reason ?? 'network', false);
        after();
      });
    }
  }

  close(): void {
    this.closed = true;
    if (this.probeTimer) clearTimeout(this.probeTimer);
    for (const u of this.upstreams) u.tcp.close();
  }
}
