/*
 * The simulator's public types: what a test configures (SimOptions), what it gets back (Sim), and
 * the one error class. Everything else under consul-sim/ is internal.
 */

export interface SimOptions {
  /** Consul `domain` (default "consul"). */
  domain?: string;
  /** Consul `alt_domain` (default none). */
  altDomain?: string;
  /** Consul `datacenter` (default "dc1"). */
  datacenter?: string;
  /** The agent's node name (default "sim-agent"). */
  nodeName?: string;
  /** The agent's node address (default "127.0.0.1"). */
  nodeAddress?: string;
  /** Consul servers (service "consul"); default: the agent itself is the only server, like `-dev`. */
  servers?: { name: string; address: string }[];
  /** `recursors`: loopback host[:port] only (tests never send packets off the machine); default none (REFUSED outside the domain). */
  recursors?: string[];
  /** `dns_config.node_ttl` in seconds (default 0). */
  nodeTtl?: number;
  /** `dns_config.service_ttl`: name or `prefix*` (and `*`) to seconds (default none = 0). */
  serviceTtl?: Record<string, number>;
  /** `dns_config.soa.min_ttl` (default 0). */
  soaMinTtl?: number;
  /** `dns_config.udp_answer_limit` (default 3, hard cap 8). */
  udpAnswerLimit?: number;
  /** `dns_config.only_passing` (default false: warning instances are served). */
  onlyPassing?: boolean;
  /** When set, the HTTP API demands this X-Consul-Token (403 otherwise). */
  token?: string;
  dnsPort?: number;
  httpPort?: number;
  /** Bind address for DNS and HTTP (default 127.0.0.1). */
  host?: string;
  /** Prepared queries answerable as `<name>.query.<domain>`. */
  preparedQueries?: { name: string; service: string; tag?: string; ttl?: number }[];
  /** `dns_config.recursor_timeout` in ms (default 2000). */
  recursorTimeoutMs?: number;
  /** `dns_config.enable_truncate` (default false: trimmed UDP answers carry no TC, #375/#788). */
  enableTruncate?: boolean;
  /**
   * Which Consul to behave as where versions differ (default 'latest'). '1.8' is Debian bullseye's
   * 1.8.7, the real Consul the conformance suite runs: an IPv4 `.addr.` name asked as AAAA gets
   * its A record in Answer (newer Consul: in Additional), and a service registered without meta has
   * `"Meta": null` in the HTTP API (newer Consul: `{}`).
   */
  consulVersion?: '1.8' | 'latest';
}

export type DnsFault =
  'silent' | 'slow' | 'servfail' | 'garbage' | 'wrongid' | 'wrongquestion' | 'truncated' | 'refuse';
export type HttpFault = '500' | 'hang' | 'refuse' | 'slow';
export type Health = 'passing' | 'warning' | 'critical';

export interface RegisterSpec {
  id?: string;
  name: string;
  node?: string;
  nodeAddress?: string;
  address?: string;
  port?: number;
  tags?: string[];
  status?: Health;
  weights?: { passing: number; warning: number };
  meta?: Record<string, string>;
  /** Simulator extra: how the service's own check looks over HTTP (default a TTL check). */
  check?: { name?: string; type?: string; output?: string };
}

export interface Sim {
  dnsPort: number;
  httpPort: number;
  host: string;
  /** Register a service instance with its own check `service:<id>` (status default passing). The node
   *  defaults to the agent's node; unknown nodes are created with a passing serfHealth. */
  register(svc: RegisterSpec): void;
  deregister(id: string): void;
  /** Set the service's own check (`service:<id>`). */
  setHealth(serviceId: string, status: Health): void;
  /** Set the node's serfHealth check. */
  setNodeHealth(node: string, status: Health): void;
  /** Raise the index with no visible change (an idempotent write): blocked queries return unchanged. */
  bumpIndex(): void;
  /**
   * A lagging server: on, the DNS keeps answering from the catalog as it is now (a follower that
   * has not applied the writes that follow) while the HTTP API sees every write; off, DNS catches up.
   */
  lagDns(on: boolean): void;
  setFault(f: { dns?: DnsFault | null; http?: HttpFault | null; delayMs?: number }): Promise<void>;
  /** DNS queries received, all transports. */
  readonly queries: number;
  /** HTTP requests received. */
  readonly httpRequests: number;
  /** The current global (raft-like) index. */
  readonly index: number;
  stop(): Promise<void>;
}

/** Errors from the simulator carry a stable code. */
export class SimError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'SimError';
  }
}
