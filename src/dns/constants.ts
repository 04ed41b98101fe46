/**
 * The DNS numbers this proxy uses, in one table: header layout and flags (RFC 1035 §4.1.1,
 * RFC 4035 §3.2 for AD/CD, RFC 6895 for Z), opcodes, rcodes (RFC 6891 §9 for BADVERS), classes,
 * record types, EDNS option codes and the Extended DNS Error codes we send (RFC 8914 §4).
 */

export const HEADER_LEN = 12;

export const OPCODE = { QUERY: 0 } as const;

export const RCODE = {
  NOERROR: 0,
  FORMERR: 1,
  SERVFAIL: 2,
  NXDOMAIN: 3,
  NOTIMP: 4,
  REFUSED: 5,
  BADVERS: 16,
} as const;

export const CLASS_IN = 1;

export const TYPE = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  MX: 15,
  TXT: 16,
  AAAA: 28,
  SRV: 33,
  NAPTR: 35,
  OPT: 41,
  DS: 43,
  RRSIG: 46,
  NSEC: 47,
  DNSKEY: 48,
  SVCB: 64,
  HTTPS: 65,
  TKEY: 249,
  TSIG: 250,
  IXFR: 251,
  AXFR: 252,
  MAILB: 253,
  MAILA: 254,
  ANY: 255,
  CAA: 257,
} as const;
export type TypeName = keyof typeof TYPE;

export const FLAG = {
  QR: 0x8000,
  AA: 0x0400,
  TC: 0x0200,
  RD: 0x0100,
  RA: 0x0080,
  Z: 0x0040,
  AD: 0x0020,
  CD: 0x0010,
} as const;

/** Extended DNS Error codes we send (RFC 8914 §4). */
export const EDE = {
  STALE_ANSWER: 3,
  NETWORK_ERROR: 23,
  NO_REACHABLE_AUTHORITY: 22,
  PROHIBITED: 18,
  NOT_READY: 14,
} as const;

export const EDNS_OPTION_EDE = 15;
/** RFC 7873 §4. */
export const EDNS_OPTION_COOKIE = 10;
