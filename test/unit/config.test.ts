/*
 * Configuration loading: defaults, precedence (defaults < file < env < flags), every validation
 * rule with its exact message, unknown keys, all problems at once, list flags, IPv6 addresses, the
 * starlings rule, config/default.yaml == DEFAULTS, and the address helpers (host:port, CIDR,
 * resolv.conf expansion). Pure unit tests: no sockets, no files beyond config/ and src/.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import dns from 'node:dns';
import dgram from 'node:dgram';
import net from 'node:net';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from '../../src/errors.js';
import { formatHostPort, parseCidr, parseHostPort } from '../../src/net/address.js';
import { Acl } from '../../src/query/gate.js';
import { expandResolvConf } from '../../src/net/resolv-conf.js';
import { DEFAULTS } from '../../src/config/schema.js';
import { FILE_SCHEMA, parseProbe } from '../../src/config/checks.js';
import { HELP } from '../../src/config/flags.js';
import { loadConfig, type LoadInput } from '../../src/config/load.js';

const root = new URL('../../../', import.meta.url); // dist/test/ -> repository root

/** Input reading `yaml` as the file given by --config. */
function withFile(yaml: string, argv: string[] = [], env: Record<string, string> = {}): LoadInput {
  return {
    argv: ['--config', 'test.yaml', ...argv],
    env,
    readFile: (p) => {
      assert.equal(p, 'test.yaml');
      return yaml;
    },
  };
}

function problemsOf(input: LoadInput): string[] {
  try {
    loadConfig(input);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `not a ConfigError: ${String(err)}`);
    assert.equal(err.code, 'CDP_ERR_CONFIG');
    assert.ok(err.message.includes(err.problems[0]!), 'message lists the problems');
    return err.problems;
  }
  assert.fail('expected a ConfigError');
}

/** Asserts that `yaml` (plus flags) yields exactly these problems. */
function rejects(yaml: string, expected: string[], argv: string[] = []): void {
  assert.deepEqual(problemsOf(withFile(yaml, argv)), expected, `for:\n${yaml} ${argv.join(' ')}`);
}

function load(yaml: string, argv: string[] = [], env: Record<string, string> = {}) {
  return loadConfig(withFile(yaml, argv, env)).config;
}

const noFile = (p: string): string => assert.fail(`no file should be read, got ${p}`);

test('defaults load with no file and no flags', () => {
  const result = loadConfig({ argv: [], env: {}, readFile: noFile });
  assert.equal(result.action, 'run');
  assert.equal(result.configPath, undefined);
  assert.deepEqual(result.config, DEFAULTS);
  assert.equal(result.config.consul.domain, 'consul');
  assert.deepEqual(result.config.consul.aliases, ['starlings']);
  assert.deepEqual(result.config.cache.staleSeconds, { consul: 300, recursors: 86400 });
});

test('DEFAULTS and loaded configs are deep-frozen, and loading never changes DEFAULTS', () => {
  const before = structuredClone(DEFAULTS);
  assert.ok(Object.isFrozen(DEFAULTS) && Object.isFrozen(DEFAULTS.consul.tls) && Object.isFrozen(DEFAULTS.acl.allow));
  const config = load('upstream: {timeoutMs: 500}\nlisten: ["127.0.0.1:0"]\n', ['--alias', 'x']);
  assert.ok(Object.isFrozen(config) && Object.isFrozen(config.upstream) && Object.isFrozen(config.consul.aliases));
  assert.throws(() => {
    config.listen.push('x');
  }, TypeError);
  assert.deepEqual(DEFAULTS, before);
});

