/**
 * Addresses: one parser for IPv4 and IPv6 text (used by the configuration checks and the ACL),
 * CIDR matching, host:port parsing and formatting, loopback tests. Pure: no name is resolved.
 */
import { ConfigError, show } from '../errors.js';
import { isDomainName } from '../dns/names.js';

export interface HostPort {
  /** IP literal in its canonical form (`canonicalIp`; IPv6 without brackets) or lowercase hostname. */
  host: string;
  port: number;
}

/**
 * Parses "1.2.3.4:53", "[::1]:53" or "name:53" (a hostname is kept, for app.ts to resolve); an IP
 * literal comes back canonical, so every address the configuration accepts is written one way.
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
    port = bracketed[2]!;
    if (ipFamily(bracketed[1]!) !== 6) return 'syntax';
    host = canonicalIp(bracketed[1]!)!;
  } else {
    const colon = s.lastIndexOf(':');
    if (colon < 0) return 'syntax';
    host = s.slice(0, colon).toLowerCase();
    port = s.slice(colon + 1);
    if (host.includes(':')) return ipFamily(host) === 6 || ipFamily(s) === 6 ? 'ipv6' : 'syntax';
    // A dotted quad we accept is already canonical (no leading zeros, no short forms).
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

function tryParseCidr(s: string): Cidr | undefined {
  const slash = s.indexOf('/');
  const addr = slash < 0 ? s : s.slice(0, slash);
  if (addr.includes('%')) return undefined; // a zone index has no place in a network
  const w = new Uint32Array(4);
  const family = parseWords(addr, w);
  if (family === 0) return undefined;
  const max = family === 4 ? 32 : 128;
  let prefix = max;
  if (slash >= 0) {
    const p = s.slice(slash + 1);
    if (!/^(?:0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > max) return undefined;
    prefix = Number(p);
  }
  const bytes = Buffer.alloc(max / 8);
  if (family === 4) bytes.writeUInt32BE(w[3]!, 0);
  else for (let k = 0; k < 4; k++) bytes.writeUInt32BE(w[k]!, 4 * k);
  for (let bit = prefix; bit < max; bit++) bytes[bit >> 3]! &= ~(0x80 >> (bit & 7));
  return { family, bytes, prefix };
}

/**
 * Parses an address into four 32-bit words, for per-query prefix tests without allocation:
 * 4 for IPv4, and for IPv4-mapped IPv6 (what a dual-stack socket reports for an IPv4 client), with
 * the IPv4 address in w[3] and w = ::ffff:a.b.c.d; 6 for other IPv6; 0 for neither (w is then
 * left in no particular state). A %zone is ignored.
 */
export function parseIpWords(address: string, w: Uint32Array): 0 | 4 | 6 {
  const family = parseWords(address, w);
  return family === 6 && isMapped(w) ? 4 : family;
}

/**
 * The canonical text of an IP literal (RFC 5952): IPv4 as a dotted quad; IPv6 in lowercase hex
 * without leading zeros, the longest run of two or more zero groups (the first of equals) as "::",
 * and IPv4-mapped addresses as ::ffff:a.b.c.d. Node reports a peer's address in this form (it is
 * inet_ntop's), and the upstream pool matches replies against the address it sends to, so an
 * upstream written `0:0:0:0:0:0:0:1` would never hear its own replies from `::1`.
 * A zone index is kept, as written (interface names are case-sensitive), only on a link-local
 * address, where it picks the interface (RFC 4007 §11); on any other address the kernel ignores
 * it and replies come from the bare address, so it is dropped. Undefined for anything else.
 */
export function canonicalIp(s: string): string | undefined {
  const w = new Uint32Array(4);
  const family = parseWords(s, w);
  if (family === 0) return undefined;
  const text = family === 4 ? dotted(w[3]!) : formatV6(w);
  const zone = s.indexOf('%');
  return zone >= 0 && isLinkLocal(w) ? text + s.slice(zone) : text;
}

/** A CIDR in canonical text: the address as `canonicalIp` writes it, the prefix as given. */
export function canonicalCidr(s: string): string | undefined {
  if (tryParseCidr(s) === undefined) return undefined;
  const slash = s.indexOf('/');
  const addr = canonicalIp(slash < 0 ? s : s.slice(0, slash))!;
  return slash < 0 ? addr : addr + s.slice(slash);
}

