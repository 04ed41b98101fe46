/**
 * Real Consul agents for the real-Consul suites (test/e2e/consul/): each agent on its own
 * loopback address with every Consul port at its default (8300-8302, 8500, 8600), so a whole
 * cluster runs on one machine without port bookkeeping. Each agent has its own data directory,
 * `retry_join`s the servers, and has gossip and raft tuned for speed (probe 200 ms, raft
 * multiplier 1); Consul's DNS settings stay at their defaults, which is what the tests compare
 * against. Services are registered with real TCP checks (interval 1 s) against real sockets.
 *
 * Everything waits on a condition read from the HTTP API (leader elected, check passing, node
 * failed), never on a guessed sleep. Every agent is killed and its directory removed in `stop()`
 * (tests call it from t.after) and, should a test die first, in a process 'exit' handler.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir, homedir } from 'node:os';
import { join } from 'node:path';
import http from 'node:http';
import { waitFor } from './wait.js';

const HOW_TO_INSTALL = 'real Consul not found: run `bash test/support/install-consul.sh` (or set CONSUL_BIN)';

let binCache: string | null | undefined;

/** The consul binary: $CONSUL_BIN, then install-consul.sh's cache folder, then the PATH; null if none runs. */
export function consulBinary(): string | null {
  if (binCache !== undefined) return binCache;
  const cacheDir =
    process.env.CONSUL_CACHE_DIR ??
    join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'consul-dns-proxy', 'consul');
  const candidates = [process.env.CONSUL_BIN, join(cacheDir, 'usr/bin/consul'), 'consul'].filter(
    (c): c is string => !!c,
  );
  binCache = null;
  for (const c of candidates) {
    if (c.includes('/') && !existsSync(c)) continue;
    try {
      execFileSync(c, ['version'], { stdio: 'ignore', timeout: 10_000 });
      binCache = c;
      break;
    } catch {
      /* next */
    }
  }
  return binCache;
}

/**
 * The `skip` option for a real-Consul test: false when Consul is present; otherwise one line
 * saying how to install it. In CI (CI=true) a missing Consul is an error, not a skip.
 */
export function consulSkip(): false | string {
  if (consulBinary()) return false;
  if (process.env.CI === 'true') throw new Error(`${HOW_TO_INSTALL} (CI=true: real-Consul tests must run)`);
  return HOW_TO_INSTALL;
}

export interface TcpCheckedService {
  id: string;
  name: string;
  port: number;
  tags?: string[];
  /** Service address (default: the agent's address). */
  address?: string;
  meta?: Record<string, string>;
  /** Address:port the TCP check connects to (default address:port). */
  check?: string;
  /** ACL token the agent registers the service with (an ACL cluster's default token may not write). */
  token?: string;
}

export interface AgentSpec {
  name: string;
  address: string;
  server?: boolean;
  services?: TcpCheckedService[];
  /** Extra top-level config keys (JSON), merged over the defaults (acl, dns_config, alt_domain...). */
  extra?: Record<string, unknown>;
}

export interface Agent {
  spec: AgentSpec;
  dataDir: string;
  proc: ChildProcess | null;
  log: string;
  readonly running: boolean;
  /** "http://addr:8500" */
  http: string;
  /** "addr:8600" */
  dns: string;
}

const live = new Set<ConsulCluster>();
process.on('exit', () => {
  for (const c of live) c.killAllSync();
});
// A test runner that cancels a file signals it: the agents must not outlive it either.
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    for (const c of live) c.killAllSync();
    process.exit(sig === 'SIGINT' ? 130 : 143);
  });
}

export interface ClusterOptions {
  /** Extra config for every agent (merged under each agent's own `extra`). */
  extra?: Record<string, unknown>;
  /** Token for the launcher's own HTTP calls (an ACL cluster's management token). */
  token?: string;
}

export class ConsulCluster {
  readonly agents = new Map<string, Agent>();
  token: string;
  private readonly root: string;

