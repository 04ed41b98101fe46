/*
 * The catalog: nodes, services and checks, with the raft-like indexes blocking queries wait on.
 * One agent hosts every node (agent endpoints act on a global service-ID space and the agent's own
 * node); checks are never executed, their status is what was registered. Mutations do not wake
 * blocked readers themselves: the caller calls notify() once its whole write is done, as one raft
 * apply would.
 */
import type { SimConfig } from './config.js';
import { uuidFor } from './config.js';
import { SimError, type Health, type RegisterSpec } from './types.js';

export interface NodeRec {
  id: string;
  name: string;
  address: string;
  meta: Record<string, string>;
  createIndex: number;
  modifyIndex: number;
}

export interface ServiceRec {
  id: string;
  name: string;
  node: string;
  address: string;
  port: number;
  tags: string[];
  meta: Record<string, string>;
  weights: { Passing: number; Warning: number };
  enableTagOverride: boolean;
  createIndex: number;
  modifyIndex: number;
}

export interface CheckRec {
  node: string;
  checkId: string;
  name: string;
  status: Health;
  notes: string;
  output: string;
  serviceId: string;
  type: string;
  interval: string;
  createIndex: number;
  modifyIndex: number;
}

export interface Instance {
  svc: ServiceRec;
  node: NodeRec;
  checks: CheckRec[];
}

export interface Waiter {
  min: number;
  current: () => number;
  done: () => void;
  timer: NodeJS.Timeout;
}

/** CheckServiceNodes.Filter(onlyPassing): any critical check drops the instance; with
 *  onlyPassing any non-passing one does (structs.go FilterIgnore). */
export function isHealthy(i: Instance, onlyPassing: boolean): boolean {
  for (const c of i.checks) {
    if (c.status === 'critical') return false;
    if (onlyPassing && c.status !== 'passing') return false;
  }
  return true;
}

/** The three tables a read sees. */
export interface Tables {
  readonly nodes: Map<string, NodeRec>;
  readonly services: Map<string, ServiceRec>;
  readonly checks: Map<string, CheckRec>;
}

export class Catalog implements Tables {
  private idx = 1;
  private lagged: Tables | null = null;
  /** bumpIndex(): every result index is at least this. */
  floor = 0;
  servicesTableIndex = 1;
  private readonly serviceIndex = new Map<string, number>();
  readonly nodes = new Map<string, NodeRec>(); // key: lowercase name
  readonly services = new Map<string, ServiceRec>(); // key: service ID
  readonly checks = new Map<string, CheckRec>(); // key: node\0checkId
  /** Blocked HTTP queries (see http.ts blocking()). */
  readonly waiters = new Set<Waiter>();

  constructor(private readonly cfg: SimConfig) {
    this.ensureNode(cfg.nodeName, cfg.nodeAddress);
    for (const s of cfg.servers) {
      this.ensureNode(s.name, s.address);
      // Servers register service "consul" (structs.ConsulServiceName) on port 8300; NS records
      // come from its healthy instances (getNameserversAndNodeRecord).
      this.putService({
        id: cfg.servers.length > 1 || s.name !== cfg.nodeName ? `consul-${s.name}` : 'consul',
        name: 'consul',
        node: s.name,
        port: 8300,
      });
    }
  }

  /** The current global (raft-like) index. */
  get index(): number {
    return this.idx;
  }

  // ------------------------------------------------------------------ state mutation

  private write(): number {
    return ++this.idx;
  }

  private touchService(name: string, at: number): void {
    this.serviceIndex.set(name.toLowerCase(), at);
  }

  private touchNode(node: string, at: number): void {
    for (const s of this.services.values())
      if (s.node.toLowerCase() === node.toLowerCase()) this.touchService(s.name, at);
  }

  /** Wake blocked HTTP queries whose result index moved past their `?index=`. */
  notify(): void {
    for (const w of this.waiters) {
      if (w.current() > w.min) {
        clearTimeout(w.timer);
        this.waiters.delete(w);
        w.done();
      }
    }
  }

