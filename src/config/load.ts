/*
 * Configuration: the defaults, the YAML file, the environment and the command line, merged and
 * validated once into one frozen `Config` (at start, and again on SIGHUP by the lead).
 *
 * Precedence is defaults < file < env < flags; objects merge key by key, lists and scalars replace
 * (so a repeated list flag such as `--listen` replaces that list from the file). Every problem is
 * collected and reported at once, each as `<key.path>: expected <what>, got <json>` (STYLE.md,
 * "Errors"), where the path names the flag or variable when the value came from one. Unknown keys
 * are errors at every level. Names are stored lowercase without a trailing dot.
 *
 * This module is cold path and pure: it imports only node:fs (to read the file) and yaml. It never
 * resolves a name or opens a socket, which is what makes `--check-config` safe to run anywhere;
 * upstream hostnames are resolved by the lead at start and on reload, and `resolv.conf` is expanded
 * by the lead through `expandResolvConf`.
 */
import { readFileSync } from 'node:fs';
import { parseDocument } from 'yaml';

// ---------------------------------------------------------------------------------------------
// The schema, as types and as the one object holding every default.

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';
export const LOG_LEVELS: readonly LogLevel[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

export interface TlsConfig {
  caFile: string;
  certFile: string;
  keyFile: string;
  insecureSkipVerify: boolean;
}

export interface ZoneConfig {
  /** Lowercase, no trailing dot, never the root. */
  name: string;
  /** "host:port" (IPv6 as "[::1]:53"; a hostname is resolved by the lead). */
  upstreams: string[];
}

/**
 * The loaded configuration: every key present. Addresses stay strings in their canonical form
 * ("127.0.0.1:8053", "[::1]:53", "http://host:8500"); `parseHostPort` / `parseCidr` turn them into
 * values. Objects returned by `loadConfig` (and DEFAULTS) are deep-frozen.
 */
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
  /** "host:port" entries or the literal "resolv.conf" (expanded by the lead with expandResolvConf). */
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
    watchIdleSeconds: number;
    maxWatches: number;
    watchMinIntervalMs: number;
  };
  metrics: { listen: string /* "host:port" or "off" */ };
  log: { level: LogLevel; queries: boolean };
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
    watchIdleSeconds: 300,
    maxWatches: 256,
    watchMinIntervalMs: 100,
  },
  metrics: { listen: '127.0.0.1:9153' },
  log: { level: 'info', queries: false },
  // As dnsdist's default ACL: loopback, RFC 1918, RFC 6598 (CGNAT), IPv6 ULA and link-local.
  acl: {
    allow: [
      '127.0.0.0/8', '::1/128', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10',
      '169.254.0.0/16', 'fc00::/7', 'fe80::/10',
    ],
    action: 'refuse',
  },
  limits: {
    rate: { enabled: false, qps: 100, burst: 200, action: 'refuse' },
    tcp: { maxConnections: 1000, maxPerClient: 50, idleTimeoutMs: 10000, readTimeoutMs: 5000, maxPipelined: 16 },
  },
});

// ---------------------------------------------------------------------------------------------
// Errors

