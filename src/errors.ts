/**
 * Every error this program throws on purpose, in one place. Each has a stable `code`
 * (CDP_ERR_*), for logs and tests; errors about a DNS message also carry the rcode they become.
 * The one exception is WireError, declared with the codec (src/dns/message.ts), since dns/ imports
 * nothing else.
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
    // undefined only for a symbol or a function.
    s = JSON.stringify(value) ?? (typeof value === 'symbol' ? value.toString() : 'a function');
  } catch {
    // A bigint or a circular structure.
    s = typeof value === 'bigint' ? `${value}n` : 'a circular structure';
  }
  return s.length > 120 ? `${s.slice(0, 117)}...` : s;
}

/** Listen failures; the system error's code (EADDRINUSE, EACCES, ...) is kept in `syscallCode`. */
export class AdminError extends Error {
  readonly code = 'CDP_ERR_ADMIN_LISTEN';
  constructor(
    message: string,
    readonly syscallCode: string | undefined,
    options?: { cause: unknown },
  ) {
    super(message, options);
    this.name = 'AdminError';
  }
}

/** Bad construction options; `code` is stable. */
export class MetricsError extends Error {
  readonly code = 'CDP_ERR_METRICS_CONFIG';
  constructor(message: string) {
    super(message);
    this.name = 'MetricsError';
  }
}

/** Errors of the watch engine; `code` is stable (logs, tests). */
export class HealthWatchError extends Error {
  constructor(
    readonly code:
      | 'CDP_ERR_CONSUL_TIMEOUT'
      | 'CDP_ERR_CONSUL_NET'
      | 'CDP_ERR_CONSUL_HTTP_STATUS'
      | 'CDP_ERR_CONSUL_NO_INDEX'
      | 'CDP_ERR_CONSUL_BAD_BODY'
      | 'CDP_ERR_CONSUL_TLS_FILE'
      | 'CDP_ERR_CONSUL_BAD_URL',
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = 'HealthWatchError';
  }
}

/** A DNS listen address that cannot be bound (at start or on reload); the system error's code is `syscallCode`. */
export class ListenError extends Error {
  readonly code = 'CDP_ERR_LISTEN';
  constructor(
    message: string,
    readonly syscallCode: string | undefined,
    options?: { cause: unknown },
  ) {
    super(message, options);
    this.name = 'ListenError';
  }
}
