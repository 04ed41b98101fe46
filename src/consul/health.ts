// Consul health watch engine: one blocking-query loop per watched service on
// /v1/health/service/<name>, turning each reply into "what Consul's DNS would show" and calling
// onChange only when that view changes, so the cache can hold Consul answers (TTL 0) for long and
// still drop them the moment an instance goes critical. It also says, per service, whether the
// watch is live, so the cache falls back to Consul's own TTL while the HTTP API is unreachable.
//
// Why not the `consul` npm package's watch: without an 'error' listener a 500 crashes the process;
// a 400 or a reply without X-Consul-Index ends the watch for good; it has no rate limit after
// successful replies (against a server answering at once with the same index it spins); it keeps
// the index as a BigInt/string and emits 'change' twice on an index reset. Wrapping all of that
// costs more code than this loop. We use node:http/node:https rather than Node 20's fetch
// (undici): it takes https.Agent TLS options (ca/cert/key/rejectUnauthorized) directly, whereas
// fetch needs an undici Agent dispatcher that Node 20 does not export without the `undici`
// package; our own keep-alive agents let stop() destroy every socket; and a keep-alive GET costs
// less than a fetch.
//
// Consul's blocking-query rules followed (Consul's API docs, "Blocking Queries"):
// reset the index to 0 when it goes backwards; never block on index 0 after the first reply (use at
// least 1, or the server answers at once and the loop spins); rate-limit the loop; jitter the
// retries. The DNS view mirrors agent/dns.go: lookupServiceNodes → CheckServiceNodes.Filter
// (agent/structs/structs.go FilterIgnore) and findWeight/AggregatedStatus (api/health.go).
//
// Choices: retry backoff is "equal jitter" from 250 ms doubling to a 30 s cap. While the API is
// down the cache already serves on Consul's own TTL, so a long cap costs cache efficiency, not
// correctness; 30 s bounds how long that lasts after the agent is back, and keeps 256 failing
// watches under ~9 req/s on a sick agent, spread by the jitter rather than in lockstep. A hung
// agent (accepts, never answers) is only detected when the request budget (wait·17/16 + margin,
// ~324 s at wait 300 s) runs out, and the watch counts as live meanwhile: lower waitSeconds to
// shorten that window. Each blocking request holds one keep-alive socket, so watches ≈ connections
// to the agent; Consul's limits.http_max_conns_per_client defaults to 200. Past it Consul 1.8.7
// accepts a connection and closes it without a response (newer front ends may answer 429): that
// watch stops and no new one starts for a backoff (overTheLimit); at maxWatches the least recently
// used idle watch makes room (evictIdle). One more loop, on /v1/catalog/services (CATALOG), tells
// which services exist, so an NXDOMAIN of an unknown name can be held until the service set changes.

import http from 'node:http';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { serviceKey } from './service-key.js';
import { CATALOG } from './catalog-key.js';
import { ipKey, type DnsInstance } from './agree.js';
import type { Log } from '../observability/log.js';
import { HealthWatchError } from '../errors.js';

export interface WatchOptions {
  httpUrls: string[];
  token?: string;
  tls?: { caFile?: string; certFile?: string; keyFile?: string; insecureSkipVerify?: boolean };
  /** Consul's dns_config.only_passing: drop warning instances too. */
  onlyPassing: boolean;
  /** Minimum time between the starts of two requests of one watch (default 100). */
  minIntervalMs: number;
  /** Stop a watch after this long without ensure()/touch() (default 300000). */
  idleMs: number;
  /** Cap on concurrent watches (default 256). */
  maxWatches: number;
  /** Blocking wait sent to Consul (default 300 s, Consul's default; Consul caps it at 600). */
  waitSeconds?: number;
  now?: () => number;
  random?: () => number;
  log?: Pick<Log, 'info' | 'warn'> & Partial<Pick<Log, 'debug'>>;
  onChange: (service: string, detail: { instances: number; index: number; receivedAt: number; dc?: string }) => void;
  /**
   * Optional: called when a watch becomes live (first reply, or recovery) or stops being live
   * (request failed on every URL, or idle stop). On `false` the cache should drop (or stop
   * extending) that service's entries: nothing will invalidate them any more.
   */
  onLiveChange?: (service: string, live: boolean, dc?: string) => void;
  /** Retry backoff after a failed round: base and cap, ms (defaults 250 and 30000). */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** Added to wait + wait/16 before a request is aborted; also the whole budget of a non-blocking request (default 5000). */
  timeoutMarginMs?: number;
  /** After failing over away from httpUrls[0], try it again after this long (default 60000). */
  failbackMs?: number;
  /** Blocking wait used on a URL not known to work (failback probe), so a hung agent costs little (default 10). */
  probeWaitSeconds?: number;
}

