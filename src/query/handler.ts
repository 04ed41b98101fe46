/**
 * The query handler: one function, `pipeline`, holds the whole path of a query in the order it
 * runs:
 *
 *   listener (server/dns-server.ts)
 *     → parse + validate (dns/wire.ts)
 *     → acl, rate limit (query/gate.ts)
 *     → route, alias to canonical name (query/router.ts, query/alias.ts; memoized per question)
 *     → cache (cache/answer-cache.ts, key from cache/key.ts) ── hit ──→ render → send
 *     → upstream pool (upstream/pool.ts; identical misses share one exchange)
 *     → cacheable? store (cache/answer-cache.ts)
 *     → render: alias restore, rotation, TTL aging, size limit, flags (cache/render.ts, dns/reply.ts)
 *     → send (back through the listener)
 *
 * It never throws: every failure becomes an rcode. Cache hits are answered synchronously from
 * raw bytes; misses return a promise. Identical misses in flight share one upstream exchange.
 */
import { parseQuery, questionName, buildErrorReply, type Query } from '../dns/wire.js';
import { RCODE, EDE, FLAG, HEADER_LEN, CLASS_IN } from '../dns/constants.js';
import { rewriteQuery, toCanonicalName } from './alias.js';
import { Router, type Route } from './router.js';
import { type Answer, type ExchangeResult } from '../upstream/types.js';
import { UpstreamPool } from '../upstream/pool.js';
import { stripOpt, edeOptions, replyFlags, finish, putQuestion } from '../dns/reply.js';
import { renderOnce } from '../cache/render.js';
import { STALE_NONE, STALE_RECHECK, type ResponseCache } from '../cache/answer-cache.js';
import { cacheKey } from '../cache/key.js';
import { applyTtlRules, type TtlLimits } from '../cache/rules.js';
import { SOURCE, ZONE_NONE, type Metrics } from '../observability/metrics.js';
import { GATE_TC, tcReply, type GateCheck } from './gate.js';
import type { LoopGuard } from './loop-guard.js';
import type { Logger } from '../observability/log.js';
import { DEFAULTS } from '../config/schema.js';

interface QueryHandlerSettings {
  domain: string;
  maxUdpSize: number;
  udpAnswerLimit: number;
  logQueries: boolean;
  /** cache.maxTtl and cache.negativeMaxTtl (cache/rules.ts), applied here when there is no cache. */
  ttl?: TtlLimits;
  /** cache.staleClientTimeoutMs: a miss with a stale entry is answered stale after this long (RFC 8767 §5). */
  staleClientTimeoutMs?: number;
}

export interface QueryHandlerDeps {
  settings: QueryHandlerSettings;
  router: Router;
  pools: Map<string, UpstreamPool>;
  metrics: Metrics;
  log: Logger;
  cache?: ResponseCache | null;
  gate?: GateCheck | null;
  loop?: LoopGuard | null;
}

/**
 * What the handler derives from a question's bytes, kept for questions answered from the cache so
 * that a repeated question costs one string (its bytes as a Map key) instead of a name, suffix
 * slices and a key: fewer allocations per hit mean fewer young-generation GC pauses, which set
 * the tail latency of cache hits. Cleared on reconfiguration and when it
 * grows past MEMO_MAX.
 */
interface Memo {
  name: string;
  route: Route;
  /** The lowercased canonical name (alias suffix swapped for the Consul domain). */
  canonicalName: string;
  /** The question to send upstream (the client's bytes, or the canonical form under an alias). */
  question: Buffer | null;
  /** Cache keys by DO (2) and CD (1) bits. */
  keys: (string | undefined)[];
  probe: boolean;
}
const MEMO_MAX = 8192;
/** TTL limits for a handler given none (tests): the schema's defaults. */
const NO_CACHE_TTL: TtlLimits = { maxTtl: DEFAULTS.cache.maxTtl, negativeMaxTtl: DEFAULTS.cache.negativeMaxTtl };

export class QueryHandler {
  private deps: QueryHandlerDeps;
  private readonly inflight = new Map<string, Promise<{ result: ExchangeResult; stored: boolean }>>();
  private readonly memo = new Map<string, Memo>();
  /** Queries being answered (for draining on shutdown). */
  pending = 0;

