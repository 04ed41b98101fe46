/**
 * The gate: who may ask us at all (access control) and how fast (per-client rate limits), decided
 * per query from the client's address before any routing or upstream work.
 *
 * Access control follows dnsdist's default ACL: loopback, RFC 1918, RFC 6598
 * (100.64/10) and the IPv6 unique-local and link-local ranges. A configured `acl.allow` replaces
 * that list entirely, loopback included, as dnsdist's `setACL` does. Anyone else is REFUSED (as
 * unbound's `access-control: refuse`) or dropped (`acl.action: drop`); both are counted. Not being
 * an open resolver is the first defence against reflection attacks (RFC 5358).
 *
 * Rate limits are a token bucket per client, keyed by the IPv4 /32 or the IPv6 /64 (one IPv6 host
 * usually owns a whole /64, so a finer key would let it rotate addresses past the limit), with the
 * action `refuse`, `drop` or `tc`. TC answers a UDP query with an empty truncated reply so a real
 * client retries over TCP (RFC 7766 §5; what BIND's RRL "slip" does): a spoofed source cannot
 * complete a TCP handshake, a real one can, so TCP is never limited when the action is `tc`.
 *
 * Hot path: one Map lookup of the address string (a bounded memo holding the ACL verdict and the
 * rate key) and, with limits on, one more for the bucket plus a few arithmetic operations. Parsing
 * and prefix matching happen once per new address. Memory is bounded: the memo is cleared when it
 * fills (re-deriving a verdict is cheap), buckets are swept when there are too many (a bucket not
 * touched for burst/qps seconds is full again, so forgetting it changes nothing).
 */
import { parseCidr, parseIpWords } from '../net/address.js';
import type { Config } from '../config/schema.js';
import type { Query } from '../dns/wire.js';
import { FLAG, RCODE } from '../dns/constants.js';
import { truncated } from '../dns/reply.js';

/** Gate verdicts besides an rcode (> 0): allow, drop silently, answer with an empty TC reply. */
const GATE_ALLOW = 0;
export const GATE_DROP = -1;
/**
 * Answer with TC (UDP only). Negative on purpose: a handler that only knows "< 0 means drop" still
 * does something safe with it.
 */
export const GATE_TC = -2;

/** Access control and rate limiting, decided per client address: what the query handler asks. */
export interface GateCheck {
  /** GATE_ALLOW (0), else the rcode to answer with, GATE_DROP or GATE_TC. */
  check(address: string, udp: boolean): number;
}

/** Where the gate counts what it did (the Metrics fields of the same names). */
export interface GateCounters {
  acl: { refuse: number; drop: number };
  ratelimited: { refuse: number; drop: number; tc: number };
}

// ---------------------------------------------------------------------------------------------
// Access control

interface V4Rule {
  net: number;
  mask: number;
}
interface V6Rule {
  net: Uint32Array;
  mask: Uint32Array;
}

function maskWord(prefix: number, word: number): number {
  const bits = Math.max(0, Math.min(32, prefix - word * 32));
  return bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
}

/** The allow list as prefix tables, one per family; built once per configuration. */
export class Acl {
  private readonly v4: V4Rule[] = [];
  private readonly v6: V6Rule[] = [];
  /** True when the list admits every address of both families (0.0.0.0/0 and ::/0). */
  readonly allowsAll: boolean;

  constructor(allow: readonly string[]) {
    let all4 = false,
      all6 = false;
    for (const s of allow) {
      const c = parseCidr(s);
      if (c.family === 4) {
        const mask = maskWord(c.prefix, 0);
        this.v4.push({ net: (c.bytes.readUInt32BE(0) & mask) >>> 0, mask });
        if (c.prefix === 0) all4 = true;
      } else {
        const net = new Uint32Array(4),
          mask = new Uint32Array(4);
        for (let w = 0; w < 4; w++) {
          mask[w] = maskWord(c.prefix, w);
          net[w] = (c.bytes.readUInt32BE(w * 4) & mask[w]!) >>> 0;
        }
        this.v6.push({ net, mask });
        if (c.prefix === 0) all6 = true;
      }
    }
    this.allowsAll = all4 && all6;
  }