/** Every problem found, at once. The CLI prints `message` and exits 2. */
export class ConfigError extends Error {
  readonly code = 'CDP_ERR_CONFIG';
  readonly problems: string[];
  constructor(problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

// ---------------------------------------------------------------------------------------------
// Loading

export interface LoadInput {
  argv: string[];
  env: Record<string, string | undefined>;
  readFile?: (path: string) => string;
}

export interface LoadResult {
  action: 'run' | 'check' | 'help' | 'version';
  config: Config;
  /** The file that was read, if any (from --config or CONSUL_DNS_PROXY_CONFIG). */
  configPath?: string;
}

/**
 * Builds the configuration from defaults, file, environment and flags. Throws ConfigError listing
 * every problem. `--help` and `--version` return at once with DEFAULTS (no file is read, other
 * flags are not judged).
 */
export function loadConfig(input: LoadInput): LoadResult {
  const problems: string[] = [];
  const args = parseArgv(input.argv, problems);
  if (args.switches.has('--help')) return { action: 'help', config: DEFAULTS };
  if (args.switches.has('--version')) return { action: 'version', config: DEFAULTS };
  const action = args.switches.has('--check-config') ? 'check' : 'run';

  let fileLayer: Layer = {};
  let aliasesFromUser = args.values.has('--alias') || args.switches.has('--no-alias');
  const pathFlag = args.values.get('--config')?.at(-1);
  const pathEnv = nonEmpty(input.env['CONSUL_DNS_PROXY_CONFIG']);
  const configPath = pathFlag ?? pathEnv;
  if (configPath !== undefined) {
    const label = pathFlag !== undefined ? '--config' : 'CONSUL_DNS_PROXY_CONFIG';
    fileLayer = readConfigFile(configPath, label, input.readFile ?? ((p) => readFileSync(p, 'utf8')), problems);
    if (isPlainObject(fileLayer['consul']) && 'aliases' in fileLayer['consul']) aliasesFromUser = true;
  }

  // Layers in precedence order; `origins` records which flag or variable set a key (the later
  // wins), so that cross-key problems name it.
  const origins = new Map<string, string>();
  const envLayer = envToLayer(input.env, problems, origins);
  const flagLayer = flagsToLayer(args, problems, origins);
  const merged = merge(merge(merge(structuredClone(DEFAULTS) as unknown as Layer, fileLayer), envLayer), flagLayer);
  const config = merged as unknown as Config;
  crossChecks(config, aliasesFromUser, problems, (path) => origins.get(path.replace(/\[\d+\]$/, '')) ?? path);

  if (problems.length > 0) throw new ConfigError(problems);
  const result: LoadResult = { action, config: deepFreeze(config) };
  if (configPath !== undefined) result.configPath = configPath;
  return result;
}

function readConfigFile(path: string, label: string, readFile: (p: string) => string, problems: string[]): Layer {
  let text: string;
  try {
    text = readFile(path);
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    problems.push(`${label}: expected a readable file (${why}), got ${show(path)}`);
    return {};
  }
  const doc = parseDocument(text);
  if (doc.errors.length > 0) {
    for (const e of doc.errors) problems.push(`${path}: invalid YAML: ${e.message.split('\n')[0]!.replace(/:$/, '')}`);
    return {};
  }
  const value: unknown = doc.toJS() ?? {}; // an empty file means "all defaults"
  if (!isPlainObject(value)) {
    problems.push(`${path}: expected a mapping of settings, got ${show(value)}`);
    return {};
  }
  const layer = FILE_SCHEMA(value, '', problems);
  return layer === INVALID ? {} : layer;
}

// ---------------------------------------------------------------------------------------------
// Command line. A small walker rather than util.parseArgs: parseArgs stops at the first unknown
// flag, and we report every problem at once.

interface FlagSpec {
  /** Metavariable for a flag that takes a value; absent for a switch. */
  meta?: string;
}
const FLAGS: Readonly<Record<string, FlagSpec>> = {
  '--config': { meta: 'FILE' },
  '--listen': { meta: 'HOST:PORT' },
  '--agent': { meta: 'HOST:PORT' },
  '--recursor': { meta: 'HOST:PORT or resolv.conf' },
  '--domain': { meta: 'NAME' },
  '--alias': { meta: 'NAME' },
  '--consul-http': { meta: 'http(s)://HOST:PORT' },
  '--metrics': { meta: 'HOST:PORT or off' },
  '--log-level': { meta: `one of ${LOG_LEVELS.join(', ')}` },
  '--no-alias': {},
  '--check-config': {},
  '--help': {},
  '--version': {},
};

interface Args {
  /** Values of each value flag, in order (a single-value flag takes its last). */
  values: Map<string, string[]>;
  switches: Set<string>;
}

function parseArgv(argv: string[], problems: string[]): Args {
  const args: Args = { values: new Map(), switches: new Set() };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i]!;
    if (arg === '-h') arg = '--help';
    if (arg === '--') {
      for (const rest of argv.slice(i + 1)) problems.push(`${rest}: unexpected argument (this command takes only flags)`);
      break;
    }
    if (!arg.startsWith('--')) {
      problems.push(`${arg}: ${arg.startsWith('-') ? 'unknown flag (see --help)' : 'unexpected argument (this command takes only flags)'}`);
      continue;
    }
    const eq = arg.indexOf('=');
    const name = eq < 0 ? arg : arg.slice(0, eq);
    const inline = eq < 0 ? undefined : arg.slice(eq + 1);
    const spec = Object.hasOwn(FLAGS, name) ? FLAGS[name] : undefined;
    if (spec === undefined) {
      problems.push(`${name}: unknown flag (see --help)`);
      continue;
    }
    if (spec.meta === undefined) {
      if (inline !== undefined) problems.push(`${name}: expected no value, got ${show(inline)}`);
      else args.switches.add(name);
      continue;
    }
    let value = inline;
    if (value === undefined && i + 1 < argv.length && !argv[i + 1]!.startsWith('--')) value = argv[++i];
    if (value === undefined) {
      problems.push(`${name}: expected ${spec.meta}, got nothing`);
      continue;
    }
    const list = args.values.get(name) ?? [];
    list.push(value);
    args.values.set(name, list);
  }
  return args;
}

