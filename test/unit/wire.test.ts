/**
 * Unit tests of the raw-byte query path (src/wire.ts): parseQuery on the dig 9.18 captures in
 * test/fixtures/corpus/queries-dig and on hand-built malformed queries (what BIND 9 answers for
 * each: drop, FORMERR, NOTIMP, REFUSED, BADVERS), questionName's \DDD escapes, scanReply on the
 * BIND 9.18 replies in test/fixtures/corpus/replies-bind (and its refusal of cut or padded
 * datagrams), sameQuestion (RFC 5452 §9.1: case-insensitive), the replies the proxy authors
 * itself (buildErrorReply, with dns2 3.1.1 as an independent decoder of our OPT and EDE) and the
 * upstream form of a query (buildUpstreamQuery).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import dns2 from 'dns2';
import {
  buildErrorReply,
  buildOpt,
  buildQuestion,
  buildUpstreamQuery,
  parseQuery,
  questionName,
  sameQuestion,
  scanReply,
  type ParseOutcome,
  type Query,
} from '../../src/dns/wire.js';
import { CLASS_IN, EDE, EDNS_OPTION_EDE, FLAG, HEADER_LEN, RCODE, TYPE } from '../../src/dns/constants.js';
import { edeOptions, finish, replyFlags, stripOpt } from '../../src/dns/reply.js';

const CORPUS = new URL('../../../test/fixtures/corpus/', import.meta.url);
function corpus(dir: 'replies-bind' | 'queries-dig'): Map<string, Buffer> {
  const d = new URL(`${dir}/`, CORPUS);
  return new Map(
    readdirSync(d)
      .filter((f) => f.endsWith('.bin'))
      .sort()
      .map((f) => [f, readFileSync(new URL(f, d))]),
  );
}
const QUERIES = corpus('queries-dig');
const REPLIES = corpus('replies-bind');

function fixture(map: Map<string, Buffer>, name: string): Buffer {
  const b = map.get(name);
  assert.ok(b, `fixture ${name} missing`);
  return b;
}

function header(id: number, flags: number, qd: number, an: number, ns: number, ar: number): Buffer {
  const h = Buffer.alloc(HEADER_LEN);
  [id, flags, qd, an, ns, ar].forEach((v, i) => h.writeUInt16BE(v, i * 2));
  return h;
}

/** Raw wire labels from byte arrays / strings, root-terminated. */
function labels(...parts: Array<string | number[]>): Buffer {
  const out: Buffer[] = [];
  for (const p of parts) {
    const b = typeof p === 'string' ? Buffer.from(p, 'latin1') : Buffer.from(p);
    out.push(Buffer.from([b.length]), b);
  }
  out.push(Buffer.from([0]));
  return Buffer.concat(out);
}

function typeClass(type: number, cls = CLASS_IN): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt16BE(type, 0);
  b.writeUInt16BE(cls, 2);
  return b;
}

/** A record with the given owner bytes, type, class, TTL and RDATA. */
function rr(owner: Buffer, type: number, cls: number, ttl: number, rdata: Buffer): Buffer {
  const f = Buffer.alloc(10);
  f.writeUInt16BE(type, 0);
  f.writeUInt16BE(cls, 2);
  f.writeUInt32BE(ttl, 4);
  f.writeUInt16BE(rdata.length, 8);
  return Buffer.concat([owner, f, rdata]);
}

const ROOT = Buffer.from([0]);
const OPT_RR = buildOpt(1232, 0, false);

/** A well-formed RD query for example.org/A with optional extra sections. */
function query(
  opts: { flags?: number; qd?: number; an?: Buffer[]; ns?: Buffer[]; ar?: Buffer[]; question?: Buffer } = {},
): Buffer {
  const an = opts.an ?? [],
    ns = opts.ns ?? [],
    ar = opts.ar ?? [];
  const question = opts.question ?? Buffer.concat([labels('example', 'org'), typeClass(TYPE.A)]);
  return Buffer.concat([
    header(0x1234, opts.flags ?? FLAG.RD, opts.qd ?? 1, an.length, ns.length, ar.length),
    question,
    ...an,
    ...ns,
    ...ar,
  ]);
}

function expectQuery(o: ParseOutcome, what: string): Query {
  assert.equal(o.kind, 'query', `${what}: expected a query, got ${JSON.stringify(o)}`);
  return o.q;
}

function expectError(o: ParseOutcome, rcode: number, what: string): { q: Query | null; id: number; flags: number } {
  assert.equal(o.kind, 'error', `${what}: expected an error, got ${JSON.stringify(o)}`);
  const e = o;
  assert.equal(e.rcode, rcode, `${what}: rcode`);
  return e;
}

// ------------------------------------------------------------------------------------------------
// parseQuery on the dig captures

