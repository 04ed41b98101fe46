/**
 * The alias rewrite, query side: a query for `<x>.<alias>` (e.g. `janus.service.starlings`) is
 * asked upstream as `<x>.<domain>` (`janus.service.consul`). The reply is mapped back under the
 * alias by cache/render.ts. Which alias a query is under is the router's longest-suffix lookup
 * (query/router.ts); everything here runs once per question (memoized by the handler).
 * Names under the domain are matched case-insensitively on label boundaries (RFC 4343: ASCII case
 * only); an escaped dot (`a\.consul`) is inside a label and is not a boundary.
 */
import { WireError, nameToWire } from '../dns/message.js';
import { bareLength, isUnder } from '../dns/names.js';

/**
 * Swap the alias suffix of `name` for `domain`, keeping the case of the left part:
 * ('JaNuS.service.StArLiNgS', 'starlings', 'consul') -> 'JaNuS.service.consul'.
 * Calling it for a name that is not under `alias` is a bug and throws a plain Error.
 */
export function toCanonicalName(name: string, alias: string, domain: string): string {
  const n = bareLength(name);
  if (!isUnder(name, n, alias)) throw new Error(`toCanonicalName: "${name}" is not under "${alias}"`);
  return name.slice(0, n - alias.length) + domain;
}

/**
 * The query with its question name replaced by `canonicalName` (presentation form). [qStart,
 * qEnd) is either the question name or the whole question (name, type, class); everything after
 * the name (type, class, EDNS OPT, ...) is copied verbatim. Queries never compress the question
 * (there is nothing before it to point at), so a pointer there is a WireError.
 */
export function rewriteQuery(query: Buffer, qStart: number, qEnd: number, canonicalName: string): Buffer {
  let p = qStart;
  const len = query.length;
  if (!Number.isInteger(p) || p < 12) throw new WireError(`question cannot start at ${p}`);
  for (;;) {
    if (p >= len) throw new WireError('question name runs past the end of the query', p);
    const b = query[p] as number;
    if (b === 0) break;
    if (b > 63) throw new WireError('compressed or invalid label in the question', p);
    p += b + 1;
  }
  const nameEnd = p + 1;
  if (qEnd !== nameEnd && qEnd !== nameEnd + 4)
    throw new WireError('qEnd is not the end of the question name or question', qEnd);
  if (nameEnd + 4 > len) throw new WireError('question runs past the end of the query', nameEnd);
  const wire = nameToWire(canonicalName);
  const out = Buffer.allocUnsafe(len - (nameEnd - qStart) + wire.length);
  query.copy(out, 0, 0, qStart);
  wire.copy(out, qStart);
  query.copy(out, qStart + wire.length, nameEnd);
  return out;
}
