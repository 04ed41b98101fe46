/**
 * The servers under test and their helpers, each a child process on loopback with its own
 * configuration file in a temporary directory: the agent stand-in (dnsmasq with static Consul
 * names, ../shared/anchor-configs/agent-dnsmasq.conf), the recursor (unbound, `local-zone: "."
 * static`: it never iterates to the Internet), our proxy, and the three anchors set up as Consul
 * forwarders the way anchor-configs/ does, plus the knobs the scenarios need (cache floor, cache
 * size, a second agent).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Asker } from './dnsq.js';
import { cpuSeconds, rssMb, sleep } from './util.js';

const PROXY_CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));

export interface Server {
  name: string;
  port: number;
  pid: number;
  cpu(): number;
  rss(): number;
  stop(): Promise<void>;
  /** The last lines the process printed (for error messages). */
  tail(): string;
}

/** A host:port list entry. */
export interface Addr {
  host: string;
  port: number;
}
const hp = (a: Addr) => `${a.host}:${a.port}`;

/**
 * Starts a process and waits until it answers `probe` (a name it can answer, any rcode) on
 * `port`, up to 20 s.
 */
export async function startServer(
  name: string,
  cmd: string,
  args: string[],
  port: number,
  probe: string,
  env?: NodeJS.ProcessEnv,
): Promise<Server> {
  const proc: ChildProcess = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
  let out = '';
  const keep = (d: Buffer) => {
    out = (out + d.toString()).slice(-4000);
  };
  proc.stdout!.on('data', keep);
  proc.stderr!.on('data', keep);
  const exited = new Promise<void>((r) => proc.on('exit', () => r()));
  let dead = false;
  proc.on('exit', () => {
    dead = true;
  });
  const asker = new Asker();
  try {
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (dead) throw Object.assign(new Error(`${name} exited at start: ${out}`), { code: 'EBENCH_START' });
      const r = await asker.ask(port, probe, 1, 200);
      if (r) break;
      if (Date.now() > deadline)
        throw Object.assign(new Error(`${name} did not answer on ${port}: ${out}`), { code: 'EBENCH_START' });
      await sleep(50);
    }
  } catch (err) {
    proc.kill('SIGKILL');
    throw err;
  } finally {
    asker.close();
  }
  const pid = proc.pid!;
  return {
    name,
    port,
    pid,
    cpu: () => cpuSeconds(pid),
    rss: () => rssMb(pid),
    tail: () => out,
    async stop() {
      if (dead) return;
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(t);
    },
  };
}

// ---- configuration files ------------------------------------------------------------------------

/** The agent stand-in: anchor-configs/agent-dnsmasq.conf, plus `*.node.consul` for miss names. */
function agentStandinConf(dir: string, port: number): string {
  const f = join(dir, `agent-${port}.conf`);
  writeFileSync(
    f,
    [
      `port=${port}`,
      'listen-address=127.0.0.1',
      'bind-interfaces',
      'no-resolv',
      'no-hosts',
      'local=/consul/',
      'local-ttl=30',
      'cache-size=0',
      'host-record=janus.service.consul,10.0.0.1',
      'host-record=janus.service.consul,10.0.0.2',
      'srv-host=_janus._tcp.service.consul,server1.node.dc1.consul,8800',
      'srv-host=_janus._tcp.service.consul,server2.node.dc1.consul,8800',
      'host-record=server1.node.dc1.consul,10.0.0.1',
      'host-record=server2.node.dc1.consul,10.0.0.2',
      // Unique names for the miss scenario: every <x>.node.consul answers 10.0.0.9 (TTL 30).
      'address=/node.consul/10.0.0.9',
      '',
    ].join('\n'),
  );
  return f;
}

/** The `server:` lines every unbound here shares: foreground, no chroot or syslog, loopback clients only. */
function unboundServer(port: number): string {
  return `server:
  interface: 127.0.0.1@${port}
  do-daemonize: no
  username: ""
  chroot: ""
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 0
  num-threads: 1
  access-control: 127.0.0.0/8 allow`;
}

/** The recursor: anchor-configs/recursor-unbound.conf plus a redirect zone (any *.m.example answers). */
function recursorConf(dir: string, port: number): string {
  const f = join(dir, `recursor-${port}.conf`);
  writeFileSync(
    f,
    `${unboundServer(port)}
  module-config: "iterator"
  local-zone: "." static
  local-zone: "example." static
  local-data: "example. 300 IN SOA ns.example. hostmaster.example. 1 3600 600 86400 300"
  local-data: "example. 300 IN NS ns.example."
  local-data: "ns.example. 300 IN A 192.0.2.53"
  local-data: "www.example. 300 IN A 192.0.2.1"
  local-data: "api.example. 300 IN A 192.0.2.2"
  # Unique recursor names for the miss and memory scenarios: n123.m.example A 192.0.2.7, TTL 300.
  local-zone: "m.example." redirect
  local-data: "m.example. 300 IN A 192.0.2.7"
`,
  );
  return f;
}

export interface AnchorOptions {
  port: number;
  agents: Addr[];
  recursor: Addr;
  /** Cache floor in seconds for Consul's TTL-0 answers; 0 = keep the upstream's TTL (no floor). */
  minTtl: number;
  /** Entries the cache may hold (raised for the 100k-names scenario). */
  cacheEntries: number;
}

