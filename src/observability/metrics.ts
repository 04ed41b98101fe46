/*
 * Every Prometheus metric the proxy exports, declared in one place (namespace consul_dns_proxy).
 *
 * The query path never touches prom-client: it bumps plain numbers (typed-array cells or object
 * fields) that cost about as much as `x++`, and each metric's `collect()` copies them into
 * prom-client only when /metrics is scraped. prom-client's own `inc()` hashes a label object on
 * every call (hundreds of nanoseconds), which on the cache-hit path would cost more
 * than the lookup itself. Histograms are observed directly, but only on the miss path (upstream
 * round trips, invalidations), never for cache hits.
 *
 * Names follow CoreDNS where the concept is the same (requests_total, responses_total with rcode,
 * cache_entries, cache_hits_total, cache_served_stale_total, build_info) and the
 * Prometheus naming rules: base units in the name (_seconds), `_total` only on counters. Every
 * label set is bounded: query types outside a fixed list become "other", rcodes outside the
 * common ones "other", zones come from configuration, services beyond 100 fold into "_other".
 *
 * Hot-path API (allocation-free; indices, not strings):
 *   metrics.request(TRANSPORT.udp, zoneIdx, qtype)      // one per query received
 *   metrics.response(zoneIdx, rcode, SOURCE.cache)      // one per answer sent
 *   metrics.cacheHits++ / cacheMisses++ / servedStale++
 *   metrics.eviction('capacity', n)
 *   metrics.acl.refuse++, metrics.ratelimited.tc++, metrics.tcpConnections++/--,
 *   metrics.tcpRejected.max_per_client++
 * Miss-path API (objects created once per upstream / pool and cached by the caller):
 *   const u = metrics.upstream('consul', '127.0.0.1:8600'); u.requestsUdp++; u.failures.timeout++;
 *   u.healthy = 0; u.observe(seconds); metrics.pool('recursor').hedged++ (or metrics.hedged(pool));
 *   metrics.invalidationLag(seconds)
 * Gauges read from other modules at scrape time: `sources().cacheEntries = () => n`, etc.
 */

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { RCODE, TYPE, type TypeName } from '../dns/constants.js';
import { MetricsError } from '../errors.js';

/**
 * The zone index of a message too malformed to route (no question to read): counted under
 * zone="none", in every configuration (setZones keeps it through reloads).
 */
export const ZONE_NONE = -1;
const ZONE_NONE_LABEL = 'none';

/** Where an answer came from: the `source` label of responses_total. */
export const SOURCE = { cache: 0, upstream: 1, stale: 2, local: 3 } as const;
export type Source = (typeof SOURCE)[keyof typeof SOURCE];
const SOURCE_NAMES = ['cache', 'upstream', 'stale', 'local'] as const;
const N_SOURCES = SOURCE_NAMES.length;

/** Client transport: the `transport` label of requests_total. */
export const TRANSPORT = { udp: 0, tcp: 1 } as const;
export type Transport = (typeof TRANSPORT)[keyof typeof TRANSPORT];
const TRANSPORT_NAMES = ['udp', 'tcp'] as const;
const N_TRANSPORTS = TRANSPORT_NAMES.length;

/** code → index of its label in `labels`, `labels.length` ("other") for codes not listed. */
function labelIndex(labels: readonly (readonly [string, number])[], size: number): Uint8Array {
  const t = new Uint8Array(size).fill(labels.length);
  labels.forEach(([, code], i) => {
    t[code] = i;
  });
  return t;
}

/**
 * Query types with their own `type` label value; everything else is "other", so a client
 * sending all 65536 types cannot blow up the series count (CoreDNS keeps a similar fixed list).
 */
