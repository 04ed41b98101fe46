/**
 * Unit tests of the DNS message codec (src/message.ts) on real wire messages: the BIND and dig
 * captures in test/fixtures/corpus, hand-built messages with compression pointers into the
 * question, into other names and in chains, and malformed inputs that must give WireError and
 * never another exception. dns2 3.1.1 serves as an independent decoder of what we encode.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import dns2 from 'dns2';
import {
  WireError,
  decodeMessage,
  encodeMessage,
  nameToWire,
  rdataNames,
  readName,
  FIELD_NAME,
  type Message,
} from '../../src/dns/message.js';
import { a, mx, oneName, opt, rr, soa, srv, txt, rdataNameList } from '../support/fuzz.js';

const CORPUS = new URL('../../../test/fixtures/corpus/', import.meta.url);
function corpus(dir: 'replies-bind' | 'queries-dig'): Array<[string, Buffer]> {
  const d = new URL(`${dir}/`, CORPUS);
  return readdirSync(d)
    .filter((f) => f.endsWith('.bin'))
    .sort()
    .map((f) => [f, readFileSync(new URL(f, d))]);
}

function hex(s: string): Buffer {
  return Buffer.from(s.replace(/\s+/g, ''), 'hex');
}

function header(id: number, flags: number, qd: number, an: number, ns: number, ar: number): Buffer {
  const h = Buffer.alloc(12);
  [id, flags, qd, an, ns, ar].forEach((v, i) => h.writeUInt16BE(v, i * 2));
  return h;
}

function throwsWire(buf: Buffer, what: RegExp): void {
  assert.throws(
    () => decodeMessage(buf),
    (e: unknown) => e instanceof WireError && e.code === 'CDP_ERR_WIRE' && what.test(e.message),
  );
}

const Q = 'janus.service.consul';
const QWIRE = hex('056a616e7573 0773657276696365 06636f6e73756c 00'); // offset 12..33

test('every BIND reply round-trips to the same message, no larger than the capture', () => {
  const files = corpus('replies-bind');
  assert.equal(files.length, 16);
  for (const [f, buf] of files) {
    const m = decodeMessage(buf, { strict: true });
    const out = encodeMessage(m);
    assert.deepEqual(decodeMessage(out, { strict: true }), m, f);
    assert.ok(out.length <= buf.length, `${f}: ${out.length} > ${buf.length}`);
    const p = dns2.Packet.parse(out);
    assert.deepEqual(p.errors, [], `${f}: dns2 errors`);
    assert.equal(p.answers.length, m.answers.length, f);
  }
});

test('every dig query decodes and re-encodes to the very same bytes', () => {
  for (const [f, buf] of corpus('queries-dig')) {
    const m = decodeMessage(buf, { strict: true });
    assert.ok(encodeMessage(m).equals(buf), f);
  }
  const mixed = decodeMessage(readFileSync(new URL('queries-dig/aaaa-mixedcase-JaNuS.SeRvIcE.CoNsUl.bin', CORPUS)));
  assert.deepEqual(mixed.questions, [{ name: 'JaNuS.SeRvIcE.CoNsUl', type: 28, class: 1 }]);
  const hdr = decodeMessage(readFileSync(new URL('queries-dig/opcode15-header-only.bin', CORPUS)));
  assert.equal((hdr.flags >> 11) & 0xf, 15);
  assert.equal(hdr.questions.length, 0);
});

test('BIND SRV reply: target decoded, glue owner points into the SRV RDATA, OPT and cookie kept', () => {
  const buf = readFileSync(new URL('replies-bind/_sip._udp.example.test_SRV.bin', CORPUS));
  const m = decodeMessage(buf);
  const s = m.answers[0]!;
  assert.equal(s.type, 33);
  assert.equal(s.name, '_sip._udp.example.test');
  assert.deepEqual(rdataNameList(33, s.rdata), ['www.example.test']);
  assert.deepEqual([s.rdata.readUInt16BE(0), s.rdata.readUInt16BE(2), s.rdata.readUInt16BE(4)], [10, 60, 5060]);
  assert.equal(m.additionals[0]!.name, 'www.example.test');
  const o = m.additionals.at(-1)!;
  assert.equal(o.type, 41);
  assert.equal(o.name, '');
  assert.equal(o.class, 1232);
  assert.equal(o.rdata.readUInt16BE(0), 10, 'COOKIE option kept verbatim');
  // Our encoding does what BIND did: the SRV target is written in full (RFC 2782) and the glue
  // owner is a pointer into it.
  const out = encodeMessage(m);
  const target = out.indexOf(nameToWire('www.example.test'));
  assert.ok(target > 0);
  const glue = out.indexOf(Buffer.from([0xc0 | (target >> 8), target & 0xff, 0, 1, 0, 1]));
  assert.ok(glue > target, 'glue A owner points at the SRV target');
});

test('RRSIG and unknown types are carried verbatim; NXDOMAIN NSEC proofs intact', () => {
  const buf = readFileSync(new URL('replies-bind/nx.example.test_A.bin', CORPUS));
  const m = decodeMessage(buf);
  assert.equal(m.flags & 0xf, 3);
  assert.ok(m.authorities.some((r) => r.type === 47));
  const u = decodeMessage(readFileSync(new URL('replies-bind/t65534.example.test_UNKNOWN_65534.bin', CORPUS)));
  assert.equal(u.answers[0]!.type, 65534);
  assert.equal(rdataNames(65534), undefined);
});

test('pointers into the question, into other names, and chains of pointers', () => {
  // question janus.service.consul at 12; answer 1 owner -> 12 (the question),
  // CNAME rdata "web" + ptr -> 18 (service.consul inside the question);
  // answer 2 owner "x" + ptr -> the CNAME target (a chain: x -> web -> service.consul in the question).
  const h = header(0xbeef, 0x8580, 1, 2, 0, 0);
  const q = Buffer.concat([QWIRE, hex('0001 0001')]); // 12..37
  const ans1 = hex('c00c 0005 0001 0000003c 0006 03776562 c012'); // 38.., rdata at 50
  const ans2 = hex('0178 c032 0001 0001 00000000 0004 0a000001');
  const buf = Buffer.concat([h, q, ans1, ans2]);
  const m = decodeMessage(buf, { strict: true });
  assert.equal(m.id, 0xbeef);
  assert.equal(m.answers[0]!.name, Q);
  assert.deepEqual(rdataNameList(5, m.answers[0]!.rdata), ['web.service.consul']);
  assert.ok(m.answers[0]!.rdata.equals(nameToWire('web.service.consul')), 'rdata stored uncompressed');
  assert.equal(m.answers[1]!.name, 'x.web.service.consul');
  assert.deepEqual(readName(buf, 56), { name: 'x.web.service.consul', end: 60 });
  // Re-encoding compresses everything again: owner -> question, CNAME -> question suffix.
  const out = encodeMessage(m);
  assert.deepEqual(decodeMessage(out), m);
  assert.ok(out.length <= buf.length, `${out.length} <= ${buf.length}`);
});

test('readName: root, escapes for dots, backslashes and odd bytes, case kept', () => {
  assert.deepEqual(readName(hex('00'), 0), { name: '', end: 1 });
  const w = hex('03612e62 025c5c 03000141 04 20 7e 7f 2d 00');
  // labels: "a.b", "\\\\", 00 01 'A', " ~" 0x7f '-'
  const { name, end } = readName(w, 0);
  assert.equal(name, 'a\\.b.\\\\\\\\.\\000\\001A.\\032~\\127-');
  assert.equal(end, w.length);
  assert.ok(nameToWire(name).equals(w), 'presentation form converts back to the same octets');
  assert.ok(nameToWire('Example.COM.').equals(hex('074578616d706c6503434f4d00')), 'absolute form and case');
  assert.ok(nameToWire('.').equals(hex('00')));
  assert.ok(nameToWire('a\\.').equals(hex('02612e00')), 'escaped trailing dot is part of the label');
});

test('names of exactly 255 octets pass, 256 fail (decode and encode)', () => {
  const l63 = 'a'.repeat(63);
  const n255 = [l63, l63, l63, 'b'.repeat(61)].join('.'); // 64*3 + 62 + 1 = 255
  assert.equal(nameToWire(n255).length, 255);
  assert.throws(() => nameToWire(n255 + 'c'), WireError);
  assert.throws(() => nameToWire('a'.repeat(64)), WireError);
  assert.throws(() => nameToWire('a..b'), WireError);
  assert.throws(() => nameToWire('.a'), WireError);
  assert.throws(() => nameToWire('a\\256'), WireError);
  assert.throws(() => nameToWire('a\\'), WireError);
  assert.throws(() => nameToWire('caf\u00e9\u4e2d'), WireError);
  const q = (name: Buffer) => Buffer.concat([header(1, 0, 1, 0, 0, 0), name, hex('00010001')]);
  assert.equal(decodeMessage(q(nameToWire(n255))).questions[0]!.name, n255);
  // 256 octets reached through a pointer: the question "c" + pointer to a 255-octet name.
  const long = Buffer.concat([
    header(1, 0x8000, 2, 0, 0, 0),
    nameToWire(n255),
    hex('00010001'),
    hex('0163 c00c 00010001'),
  ]);
  throwsWire(long, /longer than 255/);
});

test('malformed messages throw WireError and nothing else', () => {
  const h1 = header(1, 0, 1, 0, 0, 0);
  const cases: Array<[string, Buffer, RegExp]> = [
    ['empty', Buffer.alloc(0), /shorter than the 12-octet header/],
    ['truncated header', hex('0001 0100 0001 0000 0000'), /shorter than the 12-octet header/],
    ['counts beyond the message', header(1, 0, 0xffff, 0xffff, 0xffff, 0xffff), /section counts/],
    ['pointer to itself', Buffer.concat([h1, hex('c00c 00010001')]), /does not point backwards/],
    ['forward pointer', Buffer.concat([h1, hex('c00e 0000 00010001')]), /does not point backwards/],
    ['pointer to its own position', Buffer.concat([h1, hex('0161 c00e 00010001')]), /does not point backwards/],
    [
      'label then pointer back to the name start (a.a.a...)',
      Buffer.concat([h1, hex('0161 c00c 00010001')]),
      /does not point backwards/,
    ],
    ['label type 0x40', Buffer.concat([h1, hex('4161 00 00010001')]), /label type 0x40/],
    ['label type 0x80', Buffer.concat([h1, hex('8161 00 00010001')]), /label type 0x80/],
    ['label runs past the end', Buffer.concat([h1, hex('08616263 64')]), /label runs past the end/],
    ['name without a root label', Buffer.concat([h1, hex('0161 0162 0163')]), /name runs past the end/],
    ['question without its class', Buffer.concat([h1, hex('0161 00 0001')]), /question runs past/],
    ['pointer cut in half', Buffer.concat([h1, hex('0161 0161 c0')]), /pointer runs past/],
    [
      'RDLENGTH overrun',
      Buffer.concat([header(1, 0x8000, 0, 1, 0, 0), hex('00 0001 0001 00000000 0010 0a000001')]),
      /RDLENGTH runs past/,
    ],
    [
      'record header cut',
      Buffer.concat([header(1, 0x8000, 0, 1, 0, 0), hex('056162636465 00 0001 0001')]),
      /record header runs past/,
    ],
    [
      'CNAME name longer than its RDLENGTH',
      Buffer.concat([header(1, 0x8000, 0, 1, 0, 0), hex('00 0005 0001 00000000 0002 0161 00 0000000000000000000000')]),
      /past RDLENGTH/,
    ],
    [
      'SOA RDATA too short',
      Buffer.concat([header(1, 0x8000, 0, 1, 0, 0), hex('00 0006 0001 00000000 0004 00 00 0000')]),
      /shorter than its type/,
    ],
    [
      'MX RDATA with extra octets',
      Buffer.concat([header(1, 0x8000, 0, 1, 0, 0), hex('00 000f 0001 00000000 0005 000a 00 ffff')]),
      /longer than its type/,
    ],
    [
      'OPT with a non-root owner',
      Buffer.concat([header(1, 0, 0, 0, 0, 1), hex('0161 00 0029 1000 00000000 0000')]),
      /OPT record with a non-root owner/,
    ],
  ];
  for (const [what, buf, re] of cases) {
    assert.throws(
      () => decodeMessage(buf),
      (e: unknown) => e instanceof WireError && re.test(e.message),
      what,
    );
  }
  // A chain of pointers, each to the one before it, ending at the root question name: loop-free
  // and backwards, but a name reached through n of them costs n hops, so n is capped at 127.
  const chained = (n: number): Buffer => {
    const rd = Buffer.alloc(2 * n);
    for (let i = 0; i < n; i++) rd.writeUInt16BE(0xc000 | (i === 0 ? 12 : 28 + 2 * (i - 1)), 2 * i);
    const rec1 = Buffer.concat([hex('00 ff00 0001 00000000'), Buffer.from([rd.length >> 8, rd.length & 0xff]), rd]); // at 17, RDATA at 28
    const last = 28 + 2 * (n - 1);
    const rec2 = Buffer.concat([
      Buffer.from([0xc0 | (last >> 8), last & 0xff]),
      hex('0001 0001 00000000 0004 0a000001'),
    ]);
    return Buffer.concat([header(1, 0x8000, 1, 2, 0, 0), hex('00 0001 0001'), rec1, rec2]);
  };
  assert.equal(decodeMessage(chained(126), { strict: true }).answers[1]!.name, ''); // 126 + the owner's own = 127 hops
  throwsWire(chained(127), /too many compression pointers/);
  throwsWire(chained(8000), /too many compression pointers/);
  // readName bounds: an offset beyond the buffer.
  assert.throws(() => readName(hex('00'), 5), WireError);
  assert.throws(() => readName(hex('00'), -1), WireError);
  assert.throws(() => readName(hex('00'), 0.5), WireError);
});

test('trailing octets are ignored (BIND, miekg/dns) unless strict', () => {
  const q = readFileSync(new URL('queries-dig/srv-noedns-_janus._tcp.service.consul.bin', CORPUS));
  const padded = Buffer.concat([q, hex('deadbeef')]);
  assert.deepEqual(decodeMessage(padded), decodeMessage(q));
  throwsWire(Buffer.alloc(0), /header/);
  assert.throws(
    () => decodeMessage(padded, { strict: true }),
    (e: unknown) => e instanceof WireError && /4 trailing octets/.test(e.message),
  );
});

test('encode compresses owners and RFC 1035 RDATA names, case-sensitively; SRV targets in full', () => {
  const m: Message = {
    id: 7,
    flags: 0x8400,
    questions: [{ name: Q, type: 255, class: 1 }],
    answers: [
      a(Q, '10.0.0.1'),
      oneName(Q, 5, 'web.service.consul'),
      mx(Q, 10, 'mail.service.consul'),
      srv(Q, 'node1.node.dc1.consul', 8800),
      a('node1.node.dc1.consul', '10.0.0.2'),
      a('NODE1.node.dc1.consul', '10.0.0.3'),
    ],
    authorities: [soa('consul', 'ns.consul', 'hostmaster.consul'), oneName('consul', 2, 'ns.consul')],
    additionals: [txt('node1.node.dc1.consul', 'consul-network-segment='), opt(4096)],
  };
  const out = encodeMessage(m);
  assert.deepEqual(decodeMessage(out, { strict: true }), m);
  assert.deepEqual(dns2.Packet.parse(out).errors, []);
  // The SRV target is written in full right after priority/weight/port 1/1/8800.
  assert.ok(out.includes(Buffer.concat([hex('0001 0001 2260'), nameToWire('node1.node.dc1.consul')])));
  // "NODE1" differs in case: it gets its own label, then points at node.dc1.consul.
  assert.ok(out.includes(hex('054e4f444531 c0')));
  // The question name is written once; "consul" appears only once in full.
  // "consul" is written in full twice: in the question and in the SRV target; all else points.
  const consul = Buffer.from('\x06consul', 'latin1');
  assert.equal(out.indexOf(consul), 12 + 6 + 8);
  assert.equal(out.indexOf(consul, 12 + 6 + 8 + 1), out.indexOf(nameToWire('node1.node.dc1.consul')) + 15);
  assert.equal(out.indexOf(consul, out.indexOf(nameToWire('node1.node.dc1.consul')) + 16), -1);
  const uncompressed =
    12 +
    Q.length +
    6 +
    m.answers.concat(m.authorities, m.additionals).reduce((n, r) => n + r.name.length + 12 + r.rdata.length, 0);
  assert.ok(out.length < uncompressed - 100, `${out.length} vs ${uncompressed}`);
});

test('encode rejects what cannot be written, with WireError', () => {
  const base = (): Message => ({ id: 1, flags: 0, questions: [], answers: [], authorities: [], additionals: [] });
  const bad: Array<[string, Message]> = [
    ['empty label', { ...base(), questions: [{ name: 'a..b', type: 1, class: 1 }] }],
    ['ttl < 0', { ...base(), answers: [rr('a', 1, -1, hex('0a000001'))] }],
    ['type > 65535', { ...base(), answers: [rr('a', 65536, 0, hex('0a000001'))] }],
    ['id not an integer', { ...base(), id: 1.5 }],
    ['pointer inside a stored CNAME', { ...base(), answers: [rr('a', 5, 0, hex('0161c00c'))] }],
    ['SOA without its 20 octets', { ...base(), answers: [rr('a', 6, 0, hex('0000'))] }],
  ];
  for (const [what, m] of bad) assert.throws(() => encodeMessage(m), WireError, what);
});

test('empty RDATA (RFC 2136 deletes) and unknown types with pointer-like bytes are carried verbatim', () => {
  const m: Message = {
    id: 1,
    flags: 0x2800,
    questions: [{ name: 'example.test', type: 6, class: 1 }],
    answers: [],
    authorities: [rr('old.example.test', 5, 0, Buffer.alloc(0), 255), rr('x.example.test', 65280, 5, hex('c00c c00c'))],
    additionals: [],
  };
  const out = encodeMessage(m);
  assert.deepEqual(decodeMessage(out, { strict: true }), m);
  assert.ok(out.includes(hex('ff00 0001 00000005 0004 c00cc00c')));
});

test('maxSize: drop additionals first without TC, then header+question+OPT with TC', () => {
  const targets = Array.from({ length: 20 }, (_, i) => `instance-${i}.node.dc1.consul`);
  const m: Message = {
    id: 9,
    flags: 0x8500,
    questions: [{ name: '_janus._tcp.service.consul', type: 33, class: 1 }],
    answers: targets.slice(0, 8).map((t, i) => srv('_janus._tcp.service.consul', t, 8800 + i)),
    authorities: [],
    additionals: [...targets.map((t, i) => a(t, `10.0.0.${i + 1}`)), opt(1232)],
  };
  const full = encodeMessage(m);
  assert.ok(full.length > 512, `${full.length}`);
  assert.ok(encodeMessage(m, { maxSize: 4096 }).equals(full));
  const cut = encodeMessage(m, { maxSize: 512 });
  assert.ok(cut.length <= 512);
  const d = decodeMessage(cut, { strict: true });
  assert.equal(d.flags & 0x0200, 0, 'no TC for missing additional data (RFC 2181 §9)');
  assert.equal(d.answers.length, 8);
  assert.ok(d.additionals.length < m.additionals.length);
  assert.equal(d.additionals.at(-1)!.type, 41, 'OPT survives');
  assert.deepEqual(dns2.Packet.parse(cut).errors, []);
  // Two A records per target: the cut never leaves one of a pair behind (RFC 2181 §5).
  for (const limit of [512, 600, 700, 800]) {
    const pairs: Message = {
      ...m,
      additionals: [...targets.flatMap((t, i) => [a(t, `10.0.0.${i + 1}`), a(t, `10.0.1.${i + 1}`)]), opt(1232)],
    };
    const d2 = decodeMessage(encodeMessage(pairs, { maxSize: limit }), { strict: true });
    const glue = d2.additionals.filter((r) => r.type === 1);
    assert.ok(glue.length > 0 && glue.length % 2 === 0, `limit ${limit}: ${glue.length} glue records`);
    assert.deepEqual(d2.additionals, [...pairs.additionals.slice(0, glue.length), opt(1232)]);
  }
  // Twice the answers no longer fit: TC, question kept, OPT kept, nothing else.
  const big: Message = { ...m, answers: targets.map((t, i) => srv(m.questions[0]!.name, t, 8800 + i)) };
  const tc = decodeMessage(encodeMessage(big, { maxSize: 100 }), { strict: true }); // < 512 counts as 512
  assert.equal(tc.flags, 0x8500 | 0x0200);
  assert.deepEqual(tc.questions, m.questions);
  assert.equal(tc.answers.length + tc.authorities.length, 0);
  assert.deepEqual(tc.additionals, [opt(1232)]);
});

test('rdataNames covers the types whose names are mapped by the alias rewrite', () => {
  for (const t of [2, 5, 6, 12, 15, 33, 35, 39]) assert.ok(rdataNames(t)?.fields.includes(FIELD_NAME), `type ${t}`);
  for (const t of [2, 5, 6, 12, 15]) assert.equal(rdataNames(t)!.compress, true, `type ${t} compresses`);
  for (const t of [33, 35, 39]) assert.equal(rdataNames(t)!.compress, false, `type ${t} never compresses`);
  assert.equal(rdataNames(1), undefined);
  assert.equal(rdataNames(46), undefined, 'RRSIG signer name is never compressed (RFC 4034), kept verbatim');
});
