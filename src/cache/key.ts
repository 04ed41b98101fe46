/**
 * The cache key: one entry per canonical question (after alias mapping), so `x.starlings` and
 * `x.consul` share one entry and one upstream query. The only place a key is built or read back.
 *
 *   <lowercased canonical name>/<qtype>/<D if DO><C if CD>
 */

/** The key of a canonical question. `name` is lowercased, without the trailing dot. */
export function cacheKey(name: string, qtype: number, dnssecOk: boolean, checkingDisabled: boolean): string {
  return name + '/' + qtype + '/' + (dnssecOk ? 'D' : '') + (checkingDisabled ? 'C' : '');
}

/** The name part of every key of `name` (all types and bits); accepts a trailing dot and any case. */
export function cacheKeyPrefix(name: string): string {
  return name.toLowerCase().replace(/\.$/, '') + '/';
}

/** Whether `key` is one of `name`'s keys, given cacheKeyPrefix(name). */
export function isKeyOf(key: string, prefix: string): boolean {
  return key.startsWith(prefix);
}