test('config/default.yaml is DEFAULTS, with a comment on every key, and loads as DEFAULTS', () => {
  const text = readFileSync(new URL('config/default.yaml', root), 'utf8');
  assert.deepEqual(parseYaml(text), DEFAULTS);
  const uncommented = text.split('\n').filter((l) => /^\s*(?:- |[A-Za-z]+:)/.test(l) && !/\s#\s/.test(l));
  assert.deepEqual(uncommented, [], 'every key and list entry has a comment');
  const result = loadConfig({
    argv: [],
    env: { CONSUL_DNS_PROXY_CONFIG: 'config/default.yaml' },
    readFile: () => text,
  });
  assert.deepEqual(result.config, DEFAULTS);
  assert.equal(result.configPath, 'config/default.yaml');
});

test('precedence: defaults < file < env < flags; mappings merge, lists replace', () => {
  const file = `
listen: ["127.0.0.1:5300", "[::1]:5300"]
consul:
  domain: Corp-Consul.
  agents: ["127.0.0.1:8601", "127.0.0.2:8601"]
  http: ["http://127.0.0.1:8501"]
  token: file-token
upstream: {timeoutMs: 500}
log: {level: warn}
`;
  const fromFile = load(file);
  assert.deepEqual(fromFile.listen, ['127.0.0.1:5300', '[::1]:5300']);
  assert.equal(fromFile.consul.domain, 'corp-consul');
  assert.equal(fromFile.consul.token, 'file-token');
  assert.deepEqual(fromFile.consul.http, ['http://127.0.0.1:8501']);
  assert.equal(fromFile.upstream.timeoutMs, 500);
  assert.equal(fromFile.upstream.hedgeMs, 50, 'sibling keys keep their defaults');
  assert.equal(fromFile.log.level, 'warn');

  const env = { CONSUL_HTTP_ADDR: '127.0.0.9:8500', CONSUL_HTTP_TOKEN: 'env-token' };
  const fromEnv = load(file, [], env);
  assert.deepEqual(fromEnv.consul.http, ['http://127.0.0.9:8500'], 'host:port means http://');
  assert.equal(fromEnv.consul.token, 'env-token');
  assert.deepEqual(fromEnv.consul.agents, ['127.0.0.1:8601', '127.0.0.2:8601']);

  const fromFlags = load(
    file,
    ['--consul-http', 'https://consul.example:8501', '--log-level', 'debug', '--listen', '127.0.0.1:0'],
    env,
  );
  assert.deepEqual(fromFlags.consul.http, ['https://consul.example:8501']);
  assert.equal(fromFlags.log.level, 'debug');
  assert.deepEqual(fromFlags.listen, ['127.0.0.1:0']);
  assert.equal(fromFlags.consul.token, 'env-token');
  assert.equal(fromFlags.consul.domain, 'corp-consul');
});

test('the file comes from --config, else CONSUL_DNS_PROXY_CONFIG; empty env vars count as unset', () => {
  const files: Record<string, string> = { 'a.yaml': 'maxUdpSize: 1400\n', 'b.yaml': 'maxUdpSize: 1500\n' };
  const readFile = (p: string): string => files[p] ?? assert.fail(p);
  assert.equal(loadConfig({ argv: [], env: { CONSUL_DNS_PROXY_CONFIG: 'a.yaml' }, readFile }).config.maxUdpSize, 1400);
  const both = loadConfig({ argv: ['--config', 'b.yaml'], env: { CONSUL_DNS_PROXY_CONFIG: 'a.yaml' }, readFile });
  assert.equal(both.config.maxUdpSize, 1500);
  assert.equal(both.configPath, 'b.yaml');
  const empty = loadConfig({
    argv: [],
    env: { CONSUL_DNS_PROXY_CONFIG: '', CONSUL_HTTP_ADDR: '', CONSUL_HTTP_TOKEN: '' },
    readFile: noFile,
  });
  assert.deepEqual(empty.config, DEFAULTS);
});

test('CONSUL_HTTP_ADDR forms', () => {
  const http = (addr: string) => loadConfig({ argv: [], env: { CONSUL_HTTP_ADDR: addr } }).config.consul.http;
  assert.deepEqual(http('consul.local:8500'), ['http://consul.local:8500']);
  assert.deepEqual(http('[::1]:8500'), ['http://[::1]:8500']);
  assert.deepEqual(http('https://consul.example:8501'), ['https://consul.example:8501']);
  assert.deepEqual(http('https://consul.example'), ['https://consul.example:443']);
  assert.deepEqual(http('http://Consul.Example/'), ['http://consul.example:80']);
  assert.deepEqual(problemsOf({ argv: [], env: { CONSUL_HTTP_ADDR: 'unix:///var/run/consul.sock' } }), [
    'CONSUL_HTTP_ADDR: expected host:port or http(s)://host:port, got "unix:///var/run/consul.sock"',
  ]);
  assert.deepEqual(problemsOf({ argv: [], env: { CONSUL_HTTP_ADDR: '8500' } }), [
    'CONSUL_HTTP_ADDR: expected host:port or http(s)://host:port, got "8500"',
  ]);
});

test('list flags replace the file list, repeat to give several, and --no-alias empties aliases', () => {
  const file =
    'listen: ["127.0.0.1:5300"]\nrecursors: ["127.0.0.1:5301"]\nconsul: {agents: ["127.0.0.1:8601"], aliases: [a, b]}\n';
  const c = load(file, [
    '--listen',
    '127.0.0.1:0',
    '--listen=[::1]:0',
    '--agent',
    '127.0.0.1:8602',
    '--agent',
    'consul-server:8600',
    '--recursor',
    'resolv.conf',
    '--recursor',
    '127.0.0.1:5353',
    '--alias',
    'Starlings.',
    '--alias',
    'janus',
  ]);
  assert.deepEqual(c.listen, ['127.0.0.1:0', '[::1]:0']);
  assert.deepEqual(c.consul.agents, ['127.0.0.1:8602', 'consul-server:8600']);
  assert.deepEqual(c.recursors, ['resolv.conf', '127.0.0.1:5353']);
  assert.deepEqual(c.consul.aliases, ['starlings', 'janus']);
  assert.deepEqual(load(file, ['--no-alias']).consul.aliases, []);
  assert.deepEqual(load(file).consul.aliases, ['a', 'b']);
  assert.equal(load('', ['--metrics', 'off']).metrics.listen, 'off');
  assert.equal(load('', ['--metrics', '[::1]:0']).metrics.listen, '[::1]:0');
  assert.equal(load('', ['--domain', 'DC.Example.']).consul.domain, 'dc.example');
  assert.equal(load('', ['--log-level', 'info', '--log-level', 'trace']).log.level, 'trace', 'last one wins');
});

test('actions: --check-config, --help, --version (help and version read no file)', () => {
  assert.equal(loadConfig({ argv: ['--check-config'], env: {} }).action, 'check');
  const help = loadConfig({ argv: ['--config', '/nope.yaml', '--bogus', '--help'], env: {}, readFile: noFile });
  assert.equal(help.action, 'help');
  assert.equal(help.config, DEFAULTS);
  assert.equal(loadConfig({ argv: ['-h'], env: {}, readFile: noFile }).action, 'help');
  assert.equal(loadConfig({ argv: ['--version', '--listen', 'x'], env: {}, readFile: noFile }).action, 'version');
  assert.deepEqual(problemsOf({ argv: ['--check-config', '--listen', 'x'], env: {} }), [
    '--listen: expected HOST:PORT, got "x"',
  ]);
});

test('--check-config never touches the network: the modules it loads import only node:fs and yaml', (t) => {
  // Follow src/config/load.ts through its relative imports; what is left outside src/ must be node:fs and yaml.
  const outside = new Set<string>();
  const seen = new Set<string>();
  const walk = (url: URL): void => {
    if (seen.has(url.href)) return;
    seen.add(url.href);
    const source = readFileSync(url, 'utf8');
    assert.ok(!/\bimport\(/.test(source), `no dynamic imports in ${url.pathname}`);
    for (const m of source.matchAll(/^import .* from '([^']+)';$/gm)) {
      const spec = m[1]!;
      if (spec.startsWith('.')) walk(new URL(spec.replace(/\.js$/, '.ts'), url));
      else outside.add(spec);
    }
  };
  walk(new URL('src/config/load.ts', root));
  assert.deepEqual([...outside].sort(), ['node:fs', 'yaml']);

  // And at run time: any lookup or socket during loading would throw.
  const trap = (): never => assert.fail('network used during config loading');
  const saved = [
    dns.lookup,
    dns.resolve,
    dns.promises.lookup,
    dgram.Socket.prototype.send,
    net.Socket.prototype.connect,
  ] as const;
  t.after(() => {
    [dns.lookup, dns.resolve, dns.promises.lookup, dgram.Socket.prototype.send, net.Socket.prototype.connect] = saved;
  });
  Object.assign(dns, { lookup: trap, resolve: trap });
  Object.assign(dns.promises, { lookup: trap });
  Object.assign(dgram.Socket.prototype, { send: trap });
  Object.assign(net.Socket.prototype, { connect: trap });
  const r = loadConfig(
    withFile(
      'recursors: ["resolver.example:53", resolv.conf]\nzones: [{name: corp, upstreams: ["ns.corp.example:53"]}]\n',
      ['--check-config', '--agent', 'consul.example:8600', '--consul-http', 'https://consul.example:8501'],
    ),
  );
  assert.equal(r.action, 'check');
  assert.deepEqual(
    r.config.recursors,
    ['resolver.example:53', 'resolv.conf'],
    'names are kept for the lead to resolve',
  );
  assert.deepEqual(r.config.consul.agents, ['consul.example:8600']);
});

test('HELP lists every flag and environment variable', () => {
  for (const word of [
    '--config FILE',
    '--listen HOST:PORT',
    '--agent HOST:PORT',
    '--recursor HOST:PORT',
    'resolv.conf',
    '--domain NAME',
    '--consul-http URL',
    '--metrics HOST:PORT|off',
    '--log-level LEVEL',
    '--alias NAME',
    '--no-alias',
    '--check-config',
    '--help',
    '--version',
    'CONSUL_DNS_PROXY_CONFIG',
    'CONSUL_HTTP_ADDR',
    'CONSUL_HTTP_TOKEN',
  ]) {
    assert.ok(HELP.includes(word), word);
  }
});

test('command-line problems', () => {
  const p = (...argv: string[]) => problemsOf({ argv, env: {} });
  assert.deepEqual(p('--listen', 'x'), ['--listen: expected HOST:PORT, got "x"']);
  assert.deepEqual(p('--listen=localhost:53'), [
    '--listen: expected an IP address to listen on (not a name), got "localhost:53"',
  ]);
  assert.deepEqual(p('--agent', '8600'), ['--agent: expected HOST:PORT, got "8600"']);
  assert.deepEqual(p('--agent', '::1:8600'), [
    '--agent: expected HOST:PORT with IPv6 in brackets ([::1]:53), got "::1:8600"',
  ]);
  assert.deepEqual(p('--recursor', '8.8.8.8'), ['--recursor: expected HOST:PORT or resolv.conf, got "8.8.8.8"']);
  assert.deepEqual(p('--consul-http', 'ftp://x:1'), ['--consul-http: expected http(s)://HOST:PORT, got "ftp://x:1"']);
  assert.deepEqual(p('--metrics', 'on'), ['--metrics: expected HOST:PORT or off, got "on"']);
  assert.deepEqual(p('--log-level', 'loud'), [
    '--log-level: expected one of trace, debug, info, warn, error, fatal, silent, got "loud"',
  ]);
  assert.deepEqual(p('--domain', 'a b'), ['--domain: expected a domain name, got "a b"']);
  assert.deepEqual(p('--alias', 'node'), [
    '--alias: expected a name that does not start with a Consul keyword (service, node, query, addr, connect, virtual, ingress), got "node"',
  ]);
  assert.deepEqual(p('--frobnicate'), ['--frobnicate: unknown flag (see --help)']);
  assert.deepEqual(p('-x'), ['-x: unknown flag (see --help)']);
  assert.deepEqual(p('stray'), ['stray: unexpected argument (this command takes only flags)']);
  assert.deepEqual(p('--listen'), ['--listen: expected HOST:PORT, got nothing']);
  assert.deepEqual(p('--listen', '--agent', '127.0.0.1:8600'), ['--listen: expected HOST:PORT, got nothing']);
  assert.deepEqual(p('--no-alias=yes'), ['--no-alias: expected no value, got "yes"']);
  assert.deepEqual(p('--no-alias', '--alias', 'x'), ['--no-alias: expected no --alias with it, got ["x"]']);
  assert.deepEqual(p('--config'), ['--config: expected FILE, got nothing']);
});

test('file problems name the file: unreadable, invalid YAML, not a mapping; an empty file is all defaults', () => {
  const enoent = Object.assign(new Error('ENOENT: no such file'), { code: 'ENOENT' });
  const readFile = (): string => {
    throw enoent;
  };
  assert.deepEqual(problemsOf({ argv: ['--config', '/nope.yaml'], env: {}, readFile }), [
    '--config: expected a readable file (ENOENT), got "/nope.yaml"',
  ]);
  assert.deepEqual(problemsOf({ argv: [], env: { CONSUL_DNS_PROXY_CONFIG: '/nope.yaml' }, readFile }), [
    'CONSUL_DNS_PROXY_CONFIG: expected a readable file (ENOENT), got "/nope.yaml"',
  ]);
  rejects('listen: [\n', [
    'test.yaml: invalid YAML: Flow sequence in block collection must be sufficiently indented and end with a ] at line 2, column 1',
  ]);
  rejects('maxUdpSize: 1232\nmaxUdpSize: 1400\n', [
    'test.yaml: invalid YAML: Map keys must be unique at line 2, column 1',
  ]);
  rejects('- listen\n', ['test.yaml: expected a mapping of settings, got ["listen"]']);
  assert.deepEqual(load(''), DEFAULTS);
  assert.deepEqual(load('# nothing but a comment\n'), DEFAULTS);
});

test('unknown keys are errors at every level', () => {
  rejects(
    `
unknownKey: 1
consul:
  agnets: []
  tls: {caFiel: x}
zones: [{name: corp, upstreams: ["10.0.0.1:53"], upstream: x}]
cache: {staleSeconds: {consul: 1, resolvers: 2}}
limits: {rate: {qpm: 1}, udp: {}}
`,
    [
      'unknownKey: unknown key',
      'consul.agnets: unknown key',
      'consul.tls.caFiel: unknown key',
      'zones[0].upstream: unknown key',
      'cache.staleSeconds.resolvers: unknown key',
      'limits.rate.qpm: unknown key',
      'limits.udp: unknown key',
    ],
  );
});

test('every problem is reported at once: flags, environment, file and cross-key checks together', () => {
  const problems = problemsOf(
    withFile(
      `
listen: ["127.0.0.1:53"]
maxUdpSize: 100
consul: {agents: ["127.0.0.1:8600", "8600"], aliases: [consul]}
recursors: ["127.0.0.1:53"]
upstream: {hedgeMs: 1000}
bogus: true
`,
      ['--metrics', 'nope', '--what'],
      { CONSUL_HTTP_ADDR: 'ftp://x' },
    ),
  );
  assert.deepEqual(problems, [
    '--what: unknown flag (see --help)',
    'maxUdpSize: expected an integer from 512 to 65535, got 100',
    'consul.agents[1]: expected host:port, got "8600"',
    'bogus: unknown key',
    'CONSUL_HTTP_ADDR: expected host:port or http(s)://host:port, got "ftp://x"',
    '--metrics: expected HOST:PORT or off, got "nope"',
    'upstream.hedgeMs: expected less than upstream.timeoutMs (1000), got 1000',
    'consul.aliases[0]: expected a name that neither equals, contains nor is inside the Consul domain "consul", got "consul"',
    'recursors[0]: expected an address other than our own listen address 127.0.0.1:53 (that would loop), got "127.0.0.1:53"',
  ]);
});

test('addresses: listen, agents, recursors, zone upstreams (IPv6 in brackets, ports, names)', () => {
  const c = load(`
listen: ["[::1]:53", "127.0.0.1:0", "[FE80::1%eth0]:5353", "0.0.0.0:5300"]
consul: {agents: ["[::1]:8600", "Consul-Agent:8600", "localhost:8601"]}
recursors: ["[2001:db8::53]:53", resolv.conf]
`);
  assert.deepEqual(c.listen, ['[::1]:53', '127.0.0.1:0', '[fe80::1%eth0]:5353', '0.0.0.0:5300']);
  assert.deepEqual(c.consul.agents, ['[::1]:8600', 'consul-agent:8600', 'localhost:8601']);
  assert.deepEqual(c.recursors, ['[2001:db8::53]:53', 'resolv.conf']);

  rejects('listen: ["x"]', ['listen[0]: expected host:port, got "x"']);
  rejects('listen: ["localhost:53"]', [
    'listen[0]: expected an IP address to listen on (not a name), got "localhost:53"',
  ]);
  rejects('listen: ["127.0.0.1:65536"]', ['listen[0]: expected a port from 0 to 65535, got "127.0.0.1:65536"']);
  rejects('listen: ["::1:53"]', ['listen[0]: expected host:port with IPv6 in brackets ([::1]:53), got "::1:53"']);
  rejects('listen: []', ['listen: expected at least one host:port, got []']);
  rejects('listen: "127.0.0.1:53"', ['listen: expected a list of host:port, got "127.0.0.1:53"']);
  rejects('listen: [53]', ['listen[0]: expected host:port, got 53']);
  rejects('consul: {agents: ["127.0.0.1:8600", "8600"]}', ['consul.agents[1]: expected host:port, got "8600"']);
  rejects('consul: {agents: ["127.0.0.1:0"]}', [
    'consul.agents[0]: expected a port from 1 to 65535, got "127.0.0.1:0"',
  ]);
  rejects('consul: {agents: ["0.0.0.0:8600"]}', [
    'consul.agents[0]: expected an address to send to (0.0.0.0 and :: mean "any" only for listening), got "0.0.0.0:8600"',
  ]);
  rejects('consul: {agents: ["[::]:8600"]}', [
    'consul.agents[0]: expected an address to send to (0.0.0.0 and :: mean "any" only for listening), got "[::]:8600"',
  ]);
  rejects('consul: {agents: ["300.1.1.1:8600"]}', ['consul.agents[0]: expected host:port, got "300.1.1.1:8600"']);
  rejects('consul: {agents: ["[consul]:8600"]}', ['consul.agents[0]: expected host:port, got "[consul]:8600"']);
  rejects('consul: {agents: []}', ['consul.agents: expected at least one host:port, got []']);
  rejects('recursors: ["8.8.8.8"]', ['recursors[0]: expected host:port or resolv.conf, got "8.8.8.8"']);
  rejects('recursors: ["/etc/resolv.conf"]', [
    'recursors[0]: expected host:port or resolv.conf, got "/etc/resolv.conf"',
  ]);
  rejects('recursors: ["127.0.0.1:99999"]', ['recursors[0]: expected a port from 1 to 65535, got "127.0.0.1:99999"']);
});

test('every address the configuration accepts is held canonical: file, flags and environment', () => {
  // A long-form upstream must be held as the kernel reports its replies' source (::1), or the
  // pool drops every reply as a mismatch.
  const c = load(`
listen: ["[0:0:0:0:0:0:0:1]:5300", "[FE80::0:1%eth0]:5353", "[::1%lo]:5354"]
consul:
  agents: ["[0:0:0:0:0:0:0:1]:8600", "[::FFFF:7F00:1]:8601"]
  http: ["http://[0:0::1]:8500", "[0::1]:8501", "https://[::ffff:127.0.0.1]:8502"]
  reverseZones: ["FD00:0:0::/8", "10.0.0.0/8"]
recursors: ["[0000::0001]:5301", resolv.conf]
zones: [{name: corp, upstreams: ["[2001:DB8:0:0::53]:53"]}]
metrics: {listen: "[0:0::1]:9153"}
acl: {allow: ["::FFFF:0:0/96", "0:0:0:0:0:0:0:1/128", "192.0.2.1"]}
`);
  assert.deepEqual(c.listen, ['[::1]:5300', '[fe80::1%eth0]:5353', '[::1]:5354']);
  assert.deepEqual(c.consul.agents, ['[::1]:8600', '[::ffff:127.0.0.1]:8601']);
  assert.deepEqual(c.consul.http, ['http://[::1]:8500', 'http://[::1]:8501', 'https://[::ffff:127.0.0.1]:8502']);
  assert.deepEqual(c.consul.reverseZones, ['fd00::/8', '10.0.0.0/8']);
  assert.deepEqual(c.recursors, ['[::1]:5301', 'resolv.conf']);
  assert.deepEqual(c.zones[0]!.upstreams, ['[2001:db8::53]:53']);
  assert.equal(c.metrics.listen, '[::1]:9153');
  assert.deepEqual(c.acl.allow, ['::ffff:0.0.0.0/96', '::1/128', '192.0.2.1']);

  // The flags and CONSUL_HTTP_ADDR go through the same checks.
  const f = loadConfig({
    argv: [
      '--listen',
      '[0::1]:5300',
      '--agent',
      '[0:0:0:0:0:0:0:1]:8600',
      '--recursor',
      '[0:0:0:0:0:0:0:1]:5301',
      '--metrics',
      '[0::1]:9153',
      '--consul-http',
      'http://[::FFFF:7F00:1]:8500',
    ],
    env: {},
    readFile: noFile,
  }).config;
  assert.deepEqual(f.listen, ['[::1]:5300']);
  assert.deepEqual(f.consul.agents, ['[::1]:8600']);
  assert.deepEqual(f.recursors, ['[::1]:5301']);
  assert.equal(f.metrics.listen, '[::1]:9153');
  assert.deepEqual(f.consul.http, ['http://[::ffff:127.0.0.1]:8500']);
  for (const addr of ['[0:0::1]:8500', 'http://[0:0::1]:8500'])
    assert.deepEqual(
      loadConfig({ argv: [], env: { CONSUL_HTTP_ADDR: addr }, readFile: noFile }).config.consul.http,
      ['http://[::1]:8500'],
      addr,
    );
});

test('DEFAULTS are written as the checks write them (canonical addresses, normalised names)', () => {
  const problems: string[] = [];
  assert.deepEqual(FILE_SCHEMA(structuredClone(DEFAULTS), '', problems), DEFAULTS);
  assert.deepEqual(problems, []);
});

test('loop guards: an agent, recursor or zone upstream that is one of our listen addresses', () => {
  const loop = (at: string, listen: string, got: string) =>
    `${at}: expected an address other than our own listen address ${listen} (that would loop), got "${got}"`;
  rejects('listen: ["127.0.0.1:53"]\nrecursors: ["127.0.0.1:53"]', [
    loop('recursors[0]', '127.0.0.1:53', '127.0.0.1:53'),
  ]);
  rejects('listen: ["[::1]:5300"]\nzones: [{name: corp, upstreams: ["10.0.0.1:53", "[0:0::1]:5300"]}]', [
    // The value as the configuration holds it: canonical.
    loop('zones[0].upstreams[1]', '[::1]:5300', '[::1]:5300'),
  ]);
  rejects('listen: ["127.0.0.1:8600"]', [loop('consul.agents[0]', '127.0.0.1:8600', '127.0.0.1:8600')]);
  // A wildcard listener takes every local address of its family; [::] is dual stack in Node.
  rejects('listen: ["0.0.0.0:53"]\nrecursors: ["127.0.0.53:53", "[::1]:53"]', [
    loop('recursors[0]', '0.0.0.0:53', '127.0.0.53:53'),
  ]);
  rejects('listen: ["[::]:53"]\nrecursors: ["127.0.0.53:53", "[::1]:53"]', [
    loop('recursors[0]', '[::]:53', '127.0.0.53:53'),
    loop('recursors[1]', '[::]:53', '[::1]:53'),
  ]);
  rejects('listen: ["127.0.0.1:53"]\nrecursors: ["localhost:53"]', [
    loop('recursors[0]', '127.0.0.1:53', 'localhost:53'),
  ]);
  rejects('recursors: ["127.0.0.1:8053"]', [loop('recursors[0]', '127.0.0.1:8053', '127.0.0.1:8053')]);
  assert.deepEqual(problemsOf({ argv: ['--listen', '127.0.0.1:5300', '--agent', '127.0.0.1:5300'], env: {} }), [
    loop('--agent', '127.0.0.1:5300', '127.0.0.1:5300'),
  ]);
  // Not loops: another port, another loopback address, port 0 (tests), a name we cannot judge.
  const ok = load(
    'listen: ["127.0.0.1:53", "127.0.0.1:0", "[::1]:5353"]\nrecursors: ["127.0.0.53:53", "127.0.0.1:5353", "resolver.example:53"]',
  );
  assert.deepEqual(ok.recursors, ['127.0.0.53:53', '127.0.0.1:5353', 'resolver.example:53']);
});

test('the metrics listener may not share a DNS listen address', () => {
  rejects('listen: ["127.0.0.1:5300"]\nmetrics: {listen: "127.0.0.1:5300"}', [
    'metrics.listen: expected an address not used by listen, got "127.0.0.1:5300"',
  ]);
  rejects('listen: ["0.0.0.0:5300"]\nmetrics: {listen: "127.0.0.1:5300"}', [
    'metrics.listen: expected an address not used by listen, got "127.0.0.1:5300"',
  ]);
  rejects('metrics: {listen: "localhost:9153"}', [
    'metrics.listen: expected an IP address to listen on (not a name), got "localhost:9153"',
  ]);
  rejects('metrics: {listen: false}', ['metrics.listen: expected host:port or off, got false']);
  assert.equal(load('listen: ["127.0.0.1:0"]\nmetrics: {listen: "127.0.0.1:0"}').metrics.listen, '127.0.0.1:0');
  assert.equal(load('metrics: {listen: off}').metrics.listen, 'off');
});

test('names: domain, aliases and zones are lowercase without a trailing dot', () => {
  const c = load(
    'consul: {domain: "Consul.", aliases: ["Starlings.", "Other.Example"]}\nzones: [{name: "Corp.Example.", upstreams: ["10.0.0.1:53"]}]',
  );
  assert.equal(c.consul.domain, 'consul');
  assert.deepEqual(c.consul.aliases, ['starlings', 'other.example']);
  assert.equal(c.zones[0]!.name, 'corp.example');

  rejects('consul: {domain: "a b"}', ['consul.domain: expected a domain name, got "a b"']);
  rejects('consul: {domain: ""}', ['consul.domain: expected a domain name, got ""']);
  rejects('consul: {domain: "."}', ['consul.domain: expected a domain name other than the root, got "."']);
  rejects('consul: {domain: 5}', ['consul.domain: expected a domain name, got 5']);
  rejects('consul: {aliases: [x..y]}', ['consul.aliases[0]: expected a domain name, got "x..y"']);
  rejects('consul: {aliases: starlings}', ['consul.aliases: expected a list of domain names, got "starlings"']);
});

test('aliases may not collide with the domain, each other, or a Consul keyword', () => {
  rejects('consul: {aliases: [Consul.]}', [
    'consul.aliases[0]: expected a name that neither equals, contains nor is inside the Consul domain "consul", got "consul"',
  ]);
  rejects('consul: {aliases: [dc1.consul]}', [
    'consul.aliases[0]: expected a name that neither equals, contains nor is inside the Consul domain "consul", got "dc1.consul"',
  ]);
  rejects('consul: {domain: consul.example, aliases: [example]}', [
    'consul.aliases[0]: expected a name that neither equals, contains nor is inside the Consul domain "consul.example", got "example"',
  ]);
  rejects('consul: {aliases: [foo, FOO.]}', [
    'consul.aliases[1]: expected a name that neither equals, contains nor is inside consul.aliases[0] "foo", got "foo"',
  ]);
  rejects('consul: {aliases: [foo, bar.foo]}', [
    'consul.aliases[1]: expected a name that neither equals, contains nor is inside consul.aliases[0] "foo", got "bar.foo"',
  ]);
  for (const keyword of ['service', 'node', 'query', 'addr', 'connect', 'virtual', 'ingress']) {
    rejects(`consul: {aliases: [${keyword}]}`, [
      `consul.aliases[0]: expected a name that does not start with a Consul keyword (service, node, query, addr, connect, virtual, ingress), got "${keyword}"`,
    ]);
  }
  // Consul's alt_domain rule (builder.go) is about the first label.
  rejects('consul: {aliases: [service.example]}', [
    'consul.aliases[0]: expected a name that does not start with a Consul keyword (service, node, query, addr, connect, virtual, ingress), got "service.example"',
  ]);
  assert.deepEqual(load('consul: {aliases: [example.node]}').consul.aliases, ['example.node']);
});

test('the starlings rule: the default alias drops out if the domain is starlings; a configured one is an error', () => {
  assert.deepEqual(loadConfig({ argv: ['--domain', 'starlings'], env: {} }).config.consul.aliases, []);
  assert.deepEqual(load('consul: {domain: Starlings.}').consul.aliases, []);
  assert.deepEqual(load('consul: {domain: dc1.starlings}').consul.aliases, [], 'any overlap with the default drops it');
  assert.deepEqual(load('consul: {domain: corp}').consul.aliases, ['starlings']);
  rejects('consul: {domain: starlings, aliases: [starlings]}', [
    'consul.aliases[0]: expected a name that neither equals, contains nor is inside the Consul domain "starlings", got "starlings"',
  ]);
  assert.deepEqual(problemsOf({ argv: ['--domain', 'starlings', '--alias', 'starlings'], env: {} }), [
    '--alias: expected a name that neither equals, contains nor is inside the Consul domain "starlings", got "starlings"',
  ]);
});

test('zones: names, upstreams, collisions with the Consul domain and aliases, duplicates', () => {
  const c = load(
    'zones: [{name: corp., upstreams: ["10.1.1.1:53", "ns.corp:53"]}, {name: consul.example.com, upstreams: ["10.1.1.2:53"]}]',
  );
  assert.deepEqual(c.zones, [
    { name: 'corp', upstreams: ['10.1.1.1:53', 'ns.corp:53'] },
    { name: 'consul.example.com', upstreams: ['10.1.1.2:53'] },
  ]);
  rejects('zones: [{name: ".", upstreams: ["10.1.1.1:53"]}]', [
    'zones[0].name: expected a zone name other than the root (the root goes to the recursors), got "."',
  ]);
  rejects('zones: [{name: corp}]', ['zones[0].upstreams: expected a list of host:port, got nothing']);
  rejects('zones: [{upstreams: ["10.1.1.1:53"]}]', ['zones[0].name: expected a zone name, got nothing']);
  rejects('zones: [{name: corp, upstreams: []}]', ['zones[0].upstreams: expected at least one host:port, got []']);
  rejects('zones: [{name: corp, upstreams: ["10.1.1.1"]}]', [
    'zones[0].upstreams[0]: expected host:port, got "10.1.1.1"',
  ]);
  rejects('zones: [corp]', ['zones[0]: expected a mapping, got "corp"']);
  rejects('zones: {corp: x}', ['zones: expected a list of {name, upstreams}, got {"corp":"x"}']);
  const outside = 'a name outside the Consul domain and its aliases (consul, starlings)';
  rejects('zones: [{name: consul., upstreams: ["10.1.1.1:53"]}]', [`zones[0].name: expected ${outside}, got "consul"`]);
  rejects('zones: [{name: dc1.consul, upstreams: ["10.1.1.1:53"]}]', [
    `zones[0].name: expected ${outside}, got "dc1.consul"`,
  ]);
  rejects('zones: [{name: starlings, upstreams: ["10.1.1.1:53"]}]', [
    `zones[0].name: expected ${outside}, got "starlings"`,
  ]);
  // A zone named like one of the proxy's own `zone` label values passed --check-config and then
  // failed at start (duplicate metric label): refused at load, naming the key.
  const own = "a zone name other than the proxy's own zone label values (consul, alias, recursor, none)";
  for (const name of ['recursor', 'Alias.', 'none']) {
    rejects(`zones: [{name: ${name}, upstreams: ["10.1.1.1:53"]}]`, [
      `zones[0].name: expected ${own}, got "${name.toLowerCase().replace(/\.$/, '')}"`,
    ]);
  }
  rejects(`consul: {domain: mesh, aliases: []}\nzones: [{name: consul, upstreams: ["10.1.1.1:53"]}]`, [
    `zones[0].name: expected ${own}, got "consul"`,
  ]);
  rejects('zones: [{name: corp, upstreams: ["10.1.1.1:53"]}, {name: Corp., upstreams: ["10.1.1.2:53"]}]', [
    'zones[1].name: expected a zone name not already used by zones[0], got "corp"',
  ]);
});

test('consul.http, token and tls', () => {
  const c = load(
    'consul: {http: ["http://127.0.0.1:8500", "https://[::1]:8501", "consul:8500", "HTTPS://Consul.Example/"]}',
  );
  assert.deepEqual(c.consul.http, [
    'http://127.0.0.1:8500',
    'https://[::1]:8501',
    'http://consul:8500',
    'https://consul.example:443',
  ]);
  rejects('consul: {http: ["ftp://127.0.0.1:21"]}', [
    'consul.http[0]: expected http(s)://host:port, got "ftp://127.0.0.1:21"',
  ]);
  rejects('consul: {http: ["http://127.0.0.1:8500/v1"]}', [
    'consul.http[0]: expected http(s)://host:port, got "http://127.0.0.1:8500/v1"',
  ]);
  rejects('consul: {http: ["http://user:pw@127.0.0.1:8500"]}', [
    'consul.http[0]: expected http(s)://host:port, got "http://user:pw@127.0.0.1:8500"',
  ]);
  rejects('consul: {http: ["http://127.0.0.1:0"]}', [
    'consul.http[0]: expected a port from 1 to 65535, got "http://127.0.0.1:0"',
  ]);
  rejects('consul: {http: ["http://1.2.3:8500"]}', [
    'consul.http[0]: expected http(s)://host:port, got "http://1.2.3:8500"',
  ]);
  rejects('consul: {http: []}', ['consul.http: expected at least one http(s)://host:port, got []']);
  rejects('consul: {token: 5}', ['consul.token: expected a string, got 5']);
  rejects('consul: {tls: {insecureSkipVerify: "yes"}}', [
    'consul.tls.insecureSkipVerify: expected true or false, got "yes"',
  ]);
  rejects('consul: {tls: {certFile: /c.pem}}', [
    'consul.tls.keyFile: expected a key file to go with consul.tls.certFile, got ""',
  ]);
  rejects('consul: {tls: {keyFile: /k.pem}}', [
    'consul.tls.certFile: expected a certificate file to go with consul.tls.keyFile, got ""',
  ]);
  rejects('consul: {tls: []}', ['consul.tls: expected a mapping, got []']);
  rejects('consul: "x"', ['consul: expected a mapping, got "x"']);
});

test('numbers and enumerations', () => {
  rejects('maxUdpSize: 511', ['maxUdpSize: expected an integer from 512 to 65535, got 511']);
  rejects('maxUdpSize: 65536', ['maxUdpSize: expected an integer from 512 to 65535, got 65536']);
  rejects('maxUdpSize: "1232"', ['maxUdpSize: expected an integer from 512 to 65535, got "1232"']);
  rejects('cache: {maxWatches: 1.5}', ['cache.maxWatches: expected a non-negative integer, got 1.5']);
  rejects('consul: {udpAnswerLimit: 0}', ['consul.udpAnswerLimit: expected an integer from 1 to 8, got 0']);
  rejects('consul: {udpAnswerLimit: 9}', ['consul.udpAnswerLimit: expected an integer from 1 to 8, got 9']);
  rejects('consul: {onlyPassing: 1}', ['consul.onlyPassing: expected true or false, got 1']);
  rejects('upstream: {timeoutMs: 0}', [
    'upstream.timeoutMs: expected a positive integer of milliseconds (at most 2147483647), got 0',
  ]);
  rejects('upstream: {deadlineMs: 3000000000}', [
    'upstream.deadlineMs: expected a positive integer of milliseconds (at most 2147483647), got 3000000000',
  ]);
  rejects('upstream: {probeIntervalMs: -1}', [
    'upstream.probeIntervalMs: expected a positive integer of milliseconds (at most 2147483647), got -1',
  ]);
  rejects('upstream: {maxFails: 0}', ['upstream.maxFails: expected a positive integer, got 0']);
  rejects('upstream: {maxInFlight: null}', ['upstream.maxInFlight: expected a positive integer, got null']);
  rejects('cache: {enabled: "no"}', ['cache.enabled: expected true or false, got "no"']);
  rejects('cache: {maxEntries: 0}', ['cache.maxEntries: expected a positive integer, got 0']);
  rejects('cache: {consulTtl: -1}', ['cache.consulTtl: expected a non-negative integer, got -1']);
  rejects('cache: {maxWatches: -1}', ['cache.maxWatches: expected a non-negative integer, got -1']);
  rejects('cache: {watchMinIntervalMs: 0}', [
    'cache.watchMinIntervalMs: expected a positive integer of milliseconds (at most 2147483647), got 0',
  ]);
  rejects('log: {level: verbose}', [
    'log.level: expected one of trace, debug, info, warn, error, fatal, silent, got "verbose"',
  ]);
  rejects('log: {queries: yes}', ['log.queries: expected true or false, got "yes"']);
  rejects('acl: {action: deny}', ['acl.action: expected one of refuse, drop, got "deny"']);
  rejects('limits: {rate: {action: block}}', ['limits.rate.action: expected one of refuse, drop, tc, got "block"']);
  rejects('limits: {rate: {qps: 0}}', ['limits.rate.qps: expected a positive number, got 0']);
  rejects('limits: {rate: {burst: 0}}', ['limits.rate.burst: expected a positive integer, got 0']);
  rejects('limits: {tcp: {idleTimeoutMs: 0, maxPipelined: 0}}', [
    'limits.tcp.idleTimeoutMs: expected a positive integer of milliseconds (at most 2147483647), got 0',
    'limits.tcp.maxPipelined: expected a positive integer, got 0',
  ]);
  const c = load(
    'limits: {rate: {enabled: true, qps: 0.5, action: tc}}\nacl: {action: drop}\nlog: {level: silent, queries: true}',
  );
  assert.deepEqual(c.limits.rate, { enabled: true, qps: 0.5, burst: 200, action: 'tc' });
  assert.equal(c.acl.action, 'drop');
  assert.deepEqual(c.log, { level: 'silent', queries: true });
});

test('upstream timing: hedgeMs < timeoutMs <= deadlineMs', () => {
  rejects('upstream: {hedgeMs: 1000}', ['upstream.hedgeMs: expected less than upstream.timeoutMs (1000), got 1000']);
  rejects('upstream: {timeoutMs: 4000}', ['upstream.timeoutMs: expected at most upstream.deadlineMs (3000), got 4000']);
  rejects('upstream: {timeoutMs: 40, deadlineMs: 30}', [
    'upstream.hedgeMs: expected less than upstream.timeoutMs (40), got 50',
    'upstream.timeoutMs: expected at most upstream.deadlineMs (30), got 40',
  ]);
  assert.equal(load('upstream: {hedgeMs: 10, timeoutMs: 3000, deadlineMs: 3000}').upstream.timeoutMs, 3000);
});

test('upstream.recursorProbe is "NAME TYPE" with a known type', () => {
  assert.equal(load('upstream: {recursorProbe: "Example.COM. aaaa"}').upstream.recursorProbe, 'example.com AAAA');
  assert.equal(load('upstream: {recursorProbe: ".  soa"}').upstream.recursorProbe, '. SOA');
  for (const bad of ['x', '. BOGUS', 'a..b A', '. NS extra', '']) {
    rejects(`upstream: {recursorProbe: "${bad}"}`, [
      `upstream.recursorProbe: expected "NAME TYPE" with a known type (such as ". NS"), got "${bad}"`,
    ]);
  }
  assert.deepEqual(parseProbe('. NS'), { name: '', type: 2 });
  assert.deepEqual(parseProbe('Example.com. txt'), { name: 'example.com', type: 16 });
  assert.throws(() => parseProbe('. TYPE99'), ConfigError);
});

test('cache.staleSeconds: a number sets both, a mapping merges over the defaults', () => {
  assert.deepEqual(load('cache: {staleSeconds: 0}').cache.staleSeconds, { consul: 0, recursors: 0 });
  assert.deepEqual(load('cache: {staleSeconds: {consul: 10}}').cache.staleSeconds, { consul: 10, recursors: 86400 });
  rejects('cache: {staleSeconds: "5m"}', [
    'cache.staleSeconds: expected a number of seconds or {consul, recursors}, got "5m"',
  ]);
  rejects('cache: {staleSeconds: -1}', ['cache.staleSeconds: expected a non-negative integer, got -1']);
  rejects('cache: {staleSeconds: {recursors: 1.5}}', [
    'cache.staleSeconds.recursors: expected a non-negative integer, got 1.5',
  ]);
});

test('acl.allow and consul.reverseZones are CIDR lists', () => {
  const c = load(
    'acl: {allow: ["10.0.0.0/8", "::/0", "192.0.2.1"]}\nconsul: {reverseZones: ["10.0.0.0/8", "fd00::/8"]}',
  );
  assert.deepEqual(c.acl.allow, ['10.0.0.0/8', '::/0', '192.0.2.1']);
  assert.deepEqual(c.consul.reverseZones, ['10.0.0.0/8', 'fd00::/8']);
  rejects('acl: {allow: []}', ['acl.allow: expected at least one CIDR (0.0.0.0/0 and ::/0 allow everyone), got []']);
  rejects('acl: {allow: ["10.0.0.0/33"]}', ['acl.allow[0]: expected a CIDR such as 10.0.0.0/8, got "10.0.0.0/33"']);
  rejects('acl: {allow: ["fc00::/129", "corp"]}', [
    'acl.allow[0]: expected a CIDR such as 10.0.0.0/8, got "fc00::/129"',
    'acl.allow[1]: expected a CIDR such as 10.0.0.0/8, got "corp"',
  ]);
  rejects('consul: {reverseZones: ["10.0.0/8"]}', [
    'consul.reverseZones[0]: expected a CIDR such as 10.0.0.0/8, got "10.0.0/8"',
  ]);
});

test('parseHostPort and formatHostPort', () => {
  assert.deepEqual(parseHostPort('[::1]:53'), { host: '::1', port: 53 });
  assert.deepEqual(parseHostPort('127.0.0.1:0'), { host: '127.0.0.1', port: 0 });
  assert.deepEqual(parseHostPort('Consul.Service:8600'), { host: 'consul.service', port: 8600 });
  assert.deepEqual(parseHostPort('[::ffff:10.0.0.1]:53'), { host: '::ffff:10.0.0.1', port: 53 });
  for (const bad of [
    '8600',
    '::1:53',
    '[::1]',
    '[::1]53',
    '1.2.3.4:99999',
    '[consul]:53',
    'a b:53',
    ':53',
    '1.2.3.4:',
  ]) {
    assert.throws(
      () => parseHostPort(bad),
      (e: unknown) => e instanceof ConfigError && e.problems.length === 1,
      bad,
    );
  }
  assert.equal(formatHostPort({ host: '::1', port: 53 }), '[::1]:53');
  assert.equal(formatHostPort({ host: '10.0.0.1', port: 53 }), '10.0.0.1:53');
});

test('parseCidr and the ACL matcher (IPv4-mapped IPv6 included)', () => {
  assert.deepEqual(parseCidr('10.1.2.3/8'), { family: 4, bytes: Buffer.from([10, 0, 0, 0]), prefix: 8 });
  assert.deepEqual(parseCidr('192.0.2.1'), { family: 4, bytes: Buffer.from([192, 0, 2, 1]), prefix: 32 });
  const v6 = parseCidr('fe80::1/10');
  assert.equal(v6.family, 6);
  assert.equal(v6.prefix, 10);
  assert.equal(v6.bytes.toString('hex'), 'fe800000000000000000000000000000');
  for (const bad of [
    '10.0.0.0/33',
    '::/129',
    '10.0.0.0/',
    '10.0.0.0/08',
    '1.2.3.4.5/8',
    'fe80::1%eth0/64',
    '1::2::3/64',
    'x',
  ]) {
    assert.throws(() => parseCidr(bad), ConfigError, bad);
  }
  const cases: [string, string, boolean][] = [
    ['10.0.0.0/8', '10.255.1.2', true],
    ['10.0.0.0/8', '11.0.0.1', false],
    ['172.16.0.0/12', '172.31.255.255', true],
    ['172.16.0.0/12', '172.32.0.1', false],
    ['10.0.0.0/8', '::ffff:10.1.2.3', true],
    ['127.0.0.0/8', '::ffff:127.0.0.1', true],
    ['10.0.0.0/8', '::10.1.2.3', false],
    ['10.0.0.0/8', '2001:db8::1', false],
    ['::1/128', '::1', true],
    ['::1/128', '127.0.0.1', false],
    ['fc00::/7', 'fd12:3456::1', true],
    ['fc00::/7', 'fe00::1', false],
    ['fe80::/10', 'fe80::1%eth0', true],
    ['fe80::/10', 'febf::1', true],
    ['fe80::/10', 'fec0::1', false],
    ['::ffff:0:0/96', '10.1.2.3', true],
    ['::/0', '192.0.2.1', true],
    ['0.0.0.0/0', '::1', false],
    ['0.0.0.0/0', 'not-an-ip', false],
    ['10.0.0.0/8', '', false],
  ];
  for (const [net4or6, address, expected] of cases) {
    assert.equal(new Acl([net4or6]).allows(address), expected, `${address} in ${net4or6}`);
  }
});

test('the ACL over the default allow list agrees with its networks one by one', () => {
  const acl = new Acl(DEFAULTS.acl.allow);
  const allowed = (a: string): boolean => acl.allows(a);
  const addresses = [
    '127.0.0.1',
    '127.9.9.9',
    '::1',
    '::ffff:127.0.0.1',
    '10.1.1.1',
    '::ffff:10.1.1.1',
    '172.20.0.1',
    '192.168.1.1',
    '100.64.0.1',
    '169.254.1.1',
    'fd00::1',
    'fe80::1%eth0',
    '8.8.8.8',
    '::ffff:8.8.8.8',
    '2001:db8::1',
    '172.32.0.1',
    '100.128.0.1',
    '::',
    '0.0.0.0',
    '01.2.3.4',
    '1.2.3',
    'garbage',
  ];
  for (const a of addresses) {
    assert.equal(
      allowed(a),
      DEFAULTS.acl.allow.some((c) => new Acl([c]).allows(a)),
      a,
    );
  }
  assert.equal(allowed('8.8.8.8'), false);
  assert.equal(allowed('::ffff:10.1.1.1'), true);
  assert.equal(new Acl(['0.0.0.0/0', '::/0']).allows('2001:db8::1'), true);
});

test('expandResolvConf: nameservers on port 53 minus our own addresses', () => {
  const text = [
    '# generated',
    'search corp.example',
    'options edns0 ndots:2',
    'nameserver 127.0.0.1',
    'nameserver 127.0.0.53 # systemd-resolved',
    '; comment',
    'nameserver ::1',
    'nameserver 10.0.0.5',
    'nameserver 192.0.2.53',
    'nameserver 2001:db8::53',
    'nameserver fe80::1%eth0',
    'nameserver 0:0:0:0:0:0:0:1',
    'nameserver 2001:DB8:0::53',
    'nameserver ::1%lo',
    'nameserver 192.0.2.53',
    'nameserver 0.0.0.0',
    'nameserver not-an-ip',
    'nameserver',
    '  nameserver\t198.51.100.1  ',
  ].join('\n');
  const all = [
    '127.0.0.1:53',
    '127.0.0.53:53',
    '[::1]:53',
    '10.0.0.5:53',
    '192.0.2.53:53',
    '[2001:db8::53]:53',
    '[fe80::1%eth0]:53',
    '198.51.100.1:53',
  ];
  const hp = (s: string) => parseHostPort(s);
  // Not on port 53: nothing in resolv.conf can be us.
  assert.deepEqual(expandResolvConf(text, [hp('127.0.0.1:8053'), hp('0.0.0.0:5353')]), all);
  // A specific address on 53: only that address.
  assert.deepEqual(
    expandResolvConf(text, [hp('127.0.0.1:53')]),
    all.filter((s) => s !== '127.0.0.1:53'),
  );
  // 0.0.0.0:53: every IPv4 loopback address and the host's own IPv4 addresses, not ::1.
  assert.deepEqual(expandResolvConf(text, [hp('0.0.0.0:53')], ['10.0.0.5', '2001:db8::53']), [
    '[::1]:53',
    '192.0.2.53:53',
    '[2001:db8::53]:53',
    '[fe80::1%eth0]:53',
    '198.51.100.1:53',
  ]);
  // [::]:53 is dual stack: loopback and local addresses of both families.
  assert.deepEqual(expandResolvConf(text, [hp('[::]:53')], ['10.0.0.5', '2001:db8::53']), [
    '192.0.2.53:53',
    '[fe80::1%eth0]:53',
    '198.51.100.1:53',
  ]);
  assert.deepEqual(
    expandResolvConf(text, [hp('[::1]:53')]),
    all.filter((s) => s !== '[::1]:53'),
  );
  assert.deepEqual(expandResolvConf('', [hp('127.0.0.1:53')]), []);
});

test('the configuration example in the README is valid as written', () => {
  const readme = readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');
  const section = readme.slice(readme.indexOf('## Configuration'));
  const m = /```yaml\n([\s\S]*?)```/.exec(section);
  assert.ok(m, 'a yaml block in the Configuration section');
  const c = load(m[1]!);
  assert.deepEqual(c.consul.aliases, ['starlings']);
  assert.deepEqual(c.acl.allow.slice(0, 2), ['127.0.0.0/8', '::1/128']);
});
