/**
 * Seeded helpers for the wire codec tests: a tiny xorshift PRNG, a generator of random
 * Consul-like replies (for the alias property tests), and a bounded mutation fuzzer over real wire
 * messages whose only acceptable failure is WireError. test/unit/fuzz-wire.test.ts runs it briefly; a
 * long run reuses the same core, e.g. (after a build):
 *
 *   node -e "import('./dist/test/support/fuzz.js').then(async f => { const r = f.runFuzz({
 *     iterations: 2e6, seed: Number(process.env.SEED ?? 1), targets: f.wireTargets(),
 *     corpus: f.loadCorpus(), log: true }); console.log(JSON.stringify(r.summary));
 *     process.exitCode = r.failures.length ? 1 : 0; })"
 *
 * No dependencies beyond node: a failure prints the seed, iteration and input hex to replay it.
 * This module has no side effects on import (the test runner may load every file under test/).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { isDeepStrictEqual } from 'node:util';
import {
  WireError,
  decodeMessage,
  encodeMessage,
  mapRdataNames,
  nameToWire,
  type Message,
  type Record,
} from '../../src/dns/message.js';
import { toCanonicalName } from '../../src/query/alias.js';
import { toAliasReply } from '../../src/cache/render.js';

/** xorshift32 (Marsaglia 2003): deterministic, fast, good enough to pick mutations. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 0x9e3779b9;
  }
  next(): number {
    let x = this.s;
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    this.s = x;
    return x;
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return this.next() % n;
  }
  bool(pTrue = 0.5): boolean {
    return this.next() / 0x100000000 < pTrue;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)] as T;
  }
}

const INTERESTING8 = [0x00, 0x01, 0x3f, 0x40, 0x41, 0x7f, 0x80, 0xbf, 0xc0, 0xc1, 0xff];
const INTERESTING16 = [
  0x0000, 0x0001, 0x0002, 0x000c, 0x0029, 0x00ff, 0x0100, 0x7fff, 0x8000, 0xc00c, 0xc000, 0xfffe, 0xffff,
];

/** One to four random mutations of a copy of buf (bit flips, interesting values, splices, pointers). */
export function mutate(buf: Buffer, rng: Rng): Buffer {
  let b = Buffer.from(buf);
  const rounds = 1 + rng.int(4);
  for (let k = 0; k < rounds; k++) {
    const len = b.length;
    const at = len > 0 ? rng.int(len) : 0;
    switch (rng.int(12)) {
      case 0: // flip one bit
        if (len > 0) b[at] = (b[at] as number) ^ (1 << rng.int(8));
        break;
      case 1: // random byte
        if (len > 0) b[at] = rng.int(256);
        break;
      case 2: // interesting byte: label lengths and label type bits
        if (len > 0) b[at] = rng.pick(INTERESTING8);
        break;
      case 3: // interesting 16-bit value (counts, types, RDLENGTH, pointers)
        if (len > 1) b.writeUInt16BE(rng.pick(INTERESTING16), rng.int(len - 1));
        break;
      case 4: // header section count
        if (len >= 12) b.writeUInt16BE(rng.bool() ? rng.int(8) : rng.int(0x10000), 4 + 2 * rng.int(4));
        break;
      case 5: {
        // insert 1..8 random bytes
        const ins = Buffer.alloc(1 + rng.int(8));
        for (let i = 0; i < ins.length; i++) ins[i] = rng.int(256);
        b = Buffer.concat([b.subarray(0, at), ins, b.subarray(at)]);
        break;
      }
      case 6: {
        // delete a range
        const n = 1 + rng.int(Math.max(1, Math.min(16, len - at)));
        b = Buffer.concat([b.subarray(0, at), b.subarray(Math.min(len, at + n))]);
        break;
      }
      case 7: // truncate
        b = b.subarray(0, rng.int(len + 1));
        break;
      case 8: // a compression pointer to anywhere: backwards, itself, forwards
        if (len > 1) {
          const pos = rng.int(len - 1);
          const target = rng.pick([rng.int(len + 4), pos, pos + 2, 12, 0]);
          b.writeUInt16BE(0xc000 | (target & 0x3fff), pos);
        }
        break;
      case 9: {
        // duplicate a slice of the message somewhere else in it
        if (len > 2) {
          const from = rng.int(len);
          const n = 1 + rng.int(Math.min(32, len - from));
          b = Buffer.concat([b.subarray(0, at), b.subarray(from, from + n), b.subarray(at)]);
        }
        break;
      }
      case 10: // a pointer cycle: two pointers at each other, or a label then a pointer to its start
        if (len >= 16) {
          const pos = 12 + rng.int(len - 15);
          if (rng.bool()) {
            b.writeUInt16BE(0xc000 | (pos + 2), pos);
            b.writeUInt16BE(0xc000 | pos, pos + 2);
          } else {
            b[pos] = 1;
            b.writeUInt16BE(0xc000 | pos, pos + 2);
          }
        }
        break;
      default: // overwrite with a long label
        if (len > 0) b[at] = 60 + rng.int(8);
    }
  }
  return b;
}

