/**
 * Checks of configuration values. A Check validates one value and returns it normalised, or
 * INVALID after pushing a problem (`<key.path>: expected <what>, got <json>`). FILE_SCHEMA is the
 * file's shape; flags and environment reuse its leaves. crossChecks runs on the merged result.
 */
import { ConfigError, show } from '../errors.js';
import { TYPE, type TypeName } from '../dns/constants.js';
import { isDomainName } from '../dns/names.js';
import { type Config, LOG_LEVELS, OWN_ZONE_LABELS } from './schema.js';
import {
  parseHostPort,
  formatHostPort,
  type HostPort,
  sameIp,
  isUnspecified,
  splitHostPort,
  ipFamily,
  isHostname,
  canonicalCidr,
  canonicalIp,
  ownAddress,
} from '../net/address.js';

// Checks that need more than one key, run on the merged result. `label` maps a key path to the
// flag or variable that set it.

/** Consul's query keywords (the first label after the domain in agent/dns.go). */
const CONSUL_KEYWORDS = ['service', 'node', 'query', 'addr', 'connect', 'virtual', 'ingress'];

export function crossChecks(
  c: Config,
  aliasesFromUser: boolean,
  problems: string[],
  label: (path: string) => string,
): void {
  const fail = (path: string, what: string, value: unknown): void => {
    problems.push(`${label(path)}: expected ${what}, got ${show(value)}`);
  };

  // The hedge must fire before a try times out, and a try must fit in the overall deadline.
  const u = c.upstream;
  if (!(u.hedgeMs < u.timeoutMs)) fail('upstream.hedgeMs', `less than upstream.timeoutMs (${u.timeoutMs})`, u.hedgeMs);
  if (!(u.timeoutMs <= u.deadlineMs))
    fail('upstream.timeoutMs', `at most upstream.deadlineMs (${u.deadlineMs})`, u.timeoutMs);

  const tls = c.consul.tls;
  if (tls.certFile !== '' && tls.keyFile === '')
    fail('consul.tls.keyFile', 'a key file to go with consul.tls.certFile', tls.keyFile);
  if (tls.keyFile !== '' && tls.certFile === '')
    fail('consul.tls.certFile', 'a certificate file to go with consul.tls.keyFile', tls.certFile);

  // Aliases. The default alias is a convenience: if it collides with the configured domain (the
  // Starlings clusters ran Consul with domain "starlings") it drops out
  // silently. A collision the user configured is an error.
  const domain = c.consul.domain;
  if (!aliasesFromUser) c.consul.aliases = c.consul.aliases.filter((a) => !overlaps(a, domain));
  c.consul.aliases.forEach((alias, i) => {
    const path = `consul.aliases[${i}]`;
    const first = alias.split('.')[0]!;
    // Consul's own alt_domain rule (agent/config/builder.go): it may not start with a keyword.
    if (CONSUL_KEYWORDS.includes(first)) {
      fail(path, `a name that does not start with a Consul keyword (${CONSUL_KEYWORDS.join(', ')})`, alias);
    } else if (overlaps(alias, domain)) {
      // Equal, inside or around the domain: longest-suffix routing could not tell them apart
      // (an alias "dc1.consul" would eat the datacenter label of real Consul names).
      fail(path, `a name that neither equals, contains nor is inside the Consul domain "${domain}"`, alias);
    } else {
      const j = c.consul.aliases.findIndex((other, k) => k < i && overlaps(alias, other));
      if (j >= 0)
        fail(
          path,
          `a name that neither equals, contains nor is inside consul.aliases[${j}] "${c.consul.aliases[j]}"`,
          alias,
        );
    }
  });

  // Zones: names under the Consul domain or an alias belong to the agents (".consul queries never
  // go to the recursors"); a zone that contains the domain is fine, longest suffix wins.
  const consulNames = [domain, ...c.consul.aliases];
  c.zones.forEach((zone, i) => {
    const path = `zones[${i}].name`;
    if (consulNames.some((n) => isWithin(zone.name, n))) {
      fail(path, `a name outside the Consul domain and its aliases (${consulNames.join(', ')})`, zone.name);
    } else if (OWN_ZONE_LABELS.includes(zone.name)) {
      // The zone's name is its `zone` label value; these ones the proxy uses for itself.
      fail(path, `a zone name other than the proxy's own zone label values (${OWN_ZONE_LABELS.join(', ')})`, zone.name);
    } else {
      const j = c.zones.findIndex((other, k) => k < i && other.name === zone.name);
      if (j >= 0) fail(path, `a zone name not already used by zones[${j}]`, zone.name);
    }
  });

  // Loop guards: an upstream that is one of our own listen addresses would send every
  // query back to us. Hostnames other than "localhost" can't be judged without resolving them;
  // the loop probe at start (query/loop-guard.ts) catches those.
  const listen = c.listen.map((s) => parseHostPort(s));
  const guard = (path: string, value: string): void => {
    if (value === 'resolv.conf') return;
    const own = ownAddress(parseHostPort(value), listen, []);
    if (own) fail(path, `an address other than our own listen address ${formatHostPort(own)} (that would loop)`, value);
  };
  c.consul.agents.forEach((a, i) => guard(`consul.agents[${i}]`, a));
  c.recursors.forEach((r, i) => guard(`recursors[${i}]`, r));
  c.zones.forEach((z, i) => z.upstreams.forEach((up, j) => guard(`zones[${i}].upstreams[${j}]`, up)));

  // The metrics listener binds TCP; on a DNS listen address and port it could never start.
  if (c.metrics.listen !== 'off') {
    const m = parseHostPort(c.metrics.listen);
    const clash = (l: HostPort): boolean => sameIp(l.host, m.host) || isUnspecified(l.host) || isUnspecified(m.host);
    if (m.port !== 0 && listen.some((l) => l.port === m.port && clash(l))) {
      fail('metrics.listen', 'an address not used by listen', c.metrics.listen);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Per-value checks. A Check validates one value and returns it normalised, or INVALID after
// pushing a problem. The schema below is the file's shape; flags and env reuse the leaves.

export const INVALID: unique symbol = Symbol('invalid');
export type Check<T = unknown> = (value: unknown, at: string, problems: string[]) => T | typeof INVALID;
export type Layer = Record<string, unknown>;

function fail(problems: string[], at: string, what: string, value: unknown): typeof INVALID {
  problems.push(`${at}: expected ${what}, got ${show(value)}`);
  return INVALID;
}

/**
 * A mapping with these keys, each optional (the result is partial, merged over the defaults)
 * unless `required`. Invalid keys are left out of the result so the rest can still be checked
 * together; a mapping whose required key is missing or invalid is INVALID as a whole.
 */
function mapping(fields: Record<string, Check>, required: string[] = []): Check<Layer> {
  return (value, at, problems) => {
    if (!isPlainObject(value)) return fail(problems, at, 'a mapping', value);
    const out: Layer = {};
    for (const [key, v] of Object.entries(value)) {
      const path = at === '' ? key : `${at}.${key}`;
      const check = Object.hasOwn(fields, key) ? fields[key] : undefined;
      if (check === undefined) {
        problems.push(`${path}: unknown key`);
        continue;
      }
      const r = check(v, path, problems);
      if (r !== INVALID) out[key] = r;
    }
    for (const key of required) if (!Object.hasOwn(value, key)) fields[key]!(undefined, `${at}.${key}`, problems);
    return required.every((key) => Object.hasOwn(out, key)) ? out : INVALID;
  };
}

/** A list of `of`; with min 1, an empty list is "expected at least one <one>". */
function list<T>(item: Check<T>, of: string, min = 0, one = of): Check<T[]> {
  return (value, at, problems) => {
    if (!Array.isArray(value)) return fail(problems, at, `a list of ${of}`, value);
    if (value.length < min) return fail(problems, at, `at least one ${one}`, value);
    const out = value.map((v, i) => item(v, `${at}[${i}]`, problems));
    return out.includes(INVALID) ? INVALID : (out as T[]);
  };
}

const bool: Check<boolean> = (v, at, p) => (typeof v === 'boolean' ? v : fail(p, at, 'true or false', v));
const text: Check<string> = (v, at, p) => (typeof v === 'string' ? v : fail(p, at, 'a string', v));

function int(min: number, max?: number, described?: string): Check<number> {
  const what =
    described !== undefined
      ? described
      : max !== undefined
        ? `an integer from ${min} to ${max}`
        : min === 1
          ? 'a positive integer'
          : min === 0
            ? 'a non-negative integer'
            : `an integer of at least ${min}`;
  return (v, at, p) =>
    typeof v === 'number' && Number.isInteger(v) && v >= min && (max === undefined || v <= max)
      ? v
      : fail(p, at, what, v);
}

/** Milliseconds for a timer: Node turns a delay above 2^31-1 into 1 ms (TimeoutOverflowWarning). */
const ms = int(1, 2147483647, 'a positive integer of milliseconds (at most 2147483647)');
const seconds = int(0);
const msOrZero = int(0, 2147483647, 'a non-negative integer of milliseconds (at most 2147483647)');

const positiveNumber: Check<number> = (v, at, p) =>
  typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : fail(p, at, 'a positive number', v);

export function oneOf<T extends string>(values: readonly T[]): Check<T> {
  return (v, at, p) => (values.includes(v as T) ? (v as T) : fail(p, at, `one of ${values.join(', ')}`, v));
}

/** A domain name, lowercased without its trailing dot; the root is refused. */
export function domainName(kind: 'domain' | 'alias' | 'zone'): Check<string> {
  return (v, at, p) => {
    if (typeof v !== 'string') return fail(p, at, kind === 'zone' ? 'a zone name' : 'a domain name', v);
    const name = normaliseName(v);
    if (name === '' && v !== '') {
      return fail(
        p,
        at,
        kind === 'zone'
          ? 'a zone name other than the root (the root goes to the recursors)'
          : 'a domain name other than the root',
        v,
      );
    }
    if (!isDomainName(name)) return fail(p, at, kind === 'zone' ? 'a zone name' : 'a domain name', v);
    return name;
  };
}

/**
 * "host:port". A listen address ('bind') must be an IP literal and may use port 0 (tests); an
 * upstream ('send') may be a hostname, needs a port 1-65535, and may not be 0.0.0.0 or ::.
 */
export function hostPort(meta: string, use: 'bind' | 'send'): Check<string> {
  return (v, at, p) => {
    if (typeof v !== 'string') return fail(p, at, meta, v);
    const hp = splitHostPort(v);
    if (hp === 'syntax') return fail(p, at, meta, v);
    if (hp === 'ipv6') return fail(p, at, `${meta} with IPv6 in brackets ([::1]:53)`, v);
    if (use === 'bind') {
      if (hp === 'port') return fail(p, at, 'a port from 0 to 65535', v);
      if (ipFamily(hp.host) === 0) return fail(p, at, 'an IP address to listen on (not a name)', v);
    } else {
      if (hp === 'port' || hp.port === 0) return fail(p, at, 'a port from 1 to 65535', v);
      if (isUnspecified(hp.host))
        return fail(p, at, 'an address to send to (0.0.0.0 and :: mean "any" only for listening)', v);
    }
    return formatHostPort(hp);
  };
}

export function recursor(meta: string): Check<string> {
  const hp = hostPort(meta, 'send');
  return (v, at, p) => (v === 'resolv.conf' ? v : hp(v, at, p));
}

export function metricsListen(meta: string): Check<string> {
  const hp = hostPort(meta, 'bind');
  return (v, at, p) => (v === 'off' ? v : hp(v, at, p));
}

/**
 * A Consul HTTP API address, normalised to "scheme://host:port". A bare "host:port" means
 * http://host:port, as CONSUL_HTTP_ADDR does in Consul's api package.
 */
export function httpUrl(meta: string): Check<string> {
  return (v, at, p) => {
    if (typeof v !== 'string') return fail(p, at, meta, v);
    if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(v)) {
      const hp = splitHostPort(v);
      if (typeof hp !== 'object') return fail(p, at, meta, v);
      if (hp.port === 0) return fail(p, at, 'a port from 1 to 65535', v);
      return `http://${formatHostPort(hp)}`;
    }
    let url: URL;
    try {
      url = new URL(v);
    } catch {
      return fail(p, at, meta, v);
    }
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    const plain = (url.pathname === '/' || url.pathname === '') && url.search === '' && url.hash === '';
    // The WHATWG parser rewrites odd IPv4 forms ("1.2.3" -> "1.2.0.3"): insist on what was written.
    const asWritten = url.hostname.startsWith('[') || v.toLowerCase().includes(url.hostname);
    if (
      (url.protocol !== 'http:' && url.protocol !== 'https:') ||
      url.username !== '' ||
      url.password !== '' ||
      !plain ||
      !asWritten ||
      (ipFamily(host) === 0 && !isHostname(host))
    ) {
      return fail(p, at, meta, v);
    }
    if (url.port === '0') return fail(p, at, 'a port from 1 to 65535', v);
    const port = url.port !== '' ? Number(url.port) : url.protocol === 'https:' ? 443 : 80;
    // WHATWG writes an IPv4-mapped host in hex (::ffff:7f00:1); the configuration writes every
    // address one way.
    return `${url.protocol}//${formatHostPort({ host: canonicalIp(host) ?? host, port })}`;
  };
}

const cidr: Check<string> = (v, at, p) =>
  (typeof v === 'string' ? canonicalCidr(v) : undefined) ?? fail(p, at, 'a CIDR such as 10.0.0.0/8', v);

const probe: Check<string> = (v, at, p) => {
  const parsed = typeof v === 'string' ? tryParseProbe(v) : undefined;
  if (parsed === undefined) return fail(p, at, '"NAME TYPE" with a known type (such as ". NS")', v);
  return `${parsed.name === '' ? '.' : parsed.name} ${parsed.typeName}`;
};

const staleSeconds: Check<Layer> = (v, at, p) => {
  if (typeof v === 'number') {
    const n = seconds(v, at, p);
    return n === INVALID ? n : { consul: n, recursors: n };
  }
  if (isPlainObject(v)) return mapping({ consul: seconds, recursors: seconds })(v, at, p);
  return fail(p, at, 'a number of seconds or {consul, recursors}', v);
};

const upstreamAddr = hostPort('host:port', 'send');

export const FILE_SCHEMA = mapping({
  listen: list(hostPort('host:port', 'bind'), 'host:port', 1),
  maxUdpSize: int(512, 65535),
  consul: mapping({
    domain: domainName('domain'),
    aliases: list(domainName('alias'), 'domain names'),
    agents: list(upstreamAddr, 'host:port', 1),
    http: list(httpUrl('http(s)://host:port'), 'URLs', 1, 'http(s)://host:port'),
    token: text,
    tls: mapping({ caFile: text, certFile: text, keyFile: text, insecureSkipVerify: bool }),
    reverseZones: list(cidr, 'CIDRs'),
    onlyPassing: bool,
    // Consul caps udp_answer_limit at 8.
    udpAnswerLimit: int(1, 8),
  }),
  recursors: list(recursor('host:port or resolv.conf'), 'host:port or resolv.conf'),
  zones: list(
    mapping({ name: domainName('zone'), upstreams: list(upstreamAddr, 'host:port', 1) }, ['name', 'upstreams']),
    '{name, upstreams}',
  ),
  upstream: mapping({
    timeoutMs: ms,
    hedgeMs: ms,
    deadlineMs: ms,
    maxFails: int(1),
    probeIntervalMs: ms,
    recursorProbe: probe,
    maxInFlight: int(1),
  }),
  cache: mapping({
    enabled: bool,
    maxEntries: int(1),
    maxBytes: int(1),
    consulTtl: seconds,
    negativeMaxTtl: seconds,
    maxTtl: seconds,
    staleSeconds,
    staleClientTimeoutMs: msOrZero,
    staleRecheckSeconds: seconds,
    watchIdleSeconds: int(1),
    maxWatches: int(0),
    watchMinIntervalMs: ms,
  }),
  metrics: mapping({ listen: metricsListen('host:port or off') }),
  log: mapping({ level: oneOf(LOG_LEVELS), queries: bool }),
  shutdown: mapping({ lameDuckMs: msOrZero }),
  acl: mapping({
    allow: list(cidr, 'CIDRs', 1, 'CIDR (0.0.0.0/0 and ::/0 allow everyone)'),
    action: oneOf(['refuse', 'drop'] as const),
  }),
  limits: mapping({
    rate: mapping({
      enabled: bool,
      qps: positiveNumber,
      burst: int(1),
      action: oneOf(['refuse', 'drop', 'tc'] as const),
    }),
    tcp: mapping({
      maxConnections: int(1),
      maxPerClient: int(1),
      idleTimeoutMs: ms,
      readTimeoutMs: ms,
      maxPipelined: int(1),
    }),
  }),
});

// Names

function normaliseName(s: string): string {
  const lower = s.toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}

/** `name` equals `zone` or is inside it. */
function isWithin(name: string, zone: string): boolean {
  return name === zone || name.endsWith(`.${zone}`);
}

function overlaps(a: string, b: string): boolean {
  return isWithin(a, b) || isWithin(b, a);
}

// Probe question

/** RR type mnemonics accepted in upstream.recursorProbe (RFC 1035, 3596, 2782, 4034, 9460, 8659). */
const RR_TYPES: Readonly<Record<string, number>> = Object.freeze(
  Object.fromEntries(
    (
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
        'NSEC',
        'DNSKEY',
        'SVCB',
        'HTTPS',
        'ANY',
        'CAA',
      ] as const
    ).map((n: TypeName) => [n, TYPE[n]]),
  ),
);

/** "NAME TYPE" → name (lowercase, no trailing dot, '' for the root) and numeric type. Throws ConfigError. */
export function parseProbe(s: string): { name: string; type: number } {
  const p = tryParseProbe(s);
  if (p === undefined)
    throw new ConfigError([`expected "NAME TYPE" with a known type (such as ". NS"), got ${show(s)}`]);
  return { name: p.name, type: p.type };
}

function tryParseProbe(s: string): { name: string; type: number; typeName: string } | undefined {
  const parts = s.trim().split(/\s+/);
  if (parts.length !== 2) return undefined;
  const name = normaliseName(parts[0]!);
  const typeName = parts[1]!.toUpperCase();
  const type = Object.hasOwn(RR_TYPES, typeName) ? RR_TYPES[typeName] : undefined;
  if (type === undefined || (name !== '' && !isDomainName(name)) || (name === '' && parts[0] !== '.')) return undefined;
  return { name, type, typeName };
}

export function isPlainObject(v: unknown): v is Layer {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function setPath(layer: Layer, path: string, value: unknown): void {
  const keys = path.split('.');
  let node = layer;
  for (const key of keys.slice(0, -1)) {
    if (!isPlainObject(node[key])) node[key] = {};
    node = node[key] as Layer;
  }
  node[keys.at(-1)!] = value;
}