// ---------------------------------------------------------------------------------------------
// What DNS would show

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const str = (v: unknown): string => (typeof v === 'string' ? v : '');

/** Map → sorted [k, v] pairs, so key order in the JSON never changes the hash. */
function sortedPairs(v: unknown): [string, unknown][] | null {
  if (!isObj(v)) return null;
  return Object.keys(v)
    .sort()
    .map((k) => [k, v[k]]);
}

/**
 * SRV weight as agent/dns.go findWeight computes it: the service's Weights.Passing or
 * Weights.Warning by the AggregatedStatus (api/health.go) of its own and its node's checks;
 * maintenance (`_node_maintenance`, `_service_maintenance:*`) or critical → 0; an unknown status → 1.
 */
export function dnsWeight(svc: Obj, checks: unknown[]): number {
  let wp = 1;
  let ww = 1;
  const w = svc['Weights'];
  if (isObj(w)) {
    // Go: `if node.Service.Weights != nil`, then the fields (zero if absent)
    wp = typeof w['Passing'] === 'number' ? w['Passing'] : 0;
    ww = typeof w['Warning'] === 'number' ? w['Warning'] : 0;
  }
  const name = str(svc['Service']);
  let warning = false,
    critical = false,
    maint = false;
  for (const c of checks) {
    if (!isObj(c)) continue;
    const sn = str(c['ServiceName']);
    if (sn !== name && sn !== '') continue; // "c.ServiceName == node.Service.Service || c.ServiceName == \"\""
    const id = str(c['CheckID']);
    if (id === '_node_maintenance' || id.startsWith('_service_maintenance:')) {
      maint = true;
      continue;
    }
    switch (c['Status']) {
      case 'passing':
        break;
      case 'warning':
        warning = true;
        break;
      case 'critical':
        critical = true;
        break;
      default:
        return 1; // AggregatedStatus "" → "When non-standard status, return 1"
    }
  }
  if (maint || critical) return 0;
  if (warning) return ww;
  return wp; // passing, or no checks at all: both aggregate to passing
}

/**
 * The DNS-visible view of a /v1/health/service reply: drop an instance if ANY of its checks
 * (node checks such as serfHealth and _node_maintenance included) is critical; with onlyPassing,
 * if any is not passing (CheckServiceNodes.FilterIgnore). Per kept instance, the tuple DNS answers
 * are built from: node name, node address and tagged addresses (WAN translation), node meta
 * (TXT in Additional, enable_additional_node_meta_txt), service address and tagged addresses,
 * port, tags (tag lookups), SRV weight. The hash is over the sorted tuples, so instance order
 * and check output never count as a change.
 */
export function dnsView(body: unknown, onlyPassing: boolean): { hash: string; instances: number; set: DnsInstance[] } {
  if (!Array.isArray(body)) throw new HealthWatchError('CDP_ERR_CONSUL_BAD_BODY', 'health reply is not a JSON array');
  const tuples: string[] = [];
  const set: DnsInstance[] = [];
  for (const e of body) {
    if (!isObj(e)) continue;
    const node = isObj(e['Node']) ? e['Node'] : {};
    const svc = isObj(e['Service']) ? e['Service'] : {};
    const checks = Array.isArray(e['Checks']) ? e['Checks'] : [];
    let drop = false;
    for (const c of checks) {
      const st = isObj(c) ? c['Status'] : undefined;
      if (st === 'critical' || (onlyPassing && st !== 'passing')) {
        drop = true;
        break;
      }
    }
    if (drop) continue;
    const tags = Array.isArray(svc['Tags']) ? (svc['Tags'] as unknown[]).map(String).sort() : [];
    set.push(dnsInstance(node, svc, tags));
    tuples.push(
      JSON.stringify([
        str(node['Node']),
        str(node['Address']),
        sortedPairs(node['TaggedAddresses']),
        sortedPairs(node['Meta']),
        str(svc['Address']),
        sortedPairs(svc['TaggedAddresses']),
        svc['Port'] ?? 0,
        tags,
        dnsWeight(svc, checks),
      ]),
    );
  }
  tuples.sort();
  const hash = createHash('sha1').update(tuples.join('\n')).digest('base64');
  return { hash, instances: tuples.length, set };
}

