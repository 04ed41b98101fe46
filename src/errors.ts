/**
 * Every error this program throws on purpose, in one place. Each has a stable `code`
 * (CDP_ERR_*), for logs and tests; errors about a DNS message also carry the rcode they become.
 */

/** Every problem found, at once. The CLI prints `message` and exits 2. */
export class ConfigError extends Error {
  readonly code = 'CDP_ERR_CONFIG';
  readonly problems: string[];
  constructor(problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

/**
 * How a bad value is quoted in a problem message: as JSON, or "nothing" when it is missing,
 * cut to 120 characters.
 */
export function show(value: unknown): string {
  if (value === undefined) return 'nothing';
  let s: string;
  try {
    s = JSON.stringify(value) ?? String(value);
  } catch {
    s = String(value);
  }
  return s.length > 120 ? `${s.slice(0, 117)}...` : s;
}
