/**
 * Forwarding-loop guard, after CoreDNS's `loop` plugin and dnsmasq's `--dns-loop-detect`: at
 * start and on every reload, a unique probe name is sent through each recursor and each forward-zone upstream. If one of them forwards it back to our own
 * listener, every query sent that way would circle until it timed out (and, with two forwarders
 * pointing at each other, multiply), so the path is marked broken: an error is logged once, and
 * queries for that pool are answered SERVFAIL (or stale, RFC 8767) at once instead of looping.
 *
 * Config validation already rejects an upstream that *is* one of our listen addresses
 * (config/checks.ts, "Loop guards"); this catches the indirect cases it cannot see: a recursor such as
 * systemd-resolved or a site resolver that forwards back to us, or a hostname resolving to us.
 *
 * Probe names are `cdp-<random 48 bits>-<n>.cdp-loop-check` for recursors (any name a recursor
 * would pass on; like CoreDNS's `<rand>.<rand>.zone`) and `cdp-<random>-<n>.<zone>` for a forward
 * zone, asked with type HINFO as CoreDNS does. The handler recognises them with one `startsWith` on
 * the lowercased query name (`isProbe`), before the cache and the pools, and answers REFUSED, which
 * ends the circle at the first turn. The Consul agents are not probed: they only ever get Consul
 * names from us, which they answer themselves.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { type ExchangeResult } from '../upstream/types.js';
import { UpstreamSockets } from '../upstream/udp.js';
import { UpstreamPool } from '../upstream/pool.js';
import { buildQuestion, buildUpstreamQuery } from '../dns/wire.js';
import { HEADER_LEN } from '../dns/constants.js';
import type { Log } from '../observability/log.js';

/** The suffix of recursor probe names (an unregistered TLD-like label: the root answers NXDOMAIN). */
export const LOOP_PROBE_ZONE = 'cdp-loop-check';
/** HINFO (RFC 1035 §3.3.2), what CoreDNS's loop plugin asks. */
const HINFO = 13;

export interface LoopTarget {
  pool: string;
  /** "host:port" as the pool labels it. */
  upstream: string;
  host: string;
  port: number;
  /** Probe name, lowercase, no trailing dot (what parseQuery gives the handler). */
  name: string;
}

export interface LoopReport {
  probed: number;
  /** Probes that got any reply from the upstream (a loop may still reply, with SERVFAIL). */
  answered: number;
  loops: { pool: string; upstream: string }[];
  brokenPools: string[];
}

export interface LoopGuardOptions {
  log: Log;
  /** How long to wait for each probe's reply (default 2000 ms). */
  timeoutMs?: number;
  /** Called once per pool when it is marked broken (after the pool is swapped out). */
  onLoop?: (pool: string, upstream: string) => void;
}

/**
 * A pool that never asks anyone: every exchange fails at once, so the handler answers SERVFAIL
 * (with an Extended DNS Error, or a stale answer) instead of sending the query round the loop.
 */
export class LoopedPool extends UpstreamPool {
  constructor(
    name: string,
    readonly loopedVia: string,
  ) {
    super(name, [], INERT_OPTIONS, INERT_TRANSPORT);
  }
  override exchange(): Promise<ExchangeResult> {
    return Promise.resolve({ failure: 'network', upstream: this.loopedVia });
  }
  override startProbes(): void {
    /* nothing to probe */
  }
}

const INERT_OPTIONS = {
  timeoutMs: 1,
  hedgeMs: 1,
  deadlineMs: 1,
  maxFails: 1,
  probeIntervalMs: 1 << 30,
  probeQuestion: Buffer.from([0, 0, 2, 0, 1]),
  udpSize: 512,
  maxInFlight: 0,
};
// Never used to send (LoopedPool overrides exchange); opens no socket until a send.
const INERT_TRANSPORT = new UpstreamSockets(1, 1);

/**
 * One guard per configuration. `check(pools)` probes; `isProbe(name)` is the hot-path hook; when
 * a probe arrives, the pool it was sent through is replaced in `pools` (the same Map the handler
 * reads) by a LoopedPool, and the original pool is closed.
 */
export class LoopGuard {
  /** `cdp-<token>-`: every probe name of this guard starts with it. */
  readonly prefix: string;
  private readonly targets = new Map<string, LoopTarget>();
  private pools: Map<string, UpstreamPool> | null = null;
  private readonly broken = new Set<string>();
  private readonly loops: { pool: string; upstream: string }[] = [];
  private sockets: dgram.Socket[] = [];
  private closed = false;
  /** Probe arrivals seen (each is a loop). */
  arrivals = 0;