test('parseQuery: every dig capture gives the expected outcome', () => {
  assert.equal(QUERIES.size, 12);
  const seen = new Set<string>();
  const check = (f: string, fn: (buf: Buffer, o: ParseOutcome) => void) => {
    const buf = fixture(QUERIES, f);
    fn(buf, parseQuery(buf));
    seen.add(f);
  };

  check('a-dnssec-cd-janus.service.consul.bin', (buf, o) => {
    const q = expectQuery(o, 'DO+CD');
    assert.equal(q.id, 0x073d);
    assert.equal(q.name, 'janus.service.consul');
    assert.equal(q.qtype, TYPE.A);
    assert.equal(q.qclass, CLASS_IN);
    assert.equal(q.opcode, 0);
    assert.ok(q.flags & FLAG.RD && q.flags & FLAG.CD && q.flags & FLAG.AD);
    assert.equal(q.edns, true);
    assert.equal(q.ednsVersion, 0);
    assert.equal(q.dnssecOk, true);
    assert.equal(q.udpSize, 1232);
    assert.equal(q.qEnd, HEADER_LEN + 'janus.service.consul'.length + 2 + 4);
    assert.equal(q.nameEnd, q.qEnd - 4);
    assert.equal(buf.readUInt16BE(q.nameEnd), TYPE.A);
  });
  check('a-janus.service.starlings.bin', (_b, o) => {
    const q = expectQuery(o, 'plain');
    assert.equal(q.name, 'janus.service.starlings');
    assert.equal(q.qtype, TYPE.A);
    assert.equal(q.edns, true);
    assert.equal(q.dnssecOk, false);
    assert.equal(q.udpSize, 1232);
    assert.equal(q.flags & FLAG.CD, 0);
  });
  check('aaaa-mixedcase-JaNuS.SeRvIcE.CoNsUl.bin', (buf, o) => {
    const q = expectQuery(o, '0x20');
    assert.equal(q.name, 'janus.service.consul', 'name lowercased');
    assert.equal(q.qtype, TYPE.AAAA);
    // The question bytes keep the client's case (the reply must echo them: RFC 5452 §9.1 / 0x20).
    assert.equal(buf.toString('latin1', HEADER_LEN, q.nameEnd), '\x05JaNuS\x07SeRvIcE\x06CoNsUl\x00');
  });
  check('cookie-example.org.bin', (_b, o) => {
    const q = expectQuery(o, 'cookie');
    assert.equal(q.name, 'example.org');
    assert.equal(q.edns, true);
  });
  check('edns-version1-example.org.bin', (_b, o) => {
    const e = expectError(o, RCODE.BADVERS, 'EDNS version 1');
    assert.ok(e.q, 'BADVERS keeps the question (the reply echoes it)');
    assert.equal(e.q.ednsVersion, 1);
    assert.equal(e.q.edns, true);
    assert.equal(e.id, 0x9d16);
  });
  check('ednsopt100-example.org.bin', (_b, o) => {
    const q = expectQuery(o, 'unknown option 100 is ignored');
    assert.equal(q.edns, true);
    assert.equal(q.ednsVersion, 0);
  });
  check('nsid-subnet-example.org.bin', (_b, o) => {
    const q = expectQuery(o, 'NSID + ECS');
    assert.equal(q.name, 'example.org');
    assert.equal(q.udpSize, 1232);
  });
  check('opcode15-header-only.bin', (_b, o) => {
    const e = expectError(o, RCODE.NOTIMP, 'opcode 15');
    assert.equal(e.q, null);
    assert.equal(e.id, 0xecd3);
    assert.equal((e.flags >> 11) & 0xf, 15);
  });
  check('ptr-1.0.0.10.in-addr.arpa.bin', (_b, o) => {
    const q = expectQuery(o, 'PTR');
    assert.equal(q.name, '1.0.0.10.in-addr.arpa');
    assert.equal(q.qtype, TYPE.PTR);
  });
  check('soa-bufsize512-consul.bin', (_b, o) => {
    const q = expectQuery(o, 'SOA bufsize 512');
    assert.equal(q.name, 'consul');
    assert.equal(q.qtype, TYPE.SOA);
    assert.equal(q.edns, true);
    assert.equal(q.udpSize, 512);
  });
  check('srv-noedns-_janus._tcp.service.consul.bin', (buf, o) => {
    const q = expectQuery(o, 'no EDNS');
    assert.equal(q.name, '_janus._tcp.service.consul');
    assert.equal(q.qtype, TYPE.SRV);
    assert.equal(q.edns, false);
    assert.equal(q.udpSize, 512);
    assert.equal(q.qEnd, buf.length);
  });
  check('zflag-norec-example.org.bin', (_b, o) => {
    const q = expectQuery(o, 'Z without RD');
    assert.equal(q.flags & FLAG.RD, 0);
    assert.ok(q.flags & FLAG.Z);
  });
  assert.deepEqual([...seen].sort(), [...QUERIES.keys()].sort(), 'every capture checked');
});

// ------------------------------------------------------------------------------------------------
// parseQuery on malformed and refused queries

