/**
 * The architecture rule: src/ is layered and every import points down the list below. A layer may
 * import itself, the layers below it and the shared root modules (errors.ts, version.ts); nothing
 * else in src/. upstream/ and consul/ sit side by side and do not import each other: the pool
 * knows nothing of health watches, and the watches fetch through their own HTTP client.
 *
 *   app.ts, cli.ts   wiring and the command line: may import anything
 *   server/          UDP/TCP listeners, the admin HTTP listener
 *   query/           the pipeline (QueryHandler), router, alias, gate (ACL, rate limit), loop guard
 *   cache/           the answer cache, its rules, cacheKey(), rendering a reply for a client
 *   upstream/ consul/  the upstream pool | health watches, Consul names, the service key
 *   config/          schema, checks, load, flags
 *   net/             addresses, CIDR, host:port, resolv.conf
 *   observability/   metrics and logging
 *   dns/             raw-byte reads, the codec, constants: imports nothing else from src/
 *
 * Each layer also lists the flat file names it had before src/ was grouped into folders, so the
 * rule reports on either tree; those names can go once no flat file is left.
 */
const LAYERS = {
  dns: ['src/dns/', 'src/wire\\.ts$', 'src/message\\.ts$'],
  observability: ['src/observability/', 'src/log\\.ts$', 'src/metrics\\.ts$'],
  net: ['src/net/'],
  config: ['src/config/', 'src/config\\.ts$'],
  upstream: ['src/upstream/', 'src/upstream\\.ts$'],
  consul: ['src/consul/', 'src/health\\.ts$', 'src/consul-names\\.ts$'],
  cache: ['src/cache/', 'src/cache\\.ts$', 'src/render\\.ts$'],
  query: ['src/query/', 'src/proxy\\.ts$', 'src/router\\.ts$', 'src/alias\\.ts$', 'src/gate\\.ts$', 'src/loop\\.ts$'],
  server: ['src/server/', 'src/server\\.ts$', 'src/admin\\.ts$'],
};
/** Root modules every layer may use; they themselves import only dns/. */
const SHARED = ['src/errors\\.ts$', 'src/version\\.ts$'];

/** What each layer may import besides itself and SHARED. */
const ALLOWED = {
  dns: [],
  observability: ['dns'],
  net: ['dns', 'observability'],
  config: ['dns', 'observability', 'net'],
  upstream: ['dns', 'observability', 'net', 'config'],
  consul: ['dns', 'observability', 'net', 'config'],
  cache: ['dns', 'observability', 'net', 'config', 'upstream', 'consul'],
  query: ['dns', 'observability', 'net', 'config', 'upstream', 'consul', 'cache'],
  server: ['dns', 'observability', 'net', 'config', 'upstream', 'consul', 'cache', 'query'],
};

const anyOf = (patterns) => `^(${patterns.join('|')})`;

const layerRules = Object.entries(ALLOWED).map(([layer, below]) => ({
  name: `layer-${layer}`,
  comment: `src/${layer}/ may import only ${below.length ? below.map((l) => `${l}/`).join(', ') : 'nothing else in src/'} (and errors.ts, version.ts)`,
  severity: 'error',
  from: { path: anyOf(LAYERS[layer]) },
  to: {
    path: '^src/',
    pathNot: anyOf([...LAYERS[layer], ...below.flatMap((l) => LAYERS[l]), ...SHARED]),
  },
}));

module.exports = {
  forbidden: [
    ...layerRules,
    {
      name: 'layer-shared',
      comment: 'errors.ts and version.ts are used by every layer, so they may import only dns/',
      severity: 'error',
      from: { path: anyOf(SHARED) },
      to: { path: '^src/', pathNot: anyOf([...SHARED, ...LAYERS.dns]) },
    },
    {
      name: 'no-circular',
      comment: 'no import cycles, type-only imports included',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'src-not-to-test-or-bench',
      comment: 'shipped code never imports the tests, their support code or the benchmarks',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^(test|bench)/' },
    },
    {
      name: 'src-not-to-dev-dep',
      comment:
        'shipped code uses only "dependencies": dns2 and consul are devDependencies, used by tests and bench only',
      severity: 'error',
      from: { path: '^src/' },
      to: { dependencyTypes: ['npm-dev'], dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'no-orphans',
      comment: 'every file in src/ is imported by something or imports something',
      severity: 'error',
      from: { orphan: true, path: '^src/', pathNot: '\\.d\\.ts$' },
      to: {},
    },
    {
      name: 'not-to-unresolvable',
      comment: 'every import resolves to a file or an installed package',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
    {
      name: 'no-non-package-json',
      comment: 'every package imported is declared in package.json',
      severity: 'error',
      from: {},
      to: { dependencyTypes: ['npm-no-pkg', 'npm-unknown'] },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^dist/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
      extensions: ['.ts', '.js', '.json'],
    },
    reporterOptions: { text: { highlightFocused: true } },
  },
};