export interface FuzzTarget {
  name: string;
  /** Must return normally or throw WireError; anything else is a failure. */
  run(input: Buffer): void;
}

export interface FuzzFailure {
  target: string;
  iteration: number;
  seed: number;
  inputHex: string;
  error: string;
}

export interface FuzzResult {
  failures: FuzzFailure[];
  summary: {
    iterations: number;
    seed: number;
    calls: number;
    wireErrors: number;
    accepted: number;
    slowestMs: number;
    slowestTarget: string;
    /** The input of the slowest call, to re-time it alone (a slow call may just be a GC pause). */
    slowestInputHex: string;
    elapsedMs: number;
  };
}

/**
 * Run `iterations` mutated inputs (seeded, so a failure replays) through every target. A call that
 * throws anything but WireError, or takes longer than maxCallMs, is a failure (an endless loop
 * would hang the caller; the per-call time catches the blow-ups before that).
 */
export function runFuzz(opts: {
  iterations: number;
  seed: number;
  targets: FuzzTarget[];
  corpus?: Buffer[];
  maxCallMs?: number;
  maxFailures?: number;
  log?: boolean;
}): FuzzResult {
  const corpus = opts.corpus ?? loadCorpus();
  if (corpus.length === 0) throw new Error('runFuzz: empty corpus');
  const rng = new Rng(opts.seed);
  const maxCallMs = opts.maxCallMs ?? 250;
  const maxFailures = opts.maxFailures ?? 10;
  const failures: FuzzFailure[] = [];
  const s = {
    iterations: 0,
    seed: opts.seed,
    calls: 0,
    wireErrors: 0,
    accepted: 0,
    slowestMs: 0,
    slowestTarget: '',
    slowestInputHex: '',
    elapsedMs: 0,
  };
  const t0 = performance.now();
  for (let i = 0; i < opts.iterations && failures.length < maxFailures; i++) {
    const input = mutate(rng.pick(corpus), rng);
    s.iterations++;
    for (const t of opts.targets) {
      s.calls++;
      const c0 = performance.now();
      let err: unknown;
      try {
        t.run(input);
        s.accepted++;
      } catch (e) {
        if (e instanceof WireError) s.wireErrors++;
        else err = e;
      }
      const ms = performance.now() - c0;
      if (ms > s.slowestMs) {
        s.slowestMs = ms;
        s.slowestTarget = t.name;
        s.slowestInputHex = input.toString('hex');
      }
      if (err === undefined && ms > maxCallMs) err = new Error(`call took ${ms.toFixed(1)} ms`);
      if (err !== undefined) {
        const f = {
          target: t.name,
          iteration: i,
          seed: opts.seed,
          inputHex: input.toString('hex'),
          error: err instanceof Error ? `${err.name}: ${err.message}\n${err.stack ?? ''}` : String(err),
        };
        failures.push(f);
        if (opts.log) console.error(JSON.stringify(f));
      }
    }
    if (opts.log && i > 0 && i % 100000 === 0) console.error(JSON.stringify({ progress: i, ...s }));
  }
  s.elapsedMs = performance.now() - t0;
  return { failures, summary: s };
}

/** The corpus copied to test/fixtures/corpus (replies-bind and queries-dig), plus Consul-like replies. */
export function loadCorpus(extraConsulReplies = 16): Buffer[] {
  const root = new URL('../../../test/fixtures/corpus/', import.meta.url);
  const out: Buffer[] = [];
  for (const dir of ['replies-bind', 'queries-dig']) {
    const d = new URL(`${dir}/`, root);
    for (const f of readdirSync(d).sort()) if (f.endsWith('.bin')) out.push(readFileSync(new URL(f, d)));
  }
  const rng = new Rng(0xc0ffee);
  for (let i = 0; i < extraConsulReplies; i++) out.push(encodeMessage(randomConsulReply(rng).canonical));
  return out;
}

/** Throw a plain Error (a fuzz failure) when our own output does not decode back. */
function decodeOwn(buf: Buffer): Message {
  try {
    return decodeMessage(buf, { strict: true });
  } catch (e) {
    throw new Error(`our own encoding does not decode: ${(e as Error).message}`);
  }
}

