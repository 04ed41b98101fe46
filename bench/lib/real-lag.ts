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

const NET = '127.0.91';
const J1 = `${NET}.31`,
  J2 = `${NET}.32`;
const A4C = `${NET}.41`;

type Kind = 'check_fail' | 'check_recover' | 'node_fail' | 'node_recover';

function standIn(addr: string): Promise<http.Server> {
  const srv = http.createServer((_q, res) => res.end('janus stand-in\n'));
  return new Promise((r, j) => {
    srv.once('error', j);
    srv.listen(8800, addr, () => r(srv));
  });
}

function stats(xs: number[]): { median: number; p99: number; max: number } {
  const s = [...xs].sort((a, b) => a - b);
  const at = (f: number) => s[Math.min(s.length - 1, Math.floor(f * s.length))] ?? NaN;
  return { median: Math.round(at(0.5)), p99: Math.round(at(0.99)), max: Math.round(s[s.length - 1] ?? NaN) };
}

export async function realLag(trials: number): Promise<void> {
  const bin = consulBinary();
  if (!bin) throw new Error('no Consul binary: bash test/support/install-consul.sh installs it');
  const janus = (n: number, address: string) => ({
    id: `janus-${n}`,
    name: 'janus',
    port: 8800,
    tags: ['server', `server${n}`],
    address,
  });
  const cluster = new ConsulCluster([
    { name: 's1', address: `${NET}.21`, server: true },
    { name: 's2', address: `${NET}.22`, server: true },
    { name: 's3', address: `${NET}.23`, server: true },
    { name: 'janus-1', address: J1, services: [janus(1, J1)] },
    { name: 'janus-2', address: J2, services: [janus(2, J2)] },
    { name: 'a4c', address: A4C },
  ]);
  let j1: http.Server | null = await standIn(J1);
  const j2 = await standIn(J2);
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
          `  agents: ["${A4C}:8600", "${NET}.21:8600"]`,
          `  http: ["http://${A4C}:8500", "http://${NET}.21:8500"]`,
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
        j1 = await standIn(J1);
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
