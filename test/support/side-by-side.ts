/**
 * Consul's own DNS as the reference for a lag: polls an agent (the `.consul` name) and the proxy
 * (the same name under its alias) side by side until both satisfy `ok`, and says how long after the
 * agent the proxy followed. Used by the seed test and by `npm run failover-lag -- --real`.
 */
import { performance } from 'node:perf_hooks';
import { ask, percentile, type Reply } from './dns-ask.js';

export interface SideBySide {
  /** The agent's DNS ("host:port") and the name asked there. */
  reference: string;
  referenceName: string;
  /** The proxy ("host:port") and the name asked there. */
  proxy: string;
  proxyName: string;
  ok: (r: Reply) => boolean;
  /** What makes the answers change; started once both polls run. */
  change: () => Promise<void>;
  /** How long the proxy may take after the agent before its lag counts as never (ms). */
  graceMs?: number;
  /** How long the agent may take to change at all (ms); past that the result says so. */
  timeoutMs?: number;
}

export interface Lag {
  /** The proxy's lag behind the agent in ms (negative: the proxy was first); Infinity: it never followed. */
  lagMs: number;
  /** The agent's own time to change, from the start of `change` (ms); NaN: it never did. */
  agentMs: number;
  /** The p99 round trip of the polls themselves: a loaded machine's share of any lag. */
  pollP99Ms: number;
}

export async function sideBySide(o: SideBySide): Promise<Lag> {
  const graceMs = o.graceMs ?? 5000,
    timeoutMs = o.timeoutMs ?? 30_000;
  let tRef = NaN,
    tProxy = NaN;
  let stopRef = false,
    stopProxy = false;
  const rtts: number[] = [];
  const poll = async (server: string, q: string, stopped: () => boolean, set: (t: number) => void) => {
    while (!stopped()) {
      try {
        const r = await ask(server, q, 'A', 1000);
        rtts.push(r.ms);
        if (r.rcode === 0 && o.ok(r)) {
          set(performance.now());
          return;
        }
      } catch {
        /* a timeout while an agent is down: keep polling */
      }
      await new Promise((res) => setTimeout(res, 5));
    }
  };
  const t0 = performance.now();
  let proxyTimer: NodeJS.Timeout | undefined;
  const a = poll(
    o.reference,
    o.referenceName,
    () => stopRef,
    (t) => {
      tRef = t;
      proxyTimer = setTimeout(() => {
        stopProxy = true;
      }, graceMs);
    },
  );
  const b = poll(
    o.proxy,
    o.proxyName,
    () => stopProxy,
    (t) => {
      tProxy = t;
    },
  );
  await o.change();
  const timer = setTimeout(() => {
    stopRef = true;
    stopProxy = true;
  }, timeoutMs);
  await Promise.all([a, b]);
  clearTimeout(timer);
  clearTimeout(proxyTimer);
  return {
    lagMs: Number.isNaN(tRef) ? NaN : Number.isNaN(tProxy) ? Infinity : tProxy - tRef,
    agentMs: tRef - t0,
    pollP99Ms: percentile(rtts, 99),
  };
}