/** Hand-built bad queries, each with the outcome BIND gives (null rcode = dropped). */
function malformed(): Array<{ what: string; buf: Buffer; rcode: number | null; withQ?: boolean }> {
  const q63 = 'a'.repeat(63);
  const name255 = labels(q63, q63, q63, 'b'.repeat(61)); // 3*64 + 62 + 1 = 255 octets
  assert.equal(name255.length, 255);
  const name256 = labels(q63, q63, q63, 'b'.repeat(62));
  assert.equal(name256.length, 256);
  return [
    { what: 'QR set', buf: query({ flags: FLAG.QR | FLAG.RD }), rcode: null },
    { what: '11 bytes', buf: query().subarray(0, 11), rcode: null },
    { what: 'empty', buf: Buffer.alloc(0), rcode: null },
    { what: 'QDCOUNT 0', buf: header(1, FLAG.RD, 0, 0, 0, 0), rcode: RCODE.FORMERR },
    { what: 'QDCOUNT 2', buf: Buffer.concat([query({ qd: 2 }), labels('b'), typeClass(TYPE.A)]), rcode: RCODE.FORMERR },
    {
      what: 'pointer in the question',
      buf: query({ question: Buffer.concat([Buffer.from([0xc0, 0x0c]), typeClass(TYPE.A)]) }),
      rcode: RCODE.FORMERR,
    },
    {
      what: 'pointer after a label',
      buf: query({ question: Buffer.concat([Buffer.from([1, 0x61, 0xc0, 0x0c]), typeClass(TYPE.A)]) }),
      rcode: RCODE.FORMERR,
    },
    {
      what: 'label type 0x40',
      buf: query({ question: Buffer.concat([Buffer.from([0x41, 0x61]), ROOT, typeClass(TYPE.A)]) }),
      rcode: RCODE.FORMERR,
    },
    {
      what: 'label type 0x80',
      buf: query({ question: Buffer.concat([Buffer.from([0x80]), ROOT, typeClass(TYPE.A)]) }),
      rcode: RCODE.FORMERR,
    },
    {
      what: '256-octet name',
      buf: query({ question: Buffer.concat([name256, typeClass(TYPE.A)]) }),
      rcode: RCODE.FORMERR,
    },
    {
      what: 'name without its root label',
      buf: query({ question: labels('example', 'org').subarray(0, 12) }),
      rcode: RCODE.FORMERR,
    },
    { what: 'question cut in its type', buf: query().subarray(0, HEADER_LEN + 13 + 1), rcode: RCODE.FORMERR },
    { what: 'question cut in its class', buf: query().subarray(0, HEADER_LEN + 13 + 3), rcode: RCODE.FORMERR },
    { what: 'two OPT records', buf: query({ ar: [OPT_RR, OPT_RR] }), rcode: RCODE.FORMERR, withQ: true },
    { what: 'OPT in the answer section', buf: query({ an: [OPT_RR] }), rcode: RCODE.FORMERR, withQ: true },
    { what: 'OPT in the authority section', buf: query({ ns: [OPT_RR] }), rcode: RCODE.FORMERR, withQ: true },
    {
      what: 'OPT with a non-root owner',
      buf: query({ ar: [rr(labels('x'), TYPE.OPT, 1232, 0, Buffer.alloc(0))] }),
      rcode: RCODE.FORMERR,
      withQ: true,
    },
    {
      what: 'ARCOUNT 1 and nothing there',
      buf: Buffer.concat([header(1, FLAG.RD, 1, 0, 0, 1), labels('a'), typeClass(TYPE.A)]),
      rcode: RCODE.FORMERR,
      withQ: true,
    },
    {
      what: 'qtype AXFR',
      buf: query({ question: Buffer.concat([labels('consul'), typeClass(TYPE.AXFR)]) }),
      rcode: RCODE.REFUSED,
      withQ: true,
    },
    {
      what: 'qtype IXFR',
      buf: query({ question: Buffer.concat([labels('consul'), typeClass(TYPE.IXFR)]) }),
      rcode: RCODE.REFUSED,
      withQ: true,
    },
    {
      what: 'qtype TSIG',
      buf: query({ question: Buffer.concat([labels('consul'), typeClass(TYPE.TSIG)]) }),
      rcode: RCODE.REFUSED,
      withQ: true,
    },
    {
      what: 'qtype TKEY',
      buf: query({ question: Buffer.concat([labels('consul'), typeClass(TYPE.TKEY)]) }),
      rcode: RCODE.REFUSED,
      withQ: true,
    },
    {
      what: 'qtype OPT',
      buf: query({ question: Buffer.concat([labels('consul'), typeClass(TYPE.OPT)]) }),
      rcode: RCODE.FORMERR,
      withQ: true,
    },
    {
      what: 'qtype MAILA',
      buf: query({ question: Buffer.concat([labels('consul'), typeClass(TYPE.MAILA)]) }),
      rcode: RCODE.NOTIMP,
      withQ: true,
    },
    {
      what: 'qtype MAILB',
      buf: query({ question: Buffer.concat([labels('consul'), typeClass(TYPE.MAILB)]) }),
      rcode: RCODE.NOTIMP,
      withQ: true,
    },
    { what: 'opcode 2 (STATUS) with QDCOUNT 0', buf: header(7, 2 << 11, 0, 0, 0, 0), rcode: RCODE.NOTIMP },
    { what: 'opcode 5 (UPDATE) with a question', buf: query({ flags: 5 << 11 }), rcode: RCODE.NOTIMP },
  ];
}

test("parseQuery: malformed, response and refused queries get BIND's outcome", () => {
  for (const c of malformed()) {
    const o = parseQuery(c.buf);
    if (c.rcode === null) {
      assert.deepEqual(o, { kind: 'drop' }, c.what);
      continue;
    }
    const e = expectError(o, c.rcode, c.what);
    assert.equal(e.id, c.buf.readUInt16BE(0), `${c.what}: id`);
    assert.equal(e.flags, c.buf.readUInt16BE(2), `${c.what}: flags`);
    if (c.withQ) assert.ok(e.q, `${c.what}: question kept for the reply`);
    else assert.equal(e.q, null, `${c.what}: no question to echo`);
  }
});