/** Turns flag values into a partial config, checking each value where the flag can be named. */
function flagsToLayer(args: Args, problems: string[], origins: Map<string, string>): Layer {
  const layer: Layer = {};
  const set = (path: string, flag: string, value: unknown): void => {
    if (value === INVALID) return;
    setPath(layer, path, value);
    origins.set(path, flag);
  };
  const each = (flag: string, check: Check): unknown => {
    const values = args.values.get(flag) ?? [];
    const out = values.map((v) => check(v, flag, problems));
    return out.includes(INVALID) ? INVALID : out;
  };
  const last = (flag: string): string | undefined => args.values.get(flag)?.at(-1);

  if (args.values.has('--listen')) set('listen', '--listen', each('--listen', hostPort('HOST:PORT', 'bind')));
  if (args.values.has('--agent')) set('consul.agents', '--agent', each('--agent', hostPort('HOST:PORT', 'send')));
  if (args.values.has('--recursor')) set('recursors', '--recursor', each('--recursor', recursor('HOST:PORT or resolv.conf')));
  if (args.values.has('--consul-http')) set('consul.http', '--consul-http', each('--consul-http', httpUrl('http(s)://HOST:PORT')));
  const domain = last('--domain');
  if (domain !== undefined) set('consul.domain', '--domain', domainName('domain')(domain, '--domain', problems));
  const metrics = last('--metrics');
  if (metrics !== undefined) set('metrics.listen', '--metrics', metricsListen('HOST:PORT or off')(metrics, '--metrics', problems));
  const level = last('--log-level');
  if (level !== undefined) set('log.level', '--log-level', oneOf(LOG_LEVELS)(level, '--log-level', problems));

  const aliases = args.values.get('--alias');
  if (args.switches.has('--no-alias')) {
    if (aliases !== undefined) problems.push(`--no-alias: expected no --alias with it, got ${show(aliases)}`);
    else set('consul.aliases', '--no-alias', []);
  } else if (aliases !== undefined) {
    set('consul.aliases', '--alias', each('--alias', domainName('alias')));
  }
  return layer;
}

// ---------------------------------------------------------------------------------------------
// Environment: CONSUL_DNS_PROXY_CONFIG (read above), and Consul's own CONSUL_HTTP_ADDR and
// CONSUL_HTTP_TOKEN so a container configured for the consul CLI works unchanged. As in Consul's
// api package, an empty variable counts as unset.

function envToLayer(env: Record<string, string | undefined>, problems: string[], origins: Map<string, string>): Layer {
  const layer: Layer = {};
  const addr = nonEmpty(env['CONSUL_HTTP_ADDR']);
  if (addr !== undefined) {
    const url = httpUrl('host:port or http(s)://host:port')(addr, 'CONSUL_HTTP_ADDR', problems);
    if (url !== INVALID) {
      setPath(layer, 'consul.http', [url]);
      origins.set('consul.http', 'CONSUL_HTTP_ADDR');
    }
  }
  const token = nonEmpty(env['CONSUL_HTTP_TOKEN']);
  if (token !== undefined) {
    setPath(layer, 'consul.token', token);
    origins.set('consul.token', 'CONSUL_HTTP_TOKEN');
  }
  return layer;
}

// ---------------------------------------------------------------------------------------------
// Checks that need more than one key, run on the merged result. `label` maps a key path to the
// flag or variable that set it.

/** Consul's query keywords (consul-dns.md §1). */
const CONSUL_KEYWORDS = ['service', 'node', 'query', 'addr', 'connect', 'virtual', 'ingress'];

function crossChecks(c: Config, aliasesFromUser: boolean, problems: string[], label: (path: string) => string): void {
  const fail = (path: string, what: string, value: unknown): void => {
    problems.push(`${label(path)}: expected ${what}, got ${show(value)}`);
  };

  // The hedge must fire before a try times out, and a try must fit in the overall deadline.
  const u = c.upstream;
  if (!(u.hedgeMs < u.timeoutMs)) fail('upstream.hedgeMs', `less than upstream.timeoutMs (${u.timeoutMs})`, u.hedgeMs);
  if (!(u.timeoutMs <= u.deadlineMs)) fail('upstream.timeoutMs', `at most upstream.deadlineMs (${u.deadlineMs})`, u.timeoutMs);

  const tls = c.consul.tls;
  if (tls.certFile !== '' && tls.keyFile === '') fail('consul.tls.keyFile', 'a key file to go with consul.tls.certFile', tls.keyFile);
  if (tls.keyFile !== '' && tls.certFile === '') fail('consul.tls.certFile', 'a certificate file to go with consul.tls.keyFile', tls.certFile);

  // Aliases. The default alias is a convenience: if it collides with the configured domain (the
  // Starlings clusters ran Consul with domain "starlings", consul-dns.md §6) it drops out
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
      if (j >= 0) fail(path, `a name that neither equals, contains nor is inside consul.aliases[${j}] "${c.consul.aliases[j]}"`, alias);
    }
  });

  // Zones: names under the Consul domain or an alias belong to the agents (".consul queries never
  // go to the recursors"); a zone that contains the domain is fine, longest suffix wins.
  const consulNames = [domain, ...c.consul.aliases];
  c.zones.forEach((zone, i) => {
    const path = `zones[${i}].name`;
    if (consulNames.some((n) => isWithin(zone.name, n))) {
      fail(path, `a name outside the Consul domain and its aliases (${consulNames.join(', ')})`, zone.name);
    } else {
      const j = c.zones.findIndex((other, k) => k < i && other.name === zone.name);
      if (j >= 0) fail(path, `a zone name not already used by zones[${j}]`, zone.name);
    }
  });

  // Loop guards (issue 9): an upstream that is one of our own listen addresses would send every
  // query back to us. Hostnames other than "localhost" can't be judged without resolving them;
  // the lead's loop probe at start catches those.
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