const JUNK = Buffer.alloc(64, 0xa5);
const FUZZ_QUESTION = Buffer.concat([nameToWire('JaNuS.service.StArLiNgS'), Buffer.from([0, 33, 0, 1])]);

/** decode; decode -> encode -> decode gives the same message; encode with a 512 limit; both alias mappings. */
export function wireTargets(): FuzzTarget[] {
  return [
    {
      // Out-of-bounds reads through buf[i] give undefined (not RangeError), so check them
      // differentially: trailing octets are ignored, hence a message that decodes must decode to
      // the same thing with junk appended. A read past the end would see the junk.
      name: 'decodeMessage',
      run: (b) => {
        const m = decodeMessage(b);
        let padded: Message;
        try {
          padded = decodeMessage(Buffer.concat([b, JUNK]));
        } catch (e) {
          throw new Error(`decodes alone but not with trailing octets: ${(e as Error).message}`);
        }
        if (!isDeepStrictEqual(padded, m))
          throw new Error('trailing octets changed the decoded message: an out-of-bounds read');
      },
    },
    {
      name: 'encode(decode(x)) round trip',
      run: (b) => {
        const m = decodeMessage(b);
        const again = decodeOwn(encodeMessage(m));
        if (!isDeepStrictEqual(again, m)) throw new Error('decode(encode(m)) differs from m');
      },
    },
    {
      name: 'encode(decode(x), maxSize 512)',
      run: (b) => {
        const e = encodeMessage(decodeMessage(b), { maxSize: 512 });
        decodeOwn(e);
      },
    },
    {
      name: 'toAliasReply',
      run: (b) => {
        decodeOwn(toAliasReply(b, 'starlings', 'consul', FUZZ_QUESTION));
        decodeOwn(toAliasReply(b, 'starlings', 'example.test', FUZZ_QUESTION, { maxSize: 1232 }));
      },
    },
  ];
}

// ---------------------------------------------------------------------------------------------
// Random Consul-like replies

export interface ConsulCase {
  /** The name as the client asked it, under the alias, in random case. */
  clientName: string;
  /** The client's question bytes: name, type, class. */
  clientQuestion: Buffer;
  /** The reply Consul would give to the canonical query (toCanonicalName of clientName). */
  canonical: Message;
}

function randCase(rng: Rng, s: string): string {
  let o = '';
  for (const ch of s) o += rng.bool(0.3) ? ch.toUpperCase() : ch;
  return o;
}

function u16b(...vs: number[]): Buffer {
  const b = Buffer.alloc(vs.length * 2);
  vs.forEach((v, i) => b.writeUInt16BE(v, i * 2));
  return b;
}

export function rr(name: string, type: number, ttl: number, rdata: Buffer, klass = 1): Record {
  return { name, type, class: klass, ttl, rdata };
}
export function a(name: string, ip: string, ttl = 0): Record {
  return rr(name, 1, ttl, Buffer.from(ip.split('.').map(Number)));
}
export function aaaa(name: string, last: number, ttl = 0): Record {
  const b = Buffer.alloc(16);
  b.writeUInt16BE(0x2001, 0);
  b.writeUInt16BE(0x0db8, 2);
  b.writeUInt16BE(last, 14);
  return rr(name, 28, ttl, b);
}
export function srv(name: string, target: string, port: number, ttl = 0): Record {
  return rr(name, 33, ttl, Buffer.concat([u16b(1, 1, port), nameToWire(target)]));
}
export function txt(name: string, ...strings: string[]): Record {
  return rr(
    name,
    16,
    0,
    Buffer.concat(strings.map((s) => Buffer.concat([Buffer.from([s.length]), Buffer.from(s, 'latin1')]))),
  );
}
export function soa(owner: string, mname: string, rname: string, ttl = 0): Record {
  const fixed = Buffer.alloc(20);
  fixed.writeUInt32BE(1700000000, 0);
  fixed.writeUInt32BE(3600, 4);
  fixed.writeUInt32BE(600, 8);
  fixed.writeUInt32BE(86400, 12);
  fixed.writeUInt32BE(0, 16); // Consul's default soa.min_ttl
  return rr(owner, 6, ttl, Buffer.concat([nameToWire(mname), nameToWire(rname), fixed]));
}
export function oneName(owner: string, type: number, target: string, ttl = 0): Record {
  return rr(owner, type, ttl, nameToWire(target));
}
export function mx(owner: string, pref: number, exchange: string): Record {
  return rr(owner, 15, 0, Buffer.concat([u16b(pref), nameToWire(exchange)]));
}
export function opt(udpSize = 4096, options: Buffer = Buffer.alloc(0)): Record {
  return rr('', 41, 0, options, udpSize);
}