/** What DNS can show of one kept instance (consul/agree.ts judges fetched answers against it). */
function dnsInstance(node: Obj, svc: Obj, tags: string[]): DnsInstance {
  const addrs = new Set<string>();
  const add = (v: unknown): void => {
    if (typeof v === 'string' && v !== '') addrs.add(ipKey(v));
    else if (isObj(v) && typeof v['Address'] === 'string' && v['Address'] !== '') addrs.add(ipKey(v['Address']));
  };
  const primary = str(svc['Address']) || str(node['Address']);
  add(primary);
  add(node['Address']);
  for (const t of [node['TaggedAddresses'], svc['TaggedAddresses']])
    if (isObj(t)) for (const v of Object.values(t)) add(v);
  return {
    tags: tags.map((t) => t.toLowerCase()),
    primary: ipKey(primary),
    addrs: [...addrs],
    port: typeof svc['Port'] === 'number' ? svc['Port'] : 0,
  };
}

/**
 * The service set of a /v1/catalog/services reply (`{"name": [tags]}`), lowercased as DNS compares
 * names; the hash is over the sorted names, so tags and key order never count as a change.
 */
export function catalogView(body: unknown): { hash: string; names: Set<string> } {
  if (!isObj(body)) throw new HealthWatchError('CDP_ERR_CONSUL_BAD_BODY', 'catalog reply is not a JSON object');
  const names = new Set(Object.keys(body).map((k) => k.toLowerCase()));
  const hash = createHash('sha1')
    .update([...names].sort().join('\n'))
    .digest('base64');
  return { hash, names };
}

/**
 * A watch's request path before the blocking parameters. `stale`: Consul's DNS reads with
 * allow_stale (default true), so the watch sees what DNS sees and spreads the load over the
 * servers like DNS does.
 */
function watchPath(base: string, w: { key: string; service: string; dc: string | undefined }): string {
  let path =
    w.key === CATALOG
      ? `${base}/v1/catalog/services?stale`
      : `${base}/v1/health/service/${encodeURIComponent(w.service)}?stale`;
  if (w.dc) path += `&dc=${encodeURIComponent(w.dc)}`;
  return path;
}

/** A complete HTTP response as an Outcome: the parsed body and index, or a classified error. */
function replyOutcome(label: string, res: http.IncomingMessage, chunks: Buffer[]): Outcome {
  const bad = (err: HealthWatchError, failover: boolean): Outcome => ({ ok: false, err, failover, retrySame: false });
  const status = res.statusCode ?? 0;
  if (status !== 200) {
    const err = new HealthWatchError('CDP_ERR_CONSUL_HTTP_STATUS', `${label}: HTTP ${status}`, status);
    // 429: Consul's limit on this client (http_max_conns_per_client): over the limit, see run().
    if (status === 429) return { ok: false, err, failover: false, retrySame: false, overLimit: true };
    // 4xx (bad request, ACL denied) would be the same on every agent: no failover. 5xx are the
    // agent's own trouble: try the next one.
    return bad(err, !(status >= 400 && status < 500));
  }
  // Without X-Consul-Index we cannot block: polling would be a busy loop, so it is an error
  // (the consul package ends the watch for good here instead).
  const raw = res.headers['x-consul-index'];
  const idx = typeof raw === 'string' && /^\d+$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isFinite(idx))
    return bad(new HealthWatchError('CDP_ERR_CONSUL_NO_INDEX', `${label}: reply without a valid X-Consul-Index`), true);
  try {
    return { ok: true, index: idx, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) };
  } catch {
    return bad(new HealthWatchError('CDP_ERR_CONSUL_BAD_BODY', `${label}: reply is not JSON`), true);
  }
}

/** Jittered exponential backoff ("equal jitter"): a delay in [d/2, d], d = min(max, base·2^(n-1)). */
export function backoffDelay(failures: number, baseMs: number, maxMs: number, random: () => number): number {
  const d = Math.min(maxMs, baseMs * 2 ** Math.max(0, Math.min(failures - 1, 30)));
  return d / 2 + random() * (d / 2);
}

