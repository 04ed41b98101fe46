/**
 * Unit tests of the reply rules of issue 13 items 12-16 at the byte level: SipHash-2-4 against the
 * reference vectors and an independent BigInt implementation, RFC 9018 server cookies, the COOKIE
 * checks of parseQuery (RFC 7873 §5.2.2, §5.4), FORMERR for records in the answer or authority
 * section of a query, OPT in error replies whose question could not be parsed, and fitReply's
 * order of cuts (Additional RRsets, then TC over UDP or answers over TCP).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { siphash24 } from '../../src/dns/siphash.js';
import { ServerCookies } from '../../src/dns/cookie.js';
import { buildErrorReply, findCookie, parseQuery } from '../../src/dns/wire.js';
import { fitReply } from '../../src/dns/reply.js';
import { FLAG, RCODE } from '../../src/dns/constants.js';
import { decodeMessage, encodeMessage, nameToWire } from '../../src/dns/message.js';
import { clientQuery, ednsOption, optRecord } from '../support/scripted-upstream.js';
import { a, rr } from '../support/fuzz.js';

const KEY = Buffer.from([...Array(16).keys()]);

/** SipHash-2-4 with BigInt, written from the paper: the check of the 32-bit version. */
function siphashRef(key: Buffer, msg: Buffer): bigint {
  const M = (1n << 64n) - 1n;
  const rotl = (x: bigint, b: bigint) => ((x << b) | (x >> (64n - b))) & M;
  const k0 = key.readBigUInt64LE(0),
    k1 = key.readBigUInt64LE(8);
  const v = [k0 ^ 0x736f6d6570736575n, k1 ^ 0x646f72616e646f6dn, k0 ^ 0x6c7967656e657261n, k1 ^ 0x7465646279746573n];
  const round = () => {
    v[0] = (v[0]! + v[1]!) & M;
    v[1] = rotl(v[1]!, 13n) ^ v[0];
    v[0] = rotl(v[0], 32n);
    v[2] = (v[2]! + v[3]!) & M;
    v[3] = rotl(v[3]!, 16n) ^ v[2];
    v[0] = (v[0] + v[3]) & M;
    v[3] = rotl(v[3], 21n) ^ v[0];
    v[2] = (v[2] + v[1]) & M;
    v[1] = rotl(v[1], 17n) ^ v[2];
    v[2] = rotl(v[2], 32n);
  };
  const padded = Buffer.alloc((Math.floor(msg.length / 8) + 1) * 8);
  msg.copy(padded);
  padded[padded.length - 1] = msg.length & 0xff;
  for (let i = 0; i < padded.length; i += 8) {
    const m = padded.readBigUInt64LE(i);
    v[3]! ^= m;
    round();
    round();
    v[0]! ^= m;
  }
  v[2]! ^= 0xffn;
  for (let i = 0; i < 4; i++) round();
  return v[0]! ^ v[1]! ^ v[2]! ^ v[3]!;
}

const hash = (key: Buffer, msg: Buffer): Buffer => {
  const out = Buffer.alloc(8);
  siphash24(key, msg, out);
  return out;
};

test('siphash24: the reference vectors (key 00..0f, message 00..n-1)', () => {
  // SipHash paper, Appendix A (15 octets) and vectors.h of the reference code (empty message).
  assert.equal(hash(KEY, Buffer.alloc(0)).readBigUInt64LE(0), 0x726fdb47dd0e0e31n);
  assert.equal(hash(KEY, Buffer.from([...Array(15).keys()])).readBigUInt64LE(0), 0xa129ca6149be45e5n);
  assert.equal(hash(KEY, Buffer.from([...Array(15).keys()])).toString('hex'), 'e545be4961ca29a1');
});

test('siphash24: equals a BigInt implementation for every length 0..80 and random keys', () => {
  for (let n = 0; n <= 80; n++) {
    const key = Buffer.from(Array.from({ length: 16 }, (_, i) => (i * 37 + n * 11) & 0xff));
    const msg = Buffer.from(Array.from({ length: n }, (_, i) => (i * 73 + 5) & 0xff));
    assert.equal(hash(key, msg).readBigUInt64LE(0), siphashRef(key, msg), `length ${n}`);
  }
});

test('ServerCookies: RFC 9018 layout, hash over client cookie | version | reserved | timestamp | IP', () => {
  const secret = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
  const c = new ServerCookies(secret);
  const client = Buffer.from('0102030405060708', 'hex');
  const ip = Buffer.from([192, 0, 2, 7]);
  const out = Buffer.alloc(16);
  c.serverCookie(client, ip, 0x5f000000, out, 0);
  assert.equal(out.subarray(0, 8).toString('hex'), '010000005f000000');
  const input = Buffer.concat([client, out.subarray(0, 8), ip]);
  assert.deepEqual(out.subarray(8), hash(secret, input));
  const other = Buffer.alloc(16);
  c.serverCookie(client, Buffer.from([192, 0, 2, 8]), 0x5f000000, other, 0);
  assert.notDeepEqual(other.subarray(8), out.subarray(8), 'another client address, another hash');
  const v6 = Buffer.alloc(16);
  c.serverCookie(client, Buffer.alloc(16, 1), 0x5f000000, v6, 0);
  assert.deepEqual(v6.subarray(8), hash(secret, Buffer.concat([client, out.subarray(0, 8), Buffer.alloc(16, 1)])));
});