  constructor(
    specs: AgentSpec[],
    private readonly opts: ClusterOptions = {},
  ) {
    this.token = opts.token ?? '';
    this.root = mkdtempSync(join(tmpdir(), 'cdp-consul-'));
    const servers = specs.filter((s) => s.server);
    for (const spec of specs) {
      const dataDir = join(this.root, spec.name);
      const cfg: Record<string, unknown> = {
        node_name: spec.name,
        datacenter: 'dc1',
        data_dir: dataDir,
        bind_addr: spec.address,
        client_addr: spec.address,
        advertise_addr: spec.address,
        server: !!spec.server,
        retry_join: servers.filter((s) => s !== spec).map((s) => s.address),
        // The 30 s default stalls a restarted agent's rejoin.
        retry_interval: '1s',
        disable_update_check: true,
        log_level: 'warn',
        leave_on_terminate: false,
        performance: { raft_multiplier: 1 },
        // Failure detection in ~1-3 s instead of Serf's LAN defaults (probe 1 s, suspicion x4).
        gossip_lan: { probe_interval: '200ms', probe_timeout: '100ms', gossip_interval: '50ms', suspicion_mult: 3 },
        telemetry: { prometheus_retention_time: '60s', disable_hostname: true },
        ports: { serf_wan: spec.server ? 8302 : -1 },
        ...this.opts.extra,
        ...spec.extra,
      };
      if (spec.server) cfg['bootstrap_expect'] = servers.length;
      if (spec.services?.length) {
        cfg['services'] = spec.services.map((s) => ({
          id: s.id,
          name: s.name,
          port: s.port,
          tags: s.tags ?? [],
          address: s.address ?? spec.address,
          meta: s.meta ?? {},
          ...(s.token ? { token: s.token } : {}),
          checks: [
            {
              id: `${s.id}-tcp`,
              name: `TCP check on port ${s.port}`,
              tcp: s.check ?? `${s.address ?? spec.address}:${s.port}`,
              interval: '1s',
              timeout: '500ms',
            },
          ],
        }));
      }
      const agent: Agent = {
        spec,
        dataDir,
        proc: null,
        log: '',
        get running() {
          return this.proc !== null && this.proc.exitCode === null && this.proc.signalCode === null;
        },
        http: `http://${spec.address}:8500`,
        dns: `${spec.address}:8600`,
      };
      writeFileSync(join(this.root, `${spec.name}.json`), JSON.stringify(cfg, null, 1));
      this.agents.set(spec.name, agent);
    }
    live.add(this);
  }

  agent(name: string): Agent {
    const a = this.agents.get(name);
    if (!a) throw new Error(`no agent ${name}`);
    return a;
  }

  /** Starts every agent, waits for a leader and for every agent to be alive in the member list. */
  async start(timeoutMs = 60_000): Promise<void> {
    for (const name of this.agents.keys()) this.spawn(name);
    await this.waitReady(timeoutMs);
  }

  async waitReady(timeoutMs = 60_000): Promise<void> {
    await waitFor(async () => (await this.leader()) !== null, {
      timeoutMs,
      intervalMs: 100,
      what: `a Consul leader (${this.logTail()})`,
    });
    const names = [...this.agents.values()].filter((a) => a.running).map((a) => a.spec.name);
    await waitFor(
      async () => {
        const m = await this.members();
        return names.every((n) => m.get(n) === 1);
      },
      { timeoutMs, intervalMs: 100, what: `agents ${names.join(', ')} alive in the member list` },
    );
  }