// ---------------------------------------------------------------------------------------------
// The engine

interface Endpoint {
  readonly label: string; // URL for logs
  readonly mod: typeof http | typeof https;
  readonly agent: http.Agent;
  readonly host: string;
  readonly port: number;
  readonly base: string; // path prefix, no trailing slash
}

type Outcome =
  | { ok: true; index: number; body: unknown }
  | { ok: false; err: HealthWatchError; failover: boolean; retrySame: boolean; overLimit?: boolean };

class Watch {
  index = 0; // last X-Consul-Index; 0 = none yet, or reset after going backwards
  gotReply = false; // the baseline view is set
  live = false;
  hash = '';
  instances = 0;
  /** The healthy instances of the last reply (the set the watch last reported). */
  set: readonly DnsInstance[] = [];
  /** The catalog watch only: the service names of the last reply. */
  names: ReadonlySet<string> | null = null;
  failures = 0;
  used = false; // set by ensure/touch; folded into lastUsed by the sweep
  lastUsed: number;
  lastStart = -Infinity;
  stopped = false;
  timer: NodeJS.Timeout | null = null;
  wake: (() => void) | null = null;
  req: http.ClientRequest | null = null;
  loop: Promise<void> = Promise.resolve();
  constructor(
    readonly key: string,
    readonly service: string,
    readonly dc: string | undefined,
    now: number,
  ) {
    this.lastUsed = now;
  }
}

const noop = (): void => {};

export class HealthWatcher {
  /** Health changes seen (view hash changed), over all watches. */
  changes = 0;
  /** Failed rounds (every URL failed), over all watches. */
  errors = 0;
  /** Index resets (X-Consul-Index went backwards). */
  resets = 0;
  /** ensure() calls refused because maxWatches watches were running (and none was idle), or while backing off. */
  rejected = 0;
  /**
   * Watches the agent refused as over its connection limit (HTTP 429, or a new connection closed
   * without a response: Consul's limits.http_max_conns_per_client). Each such watch is stopped
   * (its service keeps Consul's TTL) and no new watch starts for a backoff.
   */
  overLimit = 0;
  /** Watches stopped to make room for a newly queried service (the least recently used idle one). */
  evicted = 0;
  /** Requests held back by minIntervalMs (a busy server, or changes in quick succession). */
  throttled = 0;

  private readonly watches = new Map<string, Watch>();
  private readonly eps: Endpoint[];
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly log: Pick<Log, 'info' | 'warn' | 'debug'>;
  private readonly wait: number;
  private readonly probeWait: number;
  private readonly margin: number;
  private readonly backoffBase: number;
  private readonly backoffMax: number;
  private readonly failbackMs: number;
  private readonly sweepMs: number;
  private preferred = 0; // index into eps of the URL that last worked
  private preferredSince = 0;
  private sweepTimer: NodeJS.Timeout | null = null;
  private stopped = false;
  private capWarned = false;
  private limitStrikes = 0;
  private pausedUntil = 0;

  constructor(private readonly opts: WatchOptions) {
    if (opts.httpUrls.length === 0)
      throw new HealthWatchError('CDP_ERR_CONSUL_BAD_URL', 'consul.http: at least one URL is needed');
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
    const l = opts.log;
    this.log = { info: l?.info.bind(l) ?? noop, warn: l?.warn.bind(l) ?? noop, debug: l?.debug?.bind(l) ?? noop };
    // Consul caps wait at 10 min; below 1 s the loop would be mostly timeouts.
    this.wait = Math.min(600, Math.max(1, Math.round(opts.waitSeconds ?? 300)));
    this.probeWait = Math.min(this.wait, Math.max(1, opts.probeWaitSeconds ?? 10));
    this.margin = opts.timeoutMarginMs ?? 5000;
    this.backoffBase = opts.backoffBaseMs ?? 250;
    this.backoffMax = opts.backoffMaxMs ?? 30_000;
    this.failbackMs = opts.failbackMs ?? 60_000;
    // One sweep timer for all watches; a watch stops between idleMs and idleMs + 2 sweeps after its
    // last use.
    this.sweepMs = Math.min(15_000, Math.max(10, opts.idleMs / 4));
    this.eps = opts.httpUrls.map((u) => this.endpoint(u));
  }