const cookieOpt = (len: number) => optRecord(1232, ednsOption(10, Buffer.alloc(len, 0xab)));

test('parseQuery: COOKIE option lengths (RFC 7873 §5.2.2): 8 and 16..40 accepted, others FORMERR', () => {
  for (const len of [8, 16, 24, 40]) {
    const o = parseQuery(clientQuery(1, 'www.example', 1, { additionals: [cookieOpt(len)] }));
    assert.equal(o.kind, 'query', `length ${len}`);
    if (o.kind === 'query') assert.equal(o.q.cookie, true);
  }
  for (const len of [0, 7, 9, 15, 41]) {
    const o = parseQuery(clientQuery(1, 'www.example', 1, { additionals: [cookieOpt(len)] }));
    assert.ok(o.kind === 'error' && o.rcode === RCODE.FORMERR, `length ${len}: ${JSON.stringify(o)}`);
  }
});

test('parseQuery: QDCOUNT=0 with a COOKIE is NOERROR (RFC 7873 §5.4); without one FORMERR', () => {
  const withCookie = clientQuery(2, 'x', 1, { questions: 0, additionals: [cookieOpt(8)] });
  const o = parseQuery(withCookie);
  assert.ok(o.kind === 'error' && o.rcode === RCODE.NOERROR, JSON.stringify(o));
  const r = buildErrorReply(withCookie, o.id, o.flags, o.q, o.rcode, { udpSize: 1232, ra: true });
  const m = decodeMessage(r);
  assert.equal(m.flags & 0xf, RCODE.NOERROR);
  assert.equal(m.questions.length, 0);
  assert.equal(m.additionals[0]?.type, 41, 'OPT echoed');
  for (const extra of [[], [optRecord(1232)]]) {
    const bare = parseQuery(clientQuery(3, 'x', 1, { questions: 0, additionals: extra }));
    assert.ok(bare.kind === 'error' && bare.rcode === RCODE.FORMERR);
  }
});

test('parseQuery: a record in the answer or authority section of a query → FORMERR (as unbound)', () => {
  const an = parseQuery(clientQuery(4, 'www.example', 1, { answers: [a('www.example', '192.0.2.1', 1)] }));
  assert.ok(an.kind === 'error' && an.rcode === RCODE.FORMERR && an.q !== null);
  const ns = encodeMessage({
    id: 5,
    flags: 0x0100,
    questions: [{ name: 'www.example', type: 1, class: 1 }],
    answers: [],
    authorities: [a('www.example', '192.0.2.1', 1)],
    additionals: [],
  });
  const o = parseQuery(ns);
  assert.ok(o.kind === 'error' && o.rcode === RCODE.FORMERR);
});

test('buildErrorReply: FORMERR to two questions with an OPT carries our OPT; NOTIMP clears RD', () => {
  const two = encodeMessage({
    id: 6,
    flags: 0x0100,
    questions: [
      { name: 'a.example', type: 1, class: 1 },
      { name: 'b.example', type: 1, class: 1 },
    ],
    answers: [],
    authorities: [],
    additionals: [optRecord(1232, Buffer.alloc(0), 0, true)],
  });
  const o = parseQuery(two);
  assert.ok(o.kind === 'error' && o.rcode === RCODE.FORMERR && o.q === null);
  const m = decodeMessage(buildErrorReply(two, o.id, o.flags, null, o.rcode, { udpSize: 1232, ra: true }));
  assert.equal(m.additionals.length, 1);
  assert.equal(m.additionals[0]!.type, 41);
  assert.equal(m.additionals[0]!.ttl & 0x8000, 0x8000, 'DO echoed');
  assert.equal(m.flags & FLAG.RD, FLAG.RD, 'RD echoed for QUERY');
  const notimp = clientQuery(7, 'www.example', 1, { flags: 0x0100 | (2 << 11) });
  const n = parseQuery(notimp);
  assert.ok(n.kind === 'error' && n.rcode === RCODE.NOTIMP);
  const r = buildErrorReply(notimp, n.id, n.flags, n.q, n.rcode, { udpSize: 1232, ra: true });
  assert.equal(r.readUInt16BE(2), FLAG.QR | (2 << 11) | RCODE.NOTIMP, 'opcode echoed; RD, RA cleared');
});