  private spawn(name: string): void {
    const a = this.agent(name);
    if (a.running) return;
    const bin = consulBinary();
    if (!bin) throw new Error(HOW_TO_INSTALL);
    a.log = '';
    const proc = spawn(bin, ['agent', `-config-file=${join(this.root, `${name}.json`)}`], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const keep = (d: Buffer) => {
      a.log = (a.log + d.toString()).slice(-8000);
    };
    proc.stdout.on('data', keep);
    proc.stderr.on('data', keep);
    a.proc = proc;
  }

  /** Starts a stopped or killed agent again with the same data directory and config. */
  async restart(name: string): Promise<void> {
    this.spawn(name);
    await waitFor(async () => (await this.members()).get(name) === 1, {
      timeoutMs: 30_000,
      intervalMs: 50,
      what: `${name} alive again (${this.agent(name).log.slice(-500)})`,
    });
  }

  /** SIGKILL: the agent vanishes without leaving (Serf must detect it). */
  async kill(name: string): Promise<void> {
    await this.signal(name, 'SIGKILL');
  }

  /** SIGTERM (leave_on_terminate false: the node stays a member, then fails). */
  async stopAgent(name: string): Promise<void> {
    await this.signal(name, 'SIGTERM');
  }

  private async signal(name: string, sig: NodeJS.Signals): Promise<void> {
    const a = this.agent(name);
    const p = a.proc;
    if (!p || !a.running) return;
    const gone = new Promise<void>((r) => p.once('exit', () => r()));
    p.kill(sig);
    const t = setTimeout(() => p.kill('SIGKILL'), 8000);
    await gone;
    clearTimeout(t);
  }

  /** Any running agent, servers first (for cluster-wide reads). */
  private anyRunning(prefer?: string): Agent {
    const all = [...this.agents.values()].filter((a) => a.running);
    const pick = all.find((a) => a.spec.name === prefer) ?? all.find((a) => a.spec.server) ?? all[0];
    if (!pick) throw new Error('no running agent');
    return pick;
  }

  /** GET path on an agent's HTTP API: status and parsed JSON (or text). */
  async get(
    path: string,
    via?: string,
    timeoutMs = 5000,
  ): Promise<{ status: number; body: unknown; headers: http.IncomingHttpHeaders }> {
    return httpRequest('GET', this.anyRunning(via).http + path, undefined, this.token, timeoutMs);
  }

  /** GET with a token other than the launcher's own (what a proxy with that token is told). */
  async httpAs(
    token: string,
    path: string,
    via?: string,
  ): Promise<{ status: number; body: unknown; headers: http.IncomingHttpHeaders }> {
    return httpRequest('GET', this.anyRunning(via).http + path, undefined, token, 5000);
  }

  async put(
    path: string,
    body: unknown,
    via?: string,
    method: 'PUT' | 'POST' = 'PUT',
  ): Promise<{ status: number; body: unknown }> {
    return httpRequest(method, this.anyRunning(via).http + path, body, this.token, 10_000);
  }

  /** The leader's agent name, asked of every running server until one knows; null while none. */
  async leader(): Promise<string | null> {
    for (const a of this.agents.values()) {
      if (!a.spec.server || !a.running) continue;
      try {
        const r = await httpRequest('GET', `${a.http}/v1/status/leader`, undefined, this.token, 2000);
        const addr = typeof r.body === 'string' ? r.body.replace(/:\d+$/, '') : '';
        const found = [...this.agents.values()].find((x) => x.spec.address === addr);
        if (found) return found.spec.name;
      } catch {
        /* next server */
      }
    }
    return null;
  }

  /** Serf member status by node name (1 alive, 3 left, 4 failed), as a running agent sees it. */
  async members(via?: string): Promise<Map<string, number>> {
    const r = await this.get('/v1/agent/members', via, 2000);
    const m = new Map<string, number>();
    if (Array.isArray(r.body)) for (const e of r.body as { Name: string; Status: number }[]) m.set(e.Name, e.Status);
    return m;
  }

  /** Whether the catalog's serfHealth check of `node` is critical (Serf marked it failed). */
  async nodeFailed(node: string, via?: string): Promise<boolean> {
    const r = await this.get(`/v1/health/node/${node}?stale`, via, 2000);
    return (
      Array.isArray(r.body) &&
      (r.body as { CheckID: string; Status: string }[]).some(
        (c) => c.CheckID === 'serfHealth' && c.Status === 'critical',
      )
    );
  }

  /** Polls the HTTP API until `cond` is true (see wait.ts). */
  waitFor(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
    return waitFor(cond, { timeoutMs, intervalMs: 25, what });
  }

  /** Passing instances of `service` as a running agent's health endpoint reports them. */
  async passing(service: string, via?: string): Promise<string[]> {
    const r = await this.get(`/v1/health/service/${service}?passing&stale`, via, 2000);
    return Array.isArray(r.body) ? (r.body as { Service: { ID: string } }[]).map((e) => e.Service.ID).sort() : [];
  }

  /** consul_dns_domain_query_count summed over the named agents (Consul's own Prometheus output). */
  async dnsQueryCount(names: string[]): Promise<number> {
    let sum = 0;
    for (const n of names) {
      const r = await httpRequest(
        'GET',
        `${this.agent(n).http}/v1/agent/metrics?format=prometheus`,
        undefined,
        this.token,
        5000,
      );
      const text = typeof r.body === 'string' ? r.body : '';
      for (const line of text.split('\n')) {
        const m = /^consul_dns_domain_query_count(?:\{[^}]*\})?\s+(\S+)/.exec(line);
        if (m) sum += Number(m[1]);
      }
    }
    return sum;
  }