  constructor(deps: QueryHandlerDeps) {
    this.deps = deps;
  }

  /**
   * Consul health changed: queries arriving from now on must not join an exchange that started
   * before the change (its answer may name the instance that just failed).
   */
  forgetInflight(): void {
    this.inflight.clear();
  }

  /**
   * Swaps in a new configuration (SIGHUP). Each query keeps the configuration it started with to
   * the end; a query from now on never joins an exchange of the old one (its answer belongs to the
   * old pools and is stored in the old cache).
   */
  reconfigure(deps: QueryHandlerDeps): void {
    this.deps = deps;
    this.memo.clear();
    this.inflight.clear();
  }

  /**
   * Answers one client message. Never throws, and a promise it returns never rejects: the
   * listener holds no rejection to handle. An error that is not one of our rcodes is a bug:
   * SERVFAIL for that query and an error log with the stack, never an exit.
   */
  handle(buf: Buffer, address: string, udp: boolean): Buffer | null | Promise<Buffer | null> {
    const deps = this.deps;
    let r: Buffer | null | Promise<Buffer | null>;
    try {
      r = this.pipeline(buf, address, udp);
    } catch (err) {
      return failed(deps, buf, err);
    }
    return r instanceof Promise ? r.catch((err: unknown) => failed(deps, buf, err)) : r;
  }

