/**
 * The cache key: one entry per canonical question (after alias mapping), so `x.starlings` and
 * `x.consul` share one entry and one upstream query. The only place a key is built or read back.
 *
 *   <lowercased canonical name>/<qtype>/<D if DO><C if CD>
 */
import { bareLength, isUnder } from '../dns/names.js';

/**
 * The key of a canonical question. `name` is lowercased, without the trailing dot.
 *
 * Built with join, not `+`: V8 keeps a `+` chain as a tree of cons strings (three here), which
 * a Map key never flattens, so every cached name held 96 bytes of cons cells beside its
 * characters; join writes one flat string (132 → 76 bytes per key with its Map slot).
 */
export function cacheKey(name: string, qtype: number, dnssecOk: boolean, checkingDisabled: boolean): string {
  return [name, qtype, dnssecOk ? (checkingDisabled ? 'DC' : 'D') : checkingDisabled ? 'C' : ''].join('/');
}

/**
 * The name part of every key of `name` (all types and bits), for names an operator types: any
 * case, a trailing dot, and a name under an alias, which is keyed under the Consul domain as its
 * queries are (`x.service.starlings` → `x.service.consul`). The longest suffix wins, as in routing.
 */
export function cacheKeyPrefix(name: string, domain: string, aliases: readonly string[]): string {
  const lower = name.toLowerCase();
  const n = bareLength(lower);
  let alias: string | null = null;
  for (const a of aliases) if (isUnder(lower, n, a) && (alias === null || a.length > alias.length)) alias = a;
  if (alias !== null && domain.length > alias.length && isUnder(lower, n, domain)) alias = null;
  return (alias === null ? lower.slice(0, n) : lower.slice(0, n - alias.length) + domain) + '/';
}

/** Whether `key` is one of `name`'s keys, given cacheKeyPrefix(name). */
export function isKeyOf(key: string, prefix: string): boolean {
  return key.startsWith(prefix);
}