const TYPE_LABELS: readonly (readonly [string, number])[] = (
  [
    'A',
    'NS',
    'CNAME',
    'SOA',
    'PTR',
    'MX',
    'TXT',
    'AAAA',
    'SRV',
    'NAPTR',
    'DS',
    'RRSIG',
    'DNSKEY',
    'SVCB',
    'HTTPS',
    'IXFR',
    'AXFR',
    'ANY',
    'CAA',
  ] as const
).map((n: TypeName) => [n, TYPE[n]] as const);
const TYPE_NAMES: readonly string[] = [...TYPE_LABELS.map(([n]) => n), 'other'];
const N_TYPES = TYPE_NAMES.length;
/** qtype → index into TYPE_NAMES; built once, read with `qtype & 0xffff` on the hot path. */
const TYPE_INDEX = labelIndex(TYPE_LABELS, 65536);

/**
 * Response codes with their own `rcode` label value (RFC 1035 §4.1.1, RFC 6891 §9 for BADVERS,
 * which needs the OPT record's extended bits, hence a 12-bit table); the rest are "other".
 */
const RCODE_LABELS: readonly (readonly [string, number])[] = Object.entries(RCODE);
const RCODE_NAMES: readonly string[] = [...RCODE_LABELS.map(([n]) => n), 'other'];
const N_RCODES = RCODE_NAMES.length;
const RCODE_INDEX = labelIndex(RCODE_LABELS, 4096);

export type EvictionReason = 'capacity' | 'expired' | 'health' | 'flush';
export type FailureReason = 'timeout' | 'servfail' | 'refused' | 'mismatch' | 'network';
export type TcpRejectReason = 'max_connections' | 'max_per_client';

/** Services named in service_instances; the rest are summed into service="_other". */
export const MAX_SERVICE_LABELS = 100;

export const PREFIX = 'consul_dns_proxy_';

/**
 * prom-client default metrics dropped because `promtool check metrics` rejects them: gauges
 * named `_total` ("non-counter metrics should not have _total suffix", promtool 2.42). Nothing
 * is lost: each is the sum over the `type` label of the metric of the same name without `_total`.
 */
export const DROPPED_DEFAULT_METRICS = [
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
  'nodejs_active_resources_total',
] as const;

export interface MetricsOptions {
  /** Value of build_info{version}. */
  version: string;
  /**
   * `zone` label values by index, e.g. ['consul', 'alias', 'recursor', 'corp.']. The hot path
   * passes the index; a reload that changes the zones says so with setZones().
   */
  zones: string[];
  /** false: counting calls become no-ops and the registry stays empty (default true). */
  enabled?: boolean;
  /** Event-loop delay sampling resolution for the default metrics, ms (default 10). */
  eventLoopResolutionMs?: number;
}

/** Gauges and counters owned by other modules, read when /metrics is scraped. */
export interface MetricSources {
  cacheEntries?: () => number;
  healthWatches?: () => number;
  /** Monotonic count of health changes seen by the watches (a counter). */
  healthChanges?: () => number;
  /** Instances currently cached per service name. */
  serviceInstances?: () => Map<string, number>;
  /** Negative answers (NODATA, NXDOMAIN) held fresh by a watch. */
  negativeEntries?: () => number;
  /** The catalog watch: 1 live, 0 running but not live, -1 not running. */
  catalogWatch?: () => number;
  /** Monotonic count of watches the agent refused as over its connection limit (a counter). */
  watchOverLimit?: () => number;
}

/** Per-upstream counters; one object per (pool, upstream), created once by Metrics.upstream(). */
export class UpstreamStats {
  requestsUdp = 0;
  requestsTcp = 0;
  readonly failures: Record<FailureReason, number> = {
    timeout: 0,
    servfail: 0,
    refused: 0,
    mismatch: 0,
    network: 0,
  };
  /** 1 healthy, 0 marked down. Upstreams start healthy, as CoreDNS's forward plugin does. */
  healthy: 0 | 1 = 1;

  constructor(
    readonly pool: string,
    readonly upstream: string,
    private readonly hist: { observe(v: number): void } | null,
  ) {}

