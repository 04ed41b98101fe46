/**
 * JSON logs (pino) on stdout. State changes only (listening, upstream down/up, reload, shutdown,
 * watch lost); per-query lines only when `log.queries` is on. pino turns disabled levels into
 * no-ops, so a debug call on a warm path costs a function call, nothing more.
 */
import { pino } from 'pino';

export type Logger = pino.Logger;

export function createLogger(level: string): Logger {
  return pino({ level, base: { name: 'consul-dns-proxy' }, timestamp: pino.stdTimeFunctions.isoTime });
}
