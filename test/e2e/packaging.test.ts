/**
 * Packaging contracts (issue 7), checked from the files themselves so that they hold on machines
 * with no Docker engine: the compose file reproduces the seed's Janus HA topology (three Consul
 * servers, two Janus hosts with the seed's service definition and TCP check, an Alien4Cloud host
 * whose resolver is the proxy); every example configuration passes `--check-config`; the
 * Dockerfile keeps its promises (multi-stage, numeric non-root user, HEALTHCHECK on /health,
 * EXPOSE 53/udp 53/tcp 9153, ENTRYPOINT on the built CLI, BASE_IMAGE argument); .dockerignore keeps
 * the context small; the systemd unit has the capability, restart policy and reload; docker/e2e.sh
 * skips plainly without an engine. The image itself is built and queried by docker/image-test.sh.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, existsSync, mkdtempSync, writeFileSync, chmodSync, rmSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const CLI = join(ROOT, 'dist/src/cli.js');
const read = (rel: string): string => readFileSync(join(ROOT, rel), 'utf8');

// ---------------------------------------------------------------------------------------------
// docker/compose.yaml

interface Service {
  image?: string;
  build?: { context?: string; dockerfile?: string; dockerfile_inline?: string };
  command?: string | string[];
  volumes?: string[];
  networks?: Record<string, { ipv4_address?: string } | null>;
  network_mode?: string;
  depends_on?: string[] | Record<string, unknown>;
}
// Compose uses YAML merge keys (<<: *anchor), a YAML 1.1 feature the yaml package needs asked for.
const compose = parse(read('docker/compose.yaml'), { merge: true }) as { services: Record<string, Service> };
const services = compose.services;
const cmd = (s: Service): string => (Array.isArray(s.command) ? s.command.join(' ') : (s.command ?? ''));
const ipOf = (s: Service): string | undefined => Object.values(s.networks ?? {})[0]?.ipv4_address ?? undefined;
/** Host-side paths (relative to docker/) of a service's bind mounts, keyed by container path. */
function mounts(s: Service): Map<string, string> {
  const m = new Map<string, string>();
  for (const v of s.volumes ?? []) {
    const [src, dst] = v.split(':');
    if (src !== undefined && dst !== undefined) m.set(dst, src);
  }
  return m;
}
const dockerFile = (rel: string): string => read(join('docker', rel));
const consulImage = (s: Service): boolean => /hashicorp\/consul:/.test(s.image ?? '');

test('compose: three Consul servers from the real hashicorp/consul image, bootstrap_expect 3', () => {
  const servers = Object.entries(services).filter(
    ([, s]) => consulImage(s) && [...mounts(s).keys()].some((k) => k.endsWith('server.hcl')),
  );
  assert.equal(servers.length, 3, `servers: ${servers.map(([n]) => n).join(', ')}`);
  const hcl = dockerFile('consul/server.hcl');
  assert.match(hcl, /^\s*server\s*=\s*true/m);
  assert.match(hcl, /^\s*bootstrap_expect\s*=\s*3/m);
  const ips = servers.map(([, s]) => ipOf(s));
  for (const ip of ips) {
    assert.ok(ip, 'each server has a fixed address');
    assert.ok(hcl.includes(`"${ip}"`), `server.hcl retry_join lists ${ip}`);
  }
  assert.equal(new Set(servers.map(([, s]) => cmd(s).match(/-node=(\S+)/)?.[1])).size, 3, 'distinct node names');
  // The proxy fails over to the servers' DNS: it must listen beyond loopback.
  assert.match(hcl, /client_addr\s*=\s*"0\.0\.0\.0"/);
});