  // eslint-disable-next-line max-lines-per-function -- the whole path of a query in the order it runs, read top to bottom (the file header draws it)
  private pipeline(buf: Buffer, address: string, udp: boolean): Buffer | null | Promise<Buffer | null> {
    // The continuation of a miss runs after the exchange, maybe after a reload: it reads these.
    const deps = this.deps;
    const { settings, metrics } = deps;
    const transport = udp ? 0 : 1;

    // 1. Parse and validate the raw bytes (the name comes from the memo, or is built in step 3).
    const parsed = parseQuery(buf, false);
    if (parsed.kind === 'drop') return null;
    if (parsed.kind === 'error') {
      // A source outside the ACL gets nothing, not even a FORMERR (no reflection).
      if (deps.gate && deps.gate.check(address, udp) !== 0) return null;
      metrics.request(transport, ZONE_NONE, parsed.q ? parsed.q.qtype : 0);
      metrics.response(ZONE_NONE, parsed.rcode, SOURCE.local);
      return buildErrorReply(buf, parsed.id, parsed.flags, parsed.q, parsed.rcode, {
        udpSize: settings.maxUdpSize,
        ra: true,
      });
    }
    const q = parsed.q;

    // 2. Access control and rate limits.
    const gate = deps.gate;
    if (gate) {
      const verdict = gate.check(address, udp);
      if (verdict !== 0) {
        if (verdict === GATE_TC) return tcReply(buf, q, settings.maxUdpSize); // rate limit, UDP only: retry over TCP
        if (verdict < 0) return null;
        return this.errorReply(buf, q, verdict, 2);
      }
    }

    // 3. Route by name, and 4. the alias: ask the canonical question (x.starlings → x.consul).
    const qbytes = buf.toString('latin1', HEADER_LEN, q.qEnd);
    let m = this.memo.get(qbytes);
    const known = m !== undefined;
    if (m === undefined) m = this.derive(buf, q);
    q.name = m.name;
    const route = m.route;
    // Our own loop probe came back to us through a recursor: answer it here, never forward it again.
    if (m.probe) return this.errorReply(buf, q, RCODE.REFUSED, route.zoneIndex);
    metrics.request(transport, route.zoneIndex, q.qtype);
    if (route.kind === 'refused' || q.qclass !== CLASS_IN)
      return this.errorReply(buf, q, RCODE.REFUSED, route.zoneIndex);
    const canonicalName = m.canonicalName;

    // 5. Cache.
    const bits = (q.dnssecOk ? 2 : 0) | (q.flags & FLAG.CD ? 1 : 0);
    const key =
      m.keys[bits] ?? (m.keys[bits] = cacheKey(canonicalName, q.qtype, q.dnssecOk, (q.flags & FLAG.CD) !== 0));
    const cache = deps.cache;
    if (cache) {
      const hit = cache.lookup(key, q, buf, route, udp);
      if (hit) {
        if (!known) this.remember(qbytes, m);
        metrics.cacheHits++;
        metrics.response(route.zoneIndex, hit[3]! & 0xf, SOURCE.cache);
        if (settings.logQueries)
          deps.log.info(
            { client: address, name: q.name, type: q.qtype, rcode: hit[3]! & 0xf, source: 'cache', ms: 0 },
            'query',
          );
        return hit;
      }
      metrics.cacheMisses++;
    }

    // 6. Upstream (identical misses share one exchange; the cache sees the answer once).
    const pool = deps.pools.get(route.pool);
    if (!pool) return this.errorReply(buf, q, RCODE.REFUSED, route.zoneIndex);
    // RFC 8767 §5: a stale entry whose refresh failed recently is the answer, at once; so is it (or
    // SERVFAIL) when every upstream of the pool is down (CoreDNS failfast_all_unhealthy_upstreams):
    // nobody is asked, the pool's probes go on.
    const staleState = cache?.staleState?.(key) ?? STALE_NONE;
    const down = allDown(pool);
    if (staleState === STALE_RECHECK || down) {
      const now = staleState !== STALE_NONE ? this.staleReply(deps, buf, q, route, key, udp, address) : null;
      if (now) return now;
      if (down) return this.downReply(deps, buf, q, route, address);
    }
    let exchange = this.inflight.get(key);
    if (!exchange) {
      const startedAt = Date.now();
      const question = m.question ?? buf;
      const qStart = m.question ? 0 : HEADER_LEN;
      const qEnd = m.question ? m.question.length : q.qEnd;
      // AD=1 upstream always (RFC 6840 §5.7): the one answer serves AD=0 and AD=1 clients alike,
      // and replyFlags clears AD for a client that asked for neither AD nor DO.
      const ex: Promise<{ result: ExchangeResult; stored: boolean }> = pool
        .exchange(question, qStart, qEnd, q.flags | FLAG.AD, q.dnssecOk)
        .then(
          (result) => {
            if (this.inflight.get(key) === ex) this.inflight.delete(key);
            // The TTL rules run once per exchange: in store, or here without a cache.
            if (cache) {
              if ('failure' in result) cache.refreshFailed?.(key);
              return { result, stored: cache.store(key, q, route, canonicalName, result, startedAt) };
            }
            if (!('failure' in result)) applyTtlRules(result.reply, result.layout, settings.ttl ?? NO_CACHE_TTL);
            return { result, stored: false };
          },
          (err: unknown) => {
            // A bug below (pools resolve, never reject): the next query must not join this one.
            if (this.inflight.get(key) === ex) this.inflight.delete(key);
            throw err;
          },
        );
      this.inflight.set(key, ex);
      exchange = ex;
    }
    this.pending++;
    const t0 = settings.logQueries ? Date.now() : 0;
    // Set once this client has its answer: a stale one at staleClientTimeoutMs, or the exchange's.
    const waiter = { answered: false };
    const answered = exchange.then(
      ({ result, stored }) => {
        this.pending--;
        if (waiter.answered) return null; // answered stale already; the exchange was its refresh
        waiter.answered = true;
        const reply = this.fromUpstream(deps, buf, q, route, result, stored, key, udp);
        if (t0)
          deps.log.info(
            {
              client: address,
              name: q.name,
              type: q.qtype,
              rcode: reply[3]! & 0xf,
              source: 'failure' in result ? 'local' : 'upstream',
              ms: Date.now() - t0,
            },
            'query',
          );
        return reply;
      },
      (err: unknown) => {
        this.pending--;
        throw err;
      },
    );
    if (staleState === STALE_NONE) return answered;
    const ms = settings.staleClientTimeoutMs ?? DEFAULTS.cache.staleClientTimeoutMs;
    return staleAfter(answered, ms, () => {
      if (waiter.answered) return null;
      const s = this.staleReply(deps, buf, q, route, key, udp, address);
      if (s) waiter.answered = true;
      return s;
    });
  }

