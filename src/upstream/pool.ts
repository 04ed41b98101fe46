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
import net from 'node:net';
import { buildUpstreamQuery } from '../dns/wire.js';
import { FLAG, HEADER_LEN, RCODE } from '../dns/constants.js';
import { formatHostPort } from '../net/address.js';
import type { FailureReason } from '../observability/metrics.js';
import type { RandomIds } from './ids.js';
import { TcpConnection } from './tcp.js';
import type { UpstreamSockets } from './udp.js';
import type { ExchangeResult, Failure, Logger, PoolObserver, PoolOptions, UpstreamAddress } from './types.js';
import type { ReplyLayout } from '../dns/wire.js';

/** One try of an exchange at one upstream. */
interface Try {
  u: Upstream;
  at: number;
  done: boolean;
  counted: boolean;
}

class Upstream {
  readonly label: string;
  fails = 0;
  down = false;
  lastOkAt = 0;
  tcp: TcpConnection;
  readonly family: 4 | 6;
  constructor(
    readonly host: string,
    readonly port: number,
    ids: RandomIds,
  ) {
    this.family = net.isIPv6(host) ? 6 : 4;
    this.label = formatHostPort({ host, port });
    this.tcp = new TcpConnection(host, port, ids);
  }
}

const NULL_OBSERVER: PoolObserver = {
  request() {},
  failure() {},
  duration() {},
  hedged() {},
  health() {},
  overflow() {},
};

export class UpstreamPool {
  readonly upstreams: Upstream[];
  private inFlight = 0;
  private probeTimer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(
    readonly name: string,
    addrs: UpstreamAddress[],
    private readonly opts: PoolOptions,
    private readonly transport: UpstreamSockets,
    private readonly observer: PoolObserver = NULL_OBSERVER,
    private readonly log?: Logger,
  ) {
    this.upstreams = addrs.map((a) => new Upstream(a.host, a.port, transport.ids));
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
  // eslint-disable-next-line max-lines-per-function -- one exchange's state machine (tries, hedge, deadline) over closures sharing its pending state
  exchange(
    question: Buffer,
    qStart: number,
    qEnd: number,
    clientFlags: number,
    dnssecOk: boolean,
  ): Promise<ExchangeResult> {
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
        this.ask(
          t,
          Buffer.from(queryTemplate),
          qEndInQuery,
          Math.max(1, Math.min(this.opts.timeoutMs, remaining)),
          (r) => {
            outstanding--;
            t.done = true;
            if (finished) return;
            if ('reply' in r) {
              // Someone else answered while an earlier upstream stayed silent past hedgeMs: count that
              // as its failure now rather than at its timeout, so maxFails marks a silent agent down
              // after a couple of queries instead of after maxFails whole timeouts of hedging.
              const late = Date.now() - this.opts.hedgeMs;
              for (const o of running) {
                if (o !== t && !o.done && !o.counted && o.at <= late) {
                  o.counted = true;
                  this.markFailure(o.u, 'timeout');
                }
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
          },
        );
        if (hedge) clearTimeout(hedge);
        if (tries < order.length) {
          // A silent upstream should cost hedgeMs, not a whole timeout: ask the next one too.
          hedge = setTimeout(() => {
            hedge = null;
            if (!finished) {
              this.observer.hedged(this.name);
              launch();
            }
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
      if (reply && layout && layout.flags & FLAG.TC) {
        // RFC 7766 §5: a truncated UDP answer is retried over TCP to the same server.
        this.observer.request(this.name, u.label, 'tcp');
        u.tcp.send(Buffer.from(query), qEnd, timeoutMs, (r2, l2, reason2) => this.settle(t, t0, r2, l2, reason2, cb));
        return;
      }
      this.settle(t, t0, reply, layout, reason, cb);
    });
  }

  private settle(
    t: Try,
    t0: bigint,
    reply: Buffer | null,
    layout: ReplyLayout | null,
    reason: FailureReason | null,
    cb: (r: ExchangeResult) => void,
  ) {
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
      this.scheduleProbe(
        anyDown ? Math.max(200, Math.floor(this.opts.probeIntervalMs / 5)) : this.opts.probeIntervalMs,
      );
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
