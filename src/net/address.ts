/**
 * Addresses: one parser for IPv4 and IPv6 text (used by the configuration checks and the ACL),
 * CIDR matching, host:port parsing and formatting, loopback tests. Pure: no name is resolved.
 */
import { ConfigError, show } from '../errors.js';
import { isDomainName } from '../dns/names.js';

export interface HostPort {
  /** IP literal (IPv6 without brackets) or lowercase hostname. */
  host: string;
  port: number;
}

/**
 * Parses "1.2.3.4:53", "[::1]:53" or "name:53" (a hostname is kept, for app.ts to resolve).
 * Syntax only: port 0 is accepted here (config validation decides where it is allowed).
 * Throws ConfigError.
 */
export function parseHostPort(s: string): HostPort {
  const hp = splitHostPort(s);
  if (typeof hp !== 'object') throw new ConfigError([`expected host:port (IPv6 as [::1]:53), got ${show(s)}`]);
  return hp;
}

/** "1.2.3.4:53", "[::1]:53". */
export function formatHostPort(hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

export function splitHostPort(s: string): HostPort | 'syntax' | 'ipv6' | 'port' {
  let host: string;
  let port: string;
  const bracketed = /^\[([^\]]+)\]:([^:]*)$/.exec(s);
  if (bracketed) {
    host = bracketed[1]!.toLowerCase();
    port = bracketed[2]!;
    if (ipFamily(host) !== 6) return 'syntax';
  } else {
    const colon = s.lastIndexOf(':');
    if (colon < 0) return 'syntax';
    host = s.slice(0, colon).toLowerCase();
    port = s.slice(colon + 1);
    if (host.includes(':')) return ipFamily(host) === 6 || ipFamily(s) === 6 ? 'ipv6' : 'syntax';
    if (ipFamily(host) !== 4 && !isHostname(host)) return 'syntax';
  }
  if (!/^[0-9]{1,5}$/.test(port)) return 'syntax';
  const n = Number(port);
  return n > 65535 ? 'port' : { host, port: n };
}

export interface Cidr {
  family: 4 | 6;
  /** Network address, host bits cleared (4 or 16 bytes). */
  bytes: Buffer;
  prefix: number;
}

/**
 * "10.0.0.0/8", "fc00::/7"; a bare address means /32 or /128. Host bits are cleared, as Go's
 * net.ParseCIDR and dnsdist do. Throws ConfigError.
 */
export function parseCidr(s: string): Cidr {
  const c = tryParseCidr(s);
  if (c === undefined) throw new ConfigError([`expected a CIDR such as 10.0.0.0/8, got ${show(s)}`]);
  return c;
}

export function tryParseCidr(s: string): Cidr | undefined {
  const slash = s.indexOf('/');
  const addr = slash < 0 ? s : s.slice(0, slash);
  if (addr.includes('%')) return undefined; // a zone index has no place in a network
  const buf = Buffer.alloc(16);
  const family = parseIpInto(addr, buf);
  if (family === 0) return undefined;
  const max = family === 4 ? 32 : 128;
  let prefix = max;
  if (slash >= 0) {
    const p = s.slice(slash + 1);
    if (!/^(?:0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > max) return undefined;
    prefix = Number(p);
  }
  const bytes = buf.subarray(0, max / 8);
  for (let bit = prefix; bit < max; bit++) bytes[bit >> 3]! &= ~(0x80 >> (bit & 7));
  return { family, bytes: Buffer.from(bytes), prefix };
}

const scratch = new Uint8Array(16);

/**
 * Parses an address into four 32-bit words, for per-query prefix tests without allocation:
 * 4 for IPv4, and for IPv4-mapped IPv6 (what a dual-stack socket reports for an IPv4 client), with
 * the IPv4 address in w[3] and w = ::ffff:a.b.c.d; 6 for other IPv6; 0 for neither. A %zone is
 * ignored.
 */
export function parseIpWords(address: string, w: Uint32Array): 0 | 4 | 6 {
  const family = parseIpInto(address, scratch);
  if (family === 0) return 0;
  if (family === 4) {
    w[0] = 0;
    w[1] = 0;
    w[2] = 0xffff;
    w[3] = ((scratch[0]! << 24) | (scratch[1]! << 16) | (scratch[2]! << 8) | scratch[3]!) >>> 0;
    return 4;
  }
  for (let k = 0; k < 4; k++) {
    w[k] =
      ((scratch[4 * k]! << 24) | (scratch[4 * k + 1]! << 16) | (scratch[4 * k + 2]! << 8) | scratch[4 * k + 3]!) >>> 0;
  }
  return w[0] === 0 && w[1] === 0 && w[2] === 0xffff ? 4 : 6;
}

function isMapped(b: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return b[10] === 0xff && b[11] === 0xff;
}

function toMapped(b: Uint8Array): void {
  b.copyWithin(12, 0, 4);
  b.fill(0, 0, 10);
  b[10] = 0xff;
  b[11] = 0xff;
}

/** Writes an IP literal's bytes to out (4 or 16) and returns its family, or 0. A %zone is ignored. */
function parseIpInto(s: string, out: Uint8Array): 0 | 4 | 6 {
  if (parseV4(s, out, 0)) return 4;
  return parseV6(s, out) ? 6 : 0;
}

/** Dotted quad, walked by character: the ACL parses every client address and should not allocate. */
function parseV4(s: string, out: Uint8Array, offset: number): boolean {
  let part = 0;
  let digits = 0;
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x2e /* . */) {
      if (digits === 0 || part === 3) return false;
      out[offset + part++] = n;
      n = 0;
      digits = 0;
      continue;
    }
    if (c < 0x30 || c > 0x39) return false;
    // No leading zeros: "010" is octal to inet_aton and decimal to others.
    if (digits > 0 && n === 0) return false;
    n = n * 10 + (c - 0x30);
    if (++digits > 3 || n > 255) return false;
  }
  if (digits === 0 || part !== 3) return false;
  out[offset + 3] = n;
  return true;
}

