/**
 * Load clients that account for every query, for restart tests.
 *
 * UDP: a paced sender at N queries per second; each query gets a socket of its own, connect()ed
 * to the server, as a stub resolver (glibc, musl) does. A connected UDP socket receives the ICMP
 * port-unreachable a closed port sends back, as ECONNREFUSED, so each query ends in exactly one
 * of: answered (a reply with its ID), refused (ICMP: nothing was bound to the port), unanswered
 * (no reply within the timeout: dropped, or queued and never read).
 *
 * TCP: one persistent connection carrying pipelined queries (RFC 7766 §6.2.1). When the server
 * closes it, the client reconnects and resends only the queries still outstanding then, as RFC
 * 7766 §6.2.1.1 asks of clients; it counts the resends, the refused connects, and closes that
 * came in the middle of an answer (some bytes of a response had arrived).
 */
import dgram from 'node:dgram';
import net from 'node:net';

export type Outcome = 'answered' | 'refused' | 'unanswered' | 'error';

export interface QueryRecord {
  id: number;
  /** performance.now() of the first send. */
  sentAt: number;
  outcome: Outcome | 'pending';
  latencyMs: number | null;
  /** TCP only: how many times it was written again on a later connection. */
  resends: number;
  reply: Buffer | null;
  error?: string;
}

export interface Stats {
  sent: number;
  answered: number;
  refused: number;
  unanswered: number;
  errors: number;
  maxMs: number;
  p99Ms: number;
}

/** Counts over `records` (all of them, or those `filter` keeps). Pending records count as unanswered. */
export function summarize(records: QueryRecord[], filter: (r: QueryRecord) => boolean = () => true): Stats {
  const rs = records.filter(filter);
  const lat = rs
    .filter((r) => r.outcome === 'answered')
    .map((r) => r.latencyMs!)
    .sort((a, b) => a - b);
  const count = (o: Outcome) => rs.filter((r) => r.outcome === o).length;
  return {
    sent: rs.length,
    answered: lat.length,
    refused: count('refused'),
    unanswered: rs.filter((r) => r.outcome === 'unanswered' || r.outcome === 'pending').length,
    errors: count('error'),
    maxMs: lat.length ? lat[lat.length - 1]! : 0,
    p99Ms: lat.length ? lat[Math.min(lat.length - 1, Math.ceil(lat.length * 0.99) - 1)]! : 0,
  };
}

export interface LoadOptions {
  host: string;
  port: number;
  /** Queries per second. */
  qps: number;
  durationMs: number;
  /** A query is unanswered if no reply came this long after its (first) send. Default 2000. */
  timeoutMs?: number;
  /** The query for sequence number `n`; its first two bytes (the ID) are overwritten. */
  query: (n: number) => Buffer;
}

export interface Load {
  records: QueryRecord[];
  /** Resolves once every query has ended (the run is over and the last timeout has passed). */
  done: Promise<Stats>;
  /** Stops sending early. */
  stop(): void;
}

/** Calls `send(n)` for n = 0, 1, ... at `qps`, catching up after a late timer rather than drifting. */
function pace(qps: number, durationMs: number, send: (n: number) => void): { finished: Promise<void>; stop(): void } {
  const start = performance.now();
  const total = Math.round((qps * durationMs) / 1000);
  let n = 0;
  let timer: NodeJS.Timeout | undefined;
  let stop = () => {};
  const finished = new Promise<void>((resolve) => {
    stop = () => {
      clearInterval(timer);
      resolve();
    };
    const tick = () => {
      const due = Math.min(total, Math.floor(((performance.now() - start) * qps) / 1000) + 1);
      while (n < due) send(n++);
      if (n >= total) stop();
    };
    timer = setInterval(tick, 5);
    tick();
  });
  return { finished, stop: () => stop() };
}

function withId(q: Buffer, id: number): Buffer {
  const b = Buffer.from(q);
  b.writeUInt16BE(id & 0xffff, 0);
  return b;
}