  private endpoint(raw: string): Endpoint {
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw new HealthWatchError('CDP_ERR_CONSUL_BAD_URL', `consul.http: not a URL: ${raw}`);
    }
    const secure = url.protocol === 'https:';
    if (!secure && url.protocol !== 'http:')
      throw new HealthWatchError('CDP_ERR_CONSUL_BAD_URL', `consul.http: expected http:// or https://, got ${raw}`);
    let agent: http.Agent;
    if (secure) {
      const t = this.opts.tls ?? {};
      const read = (f: string | undefined): Buffer | undefined => {
        if (!f) return undefined;
        try {
          return readFileSync(f);
        } catch (e) {
          throw new HealthWatchError(
            'CDP_ERR_CONSUL_TLS_FILE',
            `consul.tls: cannot read ${f}: ${(e as Error).message}`,
          );
        }
      };
      const ca = read(t.caFile);
      const cert = read(t.certFile);
      const key = read(t.keyFile);
      agent = new https.Agent({
        keepAlive: true,
        scheduling: 'lifo',
        ...(ca ? { ca } : {}),
        ...(cert ? { cert } : {}),
        ...(key ? { key } : {}),
        rejectUnauthorized: !t.insecureSkipVerify,
      });
    } else {
      agent = new http.Agent({ keepAlive: true, scheduling: 'lifo' });
    }
    const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    return {
      label: url.origin,
      mod: secure ? https : http,
      agent,
      host,
      port: url.port ? Number(url.port) : secure ? 443 : 80,
      base: url.pathname.replace(/\/+$/, ''),
    };
  }

  // ---- public API -----------------------------------------------------------------------------

  /** On a cache miss of a service lookup: start the watch if none runs (unless over maxWatches). */
  ensure(service: string, dc?: string): void {
    const key = serviceKey(service, dc);
    const w = this.watches.get(key);
    if (w) {
      w.used = true;
      return;
    }
    if (this.stopped) return;
    if (
      key !== CATALOG &&
      (this.now() < this.pausedUntil || (this.size >= this.opts.maxWatches && !this.evictIdle()))
    ) {
      this.rejected++;
      if (!this.capWarned) {
        this.capWarned = true;
        this.log.warn(
          { service, dc, maxWatches: this.opts.maxWatches },
          'consul watch cap reached; answers for further services keep Consul TTL',
        );
      }
      return;
    }
    const nw = new Watch(key, service, dc, this.now());
    this.watches.set(key, nw);
    this.log.info({ service, dc }, 'consul watch started');
    this.spawn(nw);
    if (this.sweepTimer === null) {
      this.sweepTimer = setInterval(() => this.sweep(), this.sweepMs);
      this.sweepTimer.unref();
    }
  }

  /**
   * At the cap: stop the least recently used watch not asked for since the last sweep, so the
   * most recently queried services stay watched and the count never exceeds maxWatches. False
   * when every watch is in use (then the new service keeps Consul's TTL: no churn).
   */
  private evictIdle(): boolean {
    let victim: Watch | null = null;
    for (const w of this.watches.values()) {
      if (w.used || w.key === CATALOG) continue;
      if (victim === null || w.lastUsed < victim.lastUsed) victim = w;
    }
    if (victim === null) return false;
    this.evicted++;
    this.log.debug?.(
      { service: victim.service, dc: victim.dc },
      'consul watch stopped (least recently used, at the cap)',
    );
    this.retire(victim, true);
    return true;
  }

  /** The agent refused watch `w` as over its limit: stop it, count it, start no watch for a while. */
  private overTheLimit(w: Watch, err: HealthWatchError): void {
    this.overLimit++;
    this.limitStrikes++;
    const pause = backoffDelay(this.limitStrikes, this.backoffBase, this.backoffMax, this.random);
    this.pausedUntil = this.now() + pause;
    if (this.limitStrikes === 1) {
      this.log.warn(
        { service: w.service, dc: w.dc, watches: this.size, err: err.message },
        "consul agent refused a watch as over its connection limit (http_max_conns_per_client); that service keeps Consul's TTL",
      );
    }
    this.retire(w, true);
  }

  /** Query activity (cache hit): keeps the watch from going idle. A map lookup and a property write. */
  touch(service: string, dc?: string): void {
    const w = this.watches.get(serviceKey(service, dc));
    if (w !== undefined) w.used = true;
  }

  /** True once the watch's first reply arrived and while its last round did not fail. */
  isLive(service: string, dc?: string): boolean {
    const w = this.watches.get(serviceKey(service, dc));
    return w !== undefined && w.live;
  }

  /**
   * The healthy instances the live watch last reported, or null when the watch is not live (no
   * reply yet, or its last round failed): then nothing vouches for a fetched answer.
   */
  healthySet(service: string, dc?: string): readonly DnsInstance[] | null {
    const w = this.watches.get(serviceKey(service, dc));
    return w !== undefined && w.live ? w.set : null;
  }

  /**
   * Whether the live catalog watch lists the service (true), does not (false), or cannot say (null:
   * no catalog watch, or not live). Only the agent's own datacenter is watched.
   */
  knows(service: string, dc?: string): boolean | null {
    if (dc !== undefined) return null;
    const w = this.watches.get(CATALOG);
    if (w === undefined || !w.live || w.names === null) return null;
    return w.names.has(service.toLowerCase());
  }

  /** True while the watch has neither replied nor failed yet (its first request is in flight). */
  isStarting(service: string, dc?: string): boolean {
    const w = this.watches.get(serviceKey(service, dc));
    return w !== undefined && !w.gotReply && w.failures === 0;
  }

  /** The catalog watch: 1 live, 0 running but not live, -1 not running; for the catalog-watch gauge. */
  get catalogState(): number {
    const w = this.watches.get(CATALOG);
    return w === undefined ? -1 : w.live ? 1 : 0;
  }

  /** Visible (DNS) instances per watched service, keyed by serviceKey(); for the instances gauge. */
  instanceCounts(): Map<string, number> {
    const m = new Map<string, number>();
    for (const w of this.watches.values()) if (w.gotReply && w.key !== CATALOG) m.set(w.key, w.instances);
    return m;
  }

  /** Health watches running (the catalog watch not counted). */
  get size(): number {
    return this.watches.size - (this.watches.has(CATALOG) ? 1 : 0);
  }

  /** Abort every request, clear every timer, close every socket; resolves when all loops ended. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.sweepTimer !== null) {
      clearInterval(this.sweepTimer);
      this.sweepTimer = null;
    }
    const loops: Promise<void>[] = [];
    for (const w of [...this.watches.values()]) {
      this.retire(w, false);
      loops.push(w.loop);
    }
    await Promise.all(loops);
    for (const ep of this.eps) ep.agent.destroy();
  }

  // ---- watch lifecycle --------------------------------------------------------------------------

  /** Run the loop; if anything ends it other than stop (a bug, a throwing callback), restart it after a backoff. */
  private spawn(w: Watch): void {
    w.loop = this.run(w).catch((err: unknown) => {
      if (w.stopped) return;
      w.failures++;
      this.log.warn(
        { service: w.service, dc: w.dc, err: String(err) },
        'consul watch loop ended unexpectedly; restarting',
      );
      this.setLive(w, false);
      w.timer = setTimeout(
        () => {
          w.timer = null;
          if (!w.stopped) this.spawn(w);
        },
        backoffDelay(w.failures, this.backoffBase, this.backoffMax, this.random),
      );
    });
  }

  private retire(w: Watch, notify: boolean): void {
    w.stopped = true;
    if (w.timer !== null) {
      clearTimeout(w.timer);
      w.timer = null;
    }
    if (w.wake !== null) {
      const f = w.wake;
      w.wake = null;
      f();
    }
    if (w.req !== null) {
      w.req.destroy();
      w.req = null;
    }
    this.watches.delete(w.key);
    if (notify) this.setLive(w, false);
  }

  private sweep(): void {
    const t = this.now();
    for (const w of [...this.watches.values()]) {
      if (w.used) {
        w.used = false;
        w.lastUsed = t;
        continue;
      }
      if (t - w.lastUsed >= this.opts.idleMs) {
        this.log.info({ service: w.service, dc: w.dc }, 'consul watch stopped (idle)');
        this.retire(w, true);
      }
    }
    if (this.watches.size === 0 && this.sweepTimer !== null) {
      clearInterval(this.sweepTimer);
      this.sweepTimer = null;
    }
  }

  private sleep(w: Watch, ms: number): Promise<void> {
    return new Promise((resolve) => {
      w.wake = resolve;
      w.timer = setTimeout(() => {
        w.timer = null;
        w.wake = null;
        resolve();
      }, ms);
    });
  }

  private setLive(w: Watch, live: boolean): void {
    if (w.live === live) return;
    w.live = live;
    const cb = this.opts.onLiveChange;
    if (cb) {
      try {
        cb(w.service, live, w.dc);
      } catch (e) {
        this.log.warn({ err: String(e) }, 'onLiveChange threw');
      }
    }
  }

  private async run(w: Watch): Promise<void> {
    while (!w.stopped) {
      // Minimum interval between request starts. A reply is acted on before this wait, so the
      // first reaction to a change is never delayed; only a second change within minIntervalMs
      // of the previous request start is seen up to minIntervalMs late.
      const gap = w.lastStart + this.opts.minIntervalMs - this.now();
      if (gap > 0) {
        this.throttled++;
        await this.sleep(w, gap);
        if (w.stopped) return;
      }
      w.lastStart = this.now();
      const r = await this.round(w);
      if (w.stopped) return;
      if (!r.ok && r.overLimit === true) {
        this.overTheLimit(w, r.err);
        return;
      }
      let err: HealthWatchError | null = r.ok ? null : r.err;
      if (r.ok) {
        try {
          this.onReply(w, r.index, r.body);
        } catch (e) {
          err = e instanceof HealthWatchError ? e : new HealthWatchError('CDP_ERR_CONSUL_BAD_BODY', String(e));
        }
      }
      if (err !== null) {
        w.failures++;
        this.errors++;
        if (w.live || w.failures === 1) {
          this.log.warn(
            { service: w.service, dc: w.dc, code: err.code, err: err.message },
            'consul watch request failed; answers keep Consul TTL',
          );
        }
        this.setLive(w, false);
        await this.sleep(w, backoffDelay(w.failures, this.backoffBase, this.backoffMax, this.random));
      }
    }
  }

  /**
   * One attempt over the URLs: the preferred (last working) one first, or httpUrls[0] when
   * failbackMs has passed since we left it; after a failure, back to the top of the list in order.
   */
  private async round(w: Watch): Promise<Outcome> {
    const n = this.eps.length;
    let first = this.preferred;
    if (first !== 0 && this.now() - this.preferredSince >= this.failbackMs) first = 0;
    const order = [first];
    for (let i = 0; i < n; i++) if (i !== first) order.push(i);
    let last: Outcome | null = null;
    for (let k = 0; k < order.length; k++) {
      const u = order[k] as number;
      let r = await this.request(w, u);
      // A keep-alive socket the server closed just as we reused it: retry once on the same URL.
      if (!r.ok && r.retrySame && !w.stopped) r = await this.request(w, u);
      if (w.stopped || r.ok) {
        if (r.ok && u !== this.preferred) {
          this.log.info({ from: this.eps[this.preferred]?.label, to: this.eps[u]?.label }, 'consul http api failover');
          this.preferred = u;
          this.preferredSince = this.now();
        }
        return r;
      }
      last = r;
      if (u === 0 && first === 0 && this.preferred !== 0) this.preferredSince = this.now(); // failback probe failed: wait another period
      if (!r.failover) break;
    }
    return last as Outcome;
  }

  /** One GET; resolves (never rejects) with the parsed reply or a classified error. */
  private request(w: Watch, u: number): Promise<Outcome> {
    const ep = this.eps[u] as Endpoint;
    // Blocking only after the first reply, and never on index 0 (blocking.mdx: "use at least 1").
    // After a failed round, a non-blocking read first: with nothing changed, a blocking read on the
    // old index would hold for the whole wait (60 s) before the watch counts as live again, and
    // every query meanwhile goes to the agents. The read's reply is compared with the baseline as
    // any other, so a change made during the outage is still reported.
    const blocking = w.gotReply && w.failures === 0;
    const index = Math.max(1, w.index);
    const wait = u === this.preferred ? this.wait : this.probeWait;
    let path = watchPath(ep.base, w);
    if (blocking) path += `&index=${index}&wait=${wait}s`;
    // Consul adds up to wait/16 of jitter to the wait; then our margin.
    const budget = (blocking ? (wait * 1000 * 17) / 16 : 0) + this.margin;
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.opts.token) headers['x-consul-token'] = this.opts.token;

    return new Promise<Outcome>((resolve) => {
      let done = false;
      const finish = (o: Outcome): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (w.req === req) w.req = null;
        resolve(o);
      };
      const fail = (err: HealthWatchError, failover: boolean, retrySame = false): void =>
        finish({ ok: false, err, failover, retrySame });
      let response: http.IncomingMessage | null = null;
      const req = ep.mod.request(
        { host: ep.host, port: ep.port, path, method: 'GET', headers, agent: ep.agent },
        (res) => {
          response = res;
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', (e) => fail(new HealthWatchError('CDP_ERR_CONSUL_NET', `${ep.label}: ${e.message}`), true));
          res.on('aborted', () =>
            fail(new HealthWatchError('CDP_ERR_CONSUL_NET', `${ep.label}: response aborted`), true),
          );
          res.on('end', () => finish(replyOutcome(ep.label, res, chunks)));
        },
      );
      w.req = req;
      let connected = false;
      req.on('socket', (sock) => {
        if (req.reusedSocket) return;
        sock.once('connect', () => (connected = true));
        sock.once('secureConnect', () => (connected = true));
      });
      const timer = setTimeout(() => {
        req.destroy(new HealthWatchError('CDP_ERR_CONSUL_TIMEOUT', `${ep.label}: no reply within ${budget} ms`));
      }, budget);
      req.on('error', (e: Error & { code?: string }) => {
        if (e instanceof HealthWatchError) {
          fail(e, true);
          return;
        }
        const reset = e.code === 'ECONNRESET' || e.code === 'EPIPE';
        const err = new HealthWatchError('CDP_ERR_CONSUL_NET', `${ep.label}: ${e.code ?? e.message}`);
        // A new connection accepted and then closed before any response: the agent's per-client
        // connection limit. (A refused one, ECONNREFUSED, means the agent is gone: fail over.)
        if (reset && !req.reusedSocket && response === null && connected)
          finish({ ok: false, err, failover: false, retrySame: false, overLimit: true });
        else fail(err, true, reset && req.reusedSocket);
      });
      // Connection gone before a complete response ('end' reports complete ones).
      req.on('close', () => {
        if (response === null || !response.complete)
          fail(new HealthWatchError('CDP_ERR_CONSUL_NET', `${ep.label}: connection closed`), true);
      });
      req.end();
    });
  }

  private onReply(w: Watch, index: number, body: unknown): void {
    if (!w.gotReply) this.limitStrikes = 0;
    // Throws on a malformed body; run() then treats the round as failed (baseline kept, backoff).
    let view: { hash: string; instances: number; set: readonly DnsInstance[] };
    if (w.key === CATALOG) {
      const c = catalogView(body);
      w.names = c.names;
      view = { hash: c.hash, instances: c.names.size, set: [] };
    } else view = dnsView(body, this.opts.onlyPassing);
    if (!w.live && w.failures > 0) this.log.info({ service: w.service, dc: w.dc }, 'consul watch recovered');
    if (w.gotReply && index < w.index) {
      // blocking.mdx: "if a returned index is lower than the previous value, reset index to 0".
      this.resets++;
      this.log.debug({ service: w.service, from: w.index, to: index }, 'consul index went backwards; reset');
      w.index = 0;
    } else {
      w.index = index;
    }
    w.failures = 0;
    const receivedAt = this.now();
    w.instances = view.instances;
    w.set = view.set;
    if (!w.gotReply) {
      w.gotReply = true; // the first reply is the baseline: nothing to invalidate yet
      w.hash = view.hash;
    } else if (view.hash !== w.hash) {
      w.hash = view.hash;
      this.changes++;
      try {
        const detail: { instances: number; index: number; receivedAt: number; dc?: string } = {
          instances: view.instances,
          index,
          receivedAt,
        };
        if (w.dc) detail.dc = w.dc;
        this.opts.onChange(w.service, detail);
      } catch (e) {
        this.log.warn({ service: w.service, err: String(e) }, 'onChange threw');
      }
    }
    this.setLive(w, true);
  }
}