function dotted(a: number): string {
  return `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;
}

function formatV6(w: Uint32Array): string {
  if (isMapped(w)) return `::ffff:${dotted(w[3]!)}`;
  // RFC 5952 §4.2.2: "::" never stands for a single zero group; §4.2.3: the longest run, the first if tied.
  let best = -1;
  let bestLen = 1;
  let run = 0;
  const groups: string[] = [];
  for (let g = 0; g < 8; g++) {
    const v = group(w, g);
    groups.push(v.toString(16));
    run = v === 0 ? run + 1 : 0;
    if (run > bestLen) {
      bestLen = run;
      best = g - run + 1;
    }
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

function isMapped(w: Uint32Array): boolean {
  return w[0] === 0 && w[1] === 0 && w[2] === 0xffff;
}

/** fe80::/10. */
function isLinkLocal(w: Uint32Array): boolean {
  return w[0]! >>> 22 === 0x3fa;
}

/**
 * Writes an IP literal as four 32-bit words (IPv4 as its mapped form, ::ffff:a.b.c.d) and returns
 * the family it was written in (4 or 6), or 0. A %zone is skipped. Walked by character, with no
 * allocation: the ACL and the server cookies parse every client address.
 */
function parseWords(s: string, w: Uint32Array): 0 | 4 | 6 {
  const v4 = parseV4(s, 0, s.length);
  if (v4 >= 0) {
    w[0] = 0;
    w[1] = 0;
    w[2] = 0xffff;
    w[3] = v4;
    return 4;
  }
  return parseV6(s, w) ? 6 : 0;
}

/** A dotted quad in s[start, end) as a number, or -1. */
function parseV4(s: string, start: number, end: number): number {
  let value = 0;
  let part = 0;
  let digits = 0;
  let n = 0;
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x2e /* . */) {
      if (digits === 0 || part === 3) return -1;
      value = value * 256 + n;
      part++;
      n = 0;
      digits = 0;
      continue;
    }
    if (c < 0x30 || c > 0x39) return -1;
    // No leading zeros: "010" is octal to inet_aton and decimal to others.
    if (digits > 0 && n === 0) return -1;
    n = n * 10 + (c - 0x30);
    if (++digits > 3 || n > 255) return -1;
  }
  if (digits === 0 || part !== 3) return -1;
  return value * 256 + n;
}

/** 16-bit group g (0-7) of an address held as four 32-bit words. */
function group(w: Uint32Array, g: number): number {
  const word = w[g >> 1]!;
  return g & 1 ? word & 0xffff : word >>> 16;
}

function setGroup(w: Uint32Array, g: number, v: number): void {
  const k = g >> 1;
  w[k] = g & 1 ? (w[k]! & 0xffff0000) | v : (v << 16) | (w[k]! & 0xffff);
}

/**
 * RFC 4291 §2.2 text forms, walked by character: up to 8 hex groups, one "::" standing for one or
 * more zero groups, an optional dotted-quad tail.
 */
function parseV6(s: string, w: Uint32Array): boolean {
  let end = s.indexOf('%');
  if (end === 0 || end === s.length - 1) return false;
  if (end < 0) end = s.length;
  let groups = 0;
  let gap = -1; // group index where "::" stands
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
      const v4 = groups > 6 ? -1 : parseV4(s, start, end);
      if (v4 < 0) return false;
      setGroup(w, groups++, v4 >>> 16);
      setGroup(w, groups++, v4 & 0xffff);
      break;
    }
    if (digits === 0 || groups === 8) return false;
    setGroup(w, groups++, value);
    if (i === end) break;
    if (s.charCodeAt(i) !== 0x3a) return false;
    i++;
    if (i < end && s.charCodeAt(i) === 0x3a) {
      if (gap >= 0) return false;
      gap = groups;
      i++;
    } else if (i === end) {
      return false; // a single trailing ":"
    }
  }
  if (gap < 0) return groups === 8;
  if (groups > 7) return false;
  // Move the groups after "::" to the end (last first: the ranges may overlap) and zero the gap.
  const after = groups - gap;
  for (let j = after - 1; j >= 0; j--) setGroup(w, 8 - after + j, group(w, gap + j));
  for (let g = gap; g < 8 - after; g++) setGroup(w, g, 0);
  return true;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}

export function ipFamily(s: string): 0 | 4 | 6 {
  return parseWords(s, new Uint32Array(4));
}

/** 128-bit words, IPv4 as its mapped form, so 127.0.0.1 and ::ffff:127.0.0.1 compare equal. */
function ipWords(s: string): Uint32Array | undefined {
  const w = new Uint32Array(4);
  return parseWords(s, w) === 0 ? undefined : w;
}

export function sameIp(a: string, b: string): boolean {
  const x = ipWords(a);
  const y = ipWords(b);
  return x !== undefined && y !== undefined && x.every((v, i) => v === y[i]);
}

export function isUnspecified(s: string): boolean {
  const w = ipWords(s);
  return w !== undefined && w[3] === 0 && (isMapped(w) || (w[0] === 0 && w[1] === 0 && w[2] === 0));
}

/**
 * True for loopback addresses: 127.0.0.0/8, ::1 and IPv4-mapped 127.x (what a dual-stack socket
 * reports for an IPv4 client). Anything unparsable, or missing, is not loopback.
 */
export function isLoopback(s: string | undefined | null): boolean {
  if (typeof s !== 'string') return false;
  const w = ipWords(s);
  if (w === undefined) return false;
  if (isMapped(w)) return w[3]! >>> 24 === 127; // 127.0.0.0/8 (RFC 1122 §3.2.1.3)
  return w[0] === 0 && w[1] === 0 && w[2] === 0 && w[3] === 1; // ::1
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
      const coversFamily = ipFamily(l.host) === 6 || isMapped(ipWords(h)!); // 0.0.0.0 takes IPv4 only
      if (local && coversFamily) return l;
    }
  }
  return undefined;
}
