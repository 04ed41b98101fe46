/**
 * The answer cache. Consul answers with TTL 0, so a TTL cache either does nothing or serves dead
 * instances; this one holds Consul service answers for `cache.consulTtl` while a health watch on
 * the service is live, and drops them the moment the watch reports a change. Everything else
 * keeps its own TTL. Clients always see the upstream's TTLs (aged) after the rules of rules.ts
 * (top bit 0, cache.maxTtl, the negative TTL on a negative answer's SOA), never our holding time.
 *
 * One logical entry per canonical question (after alias mapping): lowercased name, type, DO, CD
 * (the key is cacheKey() of the canonical name, so `x.starlings` and `x.consul` share
 * one entry and one upstream query). The entry holds renderings made once on the miss path: per
 * alias, per record order (rotations of the answer set, so consecutive hits spread load over every
 * instance as Consul's shuffle does), per client class (full for EDNS and TCP clients; trimmed to
 * udpAnswerLimit for UDP clients without EDNS, as Consul's trimUDPResponse does). A hit copies one
 * rendering and patches ID, flags, the client's exact question bytes and the TTLs: no decode, no
 * encode.
 *
 * Watch protection: an entry is held for consulTtl only if it is a positive service
 * answer AND the service's watch had been live since before the answer was fetched AND it has
 * stayed live since (same `liveSince`). An answer fetched before the watch's first reply may
 * predate that reply's baseline, so nothing would ever invalidate it: it keeps Consul's TTL.
 *
 * Why lru-cache: bounded by entries and bytes with O(1) get/set (O(1), a fraction of a microsecond). It
 * is given an explicit ttl ≥ 1 ms always (ttl 0 means "forever" there), no updateAgeOnGet, no
 * autopurge; freshness is checked here against our own clock so expired entries stay available
 * for RFC 8767 serve-stale until their stale window ends.
 */
import { LRUCache } from 'lru-cache';
import type { Query, ReplyLayout } from '../dns/wire.js';
import { FLAG, RCODE, TYPE } from '../dns/constants.js';
import { edeOptions, stripOpt, ttlOffsetsWithoutOpt } from '../dns/reply.js';
import { decodeMessage, type Message } from '../dns/message.js';
import { parseConsulName } from '../consul/names.js';
import { serviceKey } from '../consul/service-key.js';
import { CATALOG } from '../consul/catalog-key.js';
import { cacheKeyPrefix, isKeyOf } from './key.js';
import { applyTtlRules, lowerNames } from './rules.js';
import {
  MAX_ROTATIONS,
  Slab,
  buildVariant,
  hitOptions,
  pick,
  renderHit,
  type HitOptions,
  type Rendering,
  type Variant,
} from './render.js';
import { type ExchangeResult } from '../upstream/types.js';
import type { Metrics } from '../observability/metrics.js';
import { DEFAULTS } from '../config/schema.js';

/** What the cache needs of a route: whether the name is Consul's, and the alias it is under. */
export interface RouteView {
  readonly kind: string;
  /** The alias the name is under, or null for the Consul domain itself and names outside it. */
  readonly alias: string | null;
}

/** What the cache offers the query handler. */
export interface ResponseCache {
  /** A finished reply for this client, or null on a miss. Synchronous, raw bytes only. */
  lookup(key: string, q: Query, query: Buffer, route: RouteView, udp: boolean): Buffer | null;
  /** Offers an upstream answer for caching (the cache decides if it may keep it). */
  store(
    key: string,
    q: Query,
    route: RouteView,
    canonicalName: string,
    result: ExchangeResult,
    startedAt: number,
  ): boolean;
  /** Renders the entry just stored, whatever its freshness (the miss path's own reply). */
  peek(key: string, q: Query, query: Buffer, route: RouteView, udp: boolean): Buffer | null;
  /** A stale answer (RFC 8767) when every upstream failed, or null. */
  stale(key: string, q: Query, query: Buffer, route: RouteView, udp: boolean): Buffer | null;
  /**
   * On a miss: STALE_NONE, STALE_READY (an entry that may be served stale), or STALE_RECHECK (and
   * its last refresh failed less than staleRecheckSeconds ago: serve it at once, ask nobody).
   * Optional, with refreshFailed: a cache without them has no client-response timer.
   */
  staleState?(key: string): number;
  /** An exchange for `key` failed: its stale entry, if any, is served at once for staleRecheckSeconds. */
  refreshFailed?(key: string): void;
}

