/*
 * Condition polling for tests. The team rule is "no sleeps to let things settle": a test waits
 * for an observable condition with a generous ceiling, and fails with a message that names what
 * it was waiting for. Used by every suite that starts sockets or child processes.
 */

export interface WaitOptions {
  /** Give up after this long (default 5000 ms). */
  timeoutMs?: number;
  /** Time between polls (default 20 ms). */
  intervalMs?: number;
  /** Human description for the timeout error, e.g. "proxy to log listening". */
  what?: string;
}

/** Error thrown when a condition never became true; `code` is stable for assertions. */
export class WaitTimeoutError extends Error {
  readonly code = 'WAIT_TIMEOUT';
  constructor(what: string, timeoutMs: number, last?: unknown) {
    const cause = last instanceof Error ? `; last error: ${last.message}` : '';
    super(`timed out after ${timeoutMs} ms waiting for ${what}${cause}`);
    this.name = 'WaitTimeoutError';
  }
}

/**
 * Poll `fn` until it returns (or resolves to) true. Exceptions thrown by `fn` count as "not yet"
 * (a port not open yet throws ECONNREFUSED) and the last one is reported if time runs out.
 */
export async function waitFor(fn: () => boolean | Promise<boolean>, opts: WaitOptions = {}): Promise<void> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  const intervalMs = opts.intervalMs ?? 20;
  const what = opts.what ?? 'condition';
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      if (await fn()) return;
      lastErr = undefined;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() >= deadline) throw new WaitTimeoutError(what, timeoutMs, lastErr);
    await new Promise<void>((resolve) => setTimeout(resolve, intervalMs));
  }
}
