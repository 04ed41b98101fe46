/**
 * The configuration's shape (types) and the one object holding every default, frozen. A loaded
 * `Config` is frozen too: nothing changes it after loading.
 */

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';
export const LOG_LEVELS: readonly LogLevel[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

interface TlsConfig {
  caFile: string;
  certFile: string;
  keyFile: string;
  insecureSkipVerify: boolean;
}

interface ZoneConfig {
  /** Lowercase, no trailing dot, never the root. */
  name: string;
  /** "host:port" (IPv6 as "[::1]:53"; a hostname is resolved at start and on reload). */
  upstreams: string[];
}

/**
 * The loaded configuration: every key present. Addresses stay strings in their canonical form
 * ("127.0.0.1:8053", "[::1]:53", "http://host:8500"); `parseHostPort` / `parseCidr` turn them into
 * values. Objects returned by `loadConfig` (and DEFAULTS) are deep-frozen.
 */
/**
 * `zone` label values the proxy gives itself: the Consul domain, its aliases, the recursors and
 * "none" (a query with no usable question). A forward zone's label is its name, so a zone may not
 * be named one of these (checks.ts says so at load; the metrics registry refuses duplicate labels).
 * Here, not in observability/metrics.ts, so that --check-config loads no prom-client.
 */
export const OWN_ZONE_LABELS: readonly string[] = ['consul', 'alias', 'recursor', 'none'];

export interface Config {
  listen: string[];
  maxUdpSize: number;
  consul: {
    domain: string;
    aliases: string[];
    agents: string[];
    http: string[];
    token: string;
    tls: TlsConfig;
    reverseZones: string[];
    onlyPassing: boolean;
    udpAnswerLimit: number;
  };
  /** "host:port" entries or the literal "resolv.conf" (expanded at start and on reload with expandResolvConf). */
  recursors: string[];
  zones: ZoneConfig[];
  upstream: {
    timeoutMs: number;
    hedgeMs: number;
    deadlineMs: number;
    maxFails: number;
    probeIntervalMs: number;
    /** "NAME TYPE", normalised (". NS", "example.com A"); see parseProbe. */
    recursorProbe: string;
    maxInFlight: number;
  };
  cache: {
    enabled: boolean;
    maxEntries: number;
    maxBytes: number;
    consulTtl: number;
    negativeMaxTtl: number;
    maxTtl: number;
    /** A number in the file sets both. */
    staleSeconds: { consul: number; recursors: number };
    /** RFC 8767 §5 client-response timer: a miss with a stale entry is answered stale after this long (ms). */
    staleClientTimeoutMs: number;
    /** RFC 8767 §5 failure recheck: after a failed refresh, the stale entry is served at once for this long (s). */
    staleRecheckSeconds: number;
    watchIdleSeconds: number;
    maxWatches: number;
    watchMinIntervalMs: number;
  };
  metrics: { listen: string /* "host:port" or "off" */ };
  log: { level: LogLevel; queries: boolean };
  /** SIGTERM: how long queries are still answered with /ready already 503, before the drain. */
  shutdown: { lameDuckMs: number };
  acl: { allow: string[]; action: 'refuse' | 'drop' };
  limits: {
    rate: { enabled: boolean; qps: number; burst: number; action: 'refuse' | 'drop' | 'tc' };
    tcp: {
      maxConnections: number;
      maxPerClient: number;
      idleTimeoutMs: number;
      readTimeoutMs: number;
      maxPipelined: number;
    };
  };
}

/** Every default, in one place. config/default.yaml is a commented copy (a test keeps them equal). */
export const DEFAULTS: Config = deepFreeze({
  listen: ['127.0.0.1:8053'],
  // DNS Flag Day 2020: 1232 avoids IP fragmentation on common paths.
  maxUdpSize: 1232,
  consul: {
    domain: 'consul',
    aliases: ['starlings'],
    agents: ['127.0.0.1:8600'],
    http: ['http://127.0.0.1:8500'],
    token: '',
    tls: { caFile: '', certFile: '', keyFile: '', insecureSkipVerify: false },
    reverseZones: [],
    onlyPassing: false,
    udpAnswerLimit: 3,
  },
  recursors: [],
  zones: [],
  upstream: {
    timeoutMs: 1000,
    hedgeMs: 50,
    deadlineMs: 3000,
    maxFails: 2,
    probeIntervalMs: 5000,
    recursorProbe: '. NS',
    maxInFlight: 1024,
  },
  cache: {
    enabled: true,
    maxEntries: 100000,
    maxBytes: 268435456,
    consulTtl: 60,
    negativeMaxTtl: 3600,
    maxTtl: 86400,
    staleSeconds: { consul: 300, recursors: 86400 },
    staleClientTimeoutMs: 1800,
    staleRecheckSeconds: 30,
    watchIdleSeconds: 300,
    maxWatches: 256,
    watchMinIntervalMs: 100,
  },
  metrics: { listen: '127.0.0.1:9153' },
  log: { level: 'info', queries: false },
  // 0: drain at once. Behind a readiness-driven balancer, at least its probe period (docker/config.yaml: 5000).
  shutdown: { lameDuckMs: 0 },
  // As dnsdist's default ACL: loopback, RFC 1918, RFC 6598 (CGNAT), IPv6 ULA and link-local.
  acl: {
    allow: [
      '127.0.0.0/8',
      '::1/128',
      '10.0.0.0/8',
      '172.16.0.0/12',
      '192.168.0.0/16',
      '100.64.0.0/10',
      '169.254.0.0/16',
      'fc00::/7',
      'fe80::/10',
    ],
    action: 'refuse',
  },
  limits: {
    rate: { enabled: false, qps: 100, burst: 200, action: 'refuse' },
    tcp: { maxConnections: 1000, maxPerClient: 50, idleTimeoutMs: 10000, readTimeoutMs: 5000, maxPipelined: 16 },
  },
});

/**
 * Keys a reload (SIGHUP) cannot change, with the warning a reload that changes one logs: the
 * admin listener and the logger are made once at start. The running value is kept; a restart
 * applies the new one. Every other key takes effect on reload (`listen` too: new sockets are
 * opened before the old ones close).
 */
const RESTART_ONLY_KEYS: Readonly<Record<string, string>> = Object.freeze({
  'metrics.listen': 'the metrics listen address changes only on restart',
  'log.level': 'the log level changes only on restart',
});

/** The restart-only keys whose value differs between `running` and `next`, with the running value. */
export function restartOnlyChanges(
  running: Config,
  next: Config,
): { key: string; running: unknown; warning: string }[] {
  const at = (c: Config, key: string): unknown =>
    key.split('.').reduce<unknown>((v, k) => (v as Record<string, unknown>)[k], c);
  const out: { key: string; running: unknown; warning: string }[] = [];
  for (const [key, warning] of Object.entries(RESTART_ONLY_KEYS)) {
    const value = at(running, key);
    if (JSON.stringify(value) !== JSON.stringify(at(next, key))) out.push({ key, running: value, warning });
  }
  return out;
}

export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