test('compose: two Janus hosts, each an agent with the seed service definition and a server on 8800', () => {
  const agents = Object.entries(services).filter(
    ([, s]) => consulImage(s) && [...mounts(s).keys()].some((k) => /janus\.json$/.test(k)),
  );
  assert.equal(agents.length, 2);
  const ids = new Set<string>();
  for (const [name, s] of agents) {
    const ip = ipOf(s);
    assert.ok(ip, `${name} has a fixed address`);
    const src = [...mounts(s).entries()].find(([k]) => k.endsWith('janus.json'))![1];
    const def = JSON.parse(dockerFile(src)) as {
      service: {
        name: string;
        tags: string[];
        address: string;
        port: number;
        check: { name: string; tcp: string; interval: string };
      };
    };
    // ystia/yorc doc/ha.rst (Janus era): {"service":{"name":"janus","tags":["server","{JANUS_ID}"],
    // "address":"{PUBLIC_JANUS_IP}","port":8800,"check":{"name":"TCP check on port 8800",
    // "tcp":"{PUBLIC_JANUS_IP}:8800","interval":"10s"}}}
    assert.equal(def.service.name, 'janus');
    assert.equal(def.service.tags.length, 2);
    assert.equal(def.service.tags[0], 'server');
    ids.add(def.service.tags[1]!);
    assert.equal(def.service.address, ip);
    assert.equal(def.service.port, 8800);
    assert.deepEqual(def.service.check, { name: 'TCP check on port 8800', tcp: `${ip}:8800`, interval: '10s' });
    assert.ok(
      [...mounts(s).keys()].some((k) => k.endsWith('client.hcl')),
      `${name} is a client agent`,
    );
    assert.doesNotMatch(cmd(s), /-server\b/);
    // The Janus stand-in shares the agent's network namespace (one host, one address) on 8800.
    const janus = Object.values(services).filter((j) => j.network_mode === `service:${name}`);
    assert.equal(janus.length, 1, `one Janus stand-in on ${name}`);
    assert.match(cmd(janus[0]!), /-p 8800\b|8800/);
  }
  assert.equal(ids.size, 2, 'unique JANUS_IDs');
});

test('compose: the Alien4Cloud host resolves through the proxy, which fails over to the servers', async () => {
  const proxyEntry = Object.entries(services).find(([, s]) => s.build?.dockerfile === 'docker/Dockerfile');
  assert.ok(proxyEntry, 'a service built from docker/Dockerfile');
  const [, proxy] = proxyEntry;
  assert.equal(proxy.build?.context, '..');
  const host = proxy.network_mode?.replace(/^service:/, '');
  assert.ok(host && services[host], "the proxy shares the Alien4Cloud host's network namespace");
  // The host's Consul client agent is in the same namespace (stopping it leaves the host's network up).
  const agent = Object.values(services).find((s) => s.network_mode === proxy.network_mode && consulImage(s));
  assert.ok(
    agent && [...mounts(agent).keys()].some((k) => k.endsWith('client.hcl')),
    'that host runs a Consul client agent',
  );

  const cfgSrc = mounts(proxy).get('/etc/consul-dns-proxy/config.yaml');
  assert.ok(cfgSrc, "the proxy gets its config mounted at the image's config path");
  const cfg = parse(dockerFile(cfgSrc)) as { consul: { agents: string[]; aliases?: string[] }; listen: string[] };
  assert.equal(cfg.consul.agents[0], '127.0.0.1:8600', 'the local agent first');
  const serverIps = Object.values(services)
    .filter((s) => consulImage(s) && [...mounts(s).keys()].some((k) => k.endsWith('server.hcl')))
    .map((s) => `${ipOf(s)}:8600`);
  assert.deepEqual(cfg.consul.agents.slice(1), serverIps, 'then the three servers');
  assert.ok(cfg.consul.aliases?.includes('starlings'));
  assert.ok(cfg.listen.some((l) => l.endsWith(':53')));
  await checkConfig(join(ROOT, 'docker', cfgSrc));

  // The host itself is the client: its resolver is the proxy, and it has getent, dig and curl.
  const a4c = services[host];
  const resolv = mounts(a4c).get('/etc/resolv.conf');
  assert.ok(resolv);
  assert.match(dockerFile(resolv), /^nameserver 127\.0\.0\.1$/m);
  assert.equal(a4c.build?.dockerfile, 'a4c.Dockerfile');
  assert.match(dockerFile('a4c.Dockerfile'), /bind9-dnsutils/, 'the host has dig');
  assert.match(dockerFile('a4c.Dockerfile'), /\bcurl\b/, 'the host has curl');
});

// ---------------------------------------------------------------------------------------------
// Example configurations