test('parseQuery: boundaries that are still valid', () => {
  const q63 = 'a'.repeat(63);
  const name255 = labels(q63, q63, q63, 'b'.repeat(61));
  const q = expectQuery(parseQuery(query({ question: Buffer.concat([name255, typeClass(TYPE.A)]) })), '255-octet name');
  assert.equal(q.name.length, 253);
  assert.equal(q.qEnd, HEADER_LEN + 255 + 4);

  const root = expectQuery(parseQuery(query({ question: Buffer.concat([ROOT, typeClass(TYPE.NS)]) })), 'root');
  assert.equal(root.name, '');
  assert.equal(root.qtype, TYPE.NS);

  // RFC 6891 §6.2.5: a payload size below 512 is treated as 512.
  const small = expectQuery(parseQuery(query({ ar: [buildOpt(100, 0, true)] })), 'udp size 100');
  assert.equal(small.udpSize, 512);
  assert.equal(small.dnssecOk, true);
  const big = expectQuery(parseQuery(query({ ar: [buildOpt(65535, 0, false)] })), 'udp size 65535');
  assert.equal(big.udpSize, 65535);

  // OPT RDATA that runs past the end of the datagram is malformed.
  const cut = query({ ar: [buildOpt(1232, 0, false, { code: 3, text: 'x' })] }).subarray(0, -1);
  expectError(parseQuery(cut), RCODE.FORMERR, 'OPT RDATA cut short');

  // Other records in the additional section before OPT are walked over (compressed owner too).
  const a = rr(Buffer.from([0xc0, 0x0c]), TYPE.A, CLASS_IN, 60, Buffer.from([10, 0, 0, 1]));
  const withA = expectQuery(parseQuery(query({ ar: [a, buildOpt(4096, 0, true)] })), 'A then OPT');
  assert.equal(withA.udpSize, 4096);
  assert.equal(withA.dnssecOk, true);
});

test('parseQuery(buf, false) validates the same and leaves name empty', () => {
  const cases: Buffer[] = [...QUERIES.values(), ...malformed().map((c) => c.buf)];
  for (const buf of cases) {
    const full = parseQuery(buf);
    const lean = parseQuery(buf, false);
    assert.equal(lean.kind, full.kind);
    if (full.kind === 'drop') continue;
    const fq = full.q;
    const lq = lean.kind === 'drop' ? null : lean.q;
    if (full.kind === 'error' && lean.kind === 'error') assert.equal(lean.rcode, full.rcode);
    if (fq === null) {
      assert.equal(lq, null);
      continue;
    }
    assert.ok(lq);
    assert.equal(lq.name, '');
    assert.deepEqual({ ...lq, name: fq.name }, fq);
  }
});

// ------------------------------------------------------------------------------------------------
// questionName

test('questionName escapes dots, backslashes, spaces and non-ASCII bytes as \\DDD', () => {
  const buf = Buffer.concat([
    header(1, 0, 1, 0, 0, 0),
    labels('a.b', [0xc3, 0xa9, 0x41], 'x\\y z', [0x00, 0x7f, 0xff], 'MiXeD'),
    typeClass(TYPE.A),
  ]);
  assert.equal(questionName(buf), 'a\\046b.\\195\\169a.x\\092y\\032z.\\000\\127\\255.mixed');
  // The escapes keep different wire names apart: 'a.b' as one label is not the two labels a, b.
  const two = Buffer.concat([header(1, 0, 1, 0, 0, 0), labels('a', 'b'), typeClass(TYPE.A)]);
  assert.equal(questionName(two), 'a.b');
  // The offset argument reads a name anywhere in the buffer; the root is ''.
  assert.equal(questionName(Buffer.concat([Buffer.from([9, 9]), labels('Z')]), 2), 'z');
  assert.equal(questionName(ROOT, 0), '');
  // parseQuery uses the same form.
  const q = expectQuery(parseQuery(buf), 'escaped name');
  assert.equal(q.name, 'a\\046b.\\195\\169a.x\\092y\\032z.\\000\\127\\255.mixed');
});

// ------------------------------------------------------------------------------------------------
// scanReply