const INVALID: unique symbol = Symbol('invalid');
type Check<T = unknown> = (value: unknown, at: string, problems: string[]) => T | typeof INVALID;
type Layer = Record<string, unknown>;

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
    described !== undefined ? described
    : max !== undefined ? `an integer from ${min} to ${max}`
    : min === 1 ? 'a positive integer'
    : min === 0 ? 'a non-negative integer'
    : `an integer of at least ${min}`;
  return (v, at, p) =>
    typeof v === 'number' && Number.isInteger(v) && v >= min && (max === undefined || v <= max) ? v : fail(p, at, what, v);
}

/** Milliseconds for a timer: Node turns a delay above 2^31-1 into 1 ms (TimeoutOverflowWarning). */
const ms = int(1, 2147483647, 'a positive integer of milliseconds (at most 2147483647)');
const seconds = int(0);

const positiveNumber: Check<number> = (v, at, p) =>
  typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : fail(p, at, 'a positive number', v);

function oneOf<T extends string>(values: readonly T[]): Check<T> {
  return (v, at, p) => (values.includes(v as T) ? (v as T) : fail(p, at, `one of ${values.join(', ')}`, v));
}

/** A domain name, lowercased without its trailing dot; the root is refused. */
function domainName(kind: 'domain' | 'alias' | 'zone'): Check<string> {
  return (v, at, p) => {
    if (typeof v !== 'string') return fail(p, at, kind === 'zone' ? 'a zone name' : 'a domain name', v);
    const name = normaliseName(v);
    if (name === '' && v !== '') {
      return fail(p, at, kind === 'zone' ? 'a zone name other than the root (the root goes to the recursors)' : 'a domain name other than the root', v);
    }
    if (!isDomainName(name)) return fail(p, at, kind === 'zone' ? 'a zone name' : 'a domain name', v);
    return name;
  };
}

/**
 * "host:port". A listen address ('bind') must be an IP literal and may use port 0 (tests); an
 * upstream ('send') may be a hostname, needs a port 1-65535, and may not be 0.0.0.0 or ::.
 */
function hostPort(meta: string, use: 'bind' | 'send'): Check<string> {
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
      if (isUnspecified(hp.host)) return fail(p, at, 'an address to send to (0.0.0.0 and :: mean "any" only for listening)', v);
    }
    return formatHostPort(hp);
  };
}

function recursor(meta: string): Check<string> {
  const hp = hostPort(meta, 'send');
  return (v, at, p) => (v === 'resolv.conf' ? v : hp(v, at, p));
}

function metricsListen(meta: string): Check<string> {
  const hp = hostPort(meta, 'bind');
  return (v, at, p) => (v === 'off' ? v : hp(v, at, p));
}

/**
 * A Consul HTTP API address, normalised to "scheme://host:port". A bare "host:port" means
 * http://host:port, as CONSUL_HTTP_ADDR does in Consul's api package.
 */
function httpUrl(meta: string): Check<string> {
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
    if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.username !== '' || url.password !== '' ||
        !plain || !asWritten || (ipFamily(host) === 0 && !isHostname(host))) {
      return fail(p, at, meta, v);
    }
    if (url.port === '0') return fail(p, at, 'a port from 1 to 65535', v);
    const port = url.port !== '' ? Number(url.port) : url.protocol === 'https:' ? 443 : 80;
    return `${url.protocol}//${formatHostPort({ host, port })}`;
  };
}

const cidr: Check<string> = (v, at, p) =>
  typeof v === 'string' && tryParseCidr(v) !== undefined ? v : fail(p, at, 'a CIDR such as 10.0.0.0/8', v);

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

const FILE_SCHEMA = mapping({
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
    // Consul caps udp_answer_limit at 8 (consul-dns.md §2).
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
    watchIdleSeconds: int(1),
    maxWatches: int(0),
    watchMinIntervalMs: ms,
  }),
  metrics: mapping({ listen: metricsListen('host:port or off') }),
  log: mapping({ level: oneOf(LOG_LEVELS), queries: bool }),
  acl: mapping({
    allow: list(cidr, 'CIDRs', 1, 'CIDR (0.0.0.0/0 and ::/0 allow everyone)'),
    action: oneOf(['refuse', 'drop'] as const),
  }),
  limits: mapping({
    rate: mapping({ enabled: bool, qps: positiveNumber, burst: int(1), action: oneOf(['refuse', 'drop', 'tc'] as const) }),
    tcp: mapping({ maxConnections: int(1), maxPerClient: int(1), idleTimeoutMs: ms, readTimeoutMs: ms, maxPipelined: int(1) }),
  }),
});