/** staleState(): no stale entry. */
export const STALE_NONE = 0;
/** staleState(): a stale entry to answer with if the refresh takes longer than staleClientTimeoutMs. */
export const STALE_READY = 1;
/** staleState(): a stale entry whose refresh failed recently: answer with it at once. */
export const STALE_RECHECK = 2;

export interface CacheSettings {
  maxEntries: number;
  maxBytes: number;
  consulTtl: number; // seconds
  negativeMaxTtl: number; // seconds
  maxTtl: number; // seconds, for recursor and zone answers
  staleConsul: number; // seconds an expired Consul entry stays usable as last-known-good
  staleRecursors: number;
  /** RFC 8767 §5 (BIND stale-refresh-time): after a failed refresh, seconds the stale entry is served at once. */
  staleRecheckSeconds?: number;
  udpAnswerLimit: number;
  maxUdpSize: number;
  domain: string;
  /** The Consul domain's aliases: their renderings are made on the miss path too. */
  aliases?: string[];
}

/** What the cache needs from the health watcher (consul/health.ts). */
export interface WatchView {
  ensure(service: string, dc?: string): void;
  touch(service: string, dc?: string): void;
  /** Time (ms) since which the service's watch has been live without interruption, or 0. */
  liveSince(service: string, dc?: string): number;
  /**
   * Whether a fetched reply agrees with the healthy set the service's watch last reported
   * (consul/agree.ts). An answer that does not (read from a server lagging behind the watch's)
   * is not held: it keeps Consul's TTL and is asked again. Absent: every answer agrees.
   */
  agrees?(
    service: string,
    dc: string | undefined,
    queried: string,
    tag: string | undefined,
    qtype: number,
    reply: Message,
  ): boolean;
  /** Whether the live catalog watch lists the service (true), does not (false), or cannot say (null). */
  knows?(service: string, dc?: string): boolean | null;
}

/**
 * liveSince() of a watch whose first request is in flight. An answer fetched then is held for
 * START_GRACE_MS at most, and adopted (held for consulTtl) when the first reply agrees with it:
 * so the misses racing a new watch's first reply are not all sent to the agents.
 */
export const STARTING = -1;
const START_GRACE_MS = 50;

/** The hold decision of one fetched answer. */
interface Hold {
  liveSince: number;
  watchedUntil: number;
}
const NO_HOLD: Hold = Object.freeze({ liveSince: 0, watchedUntil: 0 });

/** NODATA or NXDOMAIN with an SOA (RFC 2308), whole (no TC) and without an extended rcode. */
function negativeHoldable(layout: ReplyLayout): boolean {
  if (layout.flags & FLAG.TC || layout.extRcode !== 0 || layout.negTtl < 0) return false;
  return layout.rcode === RCODE.NXDOMAIN || (layout.rcode === RCODE.NOERROR && layout.an === 0);
}

/**
 * One cached answer. Kept small, as a host's cache holds many of them and most are recursor
 * names: what only a Consul answer needs is in `c` (null otherwise), and the times past storedAt
 * are offsets in ms, small integers that V8 stores in the object itself (absolute ms times do
 * not fit a small integer, and each would cost a heap number of its own).
 */
interface Entry {
  /** When the upstream query started (ms): TTLs age from here. */
  storedAt: number;
  /** Fresh for this long (ms after storedAt) by the upstream's own TTL. */
  ownMs: number;
  /** Servable (fresh or stale) for this long (ms after storedAt). */
  staleMs: number;
  /** Until when (ms) a failed refresh makes this entry be served stale at once (0: none failed). */
  recheckUntil: number;
  flags: number;
  /** The upstream's Extended DNS Error options, rendered into every reply of the entry, or null. */
  ede: Buffer | null;
  /**
   * The canonical reply (OPT stripped) in cache memory (buf, off, len). Renderings for another
   * name of the domain are made from it. For answers outside Consul the entry is itself the only
   * rendering (with its TTL table, nTtl): no extra objects per entry.
   */
  buf: Buffer;
  off: number;
  len: number;
  nTtl: number;
  qEnd: number;
  answers: number;
  size: number;
  /** A Consul answer's service, watch hold and renderings; null outside Consul. */
  c: ConsulPart | null;
}

