/**
 * Client-side DNS messages for tests and benches: a query as a stub resolver sends it (header,
 * one question from wire.ts's buildQuestion, no EDNS) and its RFC 7766 TCP framing.
 */
import { buildQuestion } from '../../src/dns/wire.js';
import { TYPE } from '../../src/dns/constants.js';

/** A query with ID `id` for `name`/`qtype`; flags default to RD. */
export function queryMessage(id: number, name: string, qtype: number = TYPE.A, flags = 0x0100): Buffer {
  const question = buildQuestion(name, qtype);
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id & 0xffff, 0);
  header.writeUInt16BE(flags, 2);
  header.writeUInt16BE(1, 4);
  return Buffer.concat([header, question]);
}

/** The 2-byte length prefix of DNS over TCP (RFC 7766 §8) in front of a message. */
export function tcpFrame(msg: Buffer): Buffer {
  const len = Buffer.alloc(2);
  len.writeUInt16BE(msg.length);
  return Buffer.concat([len, msg]);
}