  /** The stale answer for this client (RFC 8767: TTL 30, EDE 3), counted and logged; or null. */
  private staleReply(
    deps: QueryHandlerDeps,
    buf: Buffer,
    q: Query,
    route: Route,
    key: string,
    udp: boolean,
    address: string,
  ): Buffer | null {
    const stale = deps.cache?.stale(key, q, buf, route, udp);
    if (!stale) return null;
    deps.metrics.servedStale++;
    deps.metrics.response(route.zoneIndex, stale[3]! & 0xf, SOURCE.stale);
    if (deps.settings.logQueries)
      deps.log.info(
        { client: address, name: q.name, type: q.qtype, rcode: stale[3]! & 0xf, source: 'stale', ms: 0 },
        'query',
      );
    return stale;
  }

  /** SERVFAIL + EDE 22 at once: every upstream of the pool is marked down, none is asked. */
  private downReply(deps: QueryHandlerDeps, buf: Buffer, q: Query, route: Route, address: string): Buffer {
    deps.metrics.response(route.zoneIndex, RCODE.SERVFAIL, SOURCE.local);
    if (deps.settings.logQueries)
      deps.log.info(
        { client: address, name: q.name, type: q.qtype, rcode: RCODE.SERVFAIL, source: 'local', ms: 0 },
        'query',
      );
    const ede = { code: EDE.NO_REACHABLE_AUTHORITY, text: `every ${route.pool} upstream is down` };
    return buildErrorReply(buf, q.id, q.flags, q, RCODE.SERVFAIL, {
      udpSize: deps.settings.maxUdpSize,
      ra: true,
      ede,
    });
  }

  /** Renders an upstream result for this client: the answer, a stale answer, or SERVFAIL + EDE. */
  private fromUpstream(
    deps: QueryHandlerDeps,
    buf: Buffer,
    q: Query,
    route: Route,
    r: ExchangeResult,
    stored: boolean,
    key: string,
    udp: boolean,
  ): Buffer {
    const { settings, metrics } = deps;
    if ('failure' in r) {
      const stale = deps.cache?.stale(key, q, buf, route, udp);
      if (stale) {
        metrics.servedStale++;
        metrics.response(route.zoneIndex, stale[3]! & 0xf, SOURCE.stale);
        return stale;
      }
      // Every upstream answered REFUSED or SERVFAIL: that answer (and its EDE) is the client's.
      if (r.answer) return this.relay(deps, buf, q, route, r.answer, false, key, udp);
      metrics.response(route.zoneIndex, RCODE.SERVFAIL, SOURCE.local);
      // RFC 8914: 22 No Reachable Authority when nobody answered in time, 23 Network Error otherwise.
      const ede =
        r.failure === 'timeout'
          ? { code: EDE.NO_REACHABLE_AUTHORITY, text: `no reply from ${route.pool} upstreams` }
          : { code: EDE.NETWORK_ERROR, text: `${route.pool} upstreams failed: ${r.failure}` };
      return buildErrorReply(buf, q.id, q.flags, q, RCODE.SERVFAIL, { udpSize: settings.maxUdpSize, ra: true, ede });
    }
    return this.relay(deps, buf, q, route, r, stored, key, udp);
  }

  /** An upstream's reply for this client: the cache's rendering when it was stored, else rendered here. */
  private relay(
    deps: QueryHandlerDeps,
    buf: Buffer,
    q: Query,
    route: Route,
    r: Answer,
    stored: boolean,
    key: string,
    udp: boolean,
  ): Buffer {
    const { settings, metrics } = deps;
    metrics.response(route.zoneIndex, r.layout.rcode | (r.layout.extRcode << 4), SOURCE.upstream);
    // The rendering the cache just made is exactly what later hits will send: send that.
    const cached = stored ? deps.cache?.peek(key, q, buf, route, udp) : null;
    if (cached) return cached;
    const flags = replyFlags(q, r.layout.flags);
    // The upstream's extended rcode and EDE options go on in our OPT.
    const fin = {
      maxUdpSize: settings.maxUdpSize,
      udp,
      extRcode: r.layout.extRcode,
      upstreamEde: edeOptions(r.reply, r.layout),
    };
    const stripped = stripOpt(r.reply, r.layout);
    if (route.alias !== null || (route.kind === 'consul' && udp && !q.edns && r.layout.an > settings.udpAnswerLimit)) {
      // Miss path only: decode, map names back under the alias and/or trim to udpAnswerLimit
      // (UDP without EDNS only, as Consul's trimUDPResponse: TCP clients get every record).
      const body = renderOnce(stripped, route.alias, settings.domain, settings.udpAnswerLimit, q.edns || !udp);
      if (body) {
        putQuestion(body, buf, q);
        return finish(body, q, flags, fin);
      }
      metrics.response(route.zoneIndex, RCODE.SERVFAIL, SOURCE.local);
      return buildErrorReply(buf, q.id, q.flags, q, RCODE.SERVFAIL, { udpSize: settings.maxUdpSize, ra: true });
    }
    const body = stripped === r.reply ? Buffer.from(stripped) : stripped; // the reply buffer is shared by coalesced waiters
    putQuestion(body, buf, q);
    return finish(body, q, flags, fin);
  }

