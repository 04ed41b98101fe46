/*
 * Configuration: the defaults, the YAML file, the environment and the command line, merged and
 * validated once into one frozen `Config` (at start, and again on SIGHUP).
 *
 * Precedence is defaults < file < env < flags; objects merge key by key, lists and scalars replace
 * (so a repeated list flag such as `--listen` replaces that list from the file). Every problem is
 * collected and reported at once, each as `<key.path>: expected <what>, got <json>`, where the path names the flag or variable when the value came from one. Unknown keys
 * are errors at every level. Names are stored lowercase without a trailing dot.
 *
 * This module is cold path and pure: it imports only node:fs (to read the file) and yaml. It never
 * resolves a name or opens a socket, which is what makes `--check-config` safe to run anywhere;
 * upstream hostnames are resolved by app.ts at start and on reload, and `resolv.conf` is expanded
 * there through `expandResolvConf`.
 */
import { readFileSync } from 'node:fs';
import { parseDocument } from 'yaml';
import { ConfigError, show } from '../errors.js';
import { DEFAULTS, deepFreeze, type Config } from './schema.js';
import { parseArgv, flagsToLayer } from './flags.js';
import { type Layer, isPlainObject, crossChecks, FILE_SCHEMA, INVALID, httpUrl, setPath } from './checks.js';

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

function nonEmpty(s: string | undefined): string | undefined {
  return s === undefined || s === '' ? undefined : s;
}

/** Objects merge key by key; anything else (lists included) in `over` replaces. */
function merge(base: Layer, over: Layer): Layer {
  for (const [key, v] of Object.entries(over)) {
    const b = base[key];
    base[key] = isPlainObject(b) && isPlainObject(v) ? merge(b, v) : v;
  }
  return base;
}