  logTail(): string {
    return [...this.agents.values()].map((a) => `${a.spec.name}: ${a.log.slice(-300)}`).join(' | ');
  }

  /** Kills every agent and removes the data directories. */
  async stop(): Promise<void> {
    await Promise.all([...this.agents.keys()].map((n) => this.kill(n)));
    rmSync(this.root, { recursive: true, force: true });
    live.delete(this);
  }

  /** The synchronous part of stop(), for process 'exit'. */
  killAllSync(): void {
    for (const a of this.agents.values()) if (a.running) a.proc!.kill('SIGKILL');
    try {
      rmSync(this.root, { recursive: true, force: true });
    } catch {
      /* exiting anyway */
    }
  }
}

/** A real `consul agent -dev` on its own loopback address (default ports), for the conformance suite. */
export async function startDevAgent(
  address: string,
  extraArgs: string[] = [],
): Promise<{ http: string; dns: string; stop(): Promise<void> }> {
  const bin = consulBinary();
  if (!bin) throw new Error(HOW_TO_INSTALL);
  const proc = spawn(
    bin,
    [
      'agent',
      '-dev',
      '-bind',
      address,
      '-client',
      address,
      '-node',
      'dev',
      '-log-level',
      'warn',
      '-disable-host-node-id',
      ...extraArgs,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let log = '';
  proc.stdout.on('data', (d: Buffer) => {
    log = (log + d.toString()).slice(-4000);
  });
  proc.stderr.on('data', (d: Buffer) => {
    log = (log + d.toString()).slice(-4000);
  });
  const kill = () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  };
  process.on('exit', kill);
  const base = `http://${address}:8500`;
  await waitFor(
    async () => {
      const r = await httpRequest('GET', `${base}/v1/status/leader`, undefined, '', 1000);
      return typeof r.body === 'string' && r.body.length > 0;
    },
    { timeoutMs: 30_000, intervalMs: 100, what: `consul -dev on ${address} to elect itself (${log})` },
  );
  return {
    http: base,
    dns: `${address}:8600`,
    async stop() {
      const gone = new Promise<void>((r) => proc.once('exit', () => r()));
      kill();
      if (proc.exitCode === null && proc.signalCode === null) await gone;
      process.off('exit', kill);
    },
  };
}

export function httpRequest(
  method: string,
  url: string,
  body: unknown,
  token: string,
  timeoutMs: number,
): Promise<{ status: number; body: unknown; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {};
    if (token) headers['x-consul-token'] = token;
    const payload = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
    const req = http.request(url, { method, headers, timeout: timeoutMs, agent: false }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        data += d;
      });
      res.on('end', () => {
        let parsed: unknown = data;
        if ((res.headers['content-type'] ?? '').includes('json')) {
          try {
            parsed = JSON.parse(data);
          } catch {
            /* keep text */
          }
        }
        resolve({ status: res.statusCode ?? 0, body: parsed, headers: res.headers });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${url}: no reply in ${timeoutMs} ms`)));
    req.on('error', reject);
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}