test('scanReply walks every BIND reply: TTL offsets, OPT, rcode, negative TTL', () => {
  assert.equal(REPLIES.size, 16);
  for (const [f, buf] of REPLIES) {
    const l = scanReply(buf);
    assert.ok(l, `${f}: layout`);
    const an = buf.readUInt16BE(6),
      ns = buf.readUInt16BE(8),
      ar = buf.readUInt16BE(10);
    assert.deepEqual([l.an, l.ns, l.ar], [an, ns, ar], `${f}: counts`);
    assert.equal(l.flags, buf.readUInt16BE(2));
    assert.equal(l.rcode, buf.readUInt16BE(2) & 0xf);
    // Every reply was asked with EDNS, so BIND sent exactly one OPT, owned by the root.
    assert.ok(l.optStart > HEADER_LEN && l.optEnd > l.optStart && l.optEnd <= buf.length, `${f}: OPT found`);
    assert.equal(buf[l.optStart], 0, `${f}: OPT owner is the root`);
    assert.equal(buf.readUInt16BE(l.optStart + 1), TYPE.OPT, `${f}: OPT type`);
    assert.equal(l.optEnd, l.optStart + 11 + buf.readUInt16BE(l.optStart + 9), `${f}: OPT end`);
    assert.equal(l.extRcode, buf[l.optStart + 5]);
    assert.equal(l.ttlOffsets.length, an + ns + ar - 1, `${f}: one TTL per non-OPT record`);
    let prev = 0;
    for (const off of l.ttlOffsets) {
      assert.ok(off > prev && off + 6 <= buf.length, `${f}: offsets increase`);
      assert.notEqual(buf.readUInt16BE(off - 4), TYPE.OPT, `${f}: no TTL offset in OPT`);
      assert.equal(buf.readUInt16BE(off - 2), CLASS_IN, `${f}: TTL offset follows class IN`);
      prev = off;
    }
    // The question section ends where dns2 would start the answers: after name + 4.
    assert.equal(buf.readUInt16BE(l.qEnd - 2), CLASS_IN);
    // minTtl is over answer + authority only (RRSIG TTLs included, OPT excluded).
    const ansAuth = l.ttlOffsets.slice(0, an + ns).map((o) => buf.readUInt32BE(o));
    assert.equal(l.minTtl, ansAuth.length ? Math.min(...ansAuth) : -1, `${f}: minTtl`);
    if (l.rcode !== RCODE.NXDOMAIN) assert.equal(l.negTtl, -1, `${f}: no negTtl without an SOA`);
  }
  const nx = fixture(REPLIES, 'nx.example.test_A.bin');
  const l = scanReply(nx);
  assert.ok(l);
  assert.equal(l.rcode, RCODE.NXDOMAIN);
  const soa = dns2.Packet.parse(nx).authorities.find((r) => r.type === TYPE.SOA) as unknown as
    { ttl: number; minimum: number } | undefined;
  assert.ok(soa, 'dns2 finds the SOA');
  assert.equal(l.negTtl, Math.min(soa.ttl, soa.minimum));
  assert.equal(l.negTtl, 60);
});

/** An NXDOMAIN reply with one SOA in authority (compressed names), optional OPT. */
function nxReply(soaTtl: number, minimum: number, opt = true): Buffer {
  const q = Buffer.concat([labels('nx', 'consul'), typeClass(TYPE.A)]);
  const soaRdata = Buffer.concat([
    labels('ns', 'consul'),
    Buffer.from([10]),
    Buffer.from('hostmaster'),
    Buffer.from([0xc0, 15]),
    Buffer.from([0, 0, 0, 1, 0, 0, 0x0e, 0x10, 0, 0, 2, 0x58, 0, 1, 0x51, 0x80]),
    Buffer.alloc(4),
  ]);
  soaRdata.writeUInt32BE(minimum, soaRdata.length - 4);
  const soa = rr(Buffer.from([0xc0, 15]), TYPE.SOA, CLASS_IN, soaTtl, soaRdata);
  return Buffer.concat([
    header(9, FLAG.QR | FLAG.RD | FLAG.RA | RCODE.NXDOMAIN, 1, 0, 1, opt ? 1 : 0),
    q,
    soa,
    ...(opt ? [OPT_RR] : []),
  ]);
}

test('scanReply: negTtl is min(SOA TTL, SOA MINIMUM) (RFC 2308 §5)', () => {
  for (const [ttl, min] of [
    [300, 30],
    [10, 3600],
    [0, 5],
  ] as const) {
    const buf = nxReply(ttl, min);
    const l = scanReply(buf);
    assert.ok(l, `${ttl}/${min}`);
    assert.equal(l.negTtl, Math.min(ttl, min));
    assert.equal(l.minTtl, ttl);
    assert.equal(l.ttlOffsets.length, 1);
    assert.equal(l.optEnd, buf.length);
  }
  const noOpt = scanReply(nxReply(300, 30, false));
  assert.ok(noOpt);
  assert.deepEqual([noOpt.optStart, noOpt.optEnd, noOpt.extRcode], [-1, -1, 0]);
});

test('scanReply accepts trailing bytes after the last record (as BIND and unbound): end marks the message', () => {
  for (const [f, buf] of [...REPLIES, ['nx-built', nxReply(300, 30)] as [string, Buffer]]) {
    const whole = scanReply(buf);
    assert.ok(whole, f);
    assert.equal(whole.end, buf.length, `${f}: ends at its last byte`);
    const padded = scanReply(Buffer.concat([buf, Buffer.from([0, 0, 0, 0, 0])]));
    assert.ok(padded, `${f} plus five bytes`);
    assert.equal(padded.end, buf.length, `${f}: the excess is not part of the message`);
    assert.deepEqual(padded.ttlOffsets, whole.ttlOffsets);
  }
});