// ---------------------------------------------------------------------------------------------
// Names

function normaliseName(s: string): string {
  const lower = s.toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}

/** Letters, digits, hyphen and underscore (service names such as _janus._tcp), RFC 1035 lengths. */
function isDomainName(name: string): boolean {
  return name.length > 0 && name.length <= 253 &&
    name.split('.').every((label) => /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/.test(label));
}

/** A hostname to resolve: as a domain name, but an all-digit last label is a broken IPv4 address. */
function isHostname(host: string): boolean {
  const name = host.endsWith('.') ? host.slice(0, -1) : host;
  return isDomainName(name) && !/^[0-9]+$/.test(name.slice(name.lastIndexOf('.') + 1));
}

/** `name` equals `zone` or is inside it. */
function isWithin(name: string, zone: string): boolean {
  return name === zone || name.endsWith(`.${zone}`);
}

function overlaps(a: string, b: string): boolean {
  return isWithin(a, b) || isWithin(b, a);
}

// ---------------------------------------------------------------------------------------------
// Addresses

export interface HostPort {
  /** IP literal (IPv6 without brackets) or lowercase hostname. */
  host: string;
  port: number;
}

/**
 * Parses "1.2.3.4:53", "[::1]:53" or "name:53" (a hostname is kept for the lead to resolve).
 * Syntax only: port 0 is accepted here (config validation decides where it is allowed).
 * Throws ConfigError.
 */
export function parseHostPort(s: string): HostPort {
  const hp = splitHostPort(s);
  if (typeof hp !== 'object') throw new ConfigError([`expected host:port (IPv6 as [::1]:53), got ${show(s)}`]);
  return hp;
}

/** "1.2.3.4:53", "[::1]:53". */
export function formatHostPort(hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

function splitHostPort(s: string): HostPort | 'syntax' | 'ipv6' | 'port' {
  let host: string;
  let port: string;
  const bracketed = /^\[([^\]]+)\]:([^:]*)$/.exec(s);
  if (bracketed) {
    host = bracketed[1]!.toLowerCase();
    port = bracketed[2]!;
    if (ipFamily(host) !== 6) return 'syntax';
  } else {
    const colon = s.lastIndexOf(':');
    if (colon < 0) return 'syntax';
    host = s.slice(0, colon).toLowerCase();
    port = s.slice(colon + 1);
    if (host.includes(':')) return ipFamily(host) === 6 || ipFamily(s) === 6 ? 'ipv6' : 'syntax';
    if (ipFamily(host) !== 4 && !isHostname(host)) return 'syntax';
  }
  if (!/^[0-9]{1,5}$/.test(port)) return 'syntax';
  const n = Number(port);
  return n > 65535 ? 'port' : { host, port: n };
}

export interface Cidr {
  family: 4 | 6;
  /** Network address, host bits cleared (4 or 16 bytes). */
  bytes: Buffer;
  prefix: number;
}

/**
 * "10.0.0.0/8", "fc00::/7"; a bare address means /32 or /128. Host bits are cleared, as Go's
 * net.ParseCIDR and dnsdist do. Throws ConfigError.
 */
export function parseCidr(s: string): Cidr {
  const c = tryParseCidr(s);
  if (c === undefined) throw new ConfigError([`expected a CIDR such as 10.0.0.0/8, got ${show(s)}`]);
  return c;
}