function dnsmasqConf(dir: string, o: AnchorOptions): string {
  const f = join(dir, `fwd-dnsmasq-${o.port}.conf`);
  writeFileSync(
    f,
    [
      `port=${o.port}`,
      'listen-address=127.0.0.1',
      'bind-interfaces',
      'no-resolv',
      'no-hosts',
      `cache-size=${o.cacheEntries}`,
      ...o.agents.map((a) => `server=/consul/${a.host}#${a.port}`),
      `server=${o.recursor.host}#${o.recursor.port}`,
      // dnsmasq caps min-cache-ttl at 3600; with it, TTL-0 Consul answers are held that long.
      ...(o.minTtl > 0 ? [`min-cache-ttl=${o.minTtl}`] : []),
      '',
    ].join('\n'),
  );
  return f;
}

function unboundConf(dir: string, o: AnchorOptions): string {
  const f = join(dir, `fwd-unbound-${o.port}.conf`);
  // Roughly 1 KB of message + rrset cache per name, so 100k names need more than the 4+4 MB default.
  const mb = Math.max(4, Math.ceil(o.cacheEntries / 1000));
  writeFileSync(
    f,
    `${unboundServer(o.port)}
  do-not-query-localhost: no
  module-config: "iterator"
  domain-insecure: "consul."
  local-zone: "consul." nodefault
  msg-cache-size: ${mb}m
  rrset-cache-size: ${2 * mb}m
${o.minTtl > 0 ? `  cache-min-ttl: ${o.minTtl}\n` : ''}forward-zone:
  name: "consul."
${o.agents.map((a) => `  forward-addr: ${a.host}@${a.port}\n`).join('')}forward-zone:
  name: "."
  forward-addr: ${o.recursor.host}@${o.recursor.port}
`,
  );
  return f;
}

function dnsdistConf(dir: string, o: AnchorOptions): string {
  const f = join(dir, `fwd-dnsdist-${o.port}.conf`);
  // dnsdist 1.7's packet cache has no TTL floor of its own (its minTTL option means "do not cache
  // below this TTL"), so the floor is a response rule that raises every TTL before the answer
  // is inserted into the cache (response rules run before insertion).
  const floor =
    o.minTtl > 0
      ? `addResponseAction(AllRule(), LuaResponseAction(function(dr)
  dr:editTTLs(function(section, qclass, qtype, ttl) if ttl < ${o.minTtl} then return ${o.minTtl} end return ttl end)
  return DNSResponseAction.None, ""
end))\n`
      : '';
  writeFileSync(
    f,
    `setLocal("127.0.0.1:${o.port}")
setSecurityPollSuffix("")
${o.agents.map((a) => `newServer({address="${hp(a)}", pool="consul", checkName="janus.service.consul."})`).join('\n')}
newServer({address="${hp(o.recursor)}", checkName="www.example."})
addAction({"consul."}, PoolAction("consul"))
pc = newPacketCache(${o.cacheEntries}, {maxTTL=86400, minTTL=0})
getPool(""):setCache(pc)
getPool("consul"):setCache(pc)
${floor}`,
  );
  return f;
}

export interface ProxyOptions {
  port: number;
  agents: Addr[];
  recursor: Addr;
  http: string;
  cacheEntries: number;
  extraConfig?: Record<string, unknown>;
}

/** The proxy's configuration file (JSON is YAML). */
function proxyConf(dir: string, o: ProxyOptions): string {
  const f = join(dir, `proxy-${o.port}.yaml`);
  const cfg = {
    listen: [`127.0.0.1:${o.port}`],
    consul: { agents: o.agents.map(hp), http: [o.http] },
    recursors: [hp(o.recursor)],
    cache: { maxEntries: o.cacheEntries, maxBytes: 1024 * 1024 * 1024 },
    metrics: { listen: 'off' },
    log: { level: 'warn' },
    ...o.extraConfig,
  };
  writeFileSync(f, JSON.stringify(cfg, null, 2) + '\n');
  return f;
}

export const startAgentStandin = (dir: string, port: number) =>
  startServer(
    'agent (dnsmasq stand-in)',
    'dnsmasq',
    ['-k', '-C', agentStandinConf(dir, port), '--pid-file='],
    port,
    'janus.service.consul',
  );

export const startRecursor = (dir: string, port: number) =>
  startServer('recursor (unbound)', 'unbound', ['-d', '-c', recursorConf(dir, port)], port, 'www.example');

export type AnchorKind = 'dnsmasq' | 'unbound' | 'dnsdist';

export function startAnchor(kind: AnchorKind, dir: string, o: AnchorOptions, probe = 'www.example'): Promise<Server> {
  switch (kind) {
    case 'dnsmasq':
      return startServer('dnsmasq', 'dnsmasq', ['-k', '-C', dnsmasqConf(dir, o), '--pid-file='], o.port, probe);
    case 'unbound':
      return startServer('unbound', 'unbound', ['-d', '-c', unboundConf(dir, o)], o.port, probe);
    case 'dnsdist':
      return startServer(
        'dnsdist',
        'dnsdist',
        ['--supervised', '--disable-syslog', '-C', dnsdistConf(dir, o)],
        o.port,
        probe,
      );
  }
}

export function startProxy(
  dir: string,
  o: ProxyOptions,
  nodeArgs: string[] = [],
  probe = 'www.example',
): Promise<Server> {
  return startServer('proxy', process.execPath, [...nodeArgs, PROXY_CLI, '--config', proxyConf(dir, o)], o.port, probe);
}