/** What a Consul answer carries beyond its reply. */
interface ConsulPart {
  service: string | null;
  dc: string | undefined;
  /** serviceKey(service, dc), or null for entries not tied to a service. */
  sk: string | null;
  /** Fresh until while the watch stays live (0 when not watch-protected). */
  watchedUntil: number;
  /** The watch's liveSince when the entry was stored; protection holds while it is unchanged. */
  liveSince: number;
  /** A negative answer with SOA MINIMUM 0: fresh only while held by a watch, never stale. */
  heldOnly: boolean;
  /** Renderings by name of the domain, [0] the Consul domain, [i+1] aliases[i]. */
  variants: (Variant | undefined)[];
}

const NO_TTLS: readonly number[] = [];
const EMPTY = Buffer.alloc(0);

/** A buffer of its own (a slice of Node's shared 8 KiB pool would keep the whole slab alive). */
function ownCopy(b: Buffer | null): Buffer | null {
  if (b === null) return null;
  const out = Buffer.allocUnsafeSlow(b.length);
  b.copy(out);
  return out;
}

/** Per-entry bookkeeping (Map slots, Entry object, arrays) counted into maxBytes. */
const ENTRY_OVERHEAD = 256;
/** changedAt records older than this can no longer refuse a fetch (fetches end within the deadline). */
const CHANGED_KEEP_MS = 10 * 60_000;
/**
 * Query types Consul answers from the service's instances: A, AAAA, SRV, and
 * ANY/TXT (makeARecord). SOA and NS are answered before the service code and other types are
 * NODATA, so those never depend on the service's health.
 */
const SERVICE_TYPES = new Set<number>([TYPE.A, TYPE.AAAA, TYPE.SRV, TYPE.ANY, TYPE.TXT]);

/**
 * Whether, and for how long (seconds), an upstream reply may be cached. One rule per line.
 * Returns -1 for "never". A positive TTL of 0 is cacheable: Consul's TTL 0 answers are held by
 * the health watch (or kept as last-known-good for RFC 8767), never served fresh on their own.
 */
export function cacheableTtl(layout: ReplyLayout, negativeMaxTtl: number): number {
  if (layout.flags & FLAG.TC) return -1; // Truncated: half an answer (RFC 2181 §9).
  if (layout.extRcode !== 0) return -1; // Extended rcodes (BADVERS, BADCOOKIE…) are per exchange.
  const rcode = layout.rcode;
  if (rcode === RCODE.NOERROR && layout.an > 0) return layout.minTtl < 0 ? 0 : layout.minTtl; // Positive: its smallest TTL (RFC 2181 §5.2).
  if (rcode !== RCODE.NOERROR && rcode !== RCODE.NXDOMAIN) return -1; // SERVFAIL, REFUSED, FORMERR, NOTIMP…: never (RFC 2308 §7 allows ≤5 min for SERVFAIL; we choose none).
  if (layout.negTtl < 0) return -1; // NXDOMAIN/NODATA without SOA: not cacheable (RFC 2308 §5).
  const neg = Math.min(layout.negTtl, negativeMaxTtl); // RFC 2308 §5: min(SOA TTL, SOA MINIMUM), capped by config.
  return neg > 0 ? neg : -1; // Consul's SOA MINIMUM 0: "no healthy instance" must never stick.
}

export class AnswerCache implements ResponseCache {
  private readonly lru: LRUCache<string, Entry>;
  private readonly byService = new Map<string, Set<string>>();
  /** Last health change per service (ms), to refuse storing answers fetched before it. */
  private readonly changedAt = new Map<string, number>();
  private readonly aliases: string[];
  private readonly hit: HitOptions;
  private readonly slab = new Slab();

  constructor(
    private readonly s: CacheSettings,
    private readonly metrics: Metrics,
    private readonly watch: WatchView | null,
    private readonly now: () => number = Date.now,
  ) {
    this.aliases = s.aliases ?? [];
    this.lru = new LRUCache<string, Entry>({
      max: s.maxEntries,
      maxSize: s.maxBytes,
      sizeCalculation: (e) => e.size,
      ttlAutopurge: false,
      // lru-cache reads performance.now unless given a clock; ours is the cache's own (tests inject it).
      perf: { now: () => this.now() },
      dispose: (e, key, reason) => {
        this.unindex(e, key);
        if (reason === 'evict') metrics.eviction('capacity');
        else if (reason === 'expire') metrics.eviction('expired');
      },
    });
    this.hit = hitOptions(s.maxUdpSize);
  }

