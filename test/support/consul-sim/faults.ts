/*
 * Fault injection: the switchable state (which DNS and HTTP fault is on, the delay of the slow
 * modes) and what each DNS fault does to a reply. The DNS server and the HTTP API consult it for
 * every request; 'refuse' (closing the listeners) is applied by the simulator itself in setFault().
 */
import type { SimConfig } from './config.js';
import { setEDNS } from './records.js';
import type { DnsFault, HttpFault } from './types.js';
import { RCODE, readName, setReply, type Msg, type Query } from './wire.js';

export class FaultState {
  dns: DnsFault | null = null;
  http: HttpFault | null = null;
  delayMs = 2000;
  /** Set by stop(): delayed work is dropped instead of answered. */
  stopped = false;
  private readonly timers = new Set<NodeJS.Timeout>();

  /** Run fn after ms unless the simulator stops first. */
  later(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (!this.stopped) fn();
    }, ms);
    this.timers.add(t);
  }

  /** The reply after ms (null if the simulator stopped meanwhile); at once when ms <= 0. */
  delayed(b: Buffer, ms: number): Promise<Buffer | null> | Buffer {
    if (ms <= 0) return b;
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.timers.delete(t);
        resolve(this.stopped ? null : b);
      }, ms);
      this.timers.add(t);
    });
  }

  clearTimers(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }
}

/** 'garbage': random bytes, but with the query's ID and QR set so a client cannot discard them on
 *  the ID alone; QDCOUNT 65535 guarantees they do not decode. */
export function garbageReply(query: Buffer, random: Buffer): Buffer {
  const g = random;
  if (query.length >= 2) query.copy(g, 0, 0, 2);
  g[2] = g[2]! | 0x80;
  g.writeUInt16BE(0xffff, 4);
  return g;
}

/** 'servfail': what an agent that cannot reach its servers sends: SERVFAIL, AA set, no SOA
 *  (rCodeFromError). */
export function servfailReply(cfg: SimConfig, q: Query): Msg {
  const m = setReply(q);
  m.aa = true;
  m.ra = cfg.recursors.length > 0;
  m.rcode = RCODE.SERVFAIL;
  setEDNS(q, m, true);
  return m;
}

/** 'wrongquestion' and 'truncated' applied to a reply the simulator authored. */
export function mangleMsg(fault: DnsFault | null, m: Msg, transport: 'udp' | 'tcp'): Msg {
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
  return m;
}

/** 'truncated' and 'wrongquestion' applied to bytes relayed from a recursor (a private copy). */
export function mangleRaw(fault: DnsFault | null, raw: Buffer, transport: 'udp' | 'tcp'): Buffer {
  let out = raw;
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
    // Replace the first character of the question name with a different letter.
    out[13] = (out[13]! | 0x20) === 0x78 ? 0x79 : 0x78;
  }
  return out;
}

/** 'wrongid': the reply's ID off by one, in place. */
export function wrongId(out: Buffer): void {
  out.writeUInt16BE((out.readUInt16BE(0) + 1) & 0xffff, 0);
}