/** UDP load, one connected socket per query. */
export function udpLoad(opts: LoadOptions): Load {
  const timeoutMs = opts.timeoutMs ?? 2000;
  const records: QueryRecord[] = [];
  const ends: Promise<void>[] = [];
  const one = (n: number) => {
    const id = n & 0xffff;
    const msg = withId(opts.query(n), id);
    const rec: QueryRecord = {
      id,
      sentAt: performance.now(),
      outcome: 'pending',
      latencyMs: null,
      resends: 0,
      reply: null,
    };
    records.push(rec);
    const sock = dgram.createSocket('udp4');
    ends.push(
      new Promise<void>((resolve) => {
        const finish = (o: Outcome, err?: string) => {
          if (rec.outcome !== 'pending') return;
          rec.outcome = o;
          if (err !== undefined) rec.error = err;
          clearTimeout(timer);
          try {
            sock.close();
          } catch {
            /* already closed */
          }
          resolve();
        };
        const timer = setTimeout(() => finish('unanswered'), timeoutMs);
        sock.on('error', (e: NodeJS.ErrnoException) =>
          finish(e.code === 'ECONNREFUSED' ? 'refused' : 'error', e.code ?? e.message),
        );
        sock.on('message', (m) => {
          if (m.length < 2 || m.readUInt16BE(0) !== id) return;
          rec.latencyMs = performance.now() - rec.sentAt;
          rec.reply = m;
          finish('answered');
        });
        sock.connect(opts.port, opts.host, () => {
          rec.sentAt = performance.now();
          sock.send(msg, (err) => {
            if (err) finish((err as NodeJS.ErrnoException).code === 'ECONNREFUSED' ? 'refused' : 'error', err.message);
          });
        });
      }),
    );
  };
  const p = pace(opts.qps, opts.durationMs, one);
  const done = p.finished.then(async () => {
    await Promise.all(ends);
    return summarize(records);
  });
  return { records, done, stop: p.stop };
}

export interface TcpStats extends Stats {
  connects: number;
  refusedConnects: number;
  /** Connections the server closed (or reset) while the client was connected. */
  closes: number;
  /** ... of which some bytes of a response had arrived: closed in the middle of an answer. */
  closesMidAnswer: number;
  /** ... of which queries were outstanding. */
  closesWithOutstanding: number;
  /** Queries written again after a reconnect. */
  resends: number;
  /** Replies with an ID not outstanding (a second answer to a resent query, or one after its timeout). */
  duplicates: number;
}

/**
 * One persistent pipelining TCP connection that reconnects when the server closes and resends
 * only the outstanding queries. IDs are unique among outstanding queries.
 */
export class PipelinedTcpClient {
  readonly records: QueryRecord[] = [];
  private readonly outstanding = new Map<number, { rec: QueryRecord; msg: Buffer; written: boolean }>();
  private sock: net.Socket | null = null;
  private connected = false;
  private closed = false;
  private rx: Buffer = Buffer.alloc(0);
  private nextId = 1;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private counters = {
    connects: 0,
    refusedConnects: 0,
    closes: 0,
    closesMidAnswer: 0,
    closesWithOutstanding: 0,
    resends: 0,
    duplicates: 0,
  };
  private readonly idle = new Set<() => void>();

  constructor(
    private readonly host: string,
    private readonly port: number,
    private readonly opts: { reconnectDelayMs?: number; timeoutMs?: number } = {},
  ) {
    this.connect();
  }

  /** Sends `query` (its ID is replaced); the record ends answered, or unanswered after timeoutMs (default 2000). */
  send(query: Buffer): QueryRecord {
    let id = this.nextId;
    while (this.outstanding.has(id)) id = (id % 0xffff) + 1;
    this.nextId = (id % 0xffff) + 1;
    const msg = withId(query, id);
    const rec: QueryRecord = {
      id,
      sentAt: performance.now(),
      outcome: 'pending',
      latencyMs: null,
      resends: 0,
      reply: null,
    };
    this.records.push(rec);
    const entry = { rec, msg, written: false };
    this.outstanding.set(id, entry);
    setTimeout(() => {
      if (rec.outcome !== 'pending') return;
      rec.outcome = 'unanswered';
      if (this.outstanding.get(id)?.rec === rec) this.outstanding.delete(id);
      this.checkIdle();
    }, this.opts.timeoutMs ?? 2000);
    if (this.connected) this.write(entry);
    return rec;
  }

