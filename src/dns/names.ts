/** Name comparisons on presentation-form names (RFC 4343: ASCII case only; escaped dots are inside a label). */
import { isEscapedAt } from './message.js';

/** Case-insensitive (ASCII) test that `name` ends with the lowercase `suffix` on a label boundary. */
export function isUnder(name: string, n: number, suffix: string): boolean {
  const f = suffix.length;
  if (n < f) return false;
  if (n > f) {
    const dot = n - f - 1;
    if (name.charCodeAt(dot) !== 0x2e || isEscapedAt(name, dot)) return false;
  }
  for (let i = 0, j = n - f; i < f; i++, j++) {
    let c = name.charCodeAt(j);
    if (c >= 0x41 && c <= 0x5a) c |= 0x20;
    if (c !== suffix.charCodeAt(i)) return false;
  }
  return true;
}

/** Length of the name without one trailing unescaped dot. */
export function bareLength(name: string): number {
  const n = name.length;
  return n > 1 && name.charCodeAt(n - 1) === 0x2e && !isEscapedAt(name, n - 1) ? n - 1 : n;
}

/** Letters, digits, hyphen and underscore (service names such as _janus._tcp), RFC 1035 lengths. */
export function isDomainName(name: string): boolean {
  return (
    name.length > 0 &&
    name.length <= 253 &&
    name.split('.').every((label) => /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/.test(label))
  );
}