  get size(): number {
    return this.lru.size;
  }

  // ---- hit path ---------------------------------------------------------------------------------

  lookup(key: string, q: Query, query: Buffer, route: RouteView, udp: boolean): Buffer | null {
    const e = this.lru.get(key);
    if (e === undefined) return null;
    const now = this.now();
    if (now >= this.freshUntil(e)) return null;
    const c = e.c;
    if (c === null) return renderHit(e, e.flags, e.storedAt, q, query, udp, now, false, this.hit, e.ede);
    if (c.service !== null) this.watch?.touch(c.service, c.dc);
    // Every alias in settings.aliases was rendered on the miss path; another one (not configured
    // there) is rendered once here rather than missing forever.
    const v = c.variants[this.slot(route.alias)] ?? this.variant(e, route.alias);
    if (v === null) return null;
    return renderHit(pick(v, q, udp), e.flags, e.storedAt, q, query, udp, now, false, this.hit, e.ede);
  }

  stale(key: string, q: Query, query: Buffer, route: RouteView, udp: boolean): Buffer | null {
    const e = this.lru.get(key);
    if (e === undefined) return null;
    const now = this.now();
    if (now >= e.storedAt + e.staleMs || e.c?.heldOnly === true) return null;
    if (e.c === null) return renderHit(e, e.flags, e.storedAt, q, query, udp, now, true, this.hit, e.ede);
    const v = this.variant(e, route.alias); // failure path: building a missing alias rendering is fine
    if (v === null) return null;
    return renderHit(pick(v, q, udp), e.flags, e.storedAt, q, query, udp, now, true, this.hit, e.ede);
  }

  staleState(key: string): number {
    const e = this.lru.peek(key);
    if (e === undefined) return STALE_NONE;
    const now = this.now();
    if (now >= e.storedAt + e.staleMs) return STALE_NONE;
    return now < e.recheckUntil ? STALE_RECHECK : STALE_READY;
  }

  refreshFailed(key: string): void {
    const e = this.lru.peek(key);
    const window = this.s.staleRecheckSeconds ?? DEFAULTS.cache.staleRecheckSeconds;
    if (e !== undefined && window > 0) e.recheckUntil = this.now() + window * 1000;
  }

  private freshUntil(e: Entry): number {
    const own = e.storedAt + e.ownMs;
    const c = e.c;
    if (
      c !== null &&
      c.watchedUntil > 0 &&
      this.watch !== null &&
      this.watch.liveSince(c.service!, c.dc) === c.liveSince
    ) {
      return c.watchedUntil > own ? c.watchedUntil : own;
    }
    return own;
  }

  // ---- miss path --------------------------------------------------------------------------------

  peek(key: string, q: Query, query: Buffer, route: RouteView, udp: boolean): Buffer | null {
    const e = this.lru.peek(key);
    if (e === undefined) return null;
    if (e.c === null) return renderHit(e, e.flags, e.storedAt, q, query, udp, this.now(), false, this.hit, e.ede);
    const v = this.variant(e, route.alias);
    return v === null
      ? null
      : renderHit(pick(v, q, udp), e.flags, e.storedAt, q, query, udp, this.now(), false, this.hit, e.ede);
  }

