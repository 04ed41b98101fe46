/** The command line: flags to a configuration layer, and the --help text. */
import {
  type Layer,
  INVALID,
  setPath,
  type Check,
  hostPort,
  recursor,
  httpUrl,
  domainName,
  metricsListen,
  oneOf,
} from './checks.js';
import { LOG_LEVELS } from './schema.js';
import { show } from '../errors.js';

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

export function parseArgv(argv: string[], problems: string[]): Args {
  const args: Args = { values: new Map(), switches: new Set() };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i]!;
    if (arg === '-h') arg = '--help';
    if (arg === '--') {
      for (const rest of argv.slice(i + 1))
        problems.push(`${rest}: unexpected argument (this command takes only flags)`);
      break;
    }
    if (!arg.startsWith('--')) {
      problems.push(
        `${arg}: ${arg.startsWith('-') ? 'unknown flag (see --help)' : 'unexpected argument (this command takes only flags)'}`,
      );
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
export function flagsToLayer(args: Args, problems: string[], origins: Map<string, string>): Layer {
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
  if (args.values.has('--recursor'))
    set('recursors', '--recursor', each('--recursor', recursor('HOST:PORT or resolv.conf')));
  if (args.values.has('--consul-http'))
    set('consul.http', '--consul-http', each('--consul-http', httpUrl('http(s)://HOST:PORT')));
  const domain = last('--domain');
  if (domain !== undefined) set('consul.domain', '--domain', domainName('domain')(domain, '--domain', problems));
  const metrics = last('--metrics');
  if (metrics !== undefined)
    set('metrics.listen', '--metrics', metricsListen('HOST:PORT or off')(metrics, '--metrics', problems));
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