test('scanReply refuses a reply cut short', () => {
  for (const [f, buf] of [...REPLIES, ['nx-built', nxReply(300, 30)] as [string, Buffer]]) {
    // Cutting anywhere inside a record (or a count that promises more) must be refused. Sample
    // every cut point of the small replies and a spread of the others to stay fast.
    const step = buf.length > 250 ? 7 : 1;
    for (let cut = buf.length - 1; cut >= 0; cut -= step) {
      assert.equal(scanReply(buf.subarray(0, cut)), null, `${f} cut to ${cut}`);
    }
    assert.equal(scanReply(buf.subarray(0, buf.length - 1)), null, `${f} minus one byte`);
  }
  // A second OPT, or OPT in the answer section, is malformed too.
  const base = nxReply(300, 30);
  const twoOpt = Buffer.concat([base, OPT_RR]);
  twoOpt.writeUInt16BE(2, 10);
  assert.equal(scanReply(twoOpt), null, 'two OPT');
  const optInAnswer = Buffer.concat([header(1, FLAG.QR, 1, 1, 0, 0), labels('a'), typeClass(TYPE.A), OPT_RR]);
  assert.equal(scanReply(optInAnswer), null, 'OPT in answer');
  // A forward compression pointer (or one into the header) is refused.
  const fwd = Buffer.concat([
    header(1, FLAG.QR, 1, 1, 0, 0),
    labels('a'),
    typeClass(TYPE.A),
    rr(Buffer.from([0xc0, 0x40]), TYPE.A, CLASS_IN, 1, Buffer.from([1, 2, 3, 4])),
  ]);
  assert.equal(scanReply(fwd), null, 'forward pointer');
  const intoHeader = Buffer.from(fwd);
  intoHeader[HEADER_LEN + 7] = 0x02;
  assert.equal(scanReply(intoHeader), null, 'pointer into the header');
});

test("the upstream's extended rcode and EDE options reach an EDNS client in our OPT; other options do not", () => {
  const question = Buffer.concat([labels('x', 'example'), typeClass(TYPE.A)]);
  const ede = Buffer.from([0, EDNS_OPTION_EDE, 0, 4, 0, 16, 0x68, 0x69]); // 16 Censored, "hi"
  const nsid = Buffer.from([0, 3, 0, 2, 0xab, 0xcd]);
  // The upstream's OPT: size 4096, extended rcode 1 (BADVERS = 16 with rcode 0), NSID then EDE.
  const uopt = Buffer.concat([Buffer.from([0, 0, 41, 0x10, 0, 1, 0, 0, 0, 0, nsid.length + ede.length]), nsid, ede]);
  const up = Buffer.concat([header(7, FLAG.QR | FLAG.RA, 1, 0, 0, 1), question, uopt]);
  const layout = scanReply(up);
  assert.ok(layout);
  assert.equal(layout.extRcode, 1);
  assert.deepEqual(edeOptions(up, layout), ede, 'the EDE option only');
  assert.equal(edeOptions(up, { ...layout, optStart: -1 }), null);
  const client = (edns: boolean) => {
    const qb = buildUpstreamQuery(question, 0, question.length, FLAG.RD, false, 1232);
    qb.writeUInt16BE(0x4242, 0);
    const b = edns ? qb : qb.subarray(0, qb.length - 11);
    if (!edns) b.writeUInt16BE(0, 10);
    const p = parseQuery(b);
    assert.ok(p.kind === 'query');
    return p.q;
  };
  for (const edns of [true, false]) {
    const q = client(edns);
    const out = finish(Buffer.from(stripOpt(up, layout)), q, replyFlags(q, layout.flags), {
      maxUdpSize: 1232,
      udp: true,
      extRcode: layout.extRcode,
      upstreamEde: edeOptions(up, layout),
    });
    const l = scanReply(out);
    assert.ok(l);
    if (edns) {
      assert.equal(l.rcode | (l.extRcode << 4), RCODE.BADVERS, 'BADVERS (16) whole');
      assert.equal(out.readUInt16BE(l.optStart + 3), 1232, 'our UDP size');
      assert.deepEqual(out.subarray(l.optStart + 11, l.optEnd), ede);
    } else {
      assert.equal(l.optStart, -1);
      assert.equal(l.rcode, RCODE.SERVFAIL, 'without an OPT an extended rcode cannot be said: SERVFAIL');
    }
  }
});

// ------------------------------------------------------------------------------------------------
// sameQuestion