/** A random reply in the shapes Consul gives (consul-dns.md §1), for a random query under the alias. */
export function randomConsulReply(rng: Rng, alias = 'starlings', domain = 'consul'): ConsulCase {
  const svc = rng.pick(['janus', 'yorc', 'web', 'kafka-zk', 'elasticsearch']);
  const dc = rng.pick(['dc1', 'dc2', 'Paris']);
  const node = () => randCase(rng, rng.pick(['server1', 'yorc-1', 'node-a', 'a4c', 'db']));
  const ip = () => `10.0.${rng.int(256)}.${1 + rng.int(254)}`;
  const hexip = () => rng.next().toString(16).padStart(8, '0');
  const form = rng.int(7);
  let left: string;
  let qtype = rng.pick([1, 28, 33, 16, 255, 6, 2, 15, 5]);
  if (form === 0) left = `${svc}.service`;
  else if (form === 1) left = `server1.${svc}.service`;
  else if (form === 2) left = `${svc}.service.${dc}`;
  else if (form === 3) {
    left = `_${svc}._tcp.service`;
    qtype = 33;
  } else if (form === 4) left = `${node()}.node`;
  else if (form === 5) {
    left = `${hexip()}.addr.${dc}`;
    qtype = 1;
  } else left = `${svc}.query`;
  const clientName = `${randCase(rng, left)}.${randCase(rng, alias)}`;
  const qname = toCanonicalName(clientName, alias, domain);
  const clientQuestion = Buffer.concat([nameToWire(clientName), u16b(qtype, 1)]);
  const d = (s: string) => `${s}.${domain}`;
  const soaRR = soa(domain, d('ns'), d('hostmaster'));
  const m: Message = {
    id: rng.int(0x10000),
    flags: 0x8400 | (rng.bool() ? 0x0100 : 0) | (rng.bool(0.3) ? 0x0080 : 0),
    questions: [{ name: qname, type: qtype, class: 1 }],
    answers: [],
    authorities: [],
    additionals: [],
  };
  const ttl = rng.bool(0.7) ? 0 : rng.int(600);
  const count = 1 + rng.int(5);
  if (rng.bool(0.12)) {
    m.flags |= 3; // NXDOMAIN: no (healthy) instance
    m.authorities.push(soaRR);
  } else if (qtype === 1 || qtype === 255 || qtype === 16) {
    for (let i = 0; i < count; i++) m.answers.push(a(qname, ip(), ttl));
    if (form === 4) m.additionals.push(txt(qname, 'consul-network-segment='));
  } else if (qtype === 28) {
    if (rng.bool()) for (let i = 0; i < count; i++) m.answers.push(aaaa(qname, i + 1, ttl));
    else m.authorities.push(soaRR); // NODATA
  } else if (qtype === 33) {
    for (let i = 0; i < count; i++) {
      const useAddr = rng.bool();
      const target = useAddr ? d(`${hexip()}.addr.${dc}`) : d(`${node()}.node.${dc}`);
      m.answers.push(srv(qname, target, 8800 + i, ttl));
      m.additionals.push(a(target, ip(), ttl));
      if (!useAddr) m.additionals.push(txt(target, 'consul-network-segment='));
    }
  } else if (qtype === 6) {
    m.answers.push(soaRR);
  } else if (qtype === 2) {
    for (let i = 0; i < Math.min(3, count); i++) {
      const ns = d(`server${i}.node.${dc}`);
      m.answers.push(oneName(domain, 2, ns));
      m.additionals.push(a(ns, ip()));
    }
  } else if (qtype === 15) {
    m.authorities.push(soaRR);
  } else {
    // A service with a hostname address: CNAME, then what it resolved to.
    const target = rng.bool() ? 'web.example.com' : d(`${node()}.node.${dc}`);
    m.answers.push(oneName(qname, 5, target), a(target, ip()));
  }
  if (rng.bool(0.7))
    m.additionals.push(
      opt(rng.pick([512, 1232, 4096]), rng.bool() ? Buffer.from('000a0008a0f2bf7256099e45', 'hex') : undefined),
    );
  return { clientName, clientQuestion, canonical: m };
}

/** The names inside a record's RDATA, via the codec's own layout table. */
export function rdataNameList(type: number, rdata: Buffer): string[] {
  const names: string[] = [];
  mapRdataNames(type, rdata, (n) => {
    names.push(n);
    return n;
  });
  return names;
}