test('findCookie and ServerCookies.addTo: the last COOKIE counts; the reply gets client + server cookie', () => {
  const opts = Buffer.concat([
    ednsOption(10, Buffer.alloc(8, 1)),
    ednsOption(10, Buffer.from('0102030405060708', 'hex')),
  ]);
  const q = clientQuery(8, 'www.example', 1, { additionals: [optRecord(1232, opts)] });
  const at = findCookie(q);
  assert.equal(q.subarray(at + 4, at + 12).toString('hex'), '0102030405060708');
  assert.equal(findCookie(clientQuery(8, 'www.example', 1)), -1);
  assert.equal(findCookie(clientQuery(8, 'www.example', 1, { additionals: [optRecord(1232)] })), -1, 'OPT, no options');
  const single = clientQuery(8, 'www.example', 1, {
    additionals: [optRecord(1232, ednsOption(10, Buffer.alloc(8, 3)))],
  });
  assert.equal(single.readUInt16BE(findCookie(single)), 10, 'one OPT with a cookie: found');
  const reply = encodeMessage({
    id: 8,
    flags: 0x8180,
    questions: [{ name: 'www.example', type: 1, class: 1 }],
    answers: [a('www.example', '192.0.2.1', 60)],
    authorities: [],
    additionals: [optRecord(1232)],
  });
  const out = new ServerCookies().addTo(reply, q, at, Buffer.from([127, 0, 0, 1]), false);
  const m = decodeMessage(out);
  assert.equal(m.answers.length, 1);
  const rdata = m.additionals[0]!.rdata;
  assert.equal(rdata.readUInt16BE(0), 10);
  assert.equal(rdata.readUInt16BE(2), 24);
  assert.equal(rdata.subarray(4, 12).toString('hex'), '0102030405060708');
  assert.equal(rdata[12], 1, 'version 1');
});

/** A reply of `an` MX records with `glue` A records (two RRsets, alternating owners). */
function mxReply(an: number, glue: number, withOpt: boolean): Buffer {
  const mx = (i: number) => {
    const p = Buffer.alloc(2);
    p.writeUInt16BE(i);
    return rr('mx.example', 15, 300, Buffer.concat([p, nameToWire(`mail${i % 2}.mx.example`)]));
  };
  return encodeMessage({
    id: 9,
    flags: 0x8180,
    questions: [{ name: 'mx.example', type: 15, class: 1 }],
    answers: Array.from({ length: an }, (_, i) => mx(i)),
    authorities: [],
    additionals: [
      ...Array.from({ length: glue }, (_, i) => a(`mail${i < glue / 2 ? 0 : 1}.mx.example`, `192.0.2.${i + 1}`, 300)),
      ...(withOpt ? [optRecord(1232)] : []),
    ],
  });
}

test('fitReply: Additional goes first, whole RRsets, no TC; OPT stays (RFC 2181 §9)', () => {
  const big = mxReply(2, 40, true);
  assert.ok(big.length > 512);
  const r = fitReply(big, 512, false);
  assert.ok(r.length <= 512, `${r.length}`);
  const m = decodeMessage(r);
  assert.equal(m.flags & FLAG.TC, 0);
  assert.equal(m.answers.length, 2);
  const glue = m.additionals.filter((x) => x.type === 1);
  assert.ok(glue.length === 20 || glue.length === 0, `whole RRsets: ${glue.length} glue records`);
  assert.equal(m.additionals.at(-1)!.type, 41, 'OPT kept');
  assert.equal(fitReply(big, 65535, false), big, 'a reply that fits is returned as is');
});

test('fitReply: answers that do not fit → TC over UDP, answers trimmed over TCP', () => {
  const big = mxReply(60, 0, true);
  const udp = decodeMessage(fitReply(big, 512, false));
  assert.equal(udp.flags & FLAG.TC, FLAG.TC);
  assert.equal(udp.answers.length, 0);
  assert.equal(udp.questions.length, 1);
  assert.equal(udp.additionals[0]!.type, 41);
  const tcpBuf = fitReply(big, 512, true);
  assert.ok(tcpBuf.length <= 512);
  const tcp = decodeMessage(tcpBuf);
  assert.equal(tcp.flags & FLAG.TC, 0);
  assert.ok(tcp.answers.length > 0 && tcp.answers.length < 60, `${tcp.answers.length} answers`);
  assert.equal(tcp.additionals[0]!.type, 41);
});

test('encodeMessage trimAnswers: a message past 65,535 octets keeps the answers that fit, no TC', () => {
  const answers = Array.from({ length: 3000 }, (_, i) =>
    rr(`n${i}.example`, 16, 60, Buffer.concat([Buffer.from([20]), Buffer.alloc(20, 0x61)])),
  );
  const m = {
    id: 1,
    flags: 0x8180,
    questions: [{ name: 'x.example', type: 16, class: 1 }],
    answers,
    authorities: [],
    additionals: [],
  };
  assert.throws(() => encodeMessage(m));
  const out = encodeMessage(m, { trimAnswers: true });
  assert.ok(out.length <= 65535);
  const d = decodeMessage(out);
  assert.equal(d.flags & FLAG.TC, 0);
  assert.ok(d.answers.length > 1000 && d.answers.length < 3000, `${d.answers.length}`);
});