function tryParseCidr(s: string): Cidr | undefined {
  const slash = s.indexOf('/');
  const addr = slash < 0 ? s : s.slice(0, slash);
  if (addr.includes('%')) return undefined; // a zone index has no place in a network
  const buf = Buffer.alloc(16);
  const family = parseIpInto(addr, buf);
  if (family === 0) return undefined;
  const max = family === 4 ? 32 : 128;
  let prefix = max;
  if (slash >= 0) {
    const p = s.slice(slash + 1);
    if (!/^(?:0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > max) return undefined;
    prefix = Number(p);
  }
  const bytes = buf.subarray(0, max / 8);
  for (let bit = prefix; bit < max; bit++) bytes[bit >> 3]! &= ~(0x80 >> (bit & 7));
  return { family, bytes: Buffer.from(bytes), prefix };
}

const scratch = new Uint8Array(16);

/**
 * Whether `address` is inside `cidr`. An IPv4-mapped IPv6 address (::ffff:10.1.2.3, what a dual
 * stack socket reports for an IPv4 client) matches IPv4 networks, and an IPv4 address matches IPv6
 * networks that contain its mapped form (::/0, ::ffff:0:0/96). Not an address: false.
 * Parses the address into a reused buffer; a hot path should still pass a pre-parsed Cidr.
 */
export function cidrContains(cidr: Cidr | string, address: string): boolean {
  const c = typeof cidr === 'string' ? parseCidr(cidr) : cidr;
  const family = parseIpInto(address, scratch);
  if (family === 0) return false;
  if (c.family === 4) {
    if (family === 4) return prefixEqual(c.bytes, scratch, 0, c.prefix);
    return isMapped(scratch) && prefixEqual(c.bytes, scratch, 12, c.prefix);
  }
  if (family === 4) toMapped(scratch);
  return prefixEqual(c.bytes, scratch, 0, c.prefix);
}

/**
 * A membership test over several networks (an ACL): the address is parsed once per call, then
 * compared with each network. Meant to be built once at start; the per-call cost is the parse.
 */
export function cidrMatcher(cidrs: readonly (Cidr | string)[]): (address: string) => boolean {
  const v4 = cidrs.map((c) => (typeof c === 'string' ? parseCidr(c) : c)).filter((c) => c.family === 4);
  const v6 = cidrs.map((c) => (typeof c === 'string' ? parseCidr(c) : c)).filter((c) => c.family === 6);
  const addr = new Uint8Array(16);
  return (address) => {
    const family = parseIpInto(address, addr);
    if (family === 0) return false;
    if (family === 4 || isMapped(addr)) {
      const offset = family === 4 ? 0 : 12;
      for (const c of v4) if (prefixEqual(c.bytes, addr, offset, c.prefix)) return true;
      if (v6.length === 0) return false;
      if (family === 4) toMapped(addr);
    }
    for (const c of v6) if (prefixEqual(c.bytes, addr, 0, c.prefix)) return true;
    return false;
  };
}

function prefixEqual(net: Uint8Array, addr: Uint8Array, offset: number, prefix: number): boolean {
  for (let bit = 0; bit < prefix; bit += 8) {
    const mask = prefix - bit >= 8 ? 0xff : (0xff << (8 - (prefix - bit))) & 0xff;
    if (((net[bit >> 3]! ^ addr[offset + (bit >> 3)]!) & mask) !== 0) return false;
  }
  return true;
}

function isMapped(b: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return b[10] === 0xff && b[11] === 0xff;
}

function toMapped(b: Uint8Array): void {
  b.copyWithin(12, 0, 4);
  b.fill(0, 0, 10);
  b[10] = 0xff;
  b[11] = 0xff;
}

/** Writes an IP literal's bytes to out (4 or 16) and returns its family, or 0. A %zone is ignored. */
function parseIpInto(s: string, out: Uint8Array): 0 | 4 | 6 {
  if (parseV4(s, out, 0)) return 4;
  return parseV6(s, out) ? 6 : 0;
}

/** Dotted quad, walked by character: cidrContains runs per query and should not allocate. */
function parseV4(s: string, out: Uint8Array, offset: number): boolean {
  let part = 0;
  let digits = 0;
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x2e /* . */) {
      if (digits === 0 || part === 3) return false;
      out[offset + part++] = n;
      n = 0;
      digits = 0;
      continue;
    }
    if (c < 0x30 || c > 0x39) return false;
    // No leading zeros: "010" is octal to inet_aton and decimal to others.
    if (digits > 0 && n === 0) return false;
    n = n * 10 + (c - 0x30);
    if (++digits > 3 || n > 255) return false;
  }
  if (digits === 0 || part !== 3) return false;
  out[offset + 3] = n;
  return true;
}

/**
 * RFC 4291 §2.2 text forms, walked by character (no allocation except for an embedded IPv4 tail):
 * up to 8 hex groups, one "::" standing for one or more zero groups, an optional dotted-quad tail.
 */
function parseV6(s: string, out: Uint8Array): boolean {
  let end = s.indexOf('%');
  if (end === 0 || end === s.length - 1) return false;
  if (end < 0) end = s.length;
  let words = 0;
  let gap = -1; // word index where "::" stands
  let i = 0;
  if (s.charCodeAt(0) === 0x3a) {
    if (s.charCodeAt(1) !== 0x3a) return false;
    gap = 0;
    i = 2;
  }
  while (i < end) {
    const start = i;
    let value = 0;
    let digits = 0;
    for (; i < end; i++) {
      const h = hexValue(s.charCodeAt(i));
      if (h < 0) break;
      value = value * 16 + h;
      if (++digits > 4) return false;
    }
    if (i < end && s.charCodeAt(i) === 0x2e /* . */) {
      // An embedded IPv4 address ends the address and takes two groups.
      if (words > 6 || !parseV4(s.slice(start, end), out, 2 * words)) return false;
      words += 2;
      break;
    }
    if (digits === 0 || words === 8) return false;
    out[2 * words] = value >> 8;
    out[2 * words + 1] = value & 0xff;
    words++;
    if (i === end) break;
    if (s.charCodeAt(i) !== 0x3a) return false;
    i++;
    if (i < end && s.charCodeAt(i) === 0x3a) {
      if (gap >= 0) return false;
      gap = words;
      i++;
    } else if (i === end) {
      return false; // a single trailing ":"
    }
  }
  if (gap < 0) return words === 8;
  if (words > 7) return false;
  // Move the groups after "::" to the end and zero the gap.
  const after = words - gap;
  out.copyWithin(16 - 2 * after, 2 * gap, 2 * words);
  out.fill(0, 2 * gap, 16 - 2 * after);
  return true;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}

