/*
 * A Consul agent simulator for tests: DNS (UDP + TCP) and a subset of the HTTP API, answering the
 * way a real agent does, plus switchable fault modes. No Consul binary exists for most test
 * machines, so this is what every proxy test talks to; its fidelity is what makes those tests mean
 * something.
 *
 * The model is the legacy v1 DNS server, `agent/dns.go` (Consul 1.19.2 reverted to it; the v2 router
 * of 1.19.0-1.19.1 had tag and SRV regressions, GH-21336/GH-21325). Function names in comments
 * (dispatch, handleQuery, handleNodeQuery, trimUDPResponse, syncExtra, setEDNS, handleRecurse...)
 * refer to that file.
 *
 * Simplifications, on purpose: one agent hosts every node (agent endpoints act on a global service-ID
 * space and the agent's own node); checks are never executed (their status is what was registered,
 * critical by default, as Consul starts them); one datacenter; service/node addresses are IPs (a
 * hostname address gets a bare CNAME, no resolution). Nothing under consul-sim/ may import from
 * src/: it is the independent reference the proxy is tested against.
 *
 * Layout: types.ts (public API types), config.ts (options → agent config), catalog.ts (nodes,
 * services, checks, indexes), wire.ts (DNS codec), records.ts + dns.ts (DNS answering), trim.ts
 * (reply size limits), recursor.ts (recursors), dns-server.ts (DNS sockets), http*.ts (HTTP API,
 * blocking queries), faults.ts (fault injection). This file wires them and is the only entry point.
 */
import { Catalog } from './catalog.js';
import { resolveConfig, type SimConfig } from './config.js';
import { DnsAnswerer } from './dns.js';
import { DnsServer } from './dns-server.js';
import { FaultState } from './faults.js';
import { HttpApi } from './http.js';
import { parseGoDuration } from './http-json.js';
import { encodeKVasRFC1464 } from './records.js';
import { Recursor } from './recursor.js';
import {
  SimError,
  type DnsFault,
  type Health,
  type HttpFault,
  type RegisterSpec,
  type Sim,
  type SimOptions,
} from './types.js';
import { ipBytes, ipFromBytes, reverseAddr } from './wire.js';

export { SimError } from './types.js';
export type { DnsFault, Health, HttpFault, RegisterSpec, Sim, SimOptions } from './types.js';

class ConsulSim implements Sim {
  readonly host: string;
  private readonly cfg: SimConfig;
  private readonly catalog: Catalog;
  private readonly faults = new FaultState();
  private readonly recursor: Recursor;
  private readonly dns: DnsServer;
  private readonly http: HttpApi;

  constructor(private readonly opts: SimOptions) {
    this.cfg = resolveConfig(opts);
    this.host = this.cfg.host;
    this.catalog = new Catalog(this.cfg);
    this.recursor = new Recursor(this.cfg);
    this.dns = new DnsServer(this.cfg, new DnsAnswerer(this.cfg, this.catalog), this.recursor, this.faults);
    this.http = new HttpApi(this.cfg, this.catalog, this.faults);
  }

  get dnsPort(): number {
    return this.dns.port;
  }
  get httpPort(): number {
    return this.http.port;
  }
  get queries(): number {
    return this.dns.queries;
  }
  get httpRequests(): number {
    return this.http.requests;
  }
  get index(): number {
    return this.catalog.index;
  }

  register(spec: RegisterSpec): void {
    this.catalog.register(spec);
  }
  deregister(id: string): void {
    this.catalog.deregister(id);
  }
  setHealth(serviceId: string, status: Health): void {
    this.catalog.setHealth(serviceId, status);
  }
  setNodeHealth(node: string, status: Health): void {
    this.catalog.setNodeHealth(node, status);
  }
  bumpIndex(): void {
    this.catalog.bumpIndex();
  }
  lagDns(on: boolean): void {
    this.catalog.lagDns(on);
  }

  async start(): Promise<void> {
    await this.dns.bind(this.opts.dnsPort ?? 0);
    try {
      await this.http.bind(this.opts.httpPort ?? 0);
    } catch (err) {
      await this.dns.close();
      throw err;
    }
  }

  /** 'refuse' closes the listener; leaving it binds the SAME port again. */
  async setFault(f: { dns?: DnsFault | null; http?: HttpFault | null; delayMs?: number }): Promise<void> {
    const faults = this.faults;
    if (faults.stopped) throw new SimError('SIM_STOPPED', 'simulator stopped');
    if (f.delayMs !== undefined) faults.delayMs = f.delayMs;
    if (f.dns !== undefined && f.dns !== faults.dns) {
      const was = faults.dns;
      faults.dns = f.dns;
      if (f.dns === 'refuse') await this.dns.close();
      else if (was === 'refuse') await this.dns.bind(this.dns.port);
    }
    if (f.http !== undefined && f.http !== faults.http) {
      const was = faults.http;
      faults.http = f.http;
      if (was === 'hang') this.http.dropHanging();
      if (f.http === 'refuse') await this.http.close();
      else if (was === 'refuse') await this.http.bind(this.http.port);
    }
  }

  async stop(): Promise<void> {
    if (this.faults.stopped) return;
    this.faults.stopped = true;
    this.faults.clearTimers();
    this.catalog.releaseWaiters();
    this.recursor.closeAll();
    await Promise.all([this.dns.close(), this.http.close()]);
  }
}

/** Start a simulator; ports 0 (the default) pick free ones, reported on the returned object. */
export async function startSim(opts: SimOptions = {}): Promise<Sim> {
  const sim = new ConsulSim(opts);
  await sim.start();
  return sim;
}

/** The seed's Janus HA service definition (ystia/yorc doc/ha.rst): two instances, each on its own
 *  node with `address` set, port 8800, tags ["server","server1"|"server2"], its TCP check passing.
 *  Service IDs are "janus-1" and "janus-2" (nodes janus-1 and janus-2 at 127.0.0.11/12). */
export async function startJanusCluster(opts: SimOptions = {}): Promise<Sim> {
  const sim = await startSim(opts);
  for (const n of [1, 2]) {
    sim.register({
      id: `janus-${n}`,
      name: 'janus',
      node: `janus-${n}`,
      nodeAddress: `127.0.0.1${n}`,
      address: `127.0.0.1${n}`,
      port: 8800,
      tags: ['server', `server${n}`],
      status: 'passing',
      check: { name: 'TCP check on port 8800', type: 'tcp', output: `TCP connect 127.0.0.1${n}:8800: Success` },
    });
  }
  return sim;
}

/** Exposed for the simulator's own tests and for other helpers: reverse name of an address. */
export const _internal = { reverseAddr, ipBytes, ipFromBytes, encodeKVasRFC1464, parseGoDuration };
