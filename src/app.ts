/**
 * Wiring: builds every part of a running proxy from a validated Config, once, at start and on
 * reload (the cold path: parse, resolve and decide everything here, so the query path only runs).
 * Also the in-process entry point used by the benchmarks and fuzzers: `startApp(config)`.
 */
import dns from 'node:dns/promises';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import type { Config } from './config/schema.js';
import { parseHostPort, parseCidr } from './net/address.js';
import { expandResolvConf, resolvedStubs } from './net/resolv-conf.js';
import { parseListenFds, socketKinds } from './net/listen-fds.js';
import { parseProbe } from './config/checks.js';
import os from 'node:os';
import { Router, reverseZonesOf } from './query/router.js';
import { type UpstreamAddress, type PoolObserver } from './upstream/types.js';
import { UpstreamSockets } from './upstream/udp.js';
import { UpstreamPool } from './upstream/pool.js';
import { QueryHandler, type QueryHandlerDeps } from './query/handler.js';
import { DnsServer, type InheritedSocket } from './server/dns-server.js';
import { createNotifier } from './server/sd-notify.js';
import { Metrics } from './observability/metrics.js';
import { startAdmin } from './server/admin.js';
import { AnswerCache, STARTING, type WatchView } from './cache/answer-cache.js';
import { createGate } from './query/gate.js';
import { LoopGuard } from './query/loop-guard.js';
import { HealthWatcher } from './consul/health.js';
import { answerAgrees } from './consul/agree.js';
import { CATALOG } from './consul/catalog-key.js';
import { buildQuestion } from './dns/wire.js';
import { RCODE, TYPE } from './dns/constants.js';
import type { Logger } from './observability/log.js';
import { VERSION } from './version.js';
import { serviceKey } from './consul/service-key.js';

export interface App {
  udpAddresses: string[];
  tcpAddresses: string[];
  adminAddress: string | null;
  metrics: Metrics;
  proxy: QueryHandler;
  reload(config: Config): Promise<void>;
  /** Stop accepting, let in-flight queries finish (up to the upstream deadline), close everything. */
  close(): Promise<void>;
}

/** Resolves upstream host names once (at start and on reload); IP literals are taken as they are. */
async function resolveUpstreams(list: string[], log: Logger): Promise<UpstreamAddress[]> {
  const out: UpstreamAddress[] = [];
  for (const s of list) {
    const { host, port } = parseHostPort(s);
    if (net.isIP(host)) {
      out.push({ host, port });
      continue;
    }
    try {
      const addrs = await dns.lookup(host, { all: true });
      for (const a of addrs) out.push({ host: a.address, port });
    } catch (err) {
      log.warn({ upstream: s, err: String(err) }, 'cannot resolve upstream host name; skipped');
    }
  }
  return out;
}

interface Built {
  deps: QueryHandlerDeps;
  pools: UpstreamPool[];
  watcher: HealthWatcher | null;
  cache: AnswerCache | null;
}

/** Closes what a build made, for a build that failed half way or was never started. */
async function discard(pools: Iterable<UpstreamPool>, watcher: HealthWatcher | null): Promise<void> {
  for (const p of pools) p.close();
  await watcher?.stop();
}

/**
 * Puts a whole new configuration to work: from here on its pools probe, the zone labels follow its
 * router and the cache gauges read its cache. Nothing here can fail.
 */
function start(b: Built, metrics: Metrics): void {
  metrics.setZones(b.deps.router.zoneLabels);
  for (const p of b.pools) {
    for (const s of p.status()) metrics.upstream(p.name, s.upstream).healthy = 1;
    p.startProbes();
  }
  const { cache, watcher } = b;
  metrics.sources = {
    cacheEntries: () => cache?.size ?? 0,
    healthWatches: () => watcher?.size ?? 0,
    healthChanges: () => watcher?.changes ?? 0,
    serviceInstances: () => watcher?.instanceCounts() ?? new Map(),
    negativeEntries: () => cache?.negativeEntries() ?? 0,
    catalogWatch: () => watcher?.catalogState ?? -1,
    watchOverLimit: () => watcher?.overLimit ?? 0,
  };
}

/**
 * The cache and its health watcher, tied together: a change reported by a watch drops the
 * service's entries; `liveSince` tells the cache which entries a live watch protects.
 */