function ipFamily(s: string): 0 | 4 | 6 {
  return parseIpInto(s, new Uint8Array(16));
}

/** 16 bytes, IPv4 as its mapped form, so 127.0.0.1 and ::ffff:127.0.0.1 compare equal. */
function ip16(s: string): Uint8Array | undefined {
  const b = new Uint8Array(16);
  const family = parseIpInto(s, b);
  if (family === 0) return undefined;
  if (family === 4) toMapped(b);
  return b;
}

function sameIp(a: string, b: string): boolean {
  const x = ip16(a);
  const y = ip16(b);
  return x !== undefined && y !== undefined && x.every((v, i) => v === y[i]);
}

function isUnspecified(s: string): boolean {
  const b = ip16(s);
  return b !== undefined && (b.every((v) => v === 0) || (isMapped(b) && b[12] === 0 && b[13] === 0 && b[14] === 0 && b[15] === 0));
}

function isLoopback(s: string): boolean {
  const b = ip16(s);
  if (b === undefined) return false;
  if (isMapped(b)) return b[12] === 127; // 127.0.0.0/8 (RFC 1122 §3.2.1.3)
  return b.every((v, i) => v === (i === 15 ? 1 : 0)); // ::1
}

/**
 * Which of our listen addresses a query sent to `to` would reach, if any.
 * - Same IP and port: us.
 * - We listen on 0.0.0.0:P: every local IPv4 address on port P is us, which covers 127.0.0.0/8
 *   and the host's own addresses (`localAddresses`, e.g. from os.networkInterfaces()).
 * - We listen on [::]:P: Node opens dual-stack sockets (ipv6Only defaults to false), so every
 *   local address of either family on port P is us: ::1, 127.0.0.0/8 and the host's addresses.
 * Port 0 (tests) is never a loop: the kernel picks a free port. "localhost" is loopback by
 * RFC 6761 §6.3, so it is judged without resolving it; other hostnames are not judged here.
 */
function ownAddress(to: HostPort, listen: HostPort[], localAddresses: string[]): HostPort | undefined {
  const hosts = to.host === 'localhost' || to.host.endsWith('.localhost') ? ['127.0.0.1', '::1'] : [to.host];
  for (const l of listen) {
    if (l.port === 0 || l.port !== to.port) continue;
    for (const h of hosts) {
      if (ipFamily(h) === 0) continue;
      if (sameIp(h, l.host)) return l;
      if (!isUnspecified(l.host)) continue;
      const local = isLoopback(h) || isUnspecified(h) || localAddresses.some((a) => sameIp(a, h));
      const coversFamily = ipFamily(l.host) === 6 || isMapped(ip16(h)!); // 0.0.0.0 takes IPv4 only
      if (local && coversFamily) return l;
    }
  }
  return undefined;
}

/**
 * The nameservers of a resolv.conf text, as "host:port" (resolv.conf(5): always port 53), in
 * order, without duplicates and without the proxy's own addresses: a resolver of this host must
 * not forward to itself. Which addresses are "ours" follows `ownAddress`:
 * - listen 127.0.0.1:53 skips `nameserver 127.0.0.1` but keeps e.g. systemd-resolved's
 *   127.0.0.53 (a different socket; if that one forwards back to us, the loop probe catches it);
 * - listen 0.0.0.0:53 skips every IPv4 loopback address (if we could bind 0.0.0.0:53, no other
 *   process owns a 127.x:53 socket) and the host's own IPv4 addresses given in `localAddresses`;
 * - listen [::]:53 (dual stack) skips loopback and local addresses of both families;
 * - listening on another port skips nothing, since resolv.conf can only name port 53.
 * `nameserver 0.0.0.0` / `::` (which the kernel delivers locally) are always skipped.
 * Lines that are not a valid `nameserver IP` are ignored, as glibc does.
 */