  // eslint-disable-next-line max-lines-per-function -- one decision per answer, in order (cacheable, tied to a service, fresh until, rendered), each step reading the previous one's locals
  store(
    key: string,
    q: Query,
    route: RouteView,
    canonicalName: string,
    result: ExchangeResult,
    startedAt?: number,
  ): boolean {
    if ('failure' in result) return false;
    const layout = result.layout;
    // The TTL rules, in place: every client of this exchange, cached or not, sees their result.
    applyTtlRules(result.reply, layout, this.s);
    const now = this.now();
    const fetchedAt = startedAt !== undefined && startedAt <= now ? startedAt : now;
    const consul = route.kind === 'consul';
    const positive = layout.rcode === RCODE.NOERROR && layout.an > 0;
    // Every answer of a service lookup (any form, type or rcode) is tied to the service so that a
    // health change drops it. Positive answers of the instance types and negative answers (NODATA,
    // NXDOMAIN) are watch-protected: held while the watch that vouches for them is live.
    let service: string | null = null;
    let dc: string | undefined;
    let sk: string | null = null;
    let tag: string | undefined;
    let queried = '';
    let watchable = false;
    if (consul) {
      const lookup = parseConsulName(canonicalName, this.s.domain, q.qtype);
      if (lookup !== null && lookup.kind === 'service') {
        service = queried = lookup.service;
        dc = lookup.dc;
        tag = lookup.tag;
        watchable = positive ? SERVICE_TYPES.has(q.qtype) : this.watch !== null && negativeHoldable(layout);
        // An NXDOMAIN is vouched for by the service's watch when the catalog lists the service (it
        // has no healthy instance), else by the catalog watch (no such service; own datacenter only).
        if (watchable && layout.rcode === RCODE.NXDOMAIN) {
          const known = dc === undefined ? this.watch?.knows?.(service) : undefined;
          if (known === undefined) watchable = false;
          else if (known !== true) service = CATALOG;
        }
        sk = serviceKey(service, dc);
      }
    }
    let ttl = cacheableTtl(layout, this.s.negativeMaxTtl);
    // Consul's negatives carry SOA MINIMUM 0: only a watch can hold them, and they are never stale.
    const heldOnly = ttl < 0 && watchable && !positive;
    if (heldOnly) ttl = 0;
    else if (ttl < 0) return false;
    // TTL 0 means "do not cache" (RFC 1035 §3.2.1); Consul's TTL 0 answers are the exception, held
    // by the health watch and kept as last-known-good.
    if (ttl === 0 && !consul) return false;
    // A miss on a service lookup starts the watch. Only for answers naming instances or services
    // the catalog lists; an unknown name starts the one catalog watch, so a flood of random names
    // (NXDOMAIN) cannot fill cache.maxWatches.
    if (watchable) this.watch?.ensure(service!, dc);
    // An answer fetched before the service's last health change may already be out of date.
    if (sk !== null && (this.changedAt.get(sk) ?? -1) >= fetchedAt) return false;
    // A buffer of its own: a slice of Node's shared 8 KiB pool would keep the whole slab alive.
    const stripped = stripOpt(result.reply, layout);
    const hold =
      watchable && this.watch !== null
        ? this.holdFor(service!, dc, queried, tag, q.qtype, stripped, fetchedAt)
        : NO_HOLD;
    if (hold === null) return false;
    const { liveSince, watchedUntil } = hold;
    const ownTtl = consul ? ttl : Math.min(ttl, this.s.maxTtl);
    const ownUntil = fetchedAt + ownTtl * 1000;
    const freshest = Math.max(ownUntil, watchedUntil);
    const staleUntil = heldOnly ? freshest : freshest + (consul ? this.s.staleConsul : this.s.staleRecursors) * 1000;
    if (staleUntil <= now) return false;
    const e: Entry = {
      storedAt: fetchedAt,
      ownMs: ownUntil - fetchedAt,
      staleMs: staleUntil - fetchedAt,
      recheckUntil: 0,
      flags: layout.flags,
      ede: ownCopy(edeOptions(result.reply, layout)),
      buf: EMPTY,
      off: 0,
      len: 0,
      nTtl: 0,
      qEnd: layout.qEnd,
      answers: layout.an,
      size: ENTRY_OVERHEAD,
      c: consul ? { service, dc, sk, watchedUntil, liveSince, heldOnly, variants: [] } : null,
    };
    // Outside Consul there is no alias, no rotation and no answer limit: the reply as received is
    // the one rendering, with no decode or encode (the miss path of recursor names stays cheap).
    // A Consul entry keeps the canonical reply (no TTL table) to derive its renderings from.
    this.slab.keep(e, stripped, consul ? NO_TTLS : ttlOffsetsWithoutOpt(layout));
    // Names in their canonical lowercase form: the first client's case is not the next one's. The
    // question is each client's own bytes on every hit; a Consul entry's is lowercased too, so
    // that its renderings compress owner names against it as Consul's own replies do.
    lowerNames(e.buf, e.off, e.len, e.qEnd, consul);
    e.size += e.len + 6 * e.nTtl + (e.ede ? e.ede.length : 0);
    if (consul) {
      // Renderings for this client's alias; and, if the entry can ever be served fresh, for every
      // other name of the domain too, so no hit ever encodes. An entry that can only be served
      // stale gets the others on the failure path, if ever.
      let canonical: Message;
      try {
        // Decoded from the cache's own lowercased copy, not from the bytes as received (holdFor
        // decodes those): the renderings must not carry the first client's letter case.
        canonical = decodeMessage(e.buf.subarray(e.off, e.off + e.len));
      } catch {
        return false; // validated by scanReply already; a decode failure means we simply don't cache it
      }
      // One alias's rendering failing never keeps the canonical entry out: that alias is simply
      // rendered again (and missed) when asked.
      const own = this.variant(e, route.alias, canonical);
      if (freshest > now) {
        if (this.variant(e, null, canonical) === null) return false;
        for (const a of this.aliases) if (a !== route.alias) this.variant(e, a, canonical);
      } else if (own === null) return false;
    }
    if (e.size > this.s.maxBytes) return false; // lru-cache would drop it silently; keep the index honest
    this.lru.set(key, e, { ttl: Math.max(1, staleUntil - now), size: e.size });
    if (sk !== null) {
      let set = this.byService.get(sk);
      if (!set) this.byService.set(sk, (set = new Set()));
      set.add(key);
    }
    return true;
  }

