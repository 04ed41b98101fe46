/**
 * JSON logs (pino) on stdout. State changes only (listening, upstream down/up, reload, shutdown,
 * watch lost); per-query lines only when `log.queries` is on. pino turns disabled levels into
 * no-ops, so a debug call on a warm path costs a function call, nothing more.
 */
import { pino } from 'pino';

/** The process logger (pino), made once by the CLI; app.ts hands children of it to each module. */
export type Logger = pino.Logger;

type LogFn = (obj: object, msg?: string) => void;

/**
 * What a module needs of a logger: the Logger satisfies it, and so does a test's recorder. A module
 * that uses fewer levels takes a Pick of it.
 */
export interface Log {
  error: LogFn;
  warn: LogFn;
  info: LogFn;
  debug: LogFn;
}

export function createLogger(level: string): Logger {
  return pino({ level, base: { name: 'consul-dns-proxy' }, timestamp: pino.stdTimeFunctions.isoTime });
}