  /** IPv4 address (as a number) allowed? Also matches IPv6 rules covering its mapped form. */
  allows4(a: number): boolean {
    for (const r of this.v4) if ((a & r.mask) >>> 0 === r.net) return true;
    if (this.v6.length) return this.allows6(Uint32Array.of(0, 0, 0xffff, a));
    return false;
  }

  allows6(w: Uint32Array): boolean {
    for (const r of this.v6) {
      if (
        (w[0]! & r.mask[0]!) >>> 0 === r.net[0] &&
        (w[1]! & r.mask[1]!) >>> 0 === r.net[1] &&
        (w[2]! & r.mask[2]!) >>> 0 === r.net[2] &&
        (w[3]! & r.mask[3]!) >>> 0 === r.net[3]
      )
        return true;
    }
    return false;
  }

  /**
   * Any address string (IPv4, IPv6, IPv4-mapped IPv6). Not an address: false. Gate.check memoises
   * the verdict per address, so this is the cold path: it allocates its words rather than share a
   * module-level scratch array.
   */
  allows(address: string): boolean {
    const w = new Uint32Array(4);
    const c = parseIpWords(address, w);
    if (c === 4) return this.allows4(w[3]!);
    if (c === 6) return this.allows6(w);
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Rate limiting

export interface RateOptions {
  qps: number;
  burst: number;
  /** Buckets kept before a sweep (default 100,000: about 10 MB at worst). */
  maxBuckets?: number;
  /** Clock in ms (tests inject one). */
  now?: () => number;
}

interface Bucket {
  tokens: number;
  last: number;
}

/** Token buckets keyed by client (see rateKey); `take` says whether one query may pass. */
export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly perMs: number;
  private readonly burst: number;
  private readonly maxBuckets: number;
  private readonly fullAfterMs: number;
  readonly now: () => number;

  constructor(o: RateOptions) {
    this.perMs = o.qps / 1000;
    this.burst = o.burst;
    this.maxBuckets = o.maxBuckets ?? 100_000;
    this.fullAfterMs = Math.ceil(o.burst / this.perMs);
    this.now = o.now ?? Date.now;
  }

  get size(): number {
    return this.buckets.size;
  }

  take(key: string): boolean {
    const now = this.now();
    let b = this.buckets.get(key);
    if (b === undefined) {
      if (this.buckets.size >= this.maxBuckets) this.sweep(now);
      b = { tokens: this.burst, last: now };
      this.buckets.set(key, b);
    } else {
      const t = b.tokens + (now - b.last) * this.perMs;
      b.tokens = t > this.burst ? this.burst : t;
      b.last = now;
    }
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  /**
   * Forget buckets that have refilled (idle for burst/qps); if that is not enough (a flood from
   * many sources), forget the oldest created until a tenth of the room is free again.
   */
  private sweep(now: number): void {
    for (const [k, b] of this.buckets) if (now - b.last >= this.fullAfterMs) this.buckets.delete(k);
    if (this.buckets.size < this.maxBuckets) return;
    let excess = this.buckets.size - Math.floor(this.maxBuckets * 0.9);
    for (const k of this.buckets.keys()) {
      if (excess-- <= 0) break;
      this.buckets.delete(k);
    }
  }
}

/** The rate-limit key of an address: the IPv4 address itself, or the IPv6 /64 as "hhhhhhhh:hhhhhhhh::/64". */
export function rateKey(address: string): string | null {
  const w = new Uint32Array(4); // memoised per address by Gate.check, as Acl.allows
  const c = parseIpWords(address, w);
  if (c === 4) {
    const a = w[3]!;
    return `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;
  }
  if (c === 6) return `${w[0]!.toString(16)}:${w[1]!.toString(16)}::/64`;
  return null;
}

// ---------------------------------------------------------------------------------------------
// The gate

export interface GateOptions {
  allow: readonly string[];
  aclAction: 'refuse' | 'drop';
  rate: { enabled: boolean; qps: number; burst: number; action: 'refuse' | 'drop' | 'tc' } | null;
  /** Addresses whose verdict is remembered (default 65,536; the memo is cleared when full). */
  memoSize?: number;
  maxBuckets?: number;
  now?: () => number;
}

/** What the memo keeps per address: the ACL verdict and the rate key. */
interface Seen {
  allowed: boolean;
  key: string;
}

export class Gate implements GateCheck {
  private readonly acl: Acl | null;
  private readonly limiter: RateLimiter | null;
  private readonly memo = new Map<string, Seen>();
  private readonly memoSize: number;
  private readonly aclVerdict: number;
  private readonly rateVerdict: number;
  private readonly rateAction: 'refuse' | 'drop' | 'tc';

  constructor(
    o: GateOptions,
    private readonly counters: GateCounters,
  ) {
    const acl = new Acl(o.allow);
    // Decide the fast path once: an allow-everything list is no check at all.
    this.acl = acl.allowsAll ? null : acl;
    this.aclVerdict = o.aclAction === 'drop' ? GATE_DROP : RCODE.REFUSED;
    const r = o.rate;
    this.limiter =
      r && r.enabled ? new RateLimiter({ qps: r.qps, burst: r.burst, maxBuckets: o.maxBuckets, now: o.now }) : null;
    this.rateAction = r ? r.action : 'refuse';
    this.rateVerdict = this.rateAction === 'drop' ? GATE_DROP : this.rateAction === 'tc' ? GATE_TC : RCODE.REFUSED;
    this.memoSize = o.memoSize ?? 65_536;
  }

  /** True when the gate can never say anything but "allow" (app.ts then skips it). */
  get inert(): boolean {
    return this.acl === null && this.limiter === null;
  }

  /** Buckets currently held (for tests and the soak report). */
  get buckets(): number {
    return this.limiter?.size ?? 0;
  }

  /** 0 allow; REFUSED (5); GATE_DROP (-1); GATE_TC (-2, UDP only). Counts what it refuses. */
  check(address: string, udp: boolean): number {
    let seen = this.memo.get(address);
    if (seen === undefined) {
      if (this.memo.size >= this.memoSize) this.memo.clear();
      seen = { allowed: this.acl === null || this.acl.allows(address), key: rateKey(address) ?? address };
      this.memo.set(address, seen);
    }
    if (!seen.allowed) {
      if (this.aclVerdict === GATE_DROP) this.counters.acl.drop++;
      else this.counters.acl.refuse++;
      return this.aclVerdict;
    }
    const lim = this.limiter;
    if (lim === null) return GATE_ALLOW;
    // TC exists to move real clients to TCP: TCP itself is never limited by it.
    if (!udp && this.rateAction === 'tc') return GATE_ALLOW;
    if (lim.take(seen.key)) return GATE_ALLOW;
    this.counters.ratelimited[this.rateAction]++;
    return this.rateVerdict;
  }
}

/**
 * The gate for a configuration, or null when it could never refuse anything (allow-all ACL and no
 * rate limits). The default ACL is on, so normally a Gate. Build once per configuration (start and
 * reload); buckets start fresh on reload.
 */
export function createGate(config: Config, metrics: GateCounters, opts: { now?: () => number } = {}): Gate | null {
  const g = new Gate(
    {
      allow: config.acl.allow,
      aclAction: config.acl.action,
      rate: config.limits.rate,
      now: opts.now,
    },
    metrics,
  );
  return g.inert ? null : g;
}

/**
 * The reply for GATE_TC: header and question of the client's query, QR|RA|TC, the client's RD/CD,
 * our OPT when the client sent EDNS; no records. The client retries over TCP (RFC 7766 §5).
 */
export function tcReply(query: Buffer, q: Query, maxUdpSize: number): Buffer {
  const flags = FLAG.QR | FLAG.RA | (q.flags & (FLAG.RD | FLAG.CD | 0x7800));
  return truncated(query, q, flags, { maxUdpSize, udp: true });
}