function buildCache(
  config: Config,
  metrics: Metrics,
  log: Logger,
  afterChange: () => void,
): { cache: AnswerCache; watcher: HealthWatcher } {
  const c = config.cache;
  const liveSince = new Map<string, number>();
  let cache: AnswerCache | null = null;
  const watcher = new HealthWatcher({
    httpUrls: config.consul.http,
    token: config.consul.token || undefined,
    tls: config.consul.tls,
    onlyPassing: config.consul.onlyPassing,
    minIntervalMs: c.watchMinIntervalMs,
    idleMs: c.watchIdleSeconds * 1000,
    maxWatches: c.maxWatches,
    log: log.child({ module: 'health' }),
    // 60 s rather than Consul's 5 min default: an agent that accepts and never answers is noticed
    // within about 69 s (wait + wait/16 + margin), at ~4 requests/s for 256 watches.
    waitSeconds: 60,
    onChange: (service, d) => {
      cache?.invalidateService(service, d.dc);
      afterChange();
      metrics.invalidationLag(Math.max(0, Date.now() - d.receivedAt) / 1000);
    },
    onLiveChange: (service, live, dc) => {
      if (!live) {
        liveSince.delete(serviceKey(service, dc));
        return;
      }
      const since = Date.now();
      liveSince.set(serviceKey(service, dc), since);
      cache?.adopt(service, dc, since);
    },
  });
  const view: WatchView = {
    ensure: (s, dc) => watcher.ensure(s, dc),
    touch: (s, dc) => watcher.touch(s, dc),
    liveSince: (s, dc) => liveSince.get(serviceKey(s, dc)) ?? (watcher.isStarting(s, dc) ? STARTING : 0),
    agrees: (s, dc, queried, tag, qtype, reply) => {
      // Held by the catalog watch: an NXDOMAIN for a service the catalog does not list.
      if (s === CATALOG) return (reply.flags & 0xf) === RCODE.NXDOMAIN && watcher.knows(queried, dc) === false;
      const set = watcher.healthySet(s, dc);
      return set !== null && answerAgrees(set, tag, qtype, reply);
    },
    knows: (s, dc) => watcher.knows(s, dc),
  };
  const stale =
    typeof c.staleSeconds === 'number' ? { consul: c.staleSeconds, recursors: c.staleSeconds } : c.staleSeconds;
  cache = new AnswerCache(
    {
      maxEntries: c.maxEntries,
      maxBytes: c.maxBytes,
      consulTtl: c.consulTtl,
      negativeMaxTtl: c.negativeMaxTtl,
      maxTtl: c.maxTtl,
      staleConsul: stale.consul,
      staleRecursors: stale.recursors,
      staleRecheckSeconds: c.staleRecheckSeconds,
      udpAnswerLimit: config.consul.udpAnswerLimit,
      maxUdpSize: config.maxUdpSize,
      domain: config.consul.domain,
      aliases: config.consul.aliases,
    },
    metrics,
    view,
  );
  return { cache, watcher };
}

/**
 * Builds every part of a configuration and starts none of them (see start()): what can fail (the
 * TLS files the health watcher reads, a pool, the gate) fails here, and then everything built so
 * far is closed, so a failed reload leaves no probe, timer or socket behind.
 */
async function build(
  config: Config,
  transport: UpstreamSockets,
  metrics: Metrics,
  log: Logger,
  afterChange: () => void,
): Promise<Built> {
  // The cache first: its health watcher reads the TLS files, the likeliest thing to fail.
  const cached = config.cache.enabled ? buildCache(config, metrics, log, afterChange) : null;
  const pools = new Map<string, UpstreamPool>();
  try {
    return await buildRest(config, transport, metrics, log, cached, pools);
  } catch (err) {
    await discard(pools.values(), cached?.watcher ?? null);
    throw err;
  }
}

/** Upstream pool events into the metrics. */
function poolObserver(metrics: Metrics): PoolObserver {
  return {
    request: (pool, up, t) => {
      const s = metrics.upstream(pool, up);
      if (t === 'udp') s.requestsUdp++;
      else s.requestsTcp++;
    },
    failure: (pool, up, reason) => {
      metrics.upstream(pool, up).failures[reason]++;
    },
    duration: (pool, up, sec) => metrics.upstream(pool, up).observe(sec),
    hedged: (pool) => metrics.hedged(pool),
    health: (pool, up, ok) => {
      metrics.upstream(pool, up).healthy = ok ? 1 : 0;
    },
    overflow: (pool) => {
      metrics.pool(pool).overflow++;
    },
  };
}