test('sameQuestion compares names without case and rejects another name, type or class', () => {
  const qbuf = fixture(QUERIES, 'aaaa-mixedcase-JaNuS.SeRvIcE.CoNsUl.bin');
  const q = expectQuery(parseQuery(qbuf), 'mixed');
  const replyWith = (question: Buffer, qd = 1) => {
    const r = Buffer.concat([header(q.id, FLAG.QR, qd, 0, 0, 0), question]);
    return { r, qEnd: HEADER_LEN + question.length };
  };
  const lower = replyWith(buildQuestion('janus.service.consul', TYPE.AAAA));
  assert.equal(sameQuestion(lower.r, lower.qEnd, qbuf, q.qEnd), true, 'lowercase reply');
  const upper = replyWith(buildQuestion('JANUS.SERVICE.CONSUL', TYPE.AAAA));
  assert.equal(sameQuestion(upper.r, upper.qEnd, qbuf, q.qEnd), true, 'uppercase reply');
  const exact = replyWith(qbuf.subarray(HEADER_LEN, q.qEnd));
  assert.equal(sameQuestion(exact.r, exact.qEnd, qbuf, q.qEnd), true, 'same bytes');

  const otherName = replyWith(buildQuestion('janus.service.consuk', TYPE.AAAA));
  assert.equal(sameQuestion(otherName.r, otherName.qEnd, qbuf, q.qEnd), false, 'other name, same length');
  const longer = replyWith(buildQuestion('janus.service.consul.x', TYPE.AAAA));
  assert.equal(sameQuestion(longer.r, longer.qEnd, qbuf, q.qEnd), false, 'other length');
  const otherType = replyWith(buildQuestion('janus.service.consul', TYPE.A));
  assert.equal(sameQuestion(otherType.r, otherType.qEnd, qbuf, q.qEnd), false, 'other type');
  const chaos = replyWith(Buffer.concat([labels('janus', 'service', 'consul'), typeClass(TYPE.AAAA, 3)]));
  assert.equal(sameQuestion(chaos.r, chaos.qEnd, qbuf, q.qEnd), false, 'other class');
  const noQd = replyWith(buildQuestion('janus.service.consul', TYPE.AAAA), 0);
  assert.equal(sameQuestion(noQd.r, noQd.qEnd, qbuf, q.qEnd), false, 'QDCOUNT 0');
  // Case folding is ASCII only: '[' (0x5b) and '{' (0x7b) differ by 0x20 but are not letters.
  const a = replyWith(Buffer.concat([labels('['), typeClass(TYPE.A)]));
  const b = Buffer.concat([header(1, 0, 1, 0, 0, 0), labels('{'), typeClass(TYPE.A)]);
  assert.equal(sameQuestion(a.r, a.qEnd, b, a.qEnd), false, 'non-letters are not folded');
});

// ------------------------------------------------------------------------------------------------
// buildErrorReply

test('buildErrorReply NOTIMP for opcode 15 echoes ID and opcode only (RD is defined for QUERY alone)', () => {
  const buf = fixture(QUERIES, 'opcode15-header-only.bin');
  const o = expectError(parseQuery(buf), RCODE.NOTIMP, 'opcode 15');
  // The query carries AD (0x20): it must not come back, nor RA/AA/CD/TC.
  assert.ok(o.flags & FLAG.AD);
  const r = buildErrorReply(buf, o.id, o.flags, o.q, RCODE.NOTIMP, {
    udpSize: 1232,
    ra: true,
    ede: { code: EDE.NOT_READY },
  });
  // No question; the query has an OPT, so the reply has ours (RFC 6891 §7), with the EDE.
  assert.equal(r.length, HEADER_LEN + 11 + 6, 'header and OPT: no question');
  assert.equal(r.readUInt16BE(0), 0xecd3);
  const f = r.readUInt16BE(2);
  assert.equal(f, FLAG.QR | (15 << 11) | RCODE.NOTIMP);
  for (const bit of [FLAG.RA, FLAG.AA, FLAG.AD, FLAG.CD, FLAG.TC, FLAG.Z, FLAG.RD]) assert.equal(f & bit, 0);
  assert.deepEqual(
    [2, 3, 4, 5].map((i) => r.readUInt16BE(i * 2)),
    [0, 0, 0, 1],
  );
  assert.equal(r.readUInt16BE(HEADER_LEN + 1), 41, 'OPT');
});

test('buildErrorReply BADVERS: extended rcode 1 in our OPT, version 0, question echoed', () => {
  const buf = fixture(QUERIES, 'edns-version1-example.org.bin');
  const o = expectError(parseQuery(buf), RCODE.BADVERS, 'EDNS 1');
  assert.ok(o.q);
  const r = buildErrorReply(buf, o.id, o.flags, o.q, RCODE.BADVERS, { udpSize: 1232, ra: true });
  assert.equal(r.readUInt16BE(0), o.id);
  const f = r.readUInt16BE(2);
  assert.equal(f & 0xf, 0, 'low rcode bits of 16 are 0');
  assert.ok(f & FLAG.QR && f & FLAG.RD && f & FLAG.RA);
  assert.deepEqual(
    [2, 3, 4, 5].map((i) => r.readUInt16BE(i * 2)),
    [1, 0, 0, 1],
  );
  assert.ok(r.subarray(HEADER_LEN, o.q.qEnd).equals(buf.subarray(HEADER_LEN, o.q.qEnd)));
  const l = scanReply(r);
  assert.ok(l);
  assert.equal(l.optStart, o.q.qEnd);
  assert.equal(l.extRcode, 1);
  assert.equal(r[l.optStart + 6], 0, 'our OPT says version 0');
  assert.equal(r.readUInt16BE(l.optStart + 3), 1232);
  assert.equal(l.optEnd, r.length);
  const p = dns2.Packet.parse(r);
  assert.deepEqual(p.errors, []);
  assert.equal(p.header.rcode, RCODE.BADVERS, 'dns2 merges the 12-bit rcode');
});