/** `node dist/src/cli.js --check-config --config FILE` must exit 0 (it sends nothing). */
async function checkConfig(file: string): Promise<void> {
  if (!existsSync(CLI)) return; // built by `npm test`; the assertion below runs in the full suite
  try {
    await run(process.execPath, [CLI, '--check-config', '--config', file], {
      timeout: 20_000,
      env: { PATH: process.env.PATH ?? '' },
    });
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; code?: number };
    assert.fail(`--check-config ${file} exited ${err.code}: ${err.stderr ?? ''}${err.stdout ?? ''}`);
  }
}

const examples = [
  ...readdirSync(join(ROOT, 'config'))
    .filter((f) => f.endsWith('.yaml'))
    .map((f) => `config/${f}`),
  'docker/config.yaml',
  'docker/a4c-proxy.yaml',
];

test(
  'every example configuration passes --check-config',
  { skip: existsSync(CLI) ? false : 'dist/src/cli.js not built' },
  async () => {
    for (const required of ['config/alien4cloud-host.yaml', 'config/docker-sidecar.yaml', 'config/ha-agents.yaml']) {
      assert.ok(examples.includes(required), `${required} exists`);
    }
    for (const f of examples) await checkConfig(join(ROOT, f));
  },
);

test(
  '--check-config rejects a broken file (the check above can fail)',
  { skip: existsSync(CLI) ? false : 'dist/src/cli.js not built' },
  async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cdp-pkg-'));
    try {
      const bad = join(dir, 'bad.yaml');
      writeFileSync(bad, 'listen: ["127.0.0.1:53"]\nconsul:\n  agentz: ["127.0.0.1:8600"]\n');
      await assert.rejects(
        run(process.execPath, [CLI, '--check-config', '--config', bad], { timeout: 20_000 }),
        (e: { code?: number }) => e.code === 2,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);

test('the A4C example: loopback listener, local agent first then servers, no resolv.conf loop', () => {
  const cfg = parse(read('config/alien4cloud-host.yaml')) as {
    listen: string[];
    consul: { agents: string[] };
    recursors: string[];
  };
  assert.deepEqual(cfg.listen, ['127.0.0.1:53']);
  assert.equal(cfg.consul.agents[0], '127.0.0.1:8600');
  assert.ok(cfg.consul.agents.length >= 4, 'local agent + three servers');
  // /etc/resolv.conf points at this proxy on that host: recursors must be the site resolvers.
  assert.ok(cfg.recursors.length > 0 && !cfg.recursors.includes('resolv.conf'));
  // Example addresses only from the RFC 5737 documentation ranges (tests never send to them).
  for (const a of [...cfg.consul.agents, ...cfg.recursors]) assert.match(a, /^(127\.0\.0\.1|192\.0\.2\.\d+):\d+$/);
});

// ---------------------------------------------------------------------------------------------
// docker/Dockerfile

interface Instr {
  op: string;
  args: string;
}
/** Instructions of a Dockerfile: continuation lines joined, comments and blank lines dropped. */
function instructions(text: string): Instr[] {
  const out: Instr[] = [];
  let cur = '';
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    if (cur === '' && /^\s*(#|$)/.test(line)) continue;
    if (/^\s*#/.test(line)) continue; // comment inside a continued instruction
    if (line.endsWith('\\')) {
      cur += line.slice(0, -1) + ' ';
      continue;
    }
    cur += line;
    const m = /^\s*(\S+)\s*(.*)$/s.exec(cur);
    if (m) out.push({ op: m[1]!.toUpperCase(), args: m[2]!.trim() });
    cur = '';
  }
  return out;
}
const df = instructions(read('docker/Dockerfile'));
const all = (op: string): Instr[] => df.filter((i) => i.op === op);

test('Dockerfile: BASE_IMAGE argument, multi-stage npm ci / build / production dependencies', () => {
  const firstFrom = df.findIndex((i) => i.op === 'FROM');
  const arg = df.slice(0, firstFrom).find((i) => i.op === 'ARG' && i.args.startsWith('BASE_IMAGE'));
  assert.equal(arg?.args, 'BASE_IMAGE=node:20-bookworm-slim');
  const froms = all('FROM');
  assert.ok(froms.length >= 2, 'multi-stage');
  for (const f of froms) assert.match(f.args, /^\$\{?BASE_IMAGE\}?\b/);
  const runs = all('RUN')
    .map((r) => r.args)
    .join('\n');
  assert.match(runs, /npm ci\b/);
  assert.match(runs, /tsc -p|npm run build/);
  assert.match(runs, /--omit=dev/);
  assert.match(runs, /setcap cap_net_bind_service=\+ep/);
  // The compile config covers src/ only (tests are not in the build context).
  const tsb = read('docker/tsconfig.build.json').replace(/^\s*\/\/.*$/gm, '');
  assert.deepEqual((JSON.parse(tsb) as { include: string[] }).include, ['../src/**/*.ts']);
});

test('Dockerfile: numeric non-root USER, HEALTHCHECK on /health, EXPOSE, ENTRYPOINT on the built CLI', () => {
  const lastFrom = df.map((i) => i.op).lastIndexOf('FROM');
  const runtime = df.slice(lastFrom);
  const users = runtime.filter((i) => i.op === 'USER');
  assert.equal(users.length, 1);
  const m = /^(\d+)(?::(\d+))?$/.exec(users[0]!.args);
  assert.ok(m, `USER ${users[0]!.args} is numeric`);
  assert.notEqual(Number(m[1]), 0, 'not root');
  if (m[2] !== undefined) assert.notEqual(Number(m[2]), 0, 'not the root group');

  const hc = runtime.find((i) => i.op === 'HEALTHCHECK');
  assert.ok(hc, 'HEALTHCHECK');
  assert.match(hc.args, /CMD \["node"/, 'runs node itself (no curl in slim images)');
  const env = runtime
    .filter((i) => i.op === 'ENV')
    .map((i) => i.args)
    .join(' ');
  const healthUrl = /CONSUL_DNS_PROXY_HEALTH_URL=(\S+)/.exec(env)?.[1];
  assert.ok(healthUrl && hc.args.includes('CONSUL_DNS_PROXY_HEALTH_URL'));
  assert.match(healthUrl, /^http:\/\/127\.0\.0\.1:9153\/health$/);

  const exposed = new Set(runtime.filter((i) => i.op === 'EXPOSE').flatMap((i) => i.args.split(/\s+/)));
  for (const p of ['53/udp', '53/tcp', '9153']) assert.ok(exposed.has(p), `EXPOSE ${p}`);

  const ep = runtime.find((i) => i.op === 'ENTRYPOINT');
  assert.ok(ep);
  assert.deepEqual(JSON.parse(ep.args), ['node', '/app/dist/src/cli.js']);
  // The default config comes from the environment, so flags after the image name keep it.
  const cfgPath = /CONSUL_DNS_PROXY_CONFIG=(\S+)/.exec(env)?.[1];
  assert.equal(cfgPath, '/etc/consul-dns-proxy/config.yaml');
  assert.ok(runtime.some((i) => i.op === 'COPY' && i.args === `docker/config.yaml ${cfgPath}`));
  // The image's config listens on 53 inside the container and serves /health on 9153.
  const cfg = parse(read('docker/config.yaml')) as { listen: string[]; metrics: { listen: string } };
  assert.ok(cfg.listen.includes('0.0.0.0:53'));
  assert.equal(cfg.metrics.listen, '0.0.0.0:9153');
});

// Docker's .dockerignore semantics, enough for these patterns: the last matching line wins, and a
// pattern that matches a parent folder matches everything under it.
function ignored(patterns: string[], path: string): boolean {
  const parts = path.split('/');
  let out = false;
  for (const raw of patterns) {
    const neg = raw.startsWith('!');
    const pat = (neg ? raw.slice(1) : raw).replace(/\/+$/, '');
    const re = new RegExp(
      '^' +
        pat
          .split('**')
          .map((s) =>
            s
              .replace(/[.+^${}()|[\]\\]/g, '\\$&')
              .replace(/\*/g, '[^/]*')
              .replace(/\?/g, '[^/]'),
          )
          .join('.*') +
        '$',
    );
    for (let i = 1; i <= parts.length; i++) {
      if (re.test(parts.slice(0, i).join('/'))) {
        out = !neg;
        break;
      }
    }
  }
  return out;
}

test('.dockerignore keeps the context to what the build needs', () => {
  const patterns = read('.dockerignore')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  for (const p of [
    'node_modules/yaml/package.json',
    'dist/src/cli.js',
    '.git/HEAD',
    'test/e2e/proxy.test.ts',
    'bench/run.ts',
    'docker/compose.yaml',
  ]) {
    assert.ok(ignored(patterns, p), `${p} is left out`);
  }
  // Everything the Dockerfile COPYs from the context.
  for (const p of [
    'package.json',
    'package-lock.json',
    'tsconfig.json',
    'src/cli.ts',
    'config/default.yaml',
    'docker/tsconfig.build.json',
    'docker/config.yaml',
  ]) {
    assert.ok(!ignored(patterns, p), `${p} is sent`);
  }
  for (const c of all('COPY').filter((i) => !i.args.startsWith('--from'))) {
    const srcs = c.args.split(/\s+/).slice(0, -1);
    for (const s of srcs) assert.ok(!ignored(patterns, s.replace(/\/$/, '')), `COPY source ${s} is in the context`);
  }
});

// ---------------------------------------------------------------------------------------------
// systemd unit

test('systemd unit: port 53 by capability, restart on failure, reload by SIGHUP, hardening without MDWE', () => {
  const unit = read('config/consul-dns-proxy.service');
  const section = (name: string): Map<string, string[]> => {
    const m = new Map<string, string[]>();
    const body = unit.split(/^\[/m).find((s) => s.startsWith(`${name}]`)) ?? '';
    for (const line of body.split('\n').slice(1)) {
      const kv = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
      if (kv) m.set(kv[1]!, [...(m.get(kv[1]!) ?? []), kv[2]!]);
    }
    return m;
  };
  const svc = section('Service');
  const one = (k: string): string => (svc.get(k) ?? [])[0] ?? '';
  assert.match(one('Type'), /^(simple|notify|exec)$/);
  assert.match(one('ExecStart'), /node \S*dist\/src\/cli\.js\b.*--config /);
  assert.equal(one('Restart'), 'on-failure');
  assert.match(one('AmbientCapabilities'), /\bCAP_NET_BIND_SERVICE\b/);
  assert.match(one('CapabilityBoundingSet'), /^CAP_NET_BIND_SERVICE$/);
  assert.ok(one('DynamicUser') === 'yes' || one('User') !== '', 'not root');
  assert.match(one('ExecReload'), /kill -HUP \$MAINPID/);
  for (const k of ['NoNewPrivileges', 'ProtectHome', 'PrivateTmp', 'PrivateDevices']) assert.equal(one(k), 'yes', k);
  assert.equal(one('ProtectSystem'), 'strict');
  assert.equal(one('RestrictAddressFamilies'), 'AF_INET AF_INET6 AF_UNIX');
  assert.ok((svc.get('SystemCallFilter') ?? []).includes('@system-service'));
  // V8's JIT needs W+X memory: MemoryDenyWriteExecute=yes makes node abort.
  assert.ok(!svc.has('MemoryDenyWriteExecute'));
  assert.equal(section('Install').get('WantedBy')?.[0], 'multi-user.target');
});

// ---------------------------------------------------------------------------------------------
// docker/e2e.sh without an engine

test('docker/e2e.sh says plainly that it skipped when neither Docker nor podman can run containers', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cdp-e2e-'));
  try {
    // A docker client that finds no engine, and a podman that cannot run anything.
    writeFileSync(join(dir, 'docker'), '#!/bin/sh\necho "Cannot connect to the Docker daemon" >&2\nexit 1\n');
    writeFileSync(join(dir, 'podman'), '#!/bin/sh\necho "Error: cannot run containers" >&2\nexit 125\n');
    chmodSync(join(dir, 'docker'), 0o755);
    chmodSync(join(dir, 'podman'), 0o755);
    const { stdout } = await run('bash', [join(ROOT, 'docker/e2e.sh')], {
      timeout: 20_000,
      env: { PATH: `${dir}:${process.env.PATH ?? ''}`, CDP_IMAGE_CACHE: dir },
    });
    assert.match(
      stdout.trim(),
      /^e2e: SKIPPED: no Docker engine, and podman (cannot run containers here|as set up here needs root)/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