/**
 * RFC 4291 §2.2 text forms, walked by character (no allocation except for an embedded IPv4 tail):
 * up to 8 hex groups, one "::" standing for one or more zero groups, an optional dotted-quad tail.
 */
function parseV6(s: string, out: Uint8Array): boolean {
  let end = s.indexOf('%');
  if (end === 0 || end === s.length - 1) return false;
  if (end < 0) end = s.length;
  let words = 0;
  let gap = -1; // word index where "::" stands
  let i = 0;
  if (s.charCodeAt(0) === 0x3a) {
    if (s.charCodeAt(1) !== 0x3a) return false;
    gap = 0;
    i = 2;
  }
  while (i < end) {
    const start = i;
    let value = 0;
    let digits = 0;
    for (; i < end; i++) {
      const h = hexValue(s.charCodeAt(i));
      if (h < 0) break;
      value = value * 16 + h;
      if (++digits > 4) return false;
    }
    if (i < end && s.charCodeAt(i) === 0x2e /* . */) {
      // An embedded IPv4 address ends the address and takes two groups.
      if (words > 6 || !parseV4(s.slice(start, end), out, 2 * words)) return false;
      words += 2;
      break;
    }
    if (digits === 0 || words === 8) return false;
    out[2 * words] = value >> 8;
    out[2 * words + 1] = value & 0xff;
    words++;
    if (i === end) break;
    if (s.charCodeAt(i) !== 0x3a) return false;
    i++;
    if (i < end && s.charCodeAt(i) === 0x3a) {
      if (gap >= 0) return false;
      gap = words;
      i++;
    } else if (i === end) {
      return false; // a single trailing ":"
    }
  }
  if (gap < 0) return words === 8;
  if (words > 7) return false;
  // Move the groups after "::" to the end and zero the gap.
  const after = words - gap;
  out.copyWithin(16 - 2 * after, 2 * gap, 2 * words);
  out.fill(0, 2 * gap, 16 - 2 * after);
  return true;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}

export function ipFamily(s: string): 0 | 4 | 6 {
  return parseIpInto(s, new Uint8Array(16));
}

/** 16 bytes, IPv4 as its mapped form, so 127.0.0.1 and ::ffff:127.0.0.1 compare equal. */
function ip16(s: string): Uint8Array | undefined {
  const b = new Uint8Array(16);
  const family = parseIpInto(s, b);
  if (family === 0) return undefined;
  if (family === 4) toMapped(b);
  return b;
}

export function sameIp(a: string, b: string): boolean {
  const x = ip16(a);
  const y = ip16(b);
  return x !== undefined && y !== undefined && x.every((v, i) => v === y[i]);
}

export function isUnspecified(s: string): boolean {
  const b = ip16(s);
  return (
    b !== undefined &&
    (b.every((v) => v === 0) || (isMapped(b) && b[12] === 0 && b[13] === 0 && b[14] === 0 && b[15] === 0))
  );
}

/**
 * True for loopback addresses: 127.0.0.0/8, ::1 and IPv4-mapped 127.x (what a dual-stack socket
 * reports for an IPv4 client). Anything unparsable, or missing, is not loopback.
 */
export function isLoopback(s: string | undefined | null): boolean {
  if (typeof s !== 'string') return false;
  const b = ip16(s);
  if (b === undefined) return false;
  if (isMapped(b)) return b[12] === 127; // 127.0.0.0/8 (RFC 1122 §3.2.1.3)
  return b.every((v, i) => v === (i === 15 ? 1 : 0)); // ::1
}

/** A hostname to resolve: as a domain name, but an all-digit last label is a broken IPv4 address. */
export function isHostname(host: string): boolean {
  const name = host.endsWith('.') ? host.slice(0, -1) : host;
  return isDomainName(name) && !/^[0-9]+$/.test(name.slice(name.lastIndexOf('.') + 1));
}

/**
 * Which of our listen addresses a query sent to `to` would reach, if any.
 * - Same IP and port: us.
 * - We listen on 0.0.0.0:P: every local IPv4 address on port P is us, which covers 127.0.0.0/8
 *   and the host's own addresses (`localAddresses`, e.g. from os.networkInterfaces()).
 * - We listen on [::]:P: Node opens dual-stack sockets (ipv6Only defaults to false), so every
 *   local address of either family on port P is us: ::1, 127.0.0.0/8 and the host's addresses.
 * Port 0 (tests) is never a loop: the kernel picks a free port. "localhost" is loopback by
 * RFC 6761 §6.3, so it is judged without resolving it; other hostnames are not judged here.
 */
export function ownAddress(to: HostPort, listen: HostPort[], localAddresses: string[]): HostPort | undefined {
  const hosts = to.host === 'localhost' || to.host.endsWith('.localhost') ? ['127.0.0.1', '::1'] : [to.host];
  for (const l of listen) {
    if (l.port === 0 || l.port !== to.port) continue;
    for (const h of hosts) {
      if (ipFamily(h) === 0) continue;
      if (sameIp(h, l.host)) return l;
      if (!isUnspecified(l.host)) continue;
      const local = isLoopback(h) || isUnspecified(h) || localAddresses.some((a) => sameIp(a, h));
      const coversFamily = ipFamily(l.host) === 6 || isMapped(ip16(h)!); // 0.0.0.0 takes IPv4 only
      if (local && coversFamily) return l;
    }
  }
  return undefined;
}
