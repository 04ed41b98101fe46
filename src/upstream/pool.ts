/**
 * Upstream pools: an ordered list of DNS servers (the Consul agents, the recursors, or a forward
 * zone's servers) asked over UDP from random-port sockets connected to each (udp.ts), with TCP
 * when a reply is truncated. One exchange asks the first healthy upstream, hedges to the next one
 * after `hedgeMs` without an answer, retries with backoff, fails over on SERVFAIL, REFUSED or a
 * network error, accepts a late reply to any of its tries, and gives up at `deadlineMs` (the rules
 * are at exchange()). Replies are accepted only when they match what we sent (RFC 5452): the
 * address and port asked, the ID, QR set, and the same question; anything else is dropped and
 * counted as a mismatch. Every upstream is probed on a timer; `maxFails` consecutive timeouts or
 * network errors mark it down until a probe succeeds.
 */
import { buildUpstreamQuery } from '../dns/wire.js';
import { FLAG, HEADER_LEN, RCODE } from '../dns/constants.js';
import { formatHostPort } from '../net/address.js';
import type { FailureReason } from '../observability/metrics.js';
import type { RandomIds } from './ids.js';
import { TcpConnection } from './tcp.js';
import type { UdpRing, UpstreamSockets } from './udp.js';
import type {
  Answer,
  Cancel,
  ExchangeResult,
  Failure,
  Logger,
  PoolObserver,
  PoolOptions,
  UpstreamAddress,
} from './types.js';
import type { ReplyLayout } from '../dns/wire.js';

/** One try of an exchange at one upstream. */
interface Try {
  u: Upstream;
  at: number;
  /** A reply or a failure came back. */
  done: boolean;
  /** Its per-try timeout ran out: the next try is under way, but its reply is still accepted. */
  lapsed: boolean;
  /** Its silence was counted as a timeout already. */
  counted: boolean;
  timer: NodeJS.Timeout | null;
  /** Ends the wait for its reply (UDP, or the TCP retry after TC). */
  cancel: Cancel | null;
}