  /** Resolves once nothing is outstanding. */
  whenIdle(): Promise<void> {
    return new Promise((resolve) => {
      this.idle.add(resolve);
      this.checkIdle();
    });
  }

  stats(): TcpStats {
    return { ...summarize(this.records), ...this.counters };
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    this.sock?.destroy();
  }

  private checkIdle(): void {
    if (this.outstanding.size > 0) return;
    for (const r of [...this.idle]) {
      this.idle.delete(r);
      r();
    }
  }

  private write(entry: { rec: QueryRecord; msg: Buffer; written: boolean }): void {
    if (entry.written) {
      entry.rec.resends++;
      this.counters.resends++;
    }
    entry.written = true;
    const len = Buffer.alloc(2);
    len.writeUInt16BE(entry.msg.length);
    this.sock!.write(Buffer.concat([len, entry.msg]));
  }

  private connect(): void {
    if (this.closed) return;
    const s = net.connect(this.port, this.host);
    this.sock = s;
    let wasConnected = false;
    s.setNoDelay(true);
    s.on('connect', () => {
      wasConnected = true;
      this.connected = true;
      this.counters.connects++;
      this.rx = Buffer.alloc(0);
      // Only the queries still outstanding, in the order they were first sent.
      for (const entry of this.outstanding.values()) this.write(entry);
    });
    s.on('data', (d) => this.onData(d));
    s.on('error', (e: NodeJS.ErrnoException) => {
      if (!wasConnected && e.code === 'ECONNREFUSED') this.counters.refusedConnects++;
    });
    s.on('close', () => {
      this.connected = false;
      if (this.sock !== s) return;
      if (wasConnected && !this.closed) {
        this.counters.closes++;
        if (this.rx.length > 0) this.counters.closesMidAnswer++;
        if (this.outstanding.size > 0) this.counters.closesWithOutstanding++;
      }
      if (this.closed) return;
      this.reconnectTimer = setTimeout(() => this.connect(), wasConnected ? 0 : (this.opts.reconnectDelayMs ?? 20));
    });
  }

  private onData(d: Buffer): void {
    this.rx = this.rx.length ? Buffer.concat([this.rx, d]) : d;
    while (this.rx.length >= 2 && this.rx.length >= 2 + this.rx.readUInt16BE(0)) {
      const msg = this.rx.subarray(2, 2 + this.rx.readUInt16BE(0));
      this.rx = this.rx.subarray(2 + msg.length);
      const id = msg.length >= 2 ? msg.readUInt16BE(0) : -1;
      const entry = this.outstanding.get(id);
      if (!entry) {
        this.counters.duplicates++;
        continue;
      }
      this.outstanding.delete(id);
      entry.rec.outcome = 'answered';
      entry.rec.latencyMs = performance.now() - entry.rec.sentAt;
      entry.rec.reply = Buffer.from(msg);
    }
    this.checkIdle();
  }
}

/** TCP load over one PipelinedTcpClient at `qps`. */
export function tcpLoad(
  opts: LoadOptions & { reconnectDelayMs?: number },
): Load & { client: PipelinedTcpClient; tcpDone: Promise<TcpStats> } {
  const client = new PipelinedTcpClient(opts.host, opts.port, {
    timeoutMs: opts.timeoutMs ?? 2000,
    reconnectDelayMs: opts.reconnectDelayMs ?? 20,
  });
  const p = pace(opts.qps, opts.durationMs, (n) => client.send(opts.query(n)));
  const tcpDone = p.finished.then(async () => {
    await client.whenIdle();
    client.close();
    return client.stats();
  });
  return { records: client.records, client, done: tcpDone, tcpDone, stop: p.stop };
}