  /** Derives what a question's bytes mean (name, route, canonical form): the cold part of steps 3-4. */
  private derive(buf: Buffer, q: Query): Memo {
    const name = questionName(buf);
    const route = this.deps.router.route(name);
    const domain = this.deps.settings.domain;
    const m: Memo = {
      name,
      route,
      canonicalName: name,
      question: null,
      keys: [undefined, undefined, undefined, undefined],
      probe: this.deps.loop?.isProbe(name) ?? false,
    };
    if (route.alias !== null) {
      m.canonicalName = toCanonicalName(name, route.alias, domain);
      // The query with the canonical name; keep just its question (name, type, class).
      const rewritten = rewriteQuery(buf, HEADER_LEN, q.qEnd, m.canonicalName);
      m.question = rewritten.subarray(HEADER_LEN, q.qEnd + rewritten.length - buf.length);
    }
    return m;
  }

  /**
   * Keeps a derivation once its question was answered from the cache: only questions that repeat
   * are worth it. Remembering every miss would churn the memo on unique names (a flood of them,
   * or a cache being filled) and leave its dropped entries as old-generation garbage.
   */
  private remember(qbytes: string, m: Memo): void {
    if (this.memo.size >= MEMO_MAX) this.memo.clear();
    this.memo.set(qbytes, m);
  }

  /** Our own error reply (REFUSED, FORMERR, ...), counted as a local answer. */
  private errorReply(buf: Buffer, q: Query, rcode: number, zoneIndex: number): Buffer {
    this.deps.metrics.response(zoneIndex, rcode, SOURCE.local);
    return buildErrorReply(buf, q.id, q.flags, q, rcode, { udpSize: this.deps.settings.maxUdpSize, ra: true });
  }
}

/**
 * Whether every upstream of a pool is marked down. A pool that cannot tell (a test double with
 * only exchange()) is not down.
 */
function allDown(pool: UpstreamPool): boolean {
  const p = pool as Partial<Pick<UpstreamPool, 'status'>> & { allDown?: () => boolean };
  if (typeof p.allDown === 'function') return p.allDown();
  if (typeof p.status !== 'function') return false;
  const list = p.status.call(pool);
  return list.length > 0 && list.every((s) => !s.healthy);
}

/**
 * The client-response timer (RFC 8767 §5, unbound's serve-expired-client-timeout): `answered`,
 * or what `stale()` gives after `ms` if that comes first (null from it: keep waiting). The
 * exchange behind `answered` goes on either way and refreshes the cache.
 */
function staleAfter(answered: Promise<Buffer | null>, ms: number, stale: () => Buffer | null): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      const s = stale();
      if (s) resolve(s);
    }, ms);
    answered.then(
      (r) => {
        clearTimeout(timer);
        resolve(r); // a no-op once the stale answer went
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err instanceof Error ? err : new Error(String(err))); // handle() turns it into SERVFAIL
      },
    );
  });
}

/** The answer to a query the pipeline failed on: SERVFAIL when its header can be read, logged once. */
function failed(deps: QueryHandlerDeps, buf: Buffer, err: unknown): Buffer | null {
  deps.log.error({ err }, 'query handler failed');
  if (buf.length < HEADER_LEN) return null;
  let q: Query | null = null;
  try {
    const parsed = parseQuery(buf, false);
    if (parsed.kind === 'drop') return null;
    if (parsed.kind !== 'error') q = parsed.q;
  } catch {
    /* answered without the question */
  }
  return buildErrorReply(buf, buf.readUInt16BE(0), buf.readUInt16BE(2), q, RCODE.SERVFAIL, {
    udpSize: deps.settings.maxUdpSize,
    ra: true,
  });
}