test('buildErrorReply SERVFAIL with an EDE: option 15, code 22 and its text', () => {
  const buf = fixture(QUERIES, 'a-dnssec-cd-janus.service.consul.bin');
  const q = expectQuery(parseQuery(buf), 'DO+CD');
  const text = 'no reachable agent';
  const r = buildErrorReply(buf, q.id, q.flags, q, RCODE.SERVFAIL, {
    udpSize: 1400,
    ra: true,
    ede: { code: EDE.NO_REACHABLE_AUTHORITY, text },
  });
  const f = r.readUInt16BE(2);
  assert.equal(f & 0xf, RCODE.SERVFAIL);
  assert.ok(f & FLAG.CD, 'CD echoed (RFC 4035 §3.1.6)');
  assert.ok(f & FLAG.RA);
  assert.equal(f & (FLAG.AD | FLAG.AA | FLAG.TC), 0);
  const l = scanReply(r);
  assert.ok(l);
  // By hand: OPT header, then option code 15, length 2 + text, INFO-CODE 22, EXTRA-TEXT.
  const o = l.optStart;
  assert.equal(r.readUInt16BE(o + 3), 1400);
  assert.equal(r[o + 7]! & 0x80, 0x80, 'DO echoed');
  assert.equal(r.readUInt16BE(o + 9), 4 + 2 + text.length);
  assert.equal(r.readUInt16BE(o + 11), EDNS_OPTION_EDE);
  assert.equal(r.readUInt16BE(o + 13), 2 + text.length);
  assert.equal(r.readUInt16BE(o + 15), 22);
  assert.equal(r.toString('utf8', o + 17, l.optEnd), text);
  // And with dns2 as an independent decoder.
  const p = dns2.Packet.parse(r);
  assert.deepEqual(p.errors, []);
  assert.equal(p.questions[0]?.name, 'janus.service.consul');
  const opt = p.additionals.find((a) => a.type === TYPE.OPT) as unknown as {
    rdata: Array<{ ednsCode: number; infoCode: number; extraText: string }>;
  };
  assert.ok(opt);
  assert.deepEqual(opt.rdata, [{ ednsCode: 15, infoCode: 22, extraText: text }]);

  // No text: the option is just the INFO-CODE.
  const bare = buildErrorReply(buf, q.id, q.flags, q, RCODE.SERVFAIL, {
    udpSize: 1232,
    ra: false,
    ede: { code: EDE.NETWORK_ERROR },
  });
  const bl = scanReply(bare);
  assert.ok(bl);
  assert.equal(bare.readUInt16BE(bl.optStart + 9), 6);
  assert.equal(bare.readUInt16BE(bl.optStart + 15), EDE.NETWORK_ERROR);
  assert.equal(bare.readUInt16BE(2) & FLAG.RA, 0, 'ra false → no RA');

  // A client without EDNS gets no OPT (and so no EDE): RFC 6891 §7.
  const plain = fixture(QUERIES, 'srv-noedns-_janus._tcp.service.consul.bin');
  const pq = expectQuery(parseQuery(plain), 'no EDNS');
  const pr = buildErrorReply(plain, pq.id, pq.flags, pq, RCODE.REFUSED, {
    udpSize: 1232,
    ra: true,
    ede: { code: EDE.PROHIBITED },
  });
  assert.equal(pr.length, plain.length);
  assert.equal(pr.readUInt16BE(10), 0);
  assert.equal(pr.readUInt16BE(2) & 0xf, RCODE.REFUSED);
});

// ------------------------------------------------------------------------------------------------
// buildUpstreamQuery

test('buildUpstreamQuery keeps only RD/CD/AD and writes our own OPT', () => {
  const buf = fixture(QUERIES, 'cookie-example.org.bin');
  const q = expectQuery(parseQuery(buf), 'cookie');
  const every = 0x7fff; // every bit but QR: opcode, AA, TC, RD, RA, Z, AD, CD, rcode
  for (const [flags, dnssecOk, size] of [
    [every, true, 4096],
    [FLAG.RD, false, 1232],
    [FLAG.Z | FLAG.TC, false, 512],
  ] as const) {
    const u = buildUpstreamQuery(buf, HEADER_LEN, q.qEnd, flags, dnssecOk, size);
    assert.equal(u.readUInt16BE(2), flags & (FLAG.RD | FLAG.CD | FLAG.AD));
    assert.deepEqual(
      [2, 3, 4, 5].map((i) => u.readUInt16BE(i * 2)),
      [1, 0, 0, 1],
    );
    assert.ok(u.subarray(HEADER_LEN, q.qEnd).equals(buf.subarray(HEADER_LEN, q.qEnd)), 'question bytes copied');
    assert.equal(u.length, q.qEnd + 11, 'OPT without options: the client cookie is not forwarded');
    const uq = expectQuery(parseQuery(u), 'upstream form');
    assert.equal(uq.name, 'example.org');
    assert.equal(uq.edns, true);
    assert.equal(uq.ednsVersion, 0);
    assert.equal(uq.udpSize, size);
    assert.equal(uq.dnssecOk, dnssecOk);
    assert.equal(u[q.qEnd + 5], 0, 'extended rcode 0');
    assert.equal(u.readUInt16BE(q.qEnd + 7) & 0x7fff, 0, 'Z bits of OPT clear');
  }
  // The question may come from anywhere in a buffer (the alias stage hands over a rewritten one).
  const question = buildQuestion('web.service.consul', TYPE.SRV);
  const padded = Buffer.concat([Buffer.from([0xaa, 0xbb, 0xcc]), question, Buffer.from([0xdd])]);
  const u = buildUpstreamQuery(padded, 3, 3 + question.length, FLAG.RD, false, 1232);
  const uq = expectQuery(parseQuery(u), 'rewritten question');
  assert.equal(uq.name, 'web.service.consul');
  assert.equal(uq.qtype, TYPE.SRV);
});