/**
 * `recursors` with the word resolv.conf replaced by that file's nameservers (our own addresses
 * left out), warning when they are systemd-resolved's stub.
 */
function expandRecursors(config: Config, log: Logger): string[] {
  if (!config.recursors.includes('resolv.conf')) return config.recursors;
  const own = config.listen.map((l) => parseHostPort(l));
  let text = '';
  try {
    text = readFileSync('/etc/resolv.conf', 'utf8');
  } catch {
    /* none */
  }
  const fromFile = expandResolvConf(
    text,
    own,
    Object.values(os.networkInterfaces())
      .flat()
      .map((i) => i!.address),
  );
  const stubs = resolvedStubs(fromFile);
  if (stubs.length)
    log.warn(
      { key: 'recursors', recursors: stubs },
      "recursors: [resolv.conf] names systemd-resolved's stub: every other name goes through resolved, and back here if resolved forwards the Consul domain to us (a loop); give the site's resolvers as recursors",
    );
  return config.recursors.flatMap((r) => (r === 'resolv.conf' ? fromFile : [r]));
}

async function buildRest(
  config: Config,
  transport: UpstreamSockets,
  metrics: Metrics,
  log: Logger,
  cached: { cache: AnswerCache; watcher: HealthWatcher } | null,
  pools: Map<string, UpstreamPool>,
): Promise<Built> {
  const observer = poolObserver(metrics);
  const u = config.upstream;
  const poolOpts = (probeQuestion: Buffer, udpSize: number) => ({
    timeoutMs: u.timeoutMs,
    hedgeMs: u.hedgeMs,
    deadlineMs: u.deadlineMs,
    maxFails: u.maxFails,
    probeIntervalMs: u.probeIntervalMs,
    probeQuestion,
    udpSize,
    maxInFlight: u.maxInFlight,
  });
  // Agents are asked with the largest EDNS buffer Consul honours (it caps at 65467 and, without
  // enable_truncate, trims silently rather than set TC): one reply then holds every instance.
  // They are probed with a question Consul answers itself, never a root name.
  const addPool = async (name: string, upstreams: string[], probeQuestion: Buffer, udpSize: number) => {
    const list = await resolveUpstreams(upstreams, log);
    pools.set(name, new UpstreamPool(name, list, poolOpts(probeQuestion, udpSize), transport, observer, log));
  };
  await addPool('consul', config.consul.agents, buildQuestion(config.consul.domain + '.', TYPE.SOA), 65467);
  const probe = parseProbe(u.recursorProbe);
  const recursorProbe = buildQuestion(probe.name, probe.type);
  const recursorList = expandRecursors(config, log);
  if (recursorList.length) await addPool('recursor', recursorList, recursorProbe, 1232);
  for (const z of config.zones) await addPool('zone:' + z.name, z.upstreams, recursorProbe, 1232);
  const reverseZones = config.consul.reverseZones.flatMap((c) => {
    const p = parseCidr(c);
    return reverseZonesOf(p.family, p.bytes, p.prefix);
  });
  const router = new Router({
    domain: config.consul.domain,
    aliases: config.consul.aliases,
    reverseZones,
    zones: config.zones.map((z) => z.name),
    hasRecursors: pools.has('recursor'),
  });
  return {
    deps: {
      settings: {
        domain: config.consul.domain,
        maxUdpSize: config.maxUdpSize,
        udpAnswerLimit: config.consul.udpAnswerLimit,
        logQueries: config.log.queries,
        ttl: { maxTtl: config.cache.maxTtl, negativeMaxTtl: config.cache.negativeMaxTtl },
        staleClientTimeoutMs: config.cache.staleClientTimeoutMs,
      },
      router,
      pools,
      metrics,
      log,
      cache: cached?.cache ?? null,
      gate: createGate(config, metrics),
      loop: new LoopGuard({ log: log.child({ module: 'loop' }), timeoutMs: 2 * config.upstream.timeoutMs }),
    },
    pools: [...pools.values()],
    watcher: cached?.watcher ?? null,
    cache: cached?.cache ?? null,
  };
}

