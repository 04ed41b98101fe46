/*
 * A Consul agent simulator for tests: DNS (UDP + TCP) and a subset of the HTTP API, answering the
 * way a real agent does, plus switchable fault modes. No Consul binary exists for these machines, so
 * this is what every proxy test talks to; its fidelity is what makes those tests mean something.
 *
 * The model is the legacy v1 DNS server, `agent/dns.go` (Consul 1.19.2 reverted to it; the v2 router
 * of 1.19.0-1.19.1 had tag and SRV regressions, GH-21336/GH-21325). Function names in comments below
 * (dispatch, handleQuery, handleNodeQuery, trimUDPResponse, syncExtra, setEDNS, handleRecurse...)
 * refer to that file; /work/shared/consul-dns.md is the summary the behaviour was checked against.
 *
 * Simplifications, on purpose: one agent hosts every node (agent endpoints act on a global service-ID
 * space and the agent's own node); checks are never executed (their status is what was registered,
 * critical by default, as Consul starts them); one datacenter; service/node addresses are IPs (a
 * hostname address gets a bare CNAME, no resolution). This file must not import anything from src/:
 * it is the independent reference the proxy is tested against.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import http from 'node:http';
import { randomBytes, randomInt } from 'node:crypto';

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

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
  /** `recursors`: loopback host[:port] only (team rule); default none (REFUSED outside the domain). */
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
}

export type DnsFault = 'silent' | 'slow' | 'servfail' | 'garbage' | 'wrongid' | 'wrongquestion' | 'truncated' | 'refuse';
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

// ---------------------------------------------------------------------------------------------
// DNS wire format (RFC 1035 §4.1; OPT RFC 6891; ECS RFC 7871). Our own small codec so the
// simulator can measure uncompressed sizes the way miekg's Msg.Len() does in trimUDPResponse.
// ---------------------------------------------------------------------------------------------

const T = { A: 1, NS: 2, CNAME: 5, SOA: 6, PTR: 12, TXT: 16, AAAA: 28, SRV: 33, OPT: 41, AXFR: 252, ANY: 255 } as const;
const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;

type RData =
  | { k: 'ip'; b: Buffer }
  | { k: 'name'; n: string }
  | { k: 'srv'; priority: number; weight: number; port: number; target: string }
  | { k: 'soa'; mname: string; rname: string; serial: number; refresh: number; retry: number; expire: number; minimum: number }
  | { k: 'txt'; s: string[] }
  | { k: 'raw'; b: Buffer };

interface RR {
  name: string;
  type: number;
  cls: number;
  ttl: number;
  d: RData;
}

interface Ecs {
  family: number;
  source: number;
  addr: Buffer;
}

interface Query {
  id: number;
  opcode: number;
  rd: boolean;
  cd: boolean;
  /** Question labels as received (case kept: 0x20). */
  labels: string[];
  /** Question name as received, FQDN with trailing dot. */
  name: string;
  qtype: number;
  qclass: number;
  edns: { udpSize: number; ecs: Ecs | null } | null;
}

interface Msg {
  id: number;
  opcode: number;
  aa: boolean;
  tc: boolean;
  rd: boolean;
  ra: boolean;
  cd: boolean;
  rcode: number;
  q: { labels: string[]; qtype: number; qclass: number } | null;
  answer: RR[];
  ns: RR[];
  extra: RR[];
}

class DecodeError extends Error {
  readonly code = 'SIM_DNS_DECODE';
}

function readName(buf: Buffer, off: number): { labels: string[]; end: number } {
  const labels: string[] = [];
  let end = -1;
  let jumps = 0;
  for (;;) {
    if (off >= buf.length) throw new DecodeError('name past end');
    const len = buf[off]!;
    if (len === 0) {
      if (end < 0) end = off + 1;
      break;
    }
    if ((len & 0xc0) === 0xc0) {
      if (off + 1 >= buf.length) throw new DecodeError('pointer past end');
      if (end < 0) end = off + 2;
      if (++jumps > 64) throw new DecodeError('compression loop');
      off = ((len & 0x3f) << 8) | buf[off + 1]!;
      continue;
    }
    if (len > 63 || off + 1 + len > buf.length) throw new DecodeError('bad label');
    labels.push(buf.toString('latin1', off + 1, off + 1 + len));
    off += 1 + len;
  }
  return { labels, end };
}

/** Parse a query. Returns null for messages we must ignore (responses, shorter than a header). */
function parseQuery(buf: Buffer): Query | { formerr: true; id: number; opcode: number } | null {
  if (buf.length < 12) return null;
  const id = buf.readUInt16BE(0);
  const flags = buf.readUInt16BE(2);
  if (flags & 0x8000) return null; // a response: miekg's DefaultMsgAcceptFunc ignores it
  const opcode = (flags >> 11) & 0xf;
  const qd = buf.readUInt16BE(4);
  if (qd !== 1) return { formerr: true, id, opcode };
  try {
    const n = readName(buf, 12);
    let off = n.end;
    if (off + 4 > buf.length) throw new DecodeError('short question');
    const qtype = buf.readUInt16BE(off);
    const qclass = buf.readUInt16BE(off + 2);
    off += 4;
    const skip = buf.readUInt16BE(6) + buf.readUInt16BE(8);
    const ar = buf.readUInt16BE(10);
    let edns: Query['edns'] = null;
    for (let i = 0; i < skip + ar; i++) {
      const rn = readName(buf, off);
      off = rn.end;
      if (off + 10 > buf.length) throw new DecodeError('short rr');
      const type = buf.readUInt16BE(off);
      const cls = buf.readUInt16BE(off + 2);
      const rdlen = buf.readUInt16BE(off + 8);
      const rdStart = off + 10;
      off = rdStart + rdlen;
      if (off > buf.length) throw new DecodeError('short rdata');
      if (i >= skip && type === T.OPT && edns === null) {
        let ecs: Ecs | null = null;
        for (let o = rdStart; o + 4 <= rdStart + rdlen; ) {
          const code = buf.readUInt16BE(o);
          const olen = buf.readUInt16BE(o + 2);
          if (code === 8 && olen >= 4) {
            ecs = { family: buf.readUInt16BE(o + 4), source: buf[o + 6]!, addr: Buffer.from(buf.subarray(o + 8, o + 4 + olen)) };
          }
          o += 4 + olen;
        }
        edns = { udpSize: cls, ecs };
      }
    }
    const name = n.labels.length ? n.labels.join('.') + '.' : '.';
    return { id, opcode, rd: !!(flags & 0x100), cd: !!(flags & 0x10), labels: n.labels, name, qtype, qclass, edns };
  } catch (err) {
    if (err instanceof DecodeError) return { formerr: true, id, opcode };
    throw err;
  }
}

function splitName(name: string): string[] {
  if (name === '.' || name === '') return [];
  const s = name.endsWith('.') ? name.slice(0, -1) : name;
  return s.split('.');
}

/** Encoder with optional name compression (RFC 1035 §4.1.4), keyed on lowercased suffixes. */
class Writer {
  buf = Buffer.allocUnsafe(512);
  pos = 0;
  private names: Map<string, number> | null;
  constructor(compress: boolean) {
    this.names = compress ? new Map() : null;
  }
  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const nb = Buffer.allocUnsafe(size);
    this.buf.copy(nb, 0, 0, this.pos);
    this.buf = nb;
  }
  u8(v: number): void {
    this.ensure(1);
    this.buf[this.pos++] = v & 0xff;
  }
  u16(v: number): void {
    this.ensure(2);
    this.buf.writeUInt16BE(v & 0xffff, this.pos);
    this.pos += 2;
  }
  u32(v: number): void {
    this.ensure(4);
    this.buf.writeUInt32BE(v >>> 0, this.pos);
    this.pos += 4;
  }
  bytes(b: Buffer): void {
    this.ensure(b.length);
    b.copy(this.buf, this.pos);
    this.pos += b.length;
  }
  /** `usePtr` false: the name may be pointed to later but is itself written in full. */
  labels(labels: string[], usePtr = true): void {
    for (let i = 0; i < labels.length; i++) {
      if (this.names) {
        const key = labels.slice(i).join('.').toLowerCase();
        const at = this.names.get(key);
        if (at !== undefined && usePtr) {
          this.u16(0xc000 | at);
          return;
        }
        if (this.pos < 0x3fff) this.names.set(key, this.pos);
      }
      const l = Buffer.from(labels[i]!, 'latin1');
      this.u8(Math.min(l.length, 63));
      this.bytes(l.subarray(0, 63));
    }
    this.u8(0);
  }
  name(n: string): void {
    this.labels(splitName(n));
  }
}

function encodeMsg(m: Msg, compress: boolean): Buffer {
  const w = new Writer(compress);
  w.u16(m.id);
  w.u16(
    0x8000 |
      ((m.opcode & 0xf) << 11) |
      (m.aa ? 0x400 : 0) |
      (m.tc ? 0x200 : 0) |
      (m.rd ? 0x100 : 0) |
      (m.ra ? 0x80 : 0) |
      (m.cd ? 0x10 : 0) |
      (m.rcode & 0xf),
  );
  w.u16(m.q ? 1 : 0);
  w.u16(m.answer.length);
  w.u16(m.ns.length);
  w.u16(m.extra.length);
  if (m.q) {
    w.labels(m.q.labels);
    w.u16(m.q.qtype);
    w.u16(m.q.qclass);
  }
  for (const sec of [m.answer, m.ns, m.extra]) for (const rr of sec) writeRR(w, rr);
  return w.buf.subarray(0, w.pos);
}

function writeRR(w: Writer, rr: RR): void {
  w.name(rr.name);
  w.u16(rr.type);
  w.u16(rr.cls);
  w.u32(rr.ttl);
  const lenAt = w.pos;
  w.u16(0);
  const d = rr.d;
  switch (d.k) {
    case 'ip':
    case 'raw':
      w.bytes(d.b);
      break;
    case 'name':
      w.name(d.n);
      break;
    case 'srv':
      w.u16(d.priority);
      w.u16(d.weight);
      w.u16(d.port);
      // RFC 2782: the SRV target is not compressed (miekg packs it with compress=false).
      w.labels(splitName(d.target), false);
      break;
    case 'soa':
      w.name(d.mname);
      w.name(d.rname);
      w.u32(d.serial);
      w.u32(d.refresh);
      w.u32(d.retry);
      w.u32(d.expire);
      w.u32(d.minimum);
      break;
    case 'txt':
      for (const s of d.s) {
        const b = Buffer.from(s, 'utf8');
        for (let o = 0; o === 0 || o < b.length; o += 255) {
          const part = b.subarray(o, o + 255);
          w.u8(part.length);
          w.bytes(part);
        }
      }
      break;
  }
  w.buf.writeUInt16BE(w.pos - lenAt - 2, lenAt);
}