class Upstream {
  readonly label: string;
  fails = 0;
  down = false;
  lastOkAt = 0;
  tcp: TcpConnection;
  constructor(
    readonly host: string,
    readonly port: number,
    readonly udp: UdpRing,
    ids: RandomIds,
  ) {
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

/** An exchange that ends this much past its deadline is logged (the event loop was held up). */
const LATE_LOG_MS = 100;

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
    this.upstreams = addrs.map((a) => new Upstream(a.host, a.port, transport.acquire(a.host, a.port), transport.ids));
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

  /** Whether every upstream is marked down (the handler then answers at once: nobody is asked). */
  allDown(): boolean {
    return this.upstreams.length > 0 && this.upstreams.every((u) => u.down);
  }

  /**
   * Asks the pool one question. `question` holds the name/type/class bytes in [qStart, qEnd).
   * Resolves, never rejects: with an accepted answer, or with the reason the exchange failed.
   *
   * The rules of one exchange:
   * - the first healthy upstream is asked; after hedgeMs without a reply the next one too (first
   *   round only), and when a try's timeout runs out with no try running, the next upstream,
   *   round after round, each round's timeout twice the one before, until deadlineMs;
   * - a valid reply to any try is accepted until the deadline, even after that try's own timeout
   *   (a slow upstream is slow, not down: RFC 8767's resolvers wait the same way);
   * - REFUSED or SERVFAIL is that upstream's answer for this name, not proof it is down: the next
   *   upstream is asked, and if nobody answers better the client gets that answer;
   * - an upstream that failed outright (network error, such as ECONNREFUSED from a closed port,
   *   or REFUSED/SERVFAIL) is not asked again in this exchange; when none is left, it ends at once;
   * - tries that never got a reply are counted as timeouts when the exchange ends (or, when
   *   another upstream answered, if they had been waiting hedgeMs already).
   */
  // eslint-disable-next-line max-lines-per-function -- one exchange's state machine (tries, hedge, backoff, deadline) over closures sharing its state
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
    const { timeoutMs, hedgeMs, deadlineMs } = this.opts;
    // eslint-disable-next-line max-lines-per-function -- the same state machine: its closures are the exchange's state
    return new Promise<ExchangeResult>((resolve) => {
      const order = this.order();
      /** Upstreams still worth asking in this exchange. */
      const live = new Set(order);
      let next = 0;
      let launched = 0;
      let finished = false;
      let lastFailure: Failure = { failure: 'timeout' };
      /** A REFUSED/SERVFAIL reply: the answer if nobody does better. */
      let rcodeAnswer: Answer | null = null;
      let hedge: NodeJS.Timeout | null = null;
      const started = Date.now();
      const tries: Try[] = [];
      const running = () => tries.some((t) => !t.done && !t.lapsed);
      const failed = (): Failure => (rcodeAnswer ? { ...lastFailure, answer: rcodeAnswer } : lastFailure);
      const finish = (r: ExchangeResult) => {
        if (finished) return;
        finished = true;
        this.inFlight--;
        clearTimeout(deadline);
        if (hedge) clearTimeout(hedge);
        const now = Date.now();
        const winner = 'reply' in r ? r.upstream : null;
        for (const o of tries) {
          if (o.timer) clearTimeout(o.timer);
          if (o.done) continue;
          o.cancel?.();
          // Silent to the end of the exchange, or while another upstream answered: its failure.
          // A slow try of the upstream that answered is not (it is slow, not down).
          if (o.counted || (winner !== null && (o.u.label === winner || o.at > now - hedgeMs))) continue;
          o.counted = true;
          this.markFailure(o.u, 'timeout');
        }
        if (now - started > deadlineMs + LATE_LOG_MS)
          this.log?.warn({ pool: this.name, ms: now - started, deadlineMs }, 'exchange ended after its deadline');
        resolve(r);
      };
      const deadline = setTimeout(() => finish(failed()), deadlineMs);
      const pickNext = (): Upstream | null => {
        for (let i = 0; i < order.length; i++) {
          const u = order[next++ % order.length]!;
          if (live.has(u)) return u;
        }
        return null;
      };
      const launch = () => {
        if (finished) return;
        const u = pickNext();
        if (!u) return;
        const now = Date.now();
        const remaining = deadlineMs - (now - started);
        if (remaining < 1) return; // the deadline timer ends it
        // Backoff: every round over the upstreams waits twice as long as the one before.
        const round = Math.floor(launched / order.length);
        launched++;
        const t: Try = { u, at: now, done: false, lapsed: false, counted: false, timer: null, cancel: null };
        tries.push(t);
        t.timer = setTimeout(
          () => {
            t.timer = null;
            t.lapsed = true;
            if (!finished && !running()) launch();
          },
          Math.max(1, Math.min(timeoutMs * 2 ** Math.min(round, 16), remaining)),
        );
        this.ask(t, Buffer.from(queryTemplate), qEndInQuery, remaining, (r) => {
          if (t.timer) {
            clearTimeout(t.timer);
            t.timer = null;
          }
          // Its wait ended with the exchange's time: silent, counted as such when the exchange ends.
          if ('failure' in r && r.failure === 'timeout') {
            t.lapsed = true;
            return;
          }
          t.done = true;
          if (finished) return;
          if ('reply' in r) {
            finish(r);
            return;
          }
          lastFailure = r;
          if (r.answer) rcodeAnswer = r.answer;
          // It failed outright: it is not asked again in this exchange.
          live.delete(t.u);
          if (live.size === 0) finish(failed());
          else if (!running()) launch();
        });
        if (finished) return; // failed at once (no ID free on the socket) and nothing left to ask
        if (hedge) clearTimeout(hedge);
        hedge = null;
        if (launched < order.length) {
          // A silent upstream should cost hedgeMs, not a whole timeout: ask the next one too.
          hedge = setTimeout(() => {
            hedge = null;
            if (!finished) {
              this.observer.hedged(this.name);
              launch();
            }
          }, hedgeMs);
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

  /**
   * One try at one upstream: UDP, then TCP to the same upstream if the UDP reply is truncated.
   * `waitMs` is how long its reply is accepted (the rest of the exchange).
   */
  private ask(t: Try, query: Buffer, qEnd: number, waitMs: number, cb: (r: ExchangeResult) => void): void {
    const u = t.u;
    const t0 = process.hrtime.bigint();
    this.observer.request(this.name, u.label, 'udp');
    t.cancel = u.udp.send(query, qEnd, waitMs, (reply, layout, reason) => {
      if (reply && layout && layout.flags & FLAG.TC) {
        // RFC 7766 §5: a truncated UDP answer is retried over TCP to the same server.
        this.observer.request(this.name, u.label, 'tcp');
        const left = Math.max(1, waitMs - Number((process.hrtime.bigint() - t0) / 1_000_000n));
        t.cancel = u.tcp.send(Buffer.from(query), qEnd, left, (r2, l2, reason2) =>
          this.settle(t, t0, r2, l2, reason2, cb),
        );
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
      // SERVFAIL and REFUSED mean "ask someone else" (Consul's own recursor rule, GH-4426), but
      // they are this name's answer (DNSSEC bogus, a zone's own failure, an agent that lost its
      // servers), not proof the server is down: counted under their reason, never toward maxFails.
      if (rcode === RCODE.SERVFAIL || rcode === RCODE.REFUSED) {
        const why: FailureReason = rcode === RCODE.SERVFAIL ? 'servfail' : 'refused';
        this.observer.failure(this.name, u.label, why);
        cb({ failure: why, upstream: u.label, answer: { reply, layout, upstream: u.label } });
        return;
      }
      this.markOk(u);
      cb({ reply, layout, upstream: u.label });
      return;
    }
    // Timeouts are counted when the exchange ends; the sockets report one only past the deadline.
    const why = reason ?? 'network';
    if (why !== 'timeout' && !t.counted) {
      t.counted = true;
      this.markFailure(u, why);
    }
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
      u.udp.send(
        query,
        HEADER_LEN + q.length,
        this.opts.timeoutMs,
        (reply, layout, reason) => {
          // Any well-formed matching reply proves the server is alive and answering.
          if (reply && layout) this.markOk(u);
          else this.markFailure(u, reason ?? 'network', false);
          after();
        },
        false,
      );
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.probeTimer) clearTimeout(this.probeTimer);
    for (const u of this.upstreams) {
      u.tcp.close();
      this.transport.release(u.udp);
    }
  }
}