  /** Record one upstream round trip (miss path only). */
  observe(seconds: number): void {
    if (this.hist !== null) this.hist.observe(seconds);
  }
}

/** Per-pool counters; one object per pool, created once by Metrics.pool(). */
export class PoolStats {
  hedged = 0;
  /** Queries refused a slot because the pool's in-flight cap was reached (answered SERVFAIL). */
  overflow = 0;
  constructor(readonly pool: string) {}
}

// CoreDNS's proxy latency buckets: ExponentialBuckets(0.00025, 2, 16), 0.25 ms .. 8.192 s.
const UPSTREAM_BUCKETS = Array.from({ length: 16 }, (_, i) => 0.00025 * 2 ** i);
// An invalidation is normally a synchronous delete right after the watch reply (well under a
// millisecond); the tail covers a blocked event loop.
const INVALIDATION_BUCKETS = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
];

function noop(): void {}

export class Metrics {
  readonly registry: Registry;
  readonly enabled: boolean;
  /** The `zone` label of each index the hot path passes (the running configuration's zones). */
  zones: readonly string[] = [];

  // Plain counters bumped by the hot path.
  cacheHits = 0;
  cacheMisses = 0;
  servedStale = 0;
  readonly evictions: Record<EvictionReason, number> = { capacity: 0, expired: 0, health: 0, flush: 0 };
  /** Queries from sources outside acl.allow, by what was done to them. */
  readonly acl = { refuse: 0, drop: 0 };
  /** Queries over the per-client rate, by action (limits.rate.action). */
  readonly ratelimited = { refuse: 0, drop: 0, tc: 0 };
  /** Open client TCP connections: ++ on accept, -- on close. */
  tcpConnections = 0;
  readonly tcpRejected: Record<TcpRejectReason, number> = { max_connections: 0, max_per_client: 0 };
  /** Client TCP connections closed to make room for a new one (idle or partial longest first). */
  tcpEvicted = 0;

  /** Set by the modules that own these figures; read at scrape time. */
  sources: MetricSources = {};

  /**
   * Every zone label counted since start, in order of first use: the cells below are laid out by
   * this list, so a reload that adds, drops or reorders zones moves no count to another label.
   */
  private readonly labels: string[] = [];
  /** Index the hot path passes → index of its label in `labels`. */
  private zoneMap = new Int32Array(0);
  /** [label][transport][type] flattened; Float64Array keeps counts exact up to 2^53. */
  private requests = new Float64Array(0);
  /** [label][rcode][source] flattened. */
  private responses = new Float64Array(0);
  private readonly upstreams = new Map<string, UpstreamStats>();
  private readonly pools = new Map<string, PoolStats>();
  private readonly upstreamHist: Histogram<'pool' | 'upstream'> | null = null;
  private readonly invalidationHist: Histogram | null = null;

  constructor(opts: MetricsOptions) {
    if (!Array.isArray(opts.zones) || opts.zones.length === 0) {
      throw new MetricsError('metrics: zones must list at least one zone label');
    }
    if (new Set(opts.zones).size !== opts.zones.length) {
      throw new MetricsError(`metrics: duplicate zone label in ${JSON.stringify(opts.zones)}`);
    }
    this.enabled = opts.enabled !== false;
    this.setZones(opts.zones);
    this.registry = new Registry();

    if (!this.enabled) {
      // Decide the fast path once: disabled metrics cost one empty call per query.
      this.request = noop;
      this.response = noop;
      this.eviction = noop;
      this.invalidationLag = noop;
      return;
    }
    const registers = [this.registry];

    collectDefaultMetrics({
      prefix: PREFIX,
      register: this.registry,
      eventLoopMonitoringPrecision: opts.eventLoopResolutionMs ?? 10,
    });
    for (const name of DROPPED_DEFAULT_METRICS) this.registry.removeSingleMetric(PREFIX + name);

    new Gauge({
      name: PREFIX + 'build_info',
      help: 'Always 1; the version label carries the running build.',
      labelNames: ['version'],
      registers,
    }).set({ version: opts.version }, 1);

    this.registerTraffic(registers);
    this.registerCache(registers);
    this.upstreamHist = this.registerUpstreams(registers);
    this.invalidationHist = this.registerWatches(registers);
    this.registerDefences(registers);
  }