/** miekg SetReply: ID, opcode, RD and CD copied, question echoed, QR set. */
function setReply(q: Query): Msg {
  return {
    id: q.id,
    opcode: q.opcode,
    aa: false,
    tc: false,
    rd: q.rd,
    ra: false,
    cd: q.cd,
    rcode: RCODE.NOERROR,
    q: { labels: q.labels, qtype: q.qtype, qclass: q.qclass },
    answer: [],
    ns: [],
    extra: [],
  };
}

function ipBytes(ip: string): Buffer | null {
  const fam = net.isIP(ip);
  if (fam === 4) return Buffer.from(ip.split('.').map(Number));
  if (fam !== 6) return null;
  const out = Buffer.alloc(16);
  let s = ip;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (v4) {
    const parts = v4[1]!.split('.').map(Number);
    s = s.slice(0, -v4[1]!.length) + (((parts[0]! << 8) | parts[1]!).toString(16) + ':' + ((parts[2]! << 8) | parts[3]!).toString(16));
  }
  const [head, tail] = s.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

function ipFromBytes(b: Buffer): string {
  if (b.length === 4) return Array.from(b).join('.');
  const g: string[] = [];
  for (let i = 0; i < 16; i += 2) g.push(b.readUInt16BE(i).toString(16));
  return g.join(':');
}

/** dns.ReverseAddr: the in-addr.arpa / ip6.arpa name of an address, lowercase. */
function reverseAddr(ip: string): string | null {
  const b = ipBytes(ip);
  if (!b) return null;
  if (b.length === 4) return `${b[3]}.${b[2]}.${b[1]}.${b[0]}.in-addr.arpa.`;
  const nibbles: string[] = [];
  for (let i = 15; i >= 0; i--) nibbles.push((b[i]! & 0xf).toString(16), (b[i]! >> 4).toString(16));
  return nibbles.join('.') + '.ip6.arpa.';
}

// ---------------------------------------------------------------------------------------------
// Catalog state
// ---------------------------------------------------------------------------------------------

interface NodeRec {
  id: string;
  name: string;
  address: string;
  meta: Record<string, string>;
  createIndex: number;
  modifyIndex: number;
}

interface ServiceRec {
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

interface CheckRec {
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

interface Instance {
  svc: ServiceRec;
  node: NodeRec;
  checks: CheckRec[];
}

interface Waiter {
  min: number;
  current: () => number;
  done: () => void;
  timer: NodeJS.Timeout;
}

function uuidFor(s: string): string {
  // Stable, fake node IDs: readable in JSON, no randomness between runs.
  const h = Buffer.alloc(16);
  for (let i = 0; i < s.length; i++) h[i % 16] = (h[i % 16]! * 31 + s.charCodeAt(i)) & 0xff;
  const x = h.toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

/** Fisher–Yates, as structs.CheckServiceNodes.Shuffle() (math/rand) does on every DNS query. */
function shuffle<X>(a: X[]): X[] {
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    const t = a[i]!;
    a[i] = a[j]!;
    a[j] = t;
  }
  return a;
}

/** A Go duration ("10s", "1m30s", "250ms") in ms, or null. Used for `?wait=` (blockingquery). */
function parseGoDuration(s: string): number | null {
  if (s === '0') return 0;
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/gy;
  const unit: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60000, h: 3600000 };
  let total = 0;
  let m: RegExpExecArray | null;
  let pos = 0;
  while ((m = re.exec(s))) {
    total += Number(m[1]) * unit[m[2]!]!;
    pos = re.lastIndex;
  }
  return pos === s.length && s.length > 0 ? total : null;
}

function isLoopback(host: string): boolean {
  return /^127\.\d+\.\d+\.\d+$/.test(host) || host === '::1';
}

function parseHostPort(s: string, defPort: number): { host: string; port: number } {
  let m = /^\[([^\]]+)\](?::(\d+))?$/.exec(s);
  if (m) return { host: m[1]!, port: m[2] ? Number(m[2]) : defPort };
  if (net.isIPv6(s)) return { host: s, port: defPort };
  m = /^([^:]+)(?::(\d+))?$/.exec(s);
  if (m) return { host: m[1]!, port: m[2] ? Number(m[2]) : defPort };
  throw new SimError('SIM_BAD_ADDRESS', `expected host[:port], got ${JSON.stringify(s)}`);
}

// ---------------------------------------------------------------------------------------------
// The simulator
// ---------------------------------------------------------------------------------------------

const KEYWORDS = new Set(['service', 'connect', 'virtual', 'ingress', 'node', 'query', 'addr']);
/** libdns.InvalidNameRe: node names that cannot be DNS labels are skipped for NS records. */
const INVALID_NAME = /[^A-Za-z0-9\\-]+/;
/** trimUDPResponse: maxUDPAnswerLimit and maxUDPDatagramSize (math.MaxUint16 - 68). */
const MAX_UDP_ANSWER_LIMIT = 8;
const MAX_UDP_DATAGRAM = 65535 - 68;

interface Lookup {
  datacenter: string;
  peer: string;
}

class NotFound extends Error {
  readonly code = 'SIM_NAME_NOT_FOUND'; // errNameNotFound / IsErrNoDCPath / IsErrQueryNotFound -> NXDOMAIN
}
class NoData extends Error {
  readonly code = 'SIM_NO_DATA'; // errNoData -> NOERROR + SOA (RFC 2308 type 2 NODATA)
}

class ConsulSim implements Sim {
  host: string;
  dnsPort = 0;
  httpPort = 0;
  private q = 0;
  private h = 0;

  // config
  private readonly domain: string; // lowercase FQDN, "consul."
  private readonly alt: string | null;
  private readonly dc: string;
  private readonly nodeName: string;
  private readonly nodeTtl: number;
  private readonly ttlStrict = new Map<string, number>();
  private readonly ttlPrefix: [string, number][] = [];
  private readonly soaMin: number;
  private readonly udpLimit: number;
  private readonly onlyPassing: boolean;
  private readonly token: string | undefined;
  private readonly recursors: { host: string; port: number }[];
  private readonly recursorTimeout: number;
  private readonly enableTruncate: boolean;
  private readonly prepared: { id: string; name: string; service: string; tag?: string; ttl?: number }[];

  // state
  private idx = 1;
  private floor = 0; // bumpIndex(): every result index is at least this
  private servicesTableIndex = 1;
  private readonly serviceIndex = new Map<string, number>();
  private readonly nodes = new Map<string, NodeRec>(); // key: lowercase name
  private readonly services = new Map<string, ServiceRec>(); // key: service ID
  private readonly checks = new Map<string, CheckRec>(); // key: node\0checkId
  private readonly waiters = new Set<Waiter>();

  // faults and sockets
  private dnsFault: DnsFault | null = null;
  private httpFault: HttpFault | null = null;
  private delayMs = 2000;
  private udp: dgram.Socket | null = null;
  private tcp: net.Server | null = null;
  private readonly tcpConns = new Set<net.Socket>();
  private httpServer: http.Server | null = null;
  private readonly hanging = new Set<http.ServerResponse>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly upstreamSockets = new Set<dgram.Socket | net.Socket>();
  private stopped = false;

  constructor(private readonly opts: SimOptions) {
    this.host = opts.host ?? '127.0.0.1';
    this.domain = fqdnLower(opts.domain ?? 'consul');
    this.alt = opts.altDomain ? fqdnLower(opts.altDomain) : null;
    this.dc = (opts.datacenter ?? 'dc1').toLowerCase();
    this.nodeName = opts.nodeName ?? 'sim-agent';
    this.nodeTtl = opts.nodeTtl ?? 0;
    // GetDNSConfig: keys ending in '*' go to a radix tree (longest prefix), others are exact.
    for (const [k, v] of Object.entries(opts.serviceTtl ?? {})) {
      if (k.endsWith('*')) this.ttlPrefix.push([k.slice(0, -1), v]);
      else this.ttlStrict.set(k, v);
    }
    this.ttlPrefix.sort((a, b) => b[0].length - a[0].length);
    this.soaMin = opts.soaMinTtl ?? 0;
    this.udpLimit = opts.udpAnswerLimit ?? 3; // agent/config/default.go
    this.onlyPassing = opts.onlyPassing ?? false;
    this.token = opts.token;
    this.recursorTimeout = opts.recursorTimeoutMs ?? 2000;
    this.enableTruncate = opts.enableTruncate ?? false;
    // recursorAddr: port 53 when omitted. Team rule: loopback only.
    this.recursors = (opts.recursors ?? []).map((r) => {
      const hp = parseHostPort(r, 53);
      if (!isLoopback(hp.host)) throw new SimError('SIM_NON_LOOPBACK_RECURSOR', `recursor ${r} is not loopback`);
      return hp;
    });
    this.prepared = (opts.preparedQueries ?? []).map((p, i) => ({ ...p, id: uuidFor(`pq-${i}-${p.name}`) }));

    const nodeAddress = opts.nodeAddress ?? '127.0.0.1';
    this.ensureNode(this.nodeName, nodeAddress);
    const servers = opts.servers ?? [{ name: this.nodeName, address: nodeAddress }];
    for (const s of servers) {
      this.ensureNode(s.name, s.address);
      // Servers register service "consul" (structs.ConsulServiceName) on port 8300; NS records
      // come from its healthy instances (getNameserversAndNodeRecord).
      this.putService({ id: servers.length > 1 || s.name !== this.nodeName ? `consul-${s.name}` : 'consul', name: 'consul', node: s.name, port: 8300 });
    }
  }

  get queries(): number {
    return this.q;
  }
  get httpRequests(): number {
    return this.h;
  }
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
    for (const s of this.services.values()) if (s.node.toLowerCase() === node.toLowerCase()) this.touchService(s.name, at);
  }

  /** Wake blocked HTTP queries whose result index moved past their `?index=`. */
  private notify(): void {
    for (const w of this.waiters) {
      if (w.current() > w.min) {
        clearTimeout(w.timer);
        this.waiters.delete(w);
        w.done();
      }
    }
  }

  private ensureNode(name: string, address?: string): NodeRec {
    const key = name.toLowerCase();
    let n = this.nodes.get(key);
    if (!n) {
      const at = this.write();
      // Agents always carry node meta consul-network-segment="" (dns-configuration.mdx).
      n = { id: uuidFor(name), name, address: address ?? '127.0.0.1', meta: { 'consul-network-segment': '' }, createIndex: at, modifyIndex: at };
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

  private putService(s: {
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

  private putCheck(c: Omit<CheckRec, 'createIndex' | 'modifyIndex'>): void {
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

  private setCheckStatus(node: string, checkId: string, status: Health, output?: string): boolean {
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

  private removeService(id: string): boolean {
    const s = this.services.get(id);
    if (!s) return false;
    const at = this.write();
    this.services.delete(id);
    for (const [k, c] of this.checks) if (c.serviceId === id) this.checks.delete(k);
    this.touchService(s.name, at);
    this.servicesTableIndex = at;
    return true;
  }

  private findCheck(checkId: string): CheckRec | undefined {
    // Agent endpoints address checks by ID; the simulator's one agent hosts every node, so the
    // agent's own node wins, then any node.
    const own = this.checks.get(`${this.nodeName.toLowerCase()}\0${checkId}`);
    if (own) return own;
    for (const c of this.checks.values()) if (c.checkId === checkId) return c;
    return undefined;
  }

  // ------------------------------------------------------------------ programmatic API

  register(spec: RegisterSpec): void {
    const nodeName = spec.node ?? this.nodeName;
    this.ensureNode(nodeName, spec.nodeAddress);
    const id = spec.id ?? spec.name;
    const args: Parameters<ConsulSim['putService']>[0] = { id, name: spec.name, node: nodeName };
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
      this.putCheck({ node: s.node, checkId: `service:${serviceId}`, name: `Service '${s.name}' check`, status, notes: '', output: '', serviceId, type: 'ttl', interval: '' });
    } else this.setCheckStatus(s.node, `service:${serviceId}`, status);
    this.notify();
  }

  setNodeHealth(node: string, status: Health): void {
    if (!this.setCheckStatus(node, 'serfHealth', status, status === 'passing' ? 'Agent alive and reachable' : 'Agent not live or unreachable')) {
      throw new SimError('SIM_UNKNOWN_NODE', `unknown node ${node}`);
    }
    this.notify();
  }

  bumpIndex(): void {
    this.floor = this.write();
    this.notify();
  }

  // ------------------------------------------------------------------ queries on the catalog

  private instances(service: string, tag: string): Instance[] {
    const name = service.toLowerCase();
    const t = tag.toLowerCase();
    const out: Instance[] = [];
    for (const s of this.services.values()) {
      if (s.name.toLowerCase() !== name) continue;
      // Tag filtering is case-insensitive (structs.ServiceNode tag filter lowercases both sides).
      if (t && !s.tags.some((x) => x.toLowerCase() === t)) continue;
      const node = this.nodes.get(s.node.toLowerCase());
      if (!node) continue;
      out.push({ svc: s, node, checks: this.checksFor(s) });
    }
    return out;
  }

  private checksFor(s: ServiceRec): CheckRec[] {
    const out: CheckRec[] = [];
    const nk = s.node.toLowerCase();
    for (const c of this.checks.values()) {
      if (c.node.toLowerCase() === nk && (c.serviceId === '' || c.serviceId === s.id)) out.push(c);
    }
    return out;
  }

  /** CheckServiceNodes.Filter(onlyPassing): any critical check drops the instance; with
   *  onlyPassing any non-passing one does (structs.go FilterIgnore). */
  private static healthy(i: Instance, onlyPassing: boolean): boolean {
    for (const c of i.checks) {
      if (c.status === 'critical') return false;
      if (onlyPassing && c.status !== 'passing') return false;
    }
    return true;
  }

  /** GetTTLForService: exact name beats the longest `prefix*` (radix LongestPrefix). */
  private serviceTtl(service: string): number {
    const exact = this.ttlStrict.get(service);
    if (exact !== undefined) return exact;
    for (const [p, v] of this.ttlPrefix) if (service.startsWith(p)) return v;
    return 0;
  }

  // ------------------------------------------------------------------ DNS: routing (ServeMux)

  /** Which miekg ServeMux handler a name reaches: the domain(s), "arpa.", "." (recursors) or none. */
  private route(labels: string[]): 'consul' | 'arpa' | 'recurse' | 'refused' {
    const lname = labels.join('.').toLowerCase() + '.';
    if (inZone(lname, this.domain) || (this.alt && inZone(lname, this.alt))) return 'consul';
    if (inZone(lname, 'arpa.')) return 'arpa';
    // toggleRecursorHandlerFromConfig: the "." handler exists only with recursors; without it
    // miekg answers REFUSED (handleRefused, miekg/dns PR #1151; Consul #13307).
    return this.recursors.length ? 'recurse' : 'refused';
  }

  /** getResponseDomain: the domain suffix as the client spelled it (0x20 kept), or the domain. */
  private responseDomain(labels: string[]): string {
    let d = this.domain;
    for (let i = labels.length - 1; i >= 0; i--) {
      const suffix = labels.slice(i).join('.') + '.';
      const l = suffix.toLowerCase();
      if (l === this.domain || l === this.alt) d = suffix;
    }
    return d;
  }

  /** makeSOARecord. Note the case-sensitive HasSuffix(questionName, "."+altDomain) (PR #10431). */
  private soa(qname: string): RR {
    const domain = this.alt && qname.endsWith('.' + this.alt) ? this.alt : this.domain;
    return {
      name: domain,
      type: T.SOA,
      cls: 1,
      ttl: this.soaMin, // "Has to be consistent with MinTTL to avoid invalidation"
      d: {
        k: 'soa',
        mname: 'ns.' + domain,
        rname: 'hostmaster.' + domain, // not "postmaster" any more (#2301, #15739)
        serial: Math.floor(Date.now() / 1000),
        refresh: 3600, // builder.go RuntimeSOAConfig{Refresh: 3600, Retry: 600, Expire: 86400, Minttl: 0}
        retry: 600,
        expire: 86400,
        minimum: this.soaMin,
      },
    };
  }

  /** makeARecord: which address families a query type accepts. */
  private static familyOk(qtype: number, v4: boolean): boolean {
    if (qtype === T.SRV || qtype === T.ANY || qtype === T.NS || qtype === T.TXT) return true;
    return v4 ? qtype === T.A : qtype === T.AAAA;
  }

  /** makeRecordFromNode (IP node addresses only). */
  private nodeRecords(n: NodeRec, qtype: number, name: string, ttl: number): RR[] {
    const b = ipBytes(n.address);
    if (!b) {
      // A hostname node address: a CNAME (external node); no internal resolution in the simulator.
      return [{ name, type: T.CNAME, cls: 1, ttl, d: { k: 'name', n: fqdn(n.address) } }];
    }
    if (!ConsulSim.familyOk(qtype, b.length === 4)) return [];
    return [{ name, type: b.length === 4 ? T.A : T.AAAA, cls: 1, ttl, d: { k: 'ip', b } }];
  }

  /** makeTXTRecordFromNodeMeta: RFC 1464 key=value, bare value for `rfc1035-` keys. */
  private nodeMetaTxt(name: string, n: NodeRec, ttl: number): RR[] {
    return Object.entries(n.meta).map(([k, v]) => ({
      name,
      type: T.TXT,
      cls: 1,
      ttl,
      d: { k: 'txt' as const, s: [k.toLowerCase().startsWith('rfc1035-') ? v : encodeKVasRFC1464(k, v)] },
    }));
  }

  /** handleQuery: everything under the domain or alt_domain. */
  private handleQuery(q: Query, remote: string): Msg {
    const m = setReply(q);
    m.aa = true; // every reply Consul builds itself
    m.ra = this.recursors.length > 0;
    let ecsGlobal = true;
    switch (q.qtype) {
      case T.SOA: {
        // Any name under the domain: SOA + NS + glue, NOERROR even if the name does not exist (#15739).
        const { ns, glue } = this.nameservers(q);
        m.answer.push(this.soa(q.name));
        m.ns.push(...ns);
        m.extra.push(...glue);
        break;
      }
      case T.NS: {
        const { ns, glue } = this.nameservers(q);
        m.answer = ns;
        m.extra = glue;
        break;
      }
      case T.AXFR:
        m.rcode = RCODE.NOTIMP;
        break;
      default:
        try {
          ecsGlobal = this.dispatch(q, m, remote);
        } catch (err) {
          if (err instanceof NotFound) {
            m.rcode = RCODE.NXDOMAIN;
            m.ns.push(this.soa(q.name));
          } else if (err instanceof NoData) {
            m.ns.push(this.soa(q.name));
          } else throw err;
        }
    }
    this.setEDNS(q, m, ecsGlobal);
    return m;
  }

  /** getNameserversAndNodeRecord: up to 3 shuffled healthy "consul" servers, glue in Additional. */
  private nameservers(q: Query): { ns: RR[]; glue: RR[] } {
    const ns: RR[] = [];
    const glue: RR[] = [];
    const respDomain = this.responseDomain(q.labels);
    const servers = shuffle(this.instances('consul', '').filter((i) => ConsulSim.healthy(i, this.onlyPassing)));
    for (const s of servers) {
      if (INVALID_NAME.test(s.node.name)) continue;
      const target = `${s.node.name}.node.${this.dc}.${respDomain}`.toLowerCase();
      ns.push({ name: respDomain, type: T.NS, cls: 1, ttl: this.nodeTtl, d: { k: 'name', n: target } });
      glue.push(...this.nodeRecords(s.node, T.ANY, target, this.nodeTtl));
      if (ns.length >= 3) break;
    }
    return { ns, glue };
  }

  /** dispatch: parse the labels right to left for the first keyword. Returns ecsGlobal. */
  private dispatch(q: Query, m: Msg, remote: string): boolean {
    const respDomain = this.responseDomain(q.labels);
    const lname = q.name.toLowerCase();
    const trimmed = this.trimDomain(lname);
    const labels = splitName(trimmed);
    let kind = '';
    let parts: string[] = [];
    let suffixes: string[] = [];
    for (let i = labels.length - 1; i >= 0; i--) {
      const l = labels[i]!;
      if (KEYWORDS.has(l)) {
        kind = l;
        parts = labels.slice(0, i);
        suffixes = labels.slice(i + 1);
        break;
      }
      // SRV only: a label starting with "_" counts as the service keyword (_janus._tcp.consul).
      if (q.qtype === T.SRV && l.startsWith('_')) {
        kind = 'service';
        parts = labels.slice(0, i + 1);
        suffixes = labels.slice(i + 1);
        break;
      }
    }
    switch (kind) {
      case 'service': {
        const n = parts.length;
        if (n < 1) throw new NotFound();
        const lookup = this.locality(suffixes);
        let service: string;
        let tag: string;
        if (n === 2 && parts[0]!.startsWith('_') && parts[1]!.startsWith('_')) {
          // RFC 2782 _name._tag; "_tcp" means no tag filter.
          tag = parts[1]!.slice(1);
          if (tag === 'tcp') tag = '';
          service = parts[0]!.slice(1);
        } else {
          // tag[.tag].name: several labels left of the name are joined into one tag.
          tag = n >= 2 ? parts.slice(0, n - 1).join('.') : '';
          service = parts[n - 1]!;
        }
        this.serviceQuery(q, m, lookup, service, tag, this.serviceTtl(service));
        return true;
      }
      case 'connect':
      case 'ingress':
        // No service mesh in the simulator: no proxies or gateways, so no instances.
        this.locality(suffixes);
        if (parts.length < 1) throw new NotFound();
        throw new NotFound();
      case 'virtual':
        // No virtual IPs: NOERROR, empty (dispatch "virtual" with out == "").
        if (parts.length < 1) throw new NotFound();
        this.locality(suffixes);
        return true;
      case 'node': {
        if (parts.length < 1) throw new NotFound();
        const lookup = this.locality(suffixes);
        this.nodeQuery(q, m, lookup, parts.join('.'));
        return true;
      }
      case 'query': {
        const n = parts.length;
        if (n < 1 || suffixes.length > 1) throw new NotFound(); // parseDatacenter
        const dc = suffixes[0] ?? this.dc;
        let name: string;
        if (n >= 2 && parts[0]!.startsWith('_') && parts[n - 1]!.startsWith('_')) name = parts.slice(0, n - 1).join('.').slice(1);
        else name = parts.join('.');
        this.preparedQuery(q, m, dc, name, remote);
        // ecsNotGlobalError wraps every prepared query result: ECS scope = source prefix.
        return false;
      }
      case 'addr': {
        // <hex>.addr[.anything].<domain>: the suffixes are not checked at all.
        if (parts.length !== 1) throw new NotFound();
        const hex = parts[0]!;
        const size = Math.floor(hex.length / 2);
        if ((size !== 4 && size !== 16) || !/^[0-9a-f]*$/.test(hex) || hex.length % 2) throw new NotFound();
        const b = Buffer.from(hex, 'hex');
        // Owner is the lowercased qname + response domain (qName + respDomain in dispatch).
        const rr: RR = { name: trimmed + respDomain, type: size === 4 ? T.A : T.AAAA, cls: 1, ttl: this.nodeTtl, d: { k: 'ip', b } };
        // A mismatched type puts the record in Additional: NOERROR, no answer, no SOA (#10393).
        if (q.qtype === rr.type || q.qtype === T.ANY) m.answer.push(rr);
        else m.extra.push(rr);
        return true;
      }
      default:
        throw new NotFound(); // no keyword: "QName invalid"
    }
  }

  /** trimDomain: strip the longer of domain/alt_domain if it matches, else the shorter. */
  private trimDomain(lname: string): string {
    let longer = this.domain;
    let shorter = this.alt ?? '.';
    if (shorter.length > longer.length) [longer, shorter] = [shorter, longer];
    const cut = (s: string, suffix: string): string => (s.endsWith(suffix) ? s.slice(0, s.length - suffix.length) : s);
    if (lname.endsWith('.' + longer) || lname === longer) return cut(lname, longer);
    return cut(lname, shorter);
  }

  /** parseLocality (dns_ce.go): [.<dc>] | [.<dc>.dc] | [.<peer>.peer]. Unknown DC = "No path to
   *  datacenter" = NXDOMAIN; the simulator has no peers, so a peer is unknown too. */
  private locality(suffixes: string[]): Lookup {
    let dc = '';
    let peer = '';
    if (suffixes.length === 1) dc = suffixes[0]!;
    else if (suffixes.length === 2 || suffixes.length === 4) {
      for (let i = 0; i < suffixes.length; i += 2) {
        const kind = suffixes[i + 1];
        if (kind === 'dc') dc = suffixes[i]!;
        else if (kind === 'peer') peer = suffixes[i]!;
        else throw new NotFound();
      }
      if (dc && peer) throw new NotFound();
    } else if (suffixes.length !== 0) throw new NotFound();
    if (peer) throw new NotFound();
    if (dc && dc !== this.dc) throw new NotFound();
    return { datacenter: dc || this.dc, peer };
  }

  /** handleNodeQuery. */
  private nodeQuery(q: Query, m: Msg, lookup: Lookup, node: string): void {
    const qt = q.qtype;
    // Only ANY, A, AAAA and TXT; anything else is NOERROR, empty, no SOA (even for unknown nodes:
    // the check comes before the catalog lookup).
    if (qt !== T.ANY && qt !== T.A && qt !== T.AAAA && qt !== T.TXT) return;
    void lookup;
    const n = this.nodes.get(node);
    if (!n) throw new NotFound();
    if (qt !== T.TXT) m.answer.push(...this.nodeRecords(n, qt, q.name, this.nodeTtl));
    // enable_additional_node_meta_txt (default true): meta TXT in Additional for A/AAAA, in Answer
    // for TXT/ANY.
    const txt = this.nodeMetaTxt(q.name, n, this.nodeTtl);
    if (qt === T.TXT || qt === T.ANY) m.answer.push(...txt);
    else m.extra.push(...txt);
  }

  /** handleServiceQuery / handlePreparedQuery share the record building. */
  private serviceQuery(q: Query, m: Msg, lookup: Lookup, service: string, tag: string, ttl: number, onlyPassing = this.onlyPassing): void {
    const nodes = this.instances(service, tag).filter((i) => ConsulSim.healthy(i, onlyPassing));
    // No instance left: NXDOMAIN, indistinguishable from a service that does not exist.
    if (nodes.length === 0) throw new NotFound();
    shuffle(nodes);
    if (q.qtype === T.SRV) this.addSRV(q, m, lookup, nodes, ttl);
    else this.addNodeRecords(q, m, nodes, ttl);
    if (m.answer.length === 0) throw new NoData();
  }

  /** The address DNS uses: the service address if set, else the node address. */
  private static addrOf(i: Instance): { addr: string; own: boolean } {
    return i.svc.address ? { addr: i.svc.address, own: true } : { addr: i.node.address, own: false };
  }

  /** addServiceNodeRecordsToMessage: one record per distinct address, owner = qname as sent. */
  private addNodeRecords(q: Query, m: Msg, nodes: Instance[], ttl: number): void {
    const seen = new Set<string>();
    let cname: RR | null = null;
    for (const i of nodes) {
      const { addr } = ConsulSim.addrOf(i);
      const b = ipBytes(addr);
      if (!b) {
        if (!cname) cname = { name: q.name, type: T.CNAME, cls: 1, ttl, d: { k: 'name', n: fqdn(addr) } };
        continue;
      }
      if (!ConsulSim.familyOk(q.qtype, b.length === 4)) continue;
      if (seen.has(addr)) continue; // "Avoid duplicate entries"
      seen.add(addr);
      m.answer.push({ name: q.name, type: b.length === 4 ? T.A : T.AAAA, cls: 1, ttl, d: { k: 'ip', b } });
    }
    if (m.answer.length === 0 && cname) m.answer.push(cname);
  }

  /** findWeight: Weights.Warning if the aggregated status is warning, else Weights.Passing. */
  private static weight(i: Instance): number {
    const warn = i.checks.some((c) => c.status === 'warning');
    return warn ? i.svc.weights.Warning : i.svc.weights.Passing;
  }

  /** addServiceSRVRecordsToMessage + makeRecordFromServiceNode / makeRecordFromIP. */
  private addSRV(q: Query, m: Msg, lookup: Lookup, nodes: Instance[], ttl: number): void {
    const respDomain = this.responseDomain(q.labels);
    const seen = new Set<string>();
    for (const i of nodes) {
      const { addr, own } = ConsulSim.addrOf(i);
      const tuple = `${i.node.name}:${i.svc.address}:${i.svc.port}`;
      if (seen.has(tuple)) continue; // duplicates on node, address and port
      seen.add(tuple);
      const nodeFqdn = `${i.node.name}.node.${lookup.datacenter}.${respDomain}`;
      const b = ipBytes(addr);
      let target: string;
      if (!b) {
        target = fqdn(addr); // makeRecordFromFQDN, unresolved
      } else if (own) {
        // An explicit service IP gives <hex-ip>.addr.<dc>.<domain> (1.7.0, #7360 / #6792).
        target = `${b.toString('hex')}.addr.${lookup.datacenter}.${respDomain}`;
      } else {
        target = nodeFqdn;
      }
      m.answer.push({ name: q.name, type: T.SRV, cls: 1, ttl, d: { k: 'srv', priority: 1, weight: ConsulSim.weight(i), port: i.svc.port, target } });
      if (b) m.extra.push({ name: target, type: b.length === 4 ? T.A : T.AAAA, cls: 1, ttl, d: { k: 'ip', b } });
      // Node meta TXT, owned by the node FQDN, even when the target is an .addr name.
      m.extra.push(...this.nodeMetaTxt(nodeFqdn, i.node, ttl));
    }
  }

  /** handlePreparedQuery for the configured set; unknown query = IsErrQueryNotFound = NXDOMAIN. */
  private preparedQuery(q: Query, m: Msg, dc: string, name: string, remote: string): void {
    void remote; // the source IP (or ECS address) only matters for `near` sorting
    if (dc !== this.dc) throw new NotFound();
    const pq = this.prepared.find((p) => p.name.toLowerCase() === name || p.id === name);
    if (!pq) throw new NotFound();
    // DNS.TTL of the query, else service_ttl, else 0 (dns-cache.mdx).
    const ttl = pq.ttl ?? this.serviceTtl(pq.service);
    this.serviceQuery(q, m, { datacenter: this.dc, peer: '' }, pq.service, pq.tag ?? '', ttl, false);
  }

  /** handlePtr: node address first, then service address; TTL 0 (#10577); primary domain only. */
  private handlePtr(q: Query): Msg | null {
    const m = setReply(q);
    m.aa = true;
    m.ra = this.recursors.length > 0;
    if (q.qtype === T.SOA) m.ns.push(this.soa(q.name));
    const lname = q.name.toLowerCase();
    for (const n of this.nodes.values()) {
      if (reverseAddr(n.address) === lname) {
        m.answer.push({ name: q.name, type: T.PTR, cls: 1, ttl: 0, d: { k: 'name', n: `${n.name}.node.${this.dc}.${this.domain}` } });
        break;
      }
    }
    if (m.answer.length === 0) {
      for (const s of this.services.values()) {
        if (s.address && reverseAddr(s.address) === lname) {
          m.answer.push({ name: q.name, type: T.PTR, cls: 1, ttl: 0, d: { k: 'name', n: `${s.name}.service.${this.dc}.${this.domain}` } });
          break;
        }
      }
    }
    if (m.answer.length === 0) {
      if (this.recursors.length) return null; // recurse
      // PR #20679: NXDOMAIN + SOA (was SERVFAIL before, #20413).
      m.rcode = RCODE.NXDOMAIN;
      m.ns.push(this.soa(q.name));
    }
    this.setEDNS(q, m, true);
    return m;
  }

  /** setEDNS: echo the client's UDP size, version 0, no flags (DO not echoed); ECS echoed with
   *  scope 0 for global answers and the source prefix otherwise. No OPT in, no OPT out. */
  private setEDNS(q: Query, m: Msg, ecsGlobal: boolean): void {
    if (!q.edns) return;
    let opts = Buffer.alloc(0);
    const ecs = q.edns.ecs;
    if (ecs) {
      const global = ecsGlobal || m.rcode === RCODE.NXDOMAIN || m.rcode === RCODE.SERVFAIL || m.rcode === RCODE.REFUSED || m.rcode === RCODE.NOTIMP;
      const addrLen = Math.ceil(ecs.source / 8);
      const addr = Buffer.alloc(addrLen);
      ecs.addr.copy(addr, 0, 0, Math.min(addrLen, ecs.addr.length));
      opts = Buffer.alloc(8 + addrLen);
      opts.writeUInt16BE(8, 0);
      opts.writeUInt16BE(4 + addrLen, 2);
      opts.writeUInt16BE(ecs.family, 4);
      opts[6] = ecs.source;
      opts[7] = global ? 0 : ecs.source;
      addr.copy(opts, 8);
    }
    m.extra.push({ name: '.', type: T.OPT, cls: q.edns.udpSize, ttl: 0, d: { k: 'raw', b: opts } });
  }

  // ------------------------------------------------------------------ DNS: size limits

  /** trimUDPResponse: count cap for 512-byte (non-EDNS) clients measured uncompressed, then the
   *  size limit (advertised EDNS size, capped at 65467) minus 8 for the UDP header. */
  private trimUDP(q: Query, m: Msg): boolean {
    const numAnswers = m.answer.length;
    const hasExtra = m.extra.length > 0;
    let maxSize = 512;
    if (q.edns && q.edns.udpSize > maxSize) maxSize = q.edns.udpSize;
    if (maxSize > MAX_UDP_DATAGRAM) maxSize = MAX_UDP_DATAGRAM;
    const index = hasExtra ? indexRRs(m.extra) : null;
    const maxAnswers = Math.min(MAX_UDP_ANSWER_LIMIT, this.udpLimit);
    let compress = true;
    if (maxSize === 512 && numAnswers > maxAnswers) {
      // "We disable computation of Len ONLY for non-eDNS request (512 bytes)"
      compress = false;
      m.answer = m.answer.slice(0, maxAnswers);
      if (index) syncExtra(index, m);
    }
    while (m.answer.length > 1 && encodeMsg(m, compress).length > maxSize - 8) {
      if (m.ns.length) m.ns = []; // first try to drop the NS section
      if (encodeMsg(m, compress).length - maxSize > 100) m.answer = m.answer.slice(0, binaryTruncate(m, maxSize, index, compress));
      else m.answer = m.answer.slice(0, -1);
      if (index) syncExtra(index, m);
    }
    return m.answer.length < numAnswers;
  }

  /** trimTCPResponse: 65523 bytes, at most 4096 answers (1024 for SRV). */
  private trimTCP(q: Query, m: Msg): boolean {
    const maxSize = 65523;
    const hasExtra = m.extra.length > 0;
    const truncateAt = q.qtype === T.SRV ? 1024 : 4096;
    if (m.answer.length > truncateAt) m.answer = m.answer.slice(0, truncateAt);
    const index = hasExtra ? indexRRs(m.extra) : null;
    let truncated = false;
    while (m.answer.length > 1 && encodeMsg(m, true).length > maxSize) {
      truncated = true;
      if (m.ns.length) m.ns = [];
      if (encodeMsg(m, true).length - maxSize > 100) m.answer = m.answer.slice(0, binaryTruncate(m, maxSize, index, true));
      else m.answer = m.answer.slice(0, -1);
      if (index) syncExtra(index, m);
    }
    return truncated;
  }

  // ------------------------------------------------------------------ DNS: one query end to end

  /** Build the reply the agent would send: a Msg we authored, or raw bytes relayed from a recursor. */
  private async resolve(buf: Buffer, transport: 'udp' | 'tcp', remote: string): Promise<{ q: Query | null; msg?: Msg; raw?: Buffer } | null> {
    const q = parseQuery(buf);
    if (q === null) return null;
    if ('formerr' in q) {
      // miekg answers unparseable queries / QDCOUNT != 1 with a bare FORMERR header.
      return { q: null, msg: { id: q.id, opcode: q.opcode, aa: false, tc: false, rd: false, ra: false, cd: false, rcode: RCODE.FORMERR, q: null, answer: [], ns: [], extra: [] } };
    }
    if (q.opcode !== 0 && q.opcode !== 4) {
      // DefaultMsgAcceptFunc: MsgRejectNotImplemented for anything but QUERY and NOTIFY.
      const m = setReply(q);
      m.q = null;
      m.rcode = RCODE.NOTIMP;
      return { q, msg: m };
    }
    // ServeMux.match: for DS the zone apex handler is only a fallback, "." (recursors) wins.
    let where = this.route(q.labels);
    if (q.qtype === 43 && where === 'consul' && this.recursors.length) where = 'recurse';
    switch (where) {
      case 'consul': {
        const m = this.handleQuery(q, remote);
        const trimmed = transport === 'udp' ? this.trimUDP(q, m) : this.trimTCP(q, m);
        if (trimmed && this.enableTruncate) m.tc = true;
        return { q, msg: m };
      }
      case 'arpa': {
        const m = this.handlePtr(q);
        if (m) return { q, msg: m };
        return { q, ...(await this.recurse(q, buf, transport)) };
      }
      case 'recurse':
        return { q, ...(await this.recurse(q, buf, transport)) };
      case 'refused': {
        // handleRefused: SetRcode(req, RcodeRefused) - question echoed, no AA, RA or OPT.
        const m = setReply(q);
        m.rcode = RCODE.REFUSED;
        return { q, msg: m };
      }
    }
  }

  /** handleRecurse: the original message over the client's transport, recursors in order; accept
   *  NOERROR/NXDOMAIN or truncated, relay verbatim; else SERVFAIL with RA, no AA (#4426). */
  private async recurse(q: Query, raw: Buffer, transport: 'udp' | 'tcp'): Promise<{ msg?: Msg; raw?: Buffer }> {
    for (const r of this.recursors) {
      try {
        const reply = transport === 'tcp' ? await this.exchangeTcp(raw, r) : await this.exchangeUdp(raw, r);
        if (reply.length < 12 || reply.readUInt16BE(0) !== q.id) continue; // miekg ErrId
        const rcode = reply[3]! & 0xf;
        if (rcode !== RCODE.NOERROR && rcode !== RCODE.NXDOMAIN) continue;
        return { raw: reply };
      } catch {
        continue;
      }
    }
    const m = setReply(q);
    m.ra = true;
    m.rcode = RCODE.SERVFAIL;
    this.setEDNS(q, m, true);
    return { msg: m };
  }

  private exchangeUdp(query: Buffer, to: { host: string; port: number }): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const s = dgram.createSocket(net.isIPv6(to.host) ? 'udp6' : 'udp4');
      this.upstreamSockets.add(s);
      const done = (err: Error | null, b?: Buffer): void => {
        clearTimeout(timer);
        this.upstreamSockets.delete(s);
        try {
          s.close();
        } catch {
          /* already closed by stop() */
        }
        if (err) reject(err);
        else resolve(b!);
      };
      const timer = setTimeout(() => done(new SimError('SIM_RECURSOR_TIMEOUT', 'recursor timeout')), this.recursorTimeout);
      s.on('error', (e) => done(e));
      s.on('message', (b) => done(null, b));
      s.send(query, to.port, to.host);
    });
  }

  private exchangeTcp(query: Buffer, to: { host: string; port: number }): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host: to.host, port: to.port });
      this.upstreamSockets.add(s);
      let acc = Buffer.alloc(0);
      const done = (err: Error | null, b?: Buffer): void => {
        clearTimeout(timer);
        this.upstreamSockets.delete(s);
        s.destroy();
        if (err) reject(err);
        else resolve(b!);
      };
      const timer = setTimeout(() => done(new SimError('SIM_RECURSOR_TIMEOUT', 'recursor timeout')), this.recursorTimeout);
      s.on('error', (e) => done(e));
      s.on('close', () => done(new SimError('SIM_RECURSOR_CLOSED', 'recursor closed the connection')));
      s.on('data', (d) => {
        acc = Buffer.concat([acc, d]);
        if (acc.length >= 2 && acc.length >= 2 + acc.readUInt16BE(0)) done(null, acc.subarray(2, 2 + acc.readUInt16BE(0)));
      });
      const len = Buffer.alloc(2);
      len.writeUInt16BE(query.length);
      s.write(Buffer.concat([len, query]));
    });
  }

  /** Apply the current DNS fault to a query; null means "send nothing". */
  private async serve(buf: Buffer, transport: 'udp' | 'tcp', remote: string): Promise<Buffer | null> {
    this.q++;
    const fault = this.dnsFault;
    if (fault === 'silent') return null;
    if (fault === 'garbage') {
      // Random bytes, but with the query's ID and QR set so a client cannot discard them on the ID
      // alone; QDCOUNT 65535 guarantees they do not decode.
      const g = randomBytes(40);
      if (buf.length >= 2) buf.copy(g, 0, 0, 2);
      g[2] = g[2]! | 0x80;
      g.writeUInt16BE(0xffff, 4);
      return this.delayed(g, 0);
    }
    let res: Awaited<ReturnType<ConsulSim['resolve']>>;
    if (fault === 'servfail') {
      const q = parseQuery(buf);
      if (!q || 'formerr' in q) res = await this.resolve(buf, transport, remote);
      else {
        // What an agent that cannot reach its servers sends: SERVFAIL, AA set, no SOA (rCodeFromError).
        const m = setReply(q);
        m.aa = true;
        m.ra = this.recursors.length > 0;
        m.rcode = RCODE.SERVFAIL;
        this.setEDNS(q, m, true);
        res = { q, msg: m };
      }
    } else res = await this.resolve(buf, transport, remote);
    if (!res) return null;
    let out: Buffer;
    if (res.msg) {
      const m = res.msg;
      if (fault === 'wrongquestion' && m.q) {
        const wrong = ['wrong-question', ...m.q.labels];
        const oldName = m.q.labels.join('.') + '.';
        for (const rr of [...m.answer, ...m.ns, ...m.extra]) if (rr.name === oldName) rr.name = wrong.join('.') + '.';
        m.q = { ...m.q, labels: wrong };
      }
      if (fault === 'truncated' && transport === 'udp') {
        m.tc = true;
        m.answer = [];
        m.ns = [];
        m.extra = [];
      }
      out = encodeMsg(m, true);
    } else {
      out = Buffer.from(res.raw!);
      if (fault === 'truncated' && transport === 'udp' && out.length >= 12) {
        let end = 12;
        try {
          end = out.readUInt16BE(4) ? readName(out, 12).end + 4 : 12;
        } catch {
          /* keep the bare header */
        }
        out = out.subarray(0, Math.min(end, out.length));
        out[2] = out[2]! | 0x02;
        out.writeUInt16BE(0, 6);
        out.writeUInt16BE(0, 8);
        out.writeUInt16BE(0, 10);
      }
      if (fault === 'wrongquestion' && out.length > 13 && out.readUInt16BE(4) === 1 && out[12]! > 0 && out[12]! < 64) {
        // Relayed bytes: replace the first character of the question name with a different letter.
        out[13] = (out[13]! | 0x20) === 0x78 ? 0x79 : 0x78;
      }
    }
    if (fault === 'wrongid') out.writeUInt16BE((out.readUInt16BE(0) + 1) & 0xffff, 0);
    return this.delayed(out, fault === 'slow' ? this.delayMs : 0);
  }

  private delayed(b: Buffer, ms: number): Promise<Buffer | null> | Buffer {
    if (ms <= 0) return b;
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.timers.delete(t);
        resolve(this.stopped ? null : b);
      }, ms);
      this.timers.add(t);
    });
  }

  // ------------------------------------------------------------------ DNS: sockets

  private onUdp(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const sock = this.udp;
    void Promise.resolve(this.serve(msg, 'udp', rinfo.address))
      .then((reply) => {
        if (reply && sock && sock === this.udp && !this.stopped) sock.send(reply, rinfo.port, rinfo.address);
      })
      .catch(() => {
        /* a bug here must not kill the test process; the query just goes unanswered */
      });
  }

  private onTcpConn(sock: net.Socket): void {
    this.tcpConns.add(sock);
    let acc = Buffer.alloc(0);
    // miekg dns.Server closes idle TCP connections (IdleTimeout 8 s).
    sock.setTimeout(8000, () => sock.destroy());
    sock.on('close', () => this.tcpConns.delete(sock));
    sock.on('error', () => sock.destroy());
    sock.on('data', (d) => {
      acc = acc.length ? Buffer.concat([acc, d]) : d;
      while (acc.length >= 2) {
        const len = acc.readUInt16BE(0);
        if (acc.length < 2 + len) break;
        const frame = Buffer.from(acc.subarray(2, 2 + len));
        acc = acc.subarray(2 + len);
        void Promise.resolve(this.serve(frame, 'tcp', sock.remoteAddress ?? ''))
          .then((reply) => {
            if (!reply || sock.destroyed) return;
            const l = Buffer.alloc(2);
            l.writeUInt16BE(reply.length);
            sock.write(Buffer.concat([l, reply]));
          })
          .catch(() => sock.destroy());
      }
    });
  }

  private async bindDns(port: number): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const udp = dgram.createSocket(net.isIPv6(this.host) ? 'udp6' : 'udp4');
      await new Promise<void>((resolve, reject) => {
        udp.once('error', reject);
        udp.bind(port, this.host, () => {
          udp.off('error', reject);
          resolve();
        });
      });
      udp.on('error', () => {
        /* ICMP errors for gone clients */
      });
      const actual = udp.address().port;
      const tcp = net.createServer((s) => this.onTcpConn(s));
      try {
        await new Promise<void>((resolve, reject) => {
          tcp.once('error', reject);
          tcp.listen(actual, this.host, () => {
            tcp.off('error', reject);
            resolve();
          });
        });
      } catch (err) {
        udp.close();
        // Port 0: the UDP port's TCP twin may be taken; pick another pair.
        if (port === 0 && attempt < 20 && (err as NodeJS.ErrnoException).code === 'EADDRINUSE') continue;
        throw err;
      }
      udp.on('message', (msg, rinfo) => this.onUdp(msg, rinfo));
      this.udp = udp;
      this.tcp = tcp;
      this.dnsPort = actual;
      return;
    }
  }

  private async closeDns(): Promise<void> {
    const udp = this.udp;
    const tcp = this.tcp;
    this.udp = null;
    this.tcp = null;
    if (udp) await new Promise<void>((r) => udp.close(() => r()));
    for (const s of this.tcpConns) s.destroy();
    this.tcpConns.clear();
    if (tcp) await new Promise<void>((r) => tcp.close(() => r()));
  }

  // ------------------------------------------------------------------ HTTP API

  private nodeJson(n: NodeRec): Record<string, unknown> {
    const fam = net.isIPv6(n.address) ? 'ipv6' : 'ipv4';
    return {
      ID: n.id,
      Node: n.name,
      Address: n.address,
      Datacenter: this.dc,
      TaggedAddresses: { lan: n.address, [`lan_${fam}`]: n.address, wan: n.address, [`wan_${fam}`]: n.address },
      Meta: { ...n.meta },
      CreateIndex: n.createIndex,
      ModifyIndex: n.modifyIndex,
    };
  }

  private serviceJson(s: ServiceRec): Record<string, unknown> {
    const tagged: Record<string, unknown> = {};
    if (s.address) {
      const fam = net.isIPv6(s.address) ? 'ipv6' : 'ipv4';
      tagged[`lan_${fam}`] = { Address: s.address, Port: s.port };
      tagged[`wan_${fam}`] = { Address: s.address, Port: s.port };
    }
    return {
      ID: s.id,
      Service: s.name,
      Tags: [...s.tags], // normalised to [] (agent/health_endpoint.go)
      Address: s.address,
      TaggedAddresses: tagged,
      Meta: { ...s.meta },
      Port: s.port,
      Weights: { ...s.weights },
      EnableTagOverride: s.enableTagOverride,
      Proxy: { Mode: '', MeshGateway: {}, Expose: {} },
      Connect: {},
      PeerName: '',
      CreateIndex: s.createIndex,
      ModifyIndex: s.modifyIndex,
    };
  }

  private checkJson(c: CheckRec): Record<string, unknown> {
    const s = c.serviceId ? this.services.get(c.serviceId) : undefined;
    return {
      Node: c.node,
      CheckID: c.checkId,
      Name: c.name,
      Status: c.status,
      Notes: c.notes,
      Output: c.output,
      ServiceID: c.serviceId,
      ServiceName: s?.name ?? '',
      ServiceTags: s ? [...s.tags] : [],
      Type: c.type,
      Interval: c.interval,
      Timeout: '',
      ExposedPort: 0,
      Definition: {},
      CreateIndex: c.createIndex,
      ModifyIndex: c.modifyIndex,
    };
  }

  private svcIndex(name: string): number {
    return Math.max(this.serviceIndex.get(name.toLowerCase()) ?? this.servicesTableIndex, this.floor, 1);
  }

  private onHttp(req: http.IncomingMessage, res: http.ServerResponse): void {
    this.h++;
    const fault = this.httpFault;
    if (fault === 'hang') {
      // Accept and never answer, until the fault is cleared (the socket is then destroyed) or stop().
      this.hanging.add(res);
      res.on('close', () => this.hanging.delete(res));
      return;
    }
    if (fault === '500') {
      // What an agent that lost its servers says (rpc error making call).
      send(res, 500, 'rpc error making call: No cluster leader', 'text/plain');
      return;
    }
    const go = (): void => {
      this.route404(req, res).catch((err: unknown) => {
        if (!res.headersSent) send(res, 500, String(err instanceof Error ? err.message : err), 'text/plain');
      });
    };
    if (fault === 'slow') {
      const t = setTimeout(() => {
        this.timers.delete(t);
        if (!this.stopped) go();
      }, this.delayMs);
      this.timers.add(t);
    } else go();
  }

  private async route404(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://sim');
    const path = url.pathname;
    const method = req.method ?? 'GET';
    const body = await readBody(req);

    if (path === '/v1/status/leader') return send(res, 200, JSON.stringify(this.leader()));
    if (path === '/v1/status/peers') return send(res, 200, JSON.stringify(this.peers()));

    // ACL: a token is required once one is configured (agent/http.go; ACL not found / Permission denied).
    if (this.token !== undefined) {
      const auth = req.headers['authorization'];
      const given =
        (req.headers['x-consul-token'] as string | undefined) ??
        url.searchParams.get('token') ??
        (typeof auth === 'string' && auth.startsWith('Bearer ') ? auth.slice(7) : undefined);
      if (given === undefined || given === '') return send(res, 403, 'Permission denied: anonymous token lacks permission', 'text/plain');
      if (given !== this.token) return send(res, 403, 'ACL not found', 'text/plain');
    }

    const dc = url.searchParams.get('dc');
    if (dc && dc.toLowerCase() !== this.dc) return send(res, 500, 'No path to datacenter', 'text/plain');

    let m: RegExpExecArray | null;
    if (method === 'GET' || method === 'HEAD') {
      if ((m = /^\/v1\/health\/service\/(.+)$/.exec(path))) {
        const name = decodeURIComponent(m[1]!);
        const passing = parseBoolParam(url.searchParams, 'passing');
        if (passing === null) return send(res, 400, 'Invalid value for ?passing', 'text/plain');
        const tags = url.searchParams.getAll('tag');
        return this.blocking(url, res, () => this.svcIndex(name), () => {
          let list = this.instances(name, '');
          for (const t of tags) list = list.filter((i) => i.svc.tags.some((x) => x.toLowerCase() === t.toLowerCase()));
          // ?passing drops anything not passing (stricter than DNS, which only drops critical).
          if (passing) list = list.filter((i) => ConsulSim.healthy(i, true));
          list.sort((a, b) => cmp(a.node.name, b.node.name) || cmp(a.svc.id, b.svc.id));
          return list.map((i) => ({ Node: this.nodeJson(i.node), Service: this.serviceJson(i.svc), Checks: i.checks.map((c) => this.checkJson(c)) }));
        });
      }
      if ((m = /^\/v1\/health\/state\/([^/]+)$/.exec(path))) {
        const state = m[1]!;
        if (!['any', 'passing', 'warning', 'critical'].includes(state)) return send(res, 400, 'Invalid state', 'text/plain');
        return this.blocking(url, res, () => this.idx, () => [...this.checks.values()].filter((c) => state === 'any' || c.status === state).map((c) => this.checkJson(c)));
      }
      if ((m = /^\/v1\/health\/checks\/(.+)$/.exec(path))) {
        const name = decodeURIComponent(m[1]!);
        return this.blocking(url, res, () => this.svcIndex(name), () =>
          [...this.checks.values()].filter((c) => c.serviceId && this.services.get(c.serviceId)?.name.toLowerCase() === name.toLowerCase()).map((c) => this.checkJson(c)),
        );
      }
      if ((m = /^\/v1\/health\/node\/(.+)$/.exec(path))) {
        const node = decodeURIComponent(m[1]!).toLowerCase();
        return this.blocking(url, res, () => this.idx, () => [...this.checks.values()].filter((c) => c.node.toLowerCase() === node).map((c) => this.checkJson(c)));
      }
      if (path === '/v1/catalog/services') {
        return this.blocking(url, res, () => Math.max(this.servicesTableIndex, this.floor), () => {
          // name -> union of its tags (catalog.mdx)
          const out: Record<string, string[]> = {};
          for (const s of this.services.values()) {
            const tags = (out[s.name] ??= []);
            for (const t of s.tags) if (!tags.includes(t)) tags.push(t);
          }
          return out;
        });
      }
      if ((m = /^\/v1\/catalog\/service\/(.+)$/.exec(path))) {
        const name = decodeURIComponent(m[1]!);
        return this.blocking(url, res, () => this.svcIndex(name), () =>
          this.instances(name, url.searchParams.get('tag') ?? '').map((i) => ({
            ID: i.node.id,
            Node: i.node.name,
            Address: i.node.address,
            Datacenter: this.dc,
            TaggedAddresses: (this.nodeJson(i.node) as { TaggedAddresses: unknown }).TaggedAddresses,
            NodeMeta: { ...i.node.meta },
            ServiceID: i.svc.id,
            ServiceName: i.svc.name,
            ServiceTags: [...i.svc.tags],
            ServiceAddress: i.svc.address,
            ServicePort: i.svc.port,
            ServiceMeta: { ...i.svc.meta },
            ServiceWeights: { ...i.svc.weights },
            ServiceEnableTagOverride: i.svc.enableTagOverride,
            CreateIndex: i.svc.createIndex,
            ModifyIndex: i.svc.modifyIndex,
          })),
        );
      }
      if (path === '/v1/catalog/nodes') return this.blocking(url, res, () => this.idx, () => [...this.nodes.values()].map((n) => this.nodeJson(n)));
      if (path === '/v1/agent/services') {
        const out: Record<string, unknown> = {};
        for (const s of this.services.values()) out[s.id] = { ...this.serviceJson(s), Datacenter: this.dc };
        return send(res, 200, JSON.stringify(out));
      }
      if (path === '/v1/agent/checks') {
        const out: Record<string, unknown> = {};
        for (const c of this.checks.values()) if (c.checkId !== 'serfHealth') out[c.checkId] = this.checkJson(c);
        return send(res, 200, JSON.stringify(out));
      }
      if (path === '/v1/agent/self') {
        const n = this.nodes.get(this.nodeName.toLowerCase())!;
        return send(res, 200, JSON.stringify({ Config: { Datacenter: this.dc, NodeName: n.name, NodeID: n.id, Server: true, Version: '1.19.2-sim' }, Member: { Name: n.name, Addr: n.address, Port: 8301, Status: 1 }, Meta: n.meta }));
      }
    }
    if (method === 'PUT' || method === 'POST') {
      if (path === '/v1/agent/service/register') return this.httpRegister(url, res, body);
      if ((m = /^\/v1\/agent\/service\/deregister\/(.+)$/.exec(path))) {
        const id = decodeURIComponent(m[1]!);
        if (!this.removeService(id)) return send(res, 404, `Unknown service ID "${id}". Ensure that the service ID is passed, not the service name.`, 'text/plain');
        this.notify();
        return send(res, 200, '');
      }
      if ((m = /^\/v1\/agent\/service\/maintenance\/(.+)$/.exec(path))) {
        const id = decodeURIComponent(m[1]!);
        const enable = parseBoolParam(url.searchParams, 'enable', true);
        if (enable === undefined) return send(res, 400, 'Missing value for enable', 'text/plain');
        if (enable === null) return send(res, 400, 'Invalid value for enable', 'text/plain');
        const s = this.services.get(id);
        if (!s) return send(res, 404, `Unknown service ID "${id}"`, 'text/plain');
        const checkId = `_service_maintenance:${id}`;
        if (enable) {
          this.putCheck({
            node: s.node,
            checkId,
            name: 'Service Maintenance Mode',
            status: 'critical',
            notes: url.searchParams.get('reason') || 'Maintenance mode is enabled for this service, but no reason was provided. This is a default message.',
            output: '',
            serviceId: id,
            type: 'maintenance',
            interval: '',
          });
        } else this.deleteCheck(s.node, checkId);
        this.notify();
        return send(res, 200, '');
      }
      if (path === '/v1/agent/maintenance') {
        const enable = parseBoolParam(url.searchParams, 'enable', true);
        if (enable === undefined) return send(res, 400, 'Missing value for enable', 'text/plain');
        if (enable === null) return send(res, 400, 'Invalid value for enable', 'text/plain');
        // Simulator extension: ?node= picks which of the simulated nodes (default: the agent's own).
        const node = this.nodes.get((url.searchParams.get('node') ?? this.nodeName).toLowerCase());
        if (!node) return send(res, 404, 'Unknown node', 'text/plain');
        if (enable) {
          this.putCheck({
            node: node.name,
            checkId: '_node_maintenance',
            name: 'Node Maintenance Mode',
            status: 'critical',
            notes: url.searchParams.get('reason') || 'Maintenance mode is enabled for this node, but no reason was provided. This is a default message.',
            output: '',
            serviceId: '',
            type: 'maintenance',
            interval: '',
          });
        } else this.deleteCheck(node.name, '_node_maintenance');
        this.notify();
        return send(res, 200, '');
      }
      if (path === '/v1/agent/check/register') return this.httpCheckRegister(res, body);
      if ((m = /^\/v1\/agent\/check\/deregister\/(.+)$/.exec(path))) {
        const c = this.findCheck(decodeURIComponent(m[1]!));
        if (!c) return send(res, 404, `Unknown check ID "${decodeURIComponent(m[1]!)}"`, 'text/plain');
        this.deleteCheck(c.node, c.checkId);
        this.notify();
        return send(res, 200, '');
      }
      if ((m = /^\/v1\/agent\/check\/(pass|warn|fail|update)\/(.+)$/.exec(path))) {
        const id = decodeURIComponent(m[2]!);
        const c = this.findCheck(id);
        if (!c) return send(res, 404, `Unknown check ID "${id}"`, 'text/plain');
        let status: Health;
        let output: string;
        if (m[1] === 'update') {
          const b = parseJson(body);
          const st = String(pick(b, 'status') ?? '');
          if (st !== 'passing' && st !== 'warning' && st !== 'critical') return send(res, 400, `Invalid check status: "${st}"`, 'text/plain');
          status = st;
          output = String(pick(b, 'output') ?? '');
        } else {
          status = m[1] === 'pass' ? 'passing' : m[1] === 'warn' ? 'warning' : 'critical';
          output = url.searchParams.get('note') ?? '';
        }
        this.setCheckStatus(c.node, c.checkId, status, output);
        this.notify();
        return send(res, 200, '');
      }
    }
    if (/^\/v1\//.test(path) && (method === 'GET' || method === 'PUT' || method === 'POST')) {
      return send(res, 405, `method ${method} not allowed`, 'text/plain');
    }
    return send(res, 404, 'Not Found', 'text/plain');
  }

  private deleteCheck(node: string, checkId: string): void {
    const key = `${node.toLowerCase()}\0${checkId}`;
    const c = this.checks.get(key);
    if (!c) return;
    const at = this.write();
    this.checks.delete(key);
    this.touchCheckOwner(c, at);
  }

  private leader(): string {
    const s = this.instances('consul', '')[0];
    return s ? `${net.isIPv6(s.node.address) ? `[${s.node.address}]` : s.node.address}:8300` : '';
  }

  private peers(): string[] {
    return this.instances('consul', '').map((s) => `${s.node.address}:8300`);
  }

  /** Blocking queries (blocking.mdx, agent/blockingquery): wait while the result index is not
   *  greater than ?index=; wait default 5 min, cap 10 min, plus up to wait/16 jitter. */
  private async blocking(url: URL, res: http.ServerResponse, current: () => number, result: () => unknown): Promise<void> {
    const idxParam = url.searchParams.get('index');
    const waitParam = url.searchParams.get('wait');
    let min = 0;
    if (idxParam !== null) {
      if (!/^\d+$/.test(idxParam)) return send(res, 400, 'Invalid index', 'text/plain');
      min = Number(idxParam);
    }
    let wait = 5 * 60_000;
    if (waitParam !== null) {
      const w = parseGoDuration(waitParam);
      if (w === null) return send(res, 400, 'Invalid wait time', 'text/plain');
      wait = w;
    }
    if (wait <= 0) wait = 5 * 60_000; // defaultQueryTime
    if (wait > 10 * 60_000) wait = 10 * 60_000; // maxQueryTime
    if (min > 0 && current() <= min) {
      const timeout = wait + (wait >= 16 ? randomInt(Math.floor(wait / 16) + 1) : 0);
      await new Promise<void>((resolve) => {
        const w: Waiter = {
          min,
          current,
          done: resolve,
          timer: setTimeout(() => {
            this.waiters.delete(w);
            resolve();
          }, timeout),
        };
        this.waiters.add(w);
        res.on('close', () => {
          if (this.waiters.delete(w)) {
            clearTimeout(w.timer);
            resolve();
          }
        });
      });
      if (res.destroyed || this.stopped) return;
    }
    send(res, 200, JSON.stringify(result()), 'application/json', Math.max(current(), 1));
  }

  private httpRegister(url: URL, res: http.ServerResponse, body: string): void {
    const b = parseJson(body);
    if (!b) return send(res, 400, 'Request decode failed: invalid JSON', 'text/plain');
    const name = pick(b, 'name');
    if (typeof name !== 'string' || !name) return send(res, 400, 'Missing service name', 'text/plain');
    const id = (pick(b, 'id') as string | undefined) || name;
    const port = pick(b, 'port');
    if (port !== undefined && typeof port !== 'number') return send(res, 400, 'Request decode failed: Port', 'text/plain');
    const w = pick(b, 'weights') as Record<string, unknown> | undefined;
    const weights = w ? { Passing: Number(pick(w, 'passing') ?? 1), Warning: Number(pick(w, 'warning') ?? 1) } : undefined;
    if (weights && weights.Passing < 1) return send(res, 400, 'Passing must be greater than 0', 'text/plain');
    const defs: Record<string, unknown>[] = [];
    const one = pick(b, 'check');
    const many = pick(b, 'checks');
    if (one && typeof one === 'object') defs.push(one as Record<string, unknown>);
    if (Array.isArray(many)) defs.push(...(many as Record<string, unknown>[]));
    const checks: Omit<CheckRec, 'createIndex' | 'modifyIndex' | 'node'>[] = [];
    for (let i = 0; i < defs.length; i++) {
      const d = defs[i]!;
      const type = checkType(d);
      if (!type) return send(res, 400, 'Invalid check: TTL must be > 0 for TTL checks', 'text/plain');
      const status = (pick(d, 'status') as string | undefined) ?? '';
      if (status && status !== 'passing' && status !== 'warning' && status !== 'critical') return send(res, 400, `Invalid check status: "${status}"`, 'text/plain');
      // Default IDs: service:<id>, or service:<id>:<n> when several checks are given.
      const cid = (pick(d, 'checkid') as string | undefined) || (pick(d, 'id') as string | undefined) || (defs.length > 1 ? `service:${id}:${i + 1}` : `service:${id}`);
      checks.push({
        checkId: cid,
        name: (pick(d, 'name') as string | undefined) || `Service '${name}' check`,
        // Checks start critical unless a status is given ("Initial Health Check Status").
        status: (status || '') as Health,
        notes: String(pick(d, 'notes') ?? ''),
        output: '',
        serviceId: id,
        type,
        interval: String(pick(d, 'interval') ?? ''),
      });
    }
    const node = this.nodeName;
    const args: Parameters<ConsulSim['putService']>[0] = { id, name, node };
    const addr = pick(b, 'address');
    if (typeof addr === 'string') args.address = addr;
    if (typeof port === 'number') args.port = port;
    const tags = pick(b, 'tags');
    if (Array.isArray(tags)) args.tags = tags.map(String);
    const meta = pick(b, 'meta');
    if (meta && typeof meta === 'object') args.meta = meta as Record<string, string>;
    if (weights) args.weights = weights;
    const eto = pick(b, 'enabletagoverride');
    if (typeof eto === 'boolean') args.enableTagOverride = eto;
    const existing = this.services.get(id);
    const svc = this.putService({ ...args, node: existing?.node ?? node });
    if (url.searchParams.has('replace-existing-checks')) {
      for (const c of [...this.checks.values()]) if (c.serviceId === id && !checks.some((x) => x.checkId === c.checkId)) this.deleteCheck(c.node, c.checkId);
    }
    for (const c of checks) {
      const prev = this.checks.get(`${svc.node.toLowerCase()}\0${c.checkId}`);
      this.putCheck({ ...c, node: svc.node, status: c.status || prev?.status || 'critical' });
    }
    this.notify();
    send(res, 200, '');
  }

  private httpCheckRegister(res: http.ServerResponse, body: string): void {
    const b = parseJson(body);
    if (!b) return send(res, 400, 'Request decode failed: invalid JSON', 'text/plain');
    const name = pick(b, 'name');
    if (typeof name !== 'string' || !name) return send(res, 400, 'Missing check name', 'text/plain');
    const type = checkType(b);
    if (!type) return send(res, 400, 'Invalid check: TTL must be > 0 for TTL checks', 'text/plain');
    const serviceId = String(pick(b, 'serviceid') ?? '');
    const svc = serviceId ? this.services.get(serviceId) : undefined;
    if (serviceId && !svc) return send(res, 400, `ServiceID "${serviceId}" does not exist`, 'text/plain');
    const status = String(pick(b, 'status') ?? '') || 'critical';
    if (status !== 'passing' && status !== 'warning' && status !== 'critical') return send(res, 400, `Invalid check status: "${status}"`, 'text/plain');
    this.putCheck({
      node: svc?.node ?? this.nodeName,
      checkId: (pick(b, 'checkid') as string | undefined) || (pick(b, 'id') as string | undefined) || name,
      name,
      status,
      notes: String(pick(b, 'notes') ?? ''),
      output: '',
      serviceId,
      type,
      interval: String(pick(b, 'interval') ?? ''),
    });
    this.notify();
    send(res, 200, '');
  }

  private async bindHttp(port: number): Promise<void> {
    const srv = http.createServer((req, res) => this.onHttp(req, res));
    srv.keepAliveTimeout = 30_000;
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(port, this.host, () => {
        srv.off('error', reject);
        resolve();
      });
    });
    this.httpServer = srv;
    this.httpPort = (srv.address() as net.AddressInfo).port;
  }

  private async closeHttp(): Promise<void> {
    const srv = this.httpServer;
    this.httpServer = null;
    for (const r of this.hanging) r.destroy();
    this.hanging.clear();
    if (!srv) return;
    const closed = new Promise<void>((r) => srv.close(() => r()));
    srv.closeAllConnections();
    await closed;
  }

  // ------------------------------------------------------------------ lifecycle and faults

  async start(): Promise<void> {
    await this.bindDns(this.opts.dnsPort ?? 0);
    try {
      await this.bindHttp(this.opts.httpPort ?? 0);
    } catch (err) {
      await this.closeDns();
      throw err;
    }
  }

  async setFault(f: { dns?: DnsFault | null; http?: HttpFault | null; delayMs?: number }): Promise<void> {
    if (this.stopped) throw new SimError('SIM_STOPPED', 'simulator stopped');
    if (f.delayMs !== undefined) this.delayMs = f.delayMs;
    if (f.dns !== undefined && f.dns !== this.dnsFault) {
      const was = this.dnsFault;
      this.dnsFault = f.dns;
      if (f.dns === 'refuse') await this.closeDns();
      else if (was === 'refuse') await this.bindDns(this.dnsPort); // the SAME port again
    }
    if (f.http !== undefined && f.http !== this.httpFault) {
      const was = this.httpFault;
      this.httpFault = f.http;
      if (was === 'hang') {
        for (const r of this.hanging) r.destroy();
        this.hanging.clear();
      }
      if (f.http === 'refuse') await this.closeHttp();
      else if (was === 'refuse') await this.bindHttp(this.httpPort);
    }
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const w of this.waiters) {
      clearTimeout(w.timer);
      w.done();
    }
    this.waiters.clear();
    for (const s of this.upstreamSockets) {
      if (s instanceof net.Socket) s.destroy();
      else
        try {
          s.close();
        } catch {
          /* closed */
        }
    }
    this.upstreamSockets.clear();
    await Promise.all([this.closeDns(), this.closeHttp()]);
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