  constructor(private readonly opts: LoopGuardOptions) {
    this.prefix = `cdp-${randomBytes(6).toString('hex')}-`;
  }

  /**
   * Hot path: true when `name` (lowercased, no trailing dot) is one of our probes, i.e. it went out
   * through an upstream and came back to us. The caller answers REFUSED and does nothing else.
   * Costs one startsWith on a random prefix, which fails on the first characters for real names.
   */
  isProbe(name: string): boolean {
    if (!name.startsWith(this.prefix)) return false;
    const t = this.targets.get(name);
    if (t === undefined) return false;
    this.arrivals++;
    this.markBroken(t);
    return true;
  }

  /** Pools marked broken so far. */
  brokenPools(): string[] {
    return [...this.broken];
  }

  /**
   * Probes every upstream of every pool except 'consul' (the agents), one UDP HINFO question each,
   * and resolves when each got a reply or timed out. Loops are acted on as probes arrive (see
   * isProbe), also after this resolves. Call once the listeners are up: at start and on reload.
   */
  async check(pools: Map<string, UpstreamPool>): Promise<LoopReport> {
    this.pools = pools;
    const list: LoopTarget[] = [];
    let n = 0;
    for (const [name, pool] of pools) {
      if (name === 'consul' || pool instanceof LoopedPool) continue;
      const zone = name.startsWith('zone:') ? name.slice(5) : LOOP_PROBE_ZONE;
      for (const u of pool.upstreams) {
        const label = u.label;
        const probe = `${this.prefix}${n++}.${zone}`;
        const t: LoopTarget = { pool: name, upstream: label, host: u.host, port: u.port, name: probe };
        this.targets.set(probe, t);
        list.push(t);
      }
    }
    const timeoutMs = this.opts.timeoutMs ?? 2000;
    const answered = await Promise.all(list.map((t) => this.probe(t, timeoutMs)));
    const report: LoopReport = {
      probed: list.length,
      answered: answered.filter(Boolean).length,
      loops: [...this.loops],
      brokenPools: [...this.broken],
    };
    this.opts.log.debug({ ...report }, 'loop check done');
    return report;
  }

  /** Sends one probe; resolves true on any reply with our ID, false on timeout or error. */
  private probe(t: LoopTarget, timeoutMs: number): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    const q = buildQuestion(t.name, HINFO);
    const msg = buildUpstreamQuery(q, 0, q.length, 0x0100 /* RD */, false, 1232);
    const id = randomBytes(2).readUInt16BE(0);
    msg.writeUInt16BE(id, 0);
    const sock = dgram.createSocket(net.isIPv6(t.host) ? 'udp6' : 'udp4');
    this.sockets.push(sock);
    return new Promise<boolean>((resolve) => {
      let done = false;
      const finish = (ok: boolean) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.sockets = this.sockets.filter((s) => s !== sock);
        try {
          sock.close();
        } catch {
          /* closed */
        }
        resolve(ok);
      };
      const timer = setTimeout(() => finish(false), timeoutMs);
      timer.unref();
      sock.on('error', () => finish(false));
      sock.on('message', (m, rinfo) => {
        if (m.length >= HEADER_LEN && m.readUInt16BE(0) === id && rinfo.port === t.port) finish(true);
      });
      sock.send(msg, t.port, t.host, (err) => {
        if (err) finish(false);
      });
    });
  }

  private markBroken(t: LoopTarget): void {
    if (this.broken.has(t.pool)) return;
    this.broken.add(t.pool);
    this.loops.push({ pool: t.pool, upstream: t.upstream });
    this.opts.log.error(
      { pool: t.pool, upstream: t.upstream, probe: t.name },
      'forwarding loop: a probe sent through this upstream came back to us; answering SERVFAIL for the pool until the configuration is fixed and reloaded',
    );
    const pools = this.pools;
    const old = pools?.get(t.pool);
    if (pools && old && !(old instanceof LoopedPool)) {
      pools.set(t.pool, new LoopedPool(t.pool, t.upstream));
      old.close();
    }
    this.opts.onLoop?.(t.pool, t.upstream);
  }

  /** Stops waiting for probes (on reload the new configuration gets a new guard). */
  close(): void {
    this.closed = true;
    for (const s of this.sockets) {
      try {
        s.close();
      } catch {
        /* closed */
      }
    }
    this.sockets = [];
  }
}