  /**
   * Whether a fetched answer is held, and until when: while the watch `service` (a service, or
   * CATALOG) has been live since before the fetch and the answer agrees with what it last reported;
   * for START_GRACE_MS while the watch's first request is in flight (adopted or dropped then).
   * Null: the reply does not decode (not cached).
   */
  private holdFor(
    service: string,
    dc: string | undefined,
    queried: string,
    tag: string | undefined,
    qtype: number,
    stripped: Buffer,
    fetchedAt: number,
  ): Hold | null {
    const w = this.watch!;
    const since = w.liveSince(service, dc);
    if (since === STARTING) return { liveSince: STARTING, watchedUntil: fetchedAt + START_GRACE_MS };
    if (since <= 0) return NO_HOLD;
    // Without an agreement check, strictly before: an answer fetched in the same millisecond may
    // predate the watch's baseline. With one, an answer that agrees with the set is right whenever
    // it was fetched (a change after the fetch moved changedAt past it and refused it above).
    if (w.agrees === undefined && since >= fetchedAt) return NO_HOLD;
    let canonical: Message;
    try {
      canonical = decodeMessage(stripped);
    } catch {
      return null; // validated by scanReply already; a decode failure means we simply don't cache it
    }
    // The watch's state is the truth: an answer naming other instances than it reported is not
    // held (issue 13 item 25, the re-cache race).
    if (!(w.agrees?.(service, dc, queried, tag, qtype, canonical) ?? true)) return NO_HOLD;
    return { liveSince: since, watchedUntil: fetchedAt + this.s.consulTtl * 1000 };
  }

  /**
   * The watch `service` (or CATALOG) went live at `since`: its entries fetched while it was
   * starting are held from now on if they agree with its first reply; the others are dropped
   * (a held-only negative) or left to their own TTL.
   */
  adopt(service: string, dc: string | undefined, since: number): number {
    const keys = this.byService.get(serviceKey(service, dc));
    if (!keys || this.watch === null) return 0;
    let n = 0;
    const now = this.now();
    for (const k of [...keys]) {
      const e = this.lru.peek(k);
      const c = e?.c;
      if (e === undefined || !c || c.liveSince !== STARTING) continue;
      let ok = false;
      try {
        const m = decodeMessage(e.buf.subarray(e.off, e.off + e.len));
        const qq = m.questions[0];
        const l = qq ? parseConsulName(qq.name.toLowerCase(), this.s.domain, qq.type) : null;
        ok = l?.kind === 'service' && (this.watch.agrees?.(service, dc, l.service, l.tag, qq!.type, m) ?? true);
      } catch {
        ok = false;
      }
      if (!ok) {
        c.liveSince = 0;
        if (c.heldOnly) this.lru.delete(k);
        continue;
      }
      c.liveSince = since;
      c.watchedUntil = e.storedAt + this.s.consulTtl * 1000;
      const staleUntil = Math.max(
        e.storedAt + e.staleMs,
        c.watchedUntil + (c.heldOnly ? 0 : this.s.staleConsul * 1000),
      );
      e.staleMs = staleUntil - e.storedAt;
      if (staleUntil > now) this.lru.set(k, e, { ttl: staleUntil - now, size: e.size });
      n++;
    }
    return n;
  }