  /**
   * The running configuration's zone labels, index by index (at start and on every reload). A
   * label not seen before gets cells of its own; one no longer listed keeps its counts (counters
   * never go back) but is no longer counted into. Cold path: it may reallocate the cells.
   */
  setZones(zones: readonly string[]): void {
    // Slot 0 is ZONE_NONE (-1): a message too malformed to route, whatever the configuration.
    const map = new Int32Array(zones.length + 1);
    const known = this.labels.length;
    const slot = (zone: string): number => {
      const j = this.labels.indexOf(zone);
      return j < 0 ? this.labels.push(zone) - 1 : j;
    };
    zones.forEach((zone, i) => {
      map[i + 1] = slot(zone);
    });
    map[0] = slot(ZONE_NONE_LABEL);
    if (this.labels.length > known) {
      const requests = new Float64Array(this.labels.length * N_TRANSPORTS * N_TYPES);
      requests.set(this.requests);
      this.requests = requests;
      const responses = new Float64Array(this.labels.length * N_RCODES * N_SOURCES);
      responses.set(this.responses);
      this.responses = responses;
    }
    this.zoneMap = map;
    this.zones = Object.freeze([...zones]);
  }

  /** Query traffic: requests and responses, copied from the typed-array cells at scrape time. */
  private registerTraffic(registers: Registry[]): void {
    const labels = this.labels;
    cellCounter(
      registers,
      'requests_total',
      'DNS queries received, by client transport, zone and query type.',
      ['transport', 'zone', 'type'],
      (i) => ({
        transport: TRANSPORT_NAMES[Math.floor(i / N_TYPES) % N_TRANSPORTS]!,
        zone: labels[Math.floor(i / (N_TRANSPORTS * N_TYPES))]!,
        type: TYPE_NAMES[i % N_TYPES]!,
      }),
      () => this.requests,
    );
    cellCounter(
      registers,
      'responses_total',
      'DNS responses sent, by zone, rcode and where the answer came from (cache, upstream, stale, local).',
      ['zone', 'rcode', 'source'],
      (i) => ({
        zone: labels[Math.floor(i / (N_RCODES * N_SOURCES))]!,
        rcode: RCODE_NAMES[Math.floor(i / N_SOURCES) % N_RCODES]!,
        source: SOURCE_NAMES[i % N_SOURCES]!,
      }),
      () => this.responses,
    );
  }

  /** The answer cache. */
  private registerCache(registers: Registry[]): void {
    gaugeFrom(registers, 'cache_entries', 'Entries in the answer cache.', () => this.sources.cacheEntries);
    counterFrom(registers, 'cache_hits_total', 'Queries answered from a fresh cache entry.', () => this.cacheHits);
    counterFrom(
      registers,
      'cache_misses_total',
      'Cacheable queries not found fresh in the cache (forwarded upstream).',
      () => this.cacheMisses,
    );
    counterFrom(
      registers,
      'cache_served_stale_total',
      'Queries answered from an expired entry because the upstreams failed (RFC 8767).',
      () => this.servedStale,
    );
    labeledCounterFrom(
      registers,
      'cache_evictions_total',
      'Cache entries removed, by reason.',
      'reason',
      this.evictions,
    );
  }

