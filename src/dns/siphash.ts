/**
 * SipHash-2-4 (Aumasson and Bernstein, 2012): a keyed 64-bit hash, the MAC of RFC 9018 server
 * cookies. 64-bit words as pairs of 32-bit halves (no BigInt: a cookie is made per reply).
 * The output is the 8 octets of the reference implementation (little-endian).
 */

/** SipHash-2-4 of `msg` under a 16-octet `key`, as 8 octets written to out[off, off+8). */
export function siphash24(key: Buffer, msg: Buffer, out: Buffer, off = 0): void {
  if (key.length !== 16) throw new RangeError('siphash24: the key is 16 octets');
  const k0l = key.readUInt32LE(0),
    k0h = key.readUInt32LE(4),
    k1l = key.readUInt32LE(8),
    k1h = key.readUInt32LE(12);
  let v0l = (k0l ^ 0x70736575) >>> 0,
    v0h = (k0h ^ 0x736f6d65) >>> 0,
    v1l = (k1l ^ 0x6e646f6d) >>> 0,
    v1h = (k1h ^ 0x646f7261) >>> 0,
    v2l = (k0l ^ 0x6e657261) >>> 0,
    v2h = (k0h ^ 0x6c796765) >>> 0,
    v3l = (k1l ^ 0x79746573) >>> 0,
    v3h = (k1h ^ 0x74656462) >>> 0;
  const round = (): void => {
    let l: number, h: number;
    // v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32)
    l = (v0l + v1l) >>> 0;
    v0h = (v0h + v1h + (l < v0l ? 1 : 0)) >>> 0;
    v0l = l;
    h = v1h;
    v1h = ((v1h << 13) | (v1l >>> 19)) >>> 0;
    v1l = ((v1l << 13) | (h >>> 19)) >>> 0;
    v1l = (v1l ^ v0l) >>> 0;
    v1h = (v1h ^ v0h) >>> 0;
    h = v0h;
    v0h = v0l;
    v0l = h;
    // v2 += v3; v3 = rotl(v3, 16); v3 ^= v2
    l = (v2l + v3l) >>> 0;
    v2h = (v2h + v3h + (l < v2l ? 1 : 0)) >>> 0;
    v2l = l;
    h = v3h;
    v3h = ((v3h << 16) | (v3l >>> 16)) >>> 0;
    v3l = ((v3l << 16) | (h >>> 16)) >>> 0;
    v3l = (v3l ^ v2l) >>> 0;
    v3h = (v3h ^ v2h) >>> 0;
    // v0 += v3; v3 = rotl(v3, 21); v3 ^= v0
    l = (v0l + v3l) >>> 0;
    v0h = (v0h + v3h + (l < v0l ? 1 : 0)) >>> 0;
    v0l = l;
    h = v3h;
    v3h = ((v3h << 21) | (v3l >>> 11)) >>> 0;
    v3l = ((v3l << 21) | (h >>> 11)) >>> 0;
    v3l = (v3l ^ v0l) >>> 0;
    v3h = (v3h ^ v0h) >>> 0;
    // v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32)
    l = (v2l + v1l) >>> 0;
    v2h = (v2h + v1h + (l < v2l ? 1 : 0)) >>> 0;
    v2l = l;
    h = v1h;
    v1h = ((v1h << 17) | (v1l >>> 15)) >>> 0;
    v1l = ((v1l << 17) | (h >>> 15)) >>> 0;
    v1l = (v1l ^ v2l) >>> 0;
    v1h = (v1h ^ v2h) >>> 0;
    h = v2h;
    v2h = v2l;
    v2l = h;
  };
  const block = (ml: number, mh: number): void => {
    v3l = (v3l ^ ml) >>> 0;
    v3h = (v3h ^ mh) >>> 0;
    round();
    round();
    v0l = (v0l ^ ml) >>> 0;
    v0h = (v0h ^ mh) >>> 0;
  };
  const n = msg.length;
  const whole = n - (n % 8);
  for (let i = 0; i < whole; i += 8) block(msg.readUInt32LE(i), msg.readUInt32LE(i + 4));
  // The last block: the remaining octets, and the length (mod 256) in the top octet.
  const tail = Buffer.alloc(8);
  msg.copy(tail, 0, whole);
  tail[7] = n & 0xff;
  block(tail.readUInt32LE(0), tail.readUInt32LE(4));
  v2l = (v2l ^ 0xff) >>> 0;
  round();
  round();
  round();
  round();
  out.writeUInt32LE((v0l ^ v1l ^ v2l ^ v3l) >>> 0, off);
  out.writeUInt32LE((v0h ^ v1h ^ v2h ^ v3h) >>> 0, off + 4);
}