// eslint-disable-next-line max-lines-per-function -- one closure over the running state (configuration, build, draining) that reload, swap and close share; each step is a named function
export async function startApp(config: Config, log: Logger): Promise<App> {
  // With no listener nobody can scrape: counting calls become no-ops (Metrics `enabled`).
  const metrics = new Metrics({
    version: VERSION,
    zones: ['consul', 'alias', 'recursor', ...config.zones.map((z) => z.name)],
    enabled: config.metrics.listen !== 'off',
  });
  const transport = new UpstreamSockets();
  let proxy: QueryHandler | null = null;
  const afterChange = () => proxy?.forgetInflight();
  let built = await build(config, transport, metrics, log, afterChange);
  start(built, metrics);
  const handler = new QueryHandler(built.deps);
  proxy = handler;
  const server = new DnsServer(handler, config.limits.tcp, metrics, log);
  const inherited = await openListeners(server, config, log);
  const notifier = createNotifier(process.env, log);
  // Once we listen: a probe sent through each recursor must not come back to us (loop guard).
  void built.deps.loop?.check(built.deps.pools);
  let draining = false;
  /** Closers of replaced configurations whose pools wait for the queries still using them. */
  const retiring = new Set<() => void>();
  let admin: { address: string; close(): Promise<void> } | null = null;
  // Lame duck: not ready from SIGTERM on, while queries are still answered.
  const readiness = () => (draining ? { ok: false, reason: 'shutting down' } : upstreamsReady(config, built));
  if (config.metrics.listen !== 'off') {
    admin = await startAdmin(parseHostPort(config.metrics.listen), {
      metrics,
      draining: () => draining,
      ready: readiness,
      log,
      cache: {
        count: () => built.cache?.size ?? 0,
        entries: (name) => built.cache?.entries(name) ?? [],
        flush: (sel) => built.cache?.flush(sel) ?? 0,
      },
    });
  }
  log.info(
    { udp: server.udpAddresses, tcp: server.tcpAddresses, metrics: admin?.address ?? 'off', version: VERSION },
    'listening',
  );
  // Ready to systemd once the sockets answer, whatever the agents' state (that is /ready's).
  notifier.notify('READY=1', `STATUS=answering on ${server.udpAddresses.join(' ')}`);

  const app: App = {
    get udpAddresses() {
      return server.udpAddresses;
    },
    get tcpAddresses() {
      return server.tcpAddresses;
    },
    adminAddress: admin?.address ?? null,
    metrics,
    proxy: handler,
    async reload(next: Config) {
      // MONOTONIC_USEC (CLOCK_MONOTONIC, which process.hrtime reads) lets systemd tell this reload from an earlier one.
      notifier.notify('RELOADING=1', `MONOTONIC_USEC=${process.hrtime.bigint() / 1000n}`);
      try {
        if (inherited) warnListenIgnored(config, next, log);
        else await relisten(server, next, log);
        await swap(next);
      } finally {
        notifier.notify('READY=1');
      }
    },
    async close() {
      draining = true;
      notifier.notify('STOPPING=1');
      // Lame duck: /ready is 503 from now on, so balancers stop sending; until they have, answer.
      if (config.shutdown.lameDuckMs > 0) await new Promise((r) => setTimeout(r, config.shutdown.lameDuckMs));
      server.drain();
      const deadline = Date.now() + config.upstream.deadlineMs + 500;
      while ((handler.pending > 0 || !server.retired) && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 20));
      await server.close();
      for (const retire of [...retiring]) retire();
      built.deps.loop?.close();
      for (const p of built.pools) p.close();
      await built.watcher?.stop();
      transport.close();
      if (admin) await admin.close();
      await notifier.flush(1000);
    },
  };
  return app;

  /** A reload once the listeners are settled: the new configuration is built whole, then swapped in. */
  async function swap(next: Config): Promise<void> {
    const fresh = await build(next, transport, metrics, log, afterChange);
    // Whole: from here on nothing fails. Queries in flight finish with the old configuration.
    // `old` is read after the build: a reload that overlapped this one is then replaced (and closed).
    const old = built;
    const oldDeadlineMs = config.upstream.deadlineMs;
    built = fresh;
    config = next;
    start(built, metrics);
    handler.reconfigure(built.deps);
    old.deps.loop?.close();
    void built.deps.loop?.check(built.deps.pools);
    server.setLimits(next.limits.tcp);
    // A query in flight may still need the old pools (its retry over TCP, the next agent) until
    // its deadline: they close after it.
    const retire = () => {
      if (retiring.delete(retire)) closeReplaced(old, built, metrics);
    };
    retiring.add(retire);
    setTimeout(retire, oldDeadlineMs + 100).unref();
    await old.watcher?.stop();
    log.info(
      { upstreams: built.pools.map((p) => ({ pool: p.name, upstreams: p.status().map((s) => s.upstream) })) },
      'configuration reloaded',
    );
  }
}