  /** Upstream exchanges, health, hedging and overflow; returns the round-trip histogram. */
  private registerUpstreams(registers: Registry[]): Histogram<'pool' | 'upstream'> {
    const upstreams = this.upstreams;
    upstreamCounter(
      registers,
      upstreams,
      'upstream_requests_total',
      'Queries sent to an upstream (Consul agent, recursor or zone server), by transport.',
      'transport',
      (u) => [
        ['udp', u.requestsUdp],
        ['tcp', u.requestsTcp],
      ],
    );
    upstreamCounter(
      registers,
      upstreams,
      'upstream_failures_total',
      'Failed upstream exchanges, by reason (timeout, servfail, refused, mismatch, network).',
      'reason',
      (u) => (Object.keys(u.failures) as FailureReason[]).map((reason) => [reason, u.failures[reason]]),
    );
    new Gauge({
      name: PREFIX + 'upstream_healthy',
      help: '1 while the upstream is considered healthy, 0 while it is marked down.',
      labelNames: ['pool', 'upstream'],
      registers,
      collect() {
        this.reset();
        for (const u of upstreams.values()) this.set({ pool: u.pool, upstream: u.upstream }, u.healthy);
      },
    });
    const hist = new Histogram({
      name: PREFIX + 'upstream_request_duration_seconds',
      help: 'Upstream round-trip time for cache misses (cache hits are counted, never timed).',
      labelNames: ['pool', 'upstream'],
      buckets: UPSTREAM_BUCKETS,
      registers,
    });
    const pools = this.pools;
    new Counter({
      name: PREFIX + 'upstream_hedged_total',
      help: 'Queries also sent to a second upstream because the first had not answered within upstream.hedgeMs.',
      labelNames: ['pool'],
      registers,
      collect() {
        this.reset();
        for (const p of pools.values()) this.inc({ pool: p.pool }, p.hedged);
      },
    });
    new Counter({
      name: PREFIX + 'upstream_overflow_total',
      help: 'Queries answered SERVFAIL because the pool already had upstream.maxInFlight queries in flight.',
      labelNames: ['pool'],
      registers,
      collect() {
        this.reset();
        for (const p of pools.values()) this.inc({ pool: p.pool }, p.overflow);
      },
    });
    return hist;
  }

  /** Consul health watches; returns the invalidation-lag histogram. */
  private registerWatches(registers: Registry[]): Histogram {
    // prom-client calls collect() with the metric as `this`: the collectors read our sources through this.
    const sources = (): MetricSources => this.sources;
    gaugeFrom(
      registers,
      'health_watches',
      'Consul health watches (blocking queries) currently open.',
      () => this.sources.healthWatches,
    );
    new Counter({
      name: PREFIX + 'health_changes_total',
      help: 'Changes in service health reported by the watches.',
      registers,
      collect() {
        const v = readSource(sources().healthChanges);
        if (v !== undefined) {
          this.reset();
          this.inc(v);
        }
      },
    });
    gaugeFrom(
      registers,
      'cache_negative_entries',
      'Negative Consul answers (NODATA, NXDOMAIN) held in the cache by a live watch.',
      () => this.sources.negativeEntries,
    );
    gaugeFrom(
      registers,
      'catalog_watch_state',
      'The catalog watch (blocking query on /v1/catalog/services) that holds NXDOMAIN for unknown services: 1 live, 0 starting or failing, -1 not running.',
      () => this.sources.catalogWatch,
    );
    counterFrom(
      registers,
      'health_watch_over_limit_total',
      "Watches the agent refused as over its connection limit (HTTP 429, or a new connection closed without a response); each stops, and its service keeps Consul's TTL.",
      () => readSource(sources().watchOverLimit) ?? 0,
    );
    const hist = new Histogram({
      name: PREFIX + 'invalidation_lag_seconds',
      help: 'Time from a watch reply carrying a health change to the affected cache entries being gone.',
      buckets: INVALIDATION_BUCKETS,
      registers,
    });
    new Gauge({
      name: PREFIX + 'service_instances',
      help: `Instances cached per Consul service; beyond ${MAX_SERVICE_LABELS} services the smallest are summed into service="_other".`,
      labelNames: ['service'],
      registers,
      collect() {
        const src = sources().serviceInstances;
        if (src === undefined) return;
        let map: Map<string, number>;
        try {
          map = src();
        } catch {
          return;
        }
        this.reset();
        for (const [service, n] of foldServices(map)) this.set({ service }, n);
      },
    });
    return hist;
  }