  ensureNode(name: string, address?: string): NodeRec {
    const key = name.toLowerCase();
    let n = this.nodes.get(key);
    if (!n) {
      const at = this.write();
      // Agents always carry node meta consul-network-segment="" (dns-configuration.mdx).
      n = {
        id: uuidFor(name),
        name,
        address: address ?? '127.0.0.1',
        meta: { 'consul-network-segment': '' },
        createIndex: at,
        modifyIndex: at,
      };
      this.nodes.set(key, n);
      this.checks.set(`${key}\0serfHealth`, {
        node: name,
        checkId: 'serfHealth',
        name: 'Serf Health Status',
        status: 'passing',
        notes: '',
        output: 'Agent alive and reachable',
        serviceId: '',
        type: '',
        interval: '',
        createIndex: at,
        modifyIndex: at,
      });
    } else if (address && address !== n.address) {
      n.address = address;
      n.modifyIndex = this.write();
      this.touchNode(name, n.modifyIndex);
    }
    return n;
  }

  putService(s: {
    id: string;
    name: string;
    node: string;
    address?: string;
    port?: number;
    tags?: string[];
    meta?: Record<string, string>;
    weights?: { Passing: number; Warning: number };
    enableTagOverride?: boolean;
  }): ServiceRec {
    const node = this.nodes.get(s.node.toLowerCase());
    if (!node) throw new SimError('SIM_UNKNOWN_NODE', `unknown node ${s.node}`);
    const at = this.write();
    const old = this.services.get(s.id);
    if (old && old.name.toLowerCase() !== s.name.toLowerCase()) this.touchService(old.name, at);
    const rec: ServiceRec = {
      id: s.id,
      name: s.name,
      node: node.name,
      address: s.address ?? '',
      port: s.port ?? 0,
      tags: s.tags ?? [],
      meta: s.meta ?? {},
      weights: s.weights ?? { Passing: 1, Warning: 1 },
      enableTagOverride: s.enableTagOverride ?? false,
      createIndex: old?.createIndex ?? at,
      modifyIndex: at,
    };
    this.services.set(s.id, rec);
    this.touchService(s.name, at);
    this.servicesTableIndex = at;
    return rec;
  }

  putCheck(c: Omit<CheckRec, 'createIndex' | 'modifyIndex'>): void {
    const key = `${c.node.toLowerCase()}\0${c.checkId}`;
    const old = this.checks.get(key);
    const at = this.write();
    this.checks.set(key, { ...c, createIndex: old?.createIndex ?? at, modifyIndex: at });
    this.touchCheckOwner(c, at);
  }

  private touchCheckOwner(c: { node: string; serviceId: string }, at: number): void {
    if (c.serviceId) {
      const s = this.services.get(c.serviceId);
      if (s) this.touchService(s.name, at);
    } else this.touchNode(c.node, at);
  }

  setCheckStatus(node: string, checkId: string, status: Health, output?: string): boolean {
    const c = this.checks.get(`${node.toLowerCase()}\0${checkId}`);
    if (!c) return false;
    const at = this.write();
    // An idempotent status write still moves the raft index but not the check's ModifyIndex.
    if (c.status !== status || (output !== undefined && output !== c.output)) {
      c.status = status;
      if (output !== undefined) c.output = output;
      c.modifyIndex = at;
      this.touchCheckOwner(c, at);
    }
    return true;
  }

  removeService(id: string): boolean {
    const s = this.services.get(id);
    if (!s) return false;
    const at = this.write();
    this.services.delete(id);
    for (const [k, c] of this.checks) if (c.serviceId === id) this.checks.delete(k);
    this.touchService(s.name, at);
    this.servicesTableIndex = at;
    return true;
  }

  findCheck(checkId: string): CheckRec | undefined {
    // Agent endpoints address checks by ID; the simulator's one agent hosts every node, so the
    // agent's own node wins, then any node.
    const own = this.checks.get(`${this.cfg.nodeName.toLowerCase()}\0${checkId}`);
    if (own) return own;
    for (const c of this.checks.values()) if (c.checkId === checkId) return c;
    return undefined;
  }

  // ------------------------------------------------------------------ programmatic API

