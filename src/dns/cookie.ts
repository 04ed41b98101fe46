/**
 * DNS server cookies (RFC 7873) in the interoperable format of RFC 9018 §4: version 1, three
 * reserved zero octets, a 32-bit timestamp (seconds), and SipHash-2-4 over client cookie |
 * version | reserved | timestamp | client IP, keyed by a secret drawn once per process. Every
 * reply to a query that carries a client cookie gets the client cookie back with a fresh server
 * cookie (RFC 7873 §5.2.3); this proxy does not require cookies, so a missing or stale server
 * cookie changes nothing else.
 */
import { randomBytes } from 'node:crypto';
import { siphash24 } from './siphash.js';
import { findOptRecord } from './wire.js';
import { EDNS_OPTION_COOKIE } from './constants.js';
import { fitReply, MAX_TCP } from './reply.js';

/** Octets our COOKIE option adds to a reply's OPT: code, length, 8 client + 16 server. */
const COOKIE_OPTION_LEN = 4 + 8 + 16;

export class ServerCookies {
  /** Hash input: client cookie (8), version and reserved (4), timestamp (4), IP (4 or 16). */
  private readonly input = Buffer.alloc(32);

  constructor(private readonly secret: Buffer = randomBytes(16)) {
    if (secret.length !== 16) throw new RangeError('the server cookie secret is 16 octets');
  }

  /** The 16-octet server cookie for a client cookie and client address (4 or 16 octets) at `now` (s). */
  serverCookie(clientCookie: Buffer, ip: Uint8Array, now: number, out: Buffer, off: number): void {
    const h = this.input;
    clientCookie.copy(h, 0, 0, 8);
    h.writeUInt32BE(0x01000000, 8);
    h.writeUInt32BE(now >>> 0, 12);
    h.set(ip, 16);
    h.copy(out, off, 8, 16);
    siphash24(this.secret, h.subarray(0, 16 + ip.length), out, off + 8);
  }

  /**
   * `reply` with our COOKIE option added to its OPT, for a query whose COOKIE option starts at
   * `cookieAt`; cut again if it no longer fits (over UDP: the smaller of the client's size and
   * the one our OPT advertises). The reply unchanged when it has no OPT.
   */
  addTo(
    reply: Buffer,
    query: Buffer,
    cookieAt: number,
    ip: Uint8Array,
    tcp: boolean,
    now = Math.floor(Date.now() / 1000),
  ): Buffer {
    const opt = findOptRecord(reply);
    if (opt < 0 || cookieAt + 12 > query.length) return reply;
    const rdlenAt = opt + 9;
    const optEnd = rdlenAt + 2 + reply.readUInt16BE(rdlenAt);
    const out = Buffer.allocUnsafe(reply.length + COOKIE_OPTION_LEN);
    reply.copy(out, 0, 0, optEnd);
    reply.copy(out, optEnd + COOKIE_OPTION_LEN, optEnd);
    out.writeUInt16BE(reply.readUInt16BE(rdlenAt) + COOKIE_OPTION_LEN, rdlenAt);
    out.writeUInt16BE(EDNS_OPTION_COOKIE, optEnd);
    out.writeUInt16BE(24, optEnd + 2);
    const client = query.subarray(cookieAt + 4, cookieAt + 12);
    client.copy(out, optEnd + 4);
    this.serverCookie(client, ip, now, out, optEnd + 12);
    let max = MAX_TCP;
    if (!tcp) {
      const qopt = findOptRecord(query);
      const asked = qopt < 0 ? 512 : Math.max(512, query.readUInt16BE(qopt + 3));
      max = Math.min(asked, Math.max(512, reply.readUInt16BE(opt + 3)));
    }
    return out.length > max ? fitReply(out, max, tcp) : out;
  }
}
