/** What an upstream pool offers and reports: addresses, options, results, the observer. */
import type { ReplyLayout } from '../dns/wire.js';
import type { FailureReason } from '../observability/metrics.js';
import type { Log } from '../observability/log.js';

export type Logger = Pick<Log, 'info' | 'warn' | 'debug'>;

export interface UpstreamAddress {
  host: string;
  port: number;
}

/** Hooks the pool calls so the metrics module can count without the pool knowing about it. */
export interface PoolObserver {
  request(pool: string, upstream: string, transport: 'udp' | 'tcp'): void;
  failure(pool: string, upstream: string, reason: FailureReason): void;
  duration(pool: string, upstream: string, seconds: number): void;
  hedged(pool: string): void;
  health(pool: string, upstream: string, healthy: boolean): void;
  overflow(pool: string): void;
}

export interface PoolOptions {
  timeoutMs: number;
  hedgeMs: number;
  deadlineMs: number;
  maxFails: number;
  probeIntervalMs: number;
  /** Question bytes (name, type, class) asked by the health probe. */
  probeQuestion: Buffer;
  /** EDNS buffer size we advertise upstream. */
  udpSize: number;
  maxInFlight: number;
}

export interface Answer {
  reply: Buffer;
  layout: ReplyLayout;
  upstream: string;
}
export interface Failure {
  failure: FailureReason | 'overflow';
  upstream?: string;
  /**
   * The REFUSED or SERVFAIL reply an upstream gave, when nobody answered better by the deadline:
   * it is the client's answer (with the upstream's Extended DNS Error), not a timeout.
   */
  answer?: Answer;
}
export type ExchangeResult = Answer | Failure;

/**
 * One pending UDP or TCP question. `done` is called once, with a reply or a failure reason.
 */
export interface Pending {
  id: number;
  host: string;
  port: number;
  query: Buffer; // the exact bytes sent (for the question check)
  qEnd: number;
  timer: NodeJS.Timeout;
  done: (reply: Buffer | null, layout: ReplyLayout | null, reason: FailureReason | null) => void;
}

/** Ends one pending query without calling its `done` (the exchange it belonged to is over). */
export type Cancel = () => void;