  /** ACL, rate limit and TCP connection limits. */
  private registerDefences(registers: Registry[]): void {
    const openConnections = (): number => this.tcpConnections;
    labeledCounterFrom(
      registers,
      'acl_refused_total',
      'Queries from sources outside acl.allow, by action taken (refuse, drop).',
      'action',
      this.acl,
    );
    labeledCounterFrom(
      registers,
      'ratelimited_total',
      'Queries over the per-client rate limit, by action taken (refuse, drop, tc).',
      'action',
      this.ratelimited,
    );
    new Gauge({
      name: PREFIX + 'tcp_connections',
      help: 'Client TCP connections currently open.',
      registers,
      collect() {
        this.set(openConnections());
      },
    });
    counterFrom(
      registers,
      'tcp_connections_evicted_total',
      'Client TCP connections closed to make room for a new one at a connection limit: the one idle or partial longest (RFC 7766 §6.2.3).',
      () => this.tcpEvicted,
    );
    labeledCounterFrom(
      registers,
      'tcp_connections_rejected_total',
      'Client TCP connections closed at accept, by limit hit (max_connections, max_per_client).',
      'reason',
      this.tcpRejected,
    );
  }

  /*
   * The two per-query calls are a multiply-add into a typed array: no allocation, no string, no
   * bounds check beyond the typed array's own (an index past the end is silently ignored, so a
   * bad `zone` can miscount but never throw). `zone` is an index into `zones`, resolved once with
   * zoneIndex() (or a router's own indexes, given to setZones()); it names a label through
   * `zoneMap`, one typed-array read.
   */

  /** Count one query received. `qtype` is the 16-bit QTYPE from the question. */
  request(transport: Transport, zone: number, qtype: number): void {
    this.requests[(this.zoneMap[zone + 1]! * N_TRANSPORTS + transport) * N_TYPES + TYPE_INDEX[qtype & 0xffff]!]!++;
  }

  /** Count one response sent. `rcode` may include the EDNS extended bits (up to 12 bits). */
  response(zone: number, rcode: number, source: Source): void {
    this.responses[(this.zoneMap[zone + 1]! * N_RCODES + RCODE_INDEX[rcode & 0xfff]!) * N_SOURCES + source]!++;
  }

  eviction(reason: EvictionReason, n = 1): void {
    this.evictions[reason] += n;
  }

  /** Index of a zone label for request()/response(), or -1. Call when wiring, not per query. */
  zoneIndex(zone: string): number {
    return this.zones.indexOf(zone);
  }

  /** The stats object of one upstream, created on first use; keep it, don't look it up per query. */
  upstream(pool: string, upstream: string): UpstreamStats {
    const key = pool + '\u0000' + upstream;
    let u = this.upstreams.get(key);
    if (u === undefined) {
      const hist = this.upstreamHist;
      let child: { observe(v: number): void } | null = null;
      if (hist !== null) {
        // Export empty buckets from the start, so rate() and histogram_quantile() see the series
        // before the first miss; bind the child once so observe() skips the label lookup.
        hist.zero({ pool, upstream });
        child = hist.labels({ pool, upstream });
      }
      u = new UpstreamStats(pool, upstream, child);
      this.upstreams.set(key, u);
    }
    return u;
  }

  /** Forget an upstream removed by a config reload, so its series stop being exported. */
  dropUpstream(pool: string, upstream: string): void {
    if (this.upstreams.delete(pool + '\u0000' + upstream)) {
      this.upstreamHist?.remove({ pool, upstream });
    }
  }