  /** Negative answers (NODATA, NXDOMAIN) held fresh by a watch now; for the gauge. */
  negativeEntries(): number {
    let n = 0;
    const now = this.now();
    for (const e of this.lru.values())
      if (e.answers === 0 && (e.c?.watchedUntil ?? 0) > 0 && now < this.freshUntil(e)) n++;
    return n;
  }

  /** Index of an alias's renderings in Entry.variants (0 = the Consul domain itself). */
  private slot(alias: string | null): number {
    return alias === null ? 0 : this.aliases.indexOf(alias) + 1;
  }

  /**
   * The renderings for one alias (null = the Consul domain itself), built once. An alias that is
   * not configured in settings.aliases (it cannot come from the router) is not cached.
   */
  private variant(e: Entry, alias: string | null, canonical?: Message): Variant | null {
    if (e.c === null) return null;
    const k = this.slot(alias);
    const found = e.c.variants[k];
    if (found) return found;
    if (alias !== null && k === 0) return null;
    let v: Variant;
    try {
      v = buildVariant(
        canonical ?? decodeMessage(e.buf.subarray(e.off, e.off + e.len)),
        alias,
        this.s.domain,
        this.s.udpAnswerLimit,
        MAX_ROTATIONS,
        this.slab,
      );
    } catch {
      return null;
    }
    e.c.variants[k] = v;
    const seen = new Set<Rendering>();
    for (const r of [...v.full, ...v.trimmed]) {
      if (seen.has(r)) continue;
      seen.add(r);
      e.size += r.len + 6 * r.nTtl + 64;
    }
    return v;
  }

  // ---- invalidation -----------------------------------------------------------------------------

  /** Health changed for a service: drop every entry of it at once (all forms, types, aliases, orders). */
  invalidateService(service: string, dc?: string): number {
    const sk = serviceKey(service, dc);
    const now = this.now();
    this.changedAt.set(sk, now);
    if (this.changedAt.size > 4096) {
      for (const [k, t] of this.changedAt) if (now - t > CHANGED_KEEP_MS) this.changedAt.delete(k);
    }
    const keys = this.byService.get(sk);
    if (!keys) return 0;
    const list = [...keys];
    for (const k of list) this.lru.delete(k);
    this.byService.delete(sk);
    this.metrics.eviction('health', list.length);
    return list.length;
  }

  /** Admin flush: everything, one name (all types), or one service. Returns how many went. */
  flush(sel: { name?: string; service?: string }): number {
    let keys: string[];
    // Service names are keyed as queries carry them, lowercased (RFC 4343).
    if (sel.service) keys = [...(this.byService.get(sel.service.toLowerCase()) ?? [])];
    else if (sel.name) {
      const n = cacheKeyPrefix(sel.name, this.s.domain, this.aliases);
      keys = [...this.lru.keys()].filter((k) => isKeyOf(k, n));
    } else keys = [...this.lru.keys()];
    for (const k of keys) this.lru.delete(k);
    this.metrics.eviction('flush', keys.length);
    return keys.length;
  }

  entries(name: string): unknown[] {
    const n = cacheKeyPrefix(name, this.s.domain, this.aliases);
    const now = this.now();
    const out: unknown[] = [];
    for (const [k, e] of this.lru.entries()) {
      if (!isKeyOf(k, n)) continue;
      const fresh = this.freshUntil(e);
      out.push({
        key: k,
        service: e.c?.sk ?? null,
        ageSeconds: Math.floor((now - e.storedAt) / 1000),
        fresh: now < fresh,
        watchProtected: fresh > e.storedAt + e.ownMs,
        freshForSeconds: Math.max(0, Math.floor((fresh - now) / 1000)),
        staleForSeconds: Math.max(0, Math.floor((e.storedAt + e.staleMs - now) / 1000)),
        answers: e.answers,
        rcode: e.flags & 0xf,
        renderings:
          e.c === null ? [''] : e.c.variants.flatMap((v, i) => (v ? [i === 0 ? '' : this.aliases[i - 1]!] : [])),
        bytes: e.size,
      });
    }
    return out;
  }

  clear(): void {
    this.lru.clear();
  }

  private unindex(e: Entry, key: string) {
    const sk = e.c?.sk ?? null;
    if (sk === null) return;
    const set = this.byService.get(sk);
    if (!set) return;
    set.delete(key);
    if (set.size === 0) this.byService.delete(sk);
  }
}
