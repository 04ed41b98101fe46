/**
 * `npm run failover-lag -- --real [trials]`: the same question as the simulator run, asked of real
 * Consul (the seed's cluster: three servers, two Janus hosts, the Alien4Cloud host's agent that
 * the proxy asks first), with Consul's own DNS as the reference. Each trial fails a Janus host's
 * TCP check (its stand-in stops listening) and recovers it, then kills its agent (Serf marks the
 * node failed) and restarts it; each lag is the time between the agent's own DNS changing and the
 * proxy's doing so, polled side by side (test/support/side-by-side.ts).
 */
import http from 'node:http';
import { ConsulCluster, consulBinary } from '../../test/support/consul-cluster.js';
import { aAddrs, type Reply } from '../../test/support/dns-ask.js';
import { startProxy, type ProxyProc } from '../../test/support/proc.js';
import { sideBySide } from '../../test/support/side-by-side.js';
import { janusStandIn, seedAddresses, seedAgents } from '../../test/support/seed-cluster.js';

const NET = '127.0.91';
const {
  janus: [J1, J2],
  a4c: A4C,
  s1: S1,
} = seedAddresses(NET);

type Kind = 'check_fail' | 'check_recover' | 'node_fail' | 'node_recover';

function stats(xs: number[]): { median: number; p99: number; max: number } {
  const s = [...xs].sort((a, b) => a - b);
  const at = (f: number) => s[Math.min(s.length - 1, Math.floor(f * s.length))] ?? NaN;
  return { median: Math.round(at(0.5)), p99: Math.round(at(0.99)), max: Math.round(s[s.length - 1] ?? NaN) };
}

export async function realLag(trials: number): Promise<void> {
  const bin = consulBinary();
  if (!bin) throw new Error('no Consul binary: bash test/support/install-consul.sh installs it');
  const cluster = new ConsulCluster(seedAgents(NET));
  let j1: http.Server | null = await janusStandIn(J1);
  const j2 = await janusStandIn(J2);
  let proxy: ProxyProc | null = null;
  const lags: Record<Kind, number[]> = { check_fail: [], check_recover: [], node_fail: [], node_recover: [] };
  const pollP99: number[] = [];
  try {
    await cluster.start();
    await cluster.waitFor(async () => (await cluster.passing('janus')).length === 2, 'both Janus instances passing');
    proxy = await startProxy(['--metrics', 'off'], {
      config:
        [
          'consul:',
          `  agents: ["${A4C}:8600", "${S1}:8600"]`,
          `  http: ["http://${A4C}:8500", "http://${S1}:8500"]`,
        ].join('\n') + '\n',
    });
    const proxyAddr = `${proxy.host}:${proxy.port}`;
    const without = (r: Reply) => aAddrs(r).length > 0 && !aAddrs(r).includes(J1);
    const both = (r: Reply) => aAddrs(r).includes(J1) && aAddrs(r).includes(J2);
    const measure = async (kind: Kind, ok: (r: Reply) => boolean, change: () => Promise<void>) => {
      const r = await sideBySide({
        reference: `${A4C}:8600`,
        referenceName: 'janus.service.consul',
        proxy: proxyAddr,
        proxyName: 'janus.service.starlings',
        ok,
        change,
        timeoutMs: 60_000,
      });
      if (Number.isNaN(r.lagMs)) throw new Error(`${kind}: the agent's own DNS never changed`);
      lags[kind].push(r.lagMs);
      pollP99.push(r.pollP99Ms);
      console.log(`  ${kind}: lag ${Math.round(r.lagMs)} ms (agent after ${Math.round(r.agentMs)} ms)`);
    };
    for (let t = 1; t <= trials; t++) {
      console.log(`trial ${t}/${trials}`);
      await measure('check_fail', without, async () => {
        const s = j1!;
        j1 = null;
        await new Promise<void>((r) => s.close(() => r()));
      });
      await measure('check_recover', both, async () => {
        j1 = await janusStandIn(J1);
      });
      await measure('node_fail', without, () => cluster.kill('janus-1'));
      await measure('node_recover', both, () => cluster.restart('janus-1'));
    }
  } finally {
    await proxy?.stop();
    j1?.close();
    j2.close();
    await cluster.stop();
  }
  const summary = Object.fromEntries(Object.entries(lags).map(([k, v]) => [k, { trials: v.length, ...stats(v) }]));
  console.log(`real Consul (${bin}), lag of the proxy behind the agent's own DNS, ms:`);
  for (const [k, v] of Object.entries(summary))
    console.log(`  ${k.padEnd(14)} median ${v.median}  p99 ${v.p99}  max ${v.max}  (${v.trials} trials)`);
  console.log(`  poll round trip p99 (the machine's share), median over measurements: ${stats(pollP99).median} ms`);
  console.log(JSON.stringify({ bench: 'failover-lag-real', consul: bin, lags: summary, poll_p99_ms: stats(pollP99) }));
}