  register(spec: RegisterSpec): void {
    const nodeName = spec.node ?? this.cfg.nodeName;
    this.ensureNode(nodeName, spec.nodeAddress);
    const id = spec.id ?? spec.name;
    const args: Parameters<Catalog['putService']>[0] = { id, name: spec.name, node: nodeName };
    if (spec.address !== undefined) args.address = spec.address;
    if (spec.port !== undefined) args.port = spec.port;
    if (spec.tags) args.tags = spec.tags;
    if (spec.meta) args.meta = spec.meta;
    if (spec.weights) args.weights = { Passing: spec.weights.passing, Warning: spec.weights.warning };
    const svc = this.putService(args);
    this.putCheck({
      node: svc.node,
      checkId: `service:${id}`,
      name: spec.check?.name ?? `Service '${spec.name}' check`,
      status: spec.status ?? 'passing',
      notes: '',
      output: spec.check?.output ?? '',
      serviceId: id,
      type: spec.check?.type ?? 'ttl',
      interval: '',
    });
    this.notify();
  }

  deregister(id: string): void {
    if (!this.removeService(id)) throw new SimError('SIM_UNKNOWN_SERVICE', `unknown service ID ${id}`);
    this.notify();
  }

  setHealth(serviceId: string, status: Health): void {
    const s = this.services.get(serviceId);
    if (!s) throw new SimError('SIM_UNKNOWN_SERVICE', `unknown service ID ${serviceId}`);
    const key = `${s.node.toLowerCase()}\0service:${serviceId}`;
    if (!this.checks.has(key)) {
      this.putCheck({
        node: s.node,
        checkId: `service:${serviceId}`,
        name: `Service '${s.name}' check`,
        status,
        notes: '',
        output: '',
        serviceId,
        type: 'ttl',
        interval: '',
      });
    } else this.setCheckStatus(s.node, `service:${serviceId}`, status);
    this.notify();
  }

  setNodeHealth(node: string, status: Health): void {
    if (
      !this.setCheckStatus(
        node,
        'serfHealth',
        status,
        status === 'passing' ? 'Agent alive and reachable' : 'Agent not live or unreachable',
      )
    ) {
      throw new SimError('SIM_UNKNOWN_NODE', `unknown node ${node}`);
    }
    this.notify();
  }

  bumpIndex(): void {
    this.floor = this.write();
    this.notify();
  }

  // ------------------------------------------------------------------ queries on the catalog

  instances(service: string, tag: string, from: Tables = this): Instance[] {
    const name = service.toLowerCase();
    const t = tag.toLowerCase();
    const out: Instance[] = [];
    for (const s of from.services.values()) {
      if (s.name.toLowerCase() !== name) continue;
      // Tag filtering is case-insensitive (structs.ServiceNode tag filter lowercases both sides).
      if (t && !s.tags.some((x) => x.toLowerCase() === t)) continue;
      const node = from.nodes.get(s.node.toLowerCase());
      if (!node) continue;
      out.push({ svc: s, node, checks: this.checksFor(s, from) });
    }
    return out;
  }

  /**
   * What the agent's DNS reads: the live tables, or while lagDns() is on a copy taken when it was
   * turned on (a follower that has not applied the writes since, as a client agent reading with
   * allow_stale from a lagging server sees them). The HTTP API always reads the live tables.
   */
  dnsTables(): Tables {
    return this.lagged ?? this;
  }

  /** Freeze (on) or release (off) the tables the DNS answers from; see dnsTables(). */
  lagDns(on: boolean): void {
    this.lagged = on
      ? {
          nodes: structuredClone(this.nodes),
          services: structuredClone(this.services),
          checks: structuredClone(this.checks),
        }
      : null;
  }

  private checksFor(s: ServiceRec, from: Tables = this): CheckRec[] {
    const out: CheckRec[] = [];
    const nk = s.node.toLowerCase();
    for (const c of from.checks.values()) {
      if (c.node.toLowerCase() === nk && (c.serviceId === '' || c.serviceId === s.id)) out.push(c);
    }
    return out;
  }

  deleteCheck(node: string, checkId: string): void {
    const key = `${node.toLowerCase()}\0${checkId}`;
    const c = this.checks.get(key);
    if (!c) return;
    const at = this.write();
    this.checks.delete(key);
    this.touchCheckOwner(c, at);
  }

  /** The index of one service's health: its last change, else the services table's, never below the floor. */
  svcIndex(name: string): number {
    return Math.max(this.serviceIndex.get(name.toLowerCase()) ?? this.servicesTableIndex, this.floor, 1);
  }

  /** stop(): every blocked reader returns now. */
  releaseWaiters(): void {
    for (const w of this.waiters) {
      clearTimeout(w.timer);
      w.done();
    }
    this.waiters.clear();
  }
}