  /** The stats object of one pool ('consul', 'recursor', a zone name), created on first use. */
  pool(name: string): PoolStats {
    let p = this.pools.get(name);
    if (p === undefined) {
      p = new PoolStats(name);
      this.pools.set(name, p);
    }
    return p;
  }

  hedged(pool: string): void {
    this.pool(pool).hedged++;
  }

  invalidationLag(seconds: number): void {
    this.invalidationHist?.observe(seconds);
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The Prometheus text exposition (runs every collect()). */
  metricsText(): Promise<string> {
    return this.registry.metrics();
  }
}

/**
 * Top MAX_SERVICE_LABELS services by instance count (ties by name, so the choice is stable),
 * the rest summed into "_other" (present only when something was folded).
 */
export function foldServices(map: Map<string, number>): [string, number][] {
  const all = [...map].filter(([, n]) => Number.isFinite(n));
  if (all.length <= MAX_SERVICE_LABELS) return all;
  all.sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const kept = all.slice(0, MAX_SERVICE_LABELS);
  let other = 0;
  for (let i = MAX_SERVICE_LABELS; i < all.length; i++) other += all[i]![1];
  kept.push(['_other', other]);
  return kept;
}

/** A source that throws must not fail the whole scrape: keep the last published value. */
function readSource(src: (() => number) | undefined): number | undefined {
  if (src === undefined) return undefined;
  try {
    const v = src();
    return Number.isFinite(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A counter over cells of a typed array, one label set per cell (made at scrape time, and only
 * for cells that ever counted: a counter never returns to 0, so series do not flap). `cells` is
 * read at each scrape: the array is replaced when zones are added.
 */
function cellCounter<L extends string>(
  registers: Registry[],
  name: string,
  help: string,
  labelNames: L[],
  labels: (cell: number) => Record<L, string>,
  cells: () => Float64Array,
): void {
  new Counter({
    name: PREFIX + name,
    help,
    labelNames,
    registers,
    collect() {
      this.reset();
      const c = cells();
      for (let i = 0; i < c.length; i++) {
        const v = c[i]!;
        if (v > 0) this.inc(labels(i), v);
      }
    },
  });
}

/** A counter per upstream and one more label, read from each upstream's numbers at scrape time. */
function upstreamCounter(
  registers: Registry[],
  upstreams: Map<string, UpstreamStats>,
  name: string,
  help: string,
  label: string,
  values: (u: UpstreamStats) => [string, number][],
): void {
  new Counter({
    name: PREFIX + name,
    help,
    labelNames: ['pool', 'upstream', label],
    registers,
    collect() {
      this.reset();
      for (const u of upstreams.values()) {
        for (const [value, n] of values(u)) this.inc({ pool: u.pool, upstream: u.upstream, [label]: value }, n);
      }
    },
  });
}

function gaugeFrom(registers: Registry[], name: string, help: string, src: () => (() => number) | undefined): void {
  new Gauge({
    name: PREFIX + name,
    help,
    registers,
    collect() {
      const v = readSource(src());
      if (v !== undefined) this.set(v);
    },
  });
}

function counterFrom(registers: Registry[], name: string, help: string, read: () => number): void {
  new Counter({
    name: PREFIX + name,
    help,
    registers,
    collect() {
      this.reset();
      this.inc(read());
    },
  });
}

/** A counter whose label values are the keys of a plain object of integers (all exported, zeros too). */
function labeledCounterFrom<K extends string>(
  registers: Registry[],
  name: string,
  help: string,
  label: string,
  fields: Record<K, number>,
): void {
  const keys = Object.keys(fields) as K[];
  const labels = keys.map((k) => ({ [label]: k }));
  new Counter({
    name: PREFIX + name,
    help,
    labelNames: [label],
    registers,
    collect() {
      this.reset();
      for (let i = 0; i < keys.length; i++) this.inc(labels[i]!, fields[keys[i]!]);
    },
  });
}
