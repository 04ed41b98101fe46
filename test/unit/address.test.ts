/*
 * The canonical text of addresses (RFC 5952) as src/net/address.ts writes them, and the parser
 * under it: long and short IPv6 forms, IPv4-mapped addresses, zone indexes, CIDRs and host:port,
 * checked against a table and against Node's own formatter (the form in which the kernel's peer
 * addresses reach the upstream pool). Pure: no sockets.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import {
  canonicalCidr,
  canonicalIp,
  parseCidr,
  parseHostPort,
  parseIpWords,
  sameIp,
  splitHostPort,
} from '../../src/net/address.js';

function canonicalises(cases: [string, string][]): void {
  for (const [input, canonical] of cases) assert.equal(canonicalIp(input), canonical, input);
}

test('canonicalIp: RFC 5952 text for IPv6 (lowercase, no leading zeros, longest zero run as ::)', () => {
  const cases: [string, string][] = [
    ['0:0:0:0:0:0:0:1', '::1'],
    ['0000:0000:0000:0000:0000:0000:0000:0001', '::1'],
    ['::1', '::1'],
    ['0::1', '::1'],
    ['0:0:0:0:0:0:0:0', '::'],
    ['::', '::'],
    ['::0', '::'],
    ['1:0:0:0:0:0:0:0', '1::'],
    ['2001:DB8::1', '2001:db8::1'],
    ['2001:0db8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
    ['2001:db8::0:1', '2001:db8::1'],
    // §4.2.2: one zero group is never "::".
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
    ['2001:db8::1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
    // §4.2.3: the longest run; of equal runs, the first.
    ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['0:0:1:0:0:1:0:0', '::1:0:0:1:0:0'],
    ['FD00:0000:0000:0000:0000:0000:0000:0053', 'fd00::53'],
    ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'],
  ];
  canonicalises(cases);
});

test('canonicalIp: IPv4 as a dotted quad; IPv4-mapped as ::ffff:a.b.c.d (RFC 5952 §5), other embedded IPv4 in hex', () => {
  const cases: [string, string][] = [
    ['127.0.0.1', '127.0.0.1'],
    ['0.0.0.0', '0.0.0.0'],
    ['255.255.255.255', '255.255.255.255'],
    ['::ffff:127.0.0.1', '::ffff:127.0.0.1'],
    ['::FFFF:127.0.0.1', '::ffff:127.0.0.1'],
    ['::ffff:7f00:1', '::ffff:127.0.0.1'],
    ['0:0:0:0:0:ffff:a00:1', '::ffff:10.0.0.1'],
    ['0000:0000:0000:0000:0000:FFFF:0A00:0001', '::ffff:10.0.0.1'],
    ['::ffff:0.0.0.0', '::ffff:0.0.0.0'],
    // Not the mapped prefix: hex, as RFC 5952 §5 asks when the embedding is not recognised.
    ['64:ff9b::192.0.2.1', '64:ff9b::c000:201'],
    ['::ffff:0:1.2.3.4', '::ffff:0:102:304'],
    // The deprecated IPv4-compatible form (RFC 4291 §2.5.5.1) is hex too.
    ['::1.2.3.4', '::102:304'],
  ];
  canonicalises(cases);
});

test('canonicalIp: a zone index is kept as written on a link-local address, dropped elsewhere', () => {
  const cases: [string, string][] = [
    ['fe80::1%eth0', 'fe80::1%eth0'],
    ['FE80:0:0:0:0:0:0:1%eth0', 'fe80::1%eth0'],
    // Interface names are case-sensitive: only the address part is lowercased.
    ['FE80::1%EnP0s3', 'fe80::1%EnP0s3'],
    ['febf::1%eth0', 'febf::1%eth0'],
    ['fe80::1', 'fe80::1'],
    // Not link-local: the kernel ignores the zone and the peer is reported without it.
    ['::1%lo', '::1'],
    ['0:0:0:0:0:0:0:1%lo', '::1'],
    ['fec0::1%eth0', 'fec0::1'],
    ['2001:db8::1%eth0', '2001:db8::1'],
    ['::ffff:127.0.0.1%lo', '::ffff:127.0.0.1'],
  ];
  canonicalises(cases);
});

test('canonicalIp: anything that is not an IP literal is undefined', () => {
  for (const bad of [
    '',
    'x',
    'localhost',
    '1.2.3',
    '01.2.3.4',
    '1.2.3.4.5',
    '256.0.0.1',
    '1.2.3.4%eth0',
    '1::2::3',
    ':::1',
    '1:2:3:4:5:6:7:8:9',
    '1:2:3:4:5:6:7',
    '12345::1',
    '::1%',
    '%eth0',
    '::1.2.3',
    '1:2:3:4:5:6:7:1.2.3.4',
    '[::1]',
  ])
    assert.equal(canonicalIp(bad), undefined, bad);
});

test("canonicalIp agrees with Node's formatter and is idempotent, over generated addresses", () => {
  // Deterministic generator (xorshift32): groups that are zero half the time, so runs of every
  // length and position occur, with upper-case hex and leading zeros in the input.
  let x = 0x2545f491;
  const next = (): number => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
  for (let n = 0; n < 5000; n++) {
    const groups = Array.from({ length: 8 }, () => (next() & 1 ? 0 : next() & 0xffff));
    // ::/96 is the deprecated IPv4-compatible block, which inet_ntop writes with a dotted tail.
    if (groups.slice(0, 6).every((g) => g === 0)) continue;
    const long = groups
      .map((g) =>
        g
          .toString(16)
          .toUpperCase()
          .padStart(next() & 1 ? 4 : 1, '0'),
      )
      .join(':');
    const canonical = canonicalIp(long);
    const node = new net.SocketAddress({ address: long, family: 'ipv6' }).address;
    assert.equal(canonical, node, long);
    assert.equal(canonicalIp(canonical), canonical, long);
    assert.ok(sameIp(long, canonical), long);
  }
});

test('parseIpWords: the same words for every text form of an address, whatever was parsed before', () => {
  const w = new Uint32Array(4);
  const words = (s: string): number[] => {
    parseIpWords('2001:db8:ffff:ffff:ffff:ffff:ffff:ffff', w); // leave other bits behind
    const family = parseIpWords(s, w);
    return [family, ...w];
  };
  assert.deepEqual(words('0:0:0:0:0:0:0:1'), words('::1'));
  assert.deepEqual(words('::1'), [6, 0, 0, 0, 1]);
  assert.deepEqual(words('fe80:0::1%eth0'), [6, 0xfe800000, 0, 0, 1]);
  assert.deepEqual(words('10.0.0.1'), [4, 0, 0, 0xffff, 0x0a000001]);
  assert.deepEqual(words('::ffff:a00:1'), words('10.0.0.1'));
  assert.deepEqual(words('1:2::'), [6, 0x00010002, 0, 0, 0]);
  assert.deepEqual(words('::ffff:1.2.3.4'), [4, 0, 0, 0xffff, 0x01020304]);
  assert.deepEqual(words('8000::8000'), [6, 0x80000000, 0, 0, 0x8000]);
});

test('host:port and CIDRs come back canonical', () => {
  assert.deepEqual(parseHostPort('[0:0:0:0:0:0:0:1]:8600'), { host: '::1', port: 8600 });
  assert.deepEqual(parseHostPort('[::FFFF:7F00:1]:53'), { host: '::ffff:127.0.0.1', port: 53 });
  assert.deepEqual(parseHostPort('[FE80::0:1%eth0]:53'), { host: 'fe80::1%eth0', port: 53 });
  assert.deepEqual(parseHostPort('[::1%lo]:53'), { host: '::1', port: 53 });
  assert.deepEqual(splitHostPort('[2001:DB8:0:0::53]:0'), { host: '2001:db8::53', port: 0 });
  assert.equal(splitHostPort('[1.2.3.4]:53'), 'syntax');
  assert.equal(splitHostPort('0:0::1:53'), 'ipv6');

  assert.equal(canonicalCidr('FD00:0:0::/8'), 'fd00::/8');
  assert.equal(canonicalCidr('0:0:0:0:0:0:0:1/128'), '::1/128');
  assert.equal(canonicalCidr('::FFFF:0:0/96'), '::ffff:0.0.0.0/96');
  assert.equal(canonicalCidr('10.0.0.0/8'), '10.0.0.0/8');
  assert.equal(canonicalCidr('192.0.2.1'), '192.0.2.1');
  assert.equal(canonicalCidr('2001:DB8::1'), '2001:db8::1');
  for (const bad of ['fe80::1%eth0/64', '10.0.0.0/33', '10.0.0.0/08', 'x/8', '::/129'])
    assert.equal(canonicalCidr(bad), undefined, bad);
  // The canonical text means the same network.
  assert.deepEqual(parseCidr(canonicalCidr('FD00:0:0::1/8')!), parseCidr('FD00:0:0::1/8'));
});