function fqdnLower(s: string): string {
  const l = s.toLowerCase().replace(/^\.+/, '');
  return l.endsWith('.') ? l : l + '.';
}

function fqdn(s: string): string {
  return s.endsWith('.') ? s : s + '.';
}

/** Label-wise zone membership, as miekg's ServeMux matches zones. */
function inZone(lname: string, zone: string): boolean {
  return lname === zone || lname.endsWith('.' + zone);
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** encodeKVasRFC1464: backquote ` and = in keys and leading/trailing spaces; ` in values. */
function encodeKVasRFC1464(key: string, value: string): string {
  let k = key.replace(/`/g, '``').replace(/=/g, '`=');
  k = k.replace(/^ +/, (sp) => '` '.repeat(sp.length)).replace(/ +$/, (sp) => '` '.repeat(sp.length));
  return `${k}=${value.replace(/`/g, '``')}`;
}

/** indexRRs: first RR per lowercased owner name (the OPT record, owner ".", included). */
function indexRRs(rrs: RR[]): Map<string, RR> {
  const idx = new Map<string, RR>();
  for (const rr of rrs) {
    const k = rr.name.toLowerCase();
    if (!idx.has(k)) idx.set(k, rr);
  }
  return idx;
}

/** syncExtra: keep only the Additional records SRV targets still need (CNAME chains followed).
 *  Everything else - node-meta TXT, and the OPT record itself - is dropped, as in Consul. */
function syncExtra(index: Map<string, RR>, m: Msg): void {
  const extra: RR[] = [];
  const resolved = new Set<string>();
  for (const a of m.answer) {
    if (a.d.k !== 'srv') continue;
    let target = a.d.target.toLowerCase();
    for (;;) {
      if (resolved.has(target)) break;
      resolved.add(target);
      const rr = index.get(target);
      if (!rr) break;
      extra.push(rr);
      if (rr.d.k === 'name' && rr.type === T.CNAME) target = rr.d.n.toLowerCase();
      else break;
    }
  }
  m.extra = extra;
}

/** dnsBinaryTruncate: the largest answer count that fits maxSize. */
function binaryTruncate(m: Msg, maxSize: number, index: Map<string, RR> | null, compress: boolean): number {
  const original = m.answer;
  let start = 0;
  let end = original.length + 1;
  while (end - start > 1) {
    const median = start + Math.floor((end - start) / 2);
    m.answer = original.slice(0, median);
    if (index) syncExtra(index, m);
    const len = encodeMsg(m, compress).length;
    if (len <= maxSize) {
      if (maxSize - len < 10) {
        m.answer = original;
        return median;
      }
      start = median;
    } else end = median;
  }
  m.answer = original;
  return start;
}

function send(res: http.ServerResponse, status: number, body: string, type = 'application/json', index?: number): void {
  if (res.headersSent || res.destroyed) return;
  const headers: Record<string, string | number> = { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) };
  if (index !== undefined) {
    // agent/http.go setMeta
    headers['X-Consul-Index'] = index;
    headers['X-Consul-KnownLeader'] = 'true';
    headers['X-Consul-LastContact'] = 0;
  }
  res.writeHead(status, headers);
  res.end(body);
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', () => resolve(''));
  });
}

function parseJson(body: string): Record<string, unknown> | null {
  try {
    const v: unknown = JSON.parse(body || '{}');
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** CamelCase and snake_case keys both decode (lib.TranslateKeys + case-insensitive JSON). */
function pick(obj: Record<string, unknown> | null, key: string): unknown {
  if (!obj) return undefined;
  for (const k of Object.keys(obj)) if (k.replace(/_/g, '').toLowerCase() === key) return obj[k];
  return undefined;
}

function checkType(d: Record<string, unknown>): string {
  if (pick(d, 'ttl')) return 'ttl';
  if (pick(d, 'http')) return 'http';
  if (pick(d, 'tcp')) return 'tcp';
  if (pick(d, 'grpc')) return 'grpc';
  if (pick(d, 'h2ping')) return 'h2ping';
  if (pick(d, 'args') || pick(d, 'scriptargs')) return 'script';
  if (pick(d, 'dockercontainerid')) return 'docker';
  if (pick(d, 'aliasservice') || pick(d, 'aliasnode')) return 'alias';
  return '';
}

/** Go strconv.ParseBool semantics; a bare `?passing` means true. undefined = absent (when
 *  `required`), null = invalid. */
function parseBoolParam(p: URLSearchParams, name: string, required = false): boolean | null | undefined {
  const v = p.get(name);
  if (v === null) return required ? undefined : false;
  if (v === '') return required ? undefined : true;
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(v)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(v)) return false;
  return null;
}

// ---------------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------------

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