export function expandResolvConf(text: string, ownListen: HostPort[], localAddresses: string[] = []): string[] {
  const out: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/[#;].*$/, '').trim();
    const [keyword, address] = line.split(/\s+/);
    if (keyword !== 'nameserver' || address === undefined || ipFamily(address) === 0) continue;
    const host = address.toLowerCase();
    if (isUnspecified(host)) continue;
    if (ownAddress({ host, port: 53 }, ownListen, localAddresses)) continue;
    const entry = formatHostPort({ host, port: 53 });
    if (!out.includes(entry)) out.push(entry);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Probe question

/** RR type mnemonics accepted in upstream.recursorProbe (RFC 1035, 3596, 2782, 4034, 9460, 8659). */
export const RR_TYPES: Readonly<Record<string, number>> = Object.freeze({
  A: 1, NS: 2, CNAME: 5, SOA: 6, PTR: 12, MX: 15, TXT: 16, AAAA: 28, SRV: 33, NAPTR: 35,
  DS: 43, RRSIG: 46, NSEC: 47, DNSKEY: 48, SVCB: 64, HTTPS: 65, ANY: 255, CAA: 257,
});

/** "NAME TYPE" → name (lowercase, no trailing dot, '' for the root) and numeric type. Throws ConfigError. */
export function parseProbe(s: string): { name: string; type: number } {
  const p = tryParseProbe(s);
  if (p === undefined) throw new ConfigError([`expected "NAME TYPE" with a known type (such as ". NS"), got ${show(s)}`]);
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

// ---------------------------------------------------------------------------------------------
// Help

export const HELP = `NAME
    consul-dns-proxy - a Consul-aware DNS forwarder with failover, aliases and a health-aware cache

SYNOPSIS
    consul-dns-proxy [--config FILE] [--listen HOST:PORT]... [--agent HOST:PORT]...
                     [--recursor HOST:PORT|resolv.conf]... [--domain NAME]
                     [--alias NAME]... [--no-alias] [--consul-http URL]...
                     [--metrics HOST:PORT|off] [--log-level LEVEL] [--check-config]
    consul-dns-proxy --help | --version

DESCRIPTION
    Answers DNS over UDP and TCP on every listen address. Names under the Consul domain (and its
    aliases) go to the Consul agents, in order, with hedging and failover; names under a configured
    zone go to that zone's upstreams; every other name goes to the recursors (none configured:
    REFUSED). No configuration file is needed: the defaults are in config/default.yaml.

OPTIONS
    --config FILE               YAML configuration file (see config/default.yaml for every key).
    --listen HOST:PORT          Address to answer on, UDP and TCP; IPv6 as [::1]:53; port 0 picks a
                                free port. Repeatable; replaces the file's listen list.
    --agent HOST:PORT           Consul agent DNS address, tried in order. Repeatable; replaces
                                consul.agents.
    --recursor HOST:PORT        Resolver for names outside Consul and the zones; the word
                                resolv.conf means the nameservers of /etc/resolv.conf minus this
                                proxy's own addresses. Repeatable; replaces recursors.
    --domain NAME               The Consul domain (consul.domain), default consul.
    --alias NAME                Another name for the Consul domain (consul.aliases), default
                                starlings. Repeatable; replaces the list.
    --no-alias                  No aliases.
    --consul-http URL           Consul HTTP API, http(s)://HOST:PORT (HOST:PORT means http).
                                Repeatable; replaces consul.http.
    --metrics HOST:PORT|off     Admin listener for /metrics, /health, /ready, /cache
                                (metrics.listen), default 127.0.0.1:9153.
    --log-level LEVEL           trace, debug, info, warn, error, fatal or silent (log.level).
    --check-config              Validate the configuration and exit; resolves no names and sends
                                nothing.
    -h, --help                  Print this help and exit.
    --version                   Print the version and exit.

ENVIRONMENT
    CONSUL_DNS_PROXY_CONFIG     Configuration file, when --config is not given.
    CONSUL_HTTP_ADDR            Consul HTTP API; replaces consul.http with this one address
                                (HOST:PORT means http://HOST:PORT).
    CONSUL_HTTP_TOKEN           ACL token sent to the HTTP API (consul.token).

PRECEDENCE
    Built-in defaults, then the file, then the environment, then flags. A list given by a flag
    replaces that list; mappings from the file merge key by key over the defaults.

EXIT STATUS
    0 after a clean shutdown or a valid --check-config; 2 when the configuration is invalid (every
    problem is printed, one per line, as "key.path: expected ..., got ...").
`;

// ---------------------------------------------------------------------------------------------
// Small helpers

function show(value: unknown): string {
  if (value === undefined) return 'nothing';
  let s: string;
  try {
    s = JSON.stringify(value) ?? String(value);
  } catch {
    s = String(value);
  }
  return s.length > 120 ? `${s.slice(0, 117)}...` : s;
}

function nonEmpty(s: string | undefined): string | undefined {
  return s === undefined || s === '' ? undefined : s;
}

function isPlainObject(v: unknown): v is Layer {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Objects merge key by key; anything else (lists included) in `over` replaces. */
function merge(base: Layer, over: Layer): Layer {
  for (const [key, v] of Object.entries(over)) {
    const b = base[key];
    base[key] = isPlainObject(b) && isPlainObject(v) ? merge(b, v) : v;
  }
  return base;
}

function setPath(layer: Layer, path: string, value: unknown): void {
  const keys = path.split('.');
  let node = layer;
  for (const key of keys.slice(0, -1)) {
    if (!isPlainObject(node[key])) node[key] = {};
    node = node[key] as Layer;
  }
  node[keys.at(-1)!] = value;
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
