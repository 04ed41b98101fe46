/**
 * Invalidation lag: time from marking an instance critical in Consul (the
 * simulator's state, which wakes the blocked /v1/health/service watch) to the first proxy answer
 * without that instance. The proxy is the real CLI (child process, cache on, default settings);
 * the client is a tiny raw UDP poller (sub-millisecond resolution, one query in flight) rather
 * than dig (tens of ms per process). Before each trial the answer is cached (a query that reaches
 * the agent zero times) and the instance restored, so every trial starts from a warm cache.
 *
 *   npm run failover-lag [-- trials]          the simulator (default 30 trials)
 *   npm run failover-lag -- --real [trials]   real Consul, the seed's cluster (bench/lib/real-lag.ts; default 10)
 */
import dgram from 'node:dgram';
import { performance } from 'node:perf_hooks';
import { startSim, type Sim } from '../test/support/consul-sim/index.js';
import { startProxy, type ProxyProc } from '../test/support/proc.js';
import { waitFor } from '../test/support/wait.js';
import { queryMessage } from '../test/support/query.js';
import { realLag } from './lib/real-lag.js';

const REAL = process.argv.includes('--real');
const TRIALS = Number(process.argv.slice(2).find((a) => /^\d+$/.test(a)) ?? (REAL ? 10 : 30));
const SERVICE = 'lag';
const GONE = '127.0.60.1';

/** One outstanding query at a time; resolves with the A addresses of the reply. */
class Poller {
  private readonly sock = dgram.createSocket('udp4');
  private id = 0;
  private pending: ((ips: string[]) => void) | null = null;
  private readonly query: Buffer;
  constructor(private readonly port: number) {
    this.query = queryMessage(0, `${SERVICE}.service.consul`);
    this.sock.on('message', (m) => {
      if (m.readUInt16BE(0) !== this.id || !this.pending) return;
      const f = this.pending;
      this.pending = null;
      f(answersA(m));
    });
  }
  bind(): Promise<void> {
    return new Promise((r) => this.sock.bind(0, '127.0.0.1', () => r()));
  }
  ask(): Promise<string[]> {
    this.id = (this.id + 1) & 0xffff;
    this.query.writeUInt16BE(this.id, 0);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.pending = null;
        reject(new Error('no reply in 2 s'));
      }, 2000);
      this.pending = (ips) => {
        clearTimeout(t);
        resolve(ips);
      };
      this.sock.send(this.query, this.port, '127.0.0.1');
    });
  }
  close(): void {
    this.sock.close();
  }
}

/** A records of a reply, walking it raw (names may be compressed). */
function answersA(m: Buffer): string[] {
  const skip = (o: number) => {
    while (m[o]! !== 0) {
      if ((m[o]! & 0xc0) === 0xc0) return o + 2;
      o += m[o]! + 1;
    }
    return o + 1;
  };
  let off = skip(12) + 4;
  const out: string[] = [];
  for (let i = 0; i < m.readUInt16BE(6); i++) {
    off = skip(off);
    const type = m.readUInt16BE(off),
      len = m.readUInt16BE(off + 8);
    if (type === 1 && len === 4) out.push([...m.subarray(off + 10, off + 14)].join('.'));
    off += 10 + len;
  }
  return out;
}

async function main() {
  const sim: Sim = await startSim();
  for (let i = 1; i <= 3; i++)
    sim.register({
      id: `${SERVICE}-${i}`,
      name: SERVICE,
      node: `${SERVICE}-n${i}`,
      nodeAddress: `127.0.60.${i}`,
      port: 9000 + i,
    });
  let proxy: ProxyProc | null = null;
  let poller: Poller | null = null;
  try {
    proxy = await startProxy([
      '--agent',
      `127.0.0.1:${sim.dnsPort}`,
      '--consul-http',
      `http://127.0.0.1:${sim.httpPort}`,
      '--metrics',
      'off',
    ]);
    poller = new Poller(proxy.port);
    await poller.bind();
    const p = poller;
    const cachedWith = async (present: boolean) => {
      await waitFor(
        async () => {
          const q0 = sim.queries;
          const ips = await p.ask();
          return ips.includes(GONE) === present && sim.queries === q0;
        },
        {
          timeoutMs: 15_000,
          intervalMs: 10,
          what: `answer ${present ? 'with' : 'without'} ${GONE} served from the cache`,
        },
      );
    };
    const lags: number[] = [];
    let polls = 0;
    let parked = 2; // the watch's first (non-blocking) request, then its first blocking one
    for (let t = 0; t < TRIALS; t++) {
      await cachedWith(true);
      // The watch's next blocking request must be parked at the simulator before the change, so a
      // trial measures a change arriving at a waiting watch (not the 100 ms minimum interval).
      await waitFor(() => sim.httpRequests >= parked, { timeoutMs: 5000, what: 'the watch to block again' });
      const q0 = sim.queries,
        h0 = sim.httpRequests;
      let tq = -1,
        th = -1,
        n = 0;
      const t0 = performance.now();
      sim.setHealth(`${SERVICE}-1`, 'critical');
      for (;;) {
        polls++;
        n++;
        const ips = await p.ask();
        if (tq < 0 && sim.queries > q0) tq = performance.now() - t0;
        if (th < 0 && sim.httpRequests > h0) th = performance.now() - t0;
        if (!ips.includes(GONE)) break;
      }
      lags.push(performance.now() - t0);
      if (process.env.DEBUG_LAG)
        console.log(
          `trial ${t}: lag ${(performance.now() - t0).toFixed(1)} first-miss ${tq.toFixed(1)} next-watch-request ${th.toFixed(1)} polls ${n} http ${h0}`,
        );
      await cachedWith(false);
      // The watch's request after the change has reached the simulator (it blocks there); the
      // next trial waits for the one after the restore, issued once the 100 ms minimum interval
      // since this one has passed.
      await waitFor(() => sim.httpRequests > h0, { timeoutMs: 5000, what: 'the watch to ask again after the change' });
      parked = sim.httpRequests + 1;
      sim.setHealth(`${SERVICE}-1`, 'passing');
    }
    lags.sort((a, b) => a - b);
    const q = (f: number) => lags[Math.min(lags.length - 1, Math.floor(f * lags.length))]!;
    const fmt = (x: number) => x.toFixed(2);
    const summary = {
      trials: lags.length,
      median_ms: +fmt(q(0.5)),
      p90_ms: +fmt(q(0.9)),
      worst_ms: +fmt(lags[lags.length - 1]!),
      best_ms: +fmt(lags[0]!),
      mean_ms: +fmt(lags.reduce((a, b) => a + b, 0) / lags.length),
      polls,
    };
    console.log(
      `invalidation lag over ${summary.trials} trials: median ${summary.median_ms} ms, p90 ${summary.p90_ms} ms, worst ${summary.worst_ms} ms, best ${summary.best_ms} ms`,
    );
    console.log(JSON.stringify({ bench: 'failover-lag', ...summary, all_ms: lags.map((x) => +fmt(x)) }));
  } finally {
    poller?.close();
    await proxy?.stop();
    await sim.stop();
  }
}

(REAL ? realLag(TRIALS) : main()).catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