/** Listens where `listen` says, or on the sockets the service manager passed (returned, else null). */
async function openListeners(server: DnsServer, config: Config, log: Logger): Promise<InheritedSocket[] | null> {
  const inherited = inheritedSockets(log);
  if (!inherited) {
    await server.listen(config.listen.map((l) => parseHostPort(l)));
    return null;
  }
  await server.adopt(inherited);
  const got = new Set([...server.udpAddresses, ...server.tcpAddresses]);
  if (config.listen.some((l) => !got.has(l)) || [...got].some((a) => !config.listen.includes(a)))
    log.warn(
      { listen: config.listen, inherited: [...got] },
      'listen is ignored: the service manager passed sockets, and those are answered on',
    );
  return inherited;
}

/** Ready when an agent answered within two probe intervals and, with recursors, a recursor did. */
function upstreamsReady(config: Config, built: Built): { ok: boolean; reason?: string } {
  const window = 2 * config.upstream.probeIntervalMs + config.upstream.timeoutMs;
  const now = Date.now();
  const consul = built.deps.pools.get('consul');
  if (!consul || now - consul.lastOkAt() > window)
    return { ok: false, reason: 'no Consul agent answered a probe recently' };
  const rec = built.deps.pools.get('recursor');
  if (rec && now - rec.lastOkAt() > window) return { ok: false, reason: 'no recursor answered a probe recently' };
  return { ok: true };
}

/** Closes a replaced configuration's pools and drops the series of upstreams the running one does not have. */
function closeReplaced(old: Built, running: Built, metrics: Metrics): void {
  for (const p of old.pools) p.close();
  // Otherwise they would linger, frozen, in every scrape.
  const kept = new Set(running.pools.flatMap((p) => p.status().map((s) => `${p.name} ${s.upstream}`)));
  for (const p of old.pools)
    for (const s of p.status()) if (!kept.has(`${p.name} ${s.upstream}`)) metrics.dropUpstream(p.name, s.upstream);
}

/** Under socket activation the sockets are the service manager's: a changed `listen` is only warned about. */
function warnListenIgnored(config: Config, next: Config, log: Logger): void {
  if (JSON.stringify(next.listen) !== JSON.stringify(config.listen))
    log.warn({ listen: next.listen }, 'listen is ignored: the sockets come from the service manager');
}

/** A reload's `listen`: new addresses open first; a bind failure keeps the running ones. */
async function relisten(server: DnsServer, next: Config, log: Logger): Promise<void> {
  try {
    const r = await server.relisten(next.listen, parseHostPort);
    if (r.opened.length || r.retired.length)
      log.info(
        { opened: r.opened, closing: r.retired, udp: server.udpAddresses, tcp: server.tcpAddresses },
        'listen addresses changed; the old ones close once their queries are answered',
      );
  } catch (err) {
    log.error(
      { key: 'listen', listen: next.listen, running: server.udpAddresses, err },
      `listen: ${err instanceof Error ? err.message : String(err)}; keeping the running addresses`,
    );
  }
}

/**
 * Sockets passed by the service manager for this process (systemd socket activation), with their
 * kind looked up; null when there are none. LISTEN_* is removed from the environment then, as
 * sd_listen_fds(unset_environment) does, so that no child takes them for its own.
 */
function inheritedSockets(log: Logger): InheritedSocket[] | null {
  const fds = parseListenFds(process.env, process.pid);
  delete process.env.LISTEN_PID;
  delete process.env.LISTEN_FDS;
  delete process.env.LISTEN_FDNAMES;
  if (!fds) return null;
  const kinds = socketKinds(fds);
  const out: InheritedSocket[] = [];
  fds.forEach((f, i) => {
    const k = kinds[i];
    if (k) out.push({ fd: f.fd, kind: k.kind, ipv6: k.ipv6 });
    else log.warn({ fd: f.fd, name: f.name }, 'inherited fd is neither a UDP nor a TCP socket; ignored');
  });
  log.info(
    { sockets: fds.map((f, i) => ({ ...f, kind: kinds[i]?.kind ?? null })) },
    'sockets from the service manager',
  );
  return out.length ? out : null;
}
