/*
 * `npm run demo`: the seed's cluster and the proxy in front of it, with loopback upstreams only (no
 * recursor). With a real Consul binary (test/support/install-consul.sh) that is real Consul: three
 * servers, two Janus hosts (client agents with the seed's service definition, a TCP check on 8800
 * and a stand-in HTTP server there) and the Alien4Cloud host's client agent, which the proxy asks
 * first. Without one (or with `--sim`) it is the Consul simulator, and the demo says so. Prints the
 * dig lines to try and the commands that fail a Janus host, then runs until Ctrl-C.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import http from 'node:http';
import { startJanusCluster } from './consul-sim/index.js';
import { ConsulCluster, consulBinary } from './consul-cluster.js';
import { janusStandIn, seedAddresses, seedAgents } from './seed-cluster.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const cli = path.resolve(here, '../../src/cli.js'); // dist/src/cli.js
const PROXY = { host: '127.0.0.1', port: 8053, metrics: '127.0.0.1:9153' };

/** The demo's loopback block (the real-Consul tests use 127.0.20.x and up; a demo may run beside them). */
const NET = '127.0.90';
const { janus: JANUS, a4c: A4C, s1: S1 } = seedAddresses(NET);

interface Backend {
  dns: string[];
  http: string[];
  failHelp: string[];
  stop(): Promise<void>;
}

/** The seed topology on real Consul, with the Janus stand-ins that make its TCP checks pass. */
async function realCluster(bin: string): Promise<Backend> {
  const cluster = new ConsulCluster(seedAgents(NET));
  const standIns: http.Server[] = [];
  try {
    for (const addr of JANUS) standIns.push(await janusStandIn(addr));
    console.log(`Real Consul (${bin}): starting 3 servers and 3 client agents on ${NET}.x ...`);
    await cluster.start();
    await cluster.waitFor(async () => (await cluster.passing('janus')).length === 2, 'both Janus instances passing');
  } catch (err) {
    for (const s of standIns) s.close();
    await cluster.stop();
    throw err;
  }
  console.log(`  servers ${NET}.21-23; janus-1 ${JANUS[0]}:8800, janus-2 ${JANUS[1]}:8800; Alien4Cloud agent ${A4C}`);
  const j1 = `http://${JANUS[0]}:8500`;
  return {
    dns: [`${A4C}:8600`, `${S1}:8600`],
    http: [`http://${A4C}:8500`, `http://${S1}:8500`],
    failHelp: [
      'Put janus-1 in maintenance (its instance leaves the answers), then take it out again:',
      `  ${bin} maint -enable -service janus-1 -http-addr ${j1}`,
      `  ${bin} maint -disable -service janus-1 -http-addr ${j1}`,
      'Or make its node leave the cluster (janus-1 is gone until the demo restarts):',
      `  ${bin} leave -http-addr ${j1}`,
    ],
    stop: async () => {
      for (const s of standIns) s.close();
      await cluster.stop();
    },
  };
}

/** The same names from the Consul simulator (one process, no real Consul needed). */
async function simulator(haveProxy: boolean): Promise<Backend> {
  // With the proxy, `starlings` is the proxy's alias (rewritten to consul on the way in and back on
  // the way out). Without it, the simulator answers it natively as alt_domain so the same dig lines
  // still work.
  const sim = await startJanusCluster(haveProxy ? {} : { altDomain: 'starlings' });
  const simHttp = `http://127.0.0.1:${sim.httpPort}`;
  console.log(`Consul simulator: DNS 127.0.0.1:${sim.dnsPort} (udp+tcp), HTTP ${simHttp}`);
  console.log('  janus-1 at 127.0.0.11:8800 tags [server, server1]; janus-2 at 127.0.0.12:8800 tags [server, server2]');
  return {
    dns: [`127.0.0.1:${sim.dnsPort}`],
    http: [simHttp],
    failHelp: [
      'Mark janus-1 critical (it leaves the answers), then passing again:',
      `  curl -X PUT ${simHttp}/v1/agent/check/fail/service:janus-1`,
      `  curl -X PUT ${simHttp}/v1/agent/check/pass/service:janus-1`,
    ],
    stop: () => sim.stop(),
  };
}

async function main(): Promise<void> {
  const haveProxy = existsSync(cli);
  const bin = process.argv.includes('--sim') ? null : consulBinary();
  if (!bin && !process.argv.includes('--sim'))
    console.log('No Consul binary (bash test/support/install-consul.sh installs one): using the simulator.');
  const backend = bin ? await realCluster(bin) : await simulator(haveProxy);
  let proxy: ChildProcess | null = null;
  const [firstDns] = backend.dns;
  let target = { host: firstDns!.slice(0, firstDns!.lastIndexOf(':')), port: Number(firstDns!.split(':').pop()) };
  if (haveProxy) {
    const args = [cli, '--listen', `${PROXY.host}:${PROXY.port}`, '--metrics', PROXY.metrics];
    for (const a of backend.dns) args.push('--agent', a);
    for (const h of backend.http) args.push('--consul-http', h);
    proxy = spawn(process.execPath, args, { stdio: ['ignore', 'inherit', 'inherit'] });
    proxy.on('exit', (code, sig) => {
      if (!stopping) console.log(`proxy exited (${code ?? sig}); Consul keeps running`);
    });
    target = { host: PROXY.host, port: PROXY.port };
    console.log(`Proxy: node ${args.map((a) => (a === cli ? 'dist/src/cli.js' : a)).join(' ')}`);
  } else {
    console.log('Proxy not built (dist/src/cli.js missing): the dig lines below query Consul directly.');
  }

  const at = `@${target.host} -p ${target.port}`;
  console.log('\nTry:');
  for (const q of [
    'janus.service.consul',
    'janus.service.starlings',
    'janus.service.consul SRV',
    'server1.janus.service.starlings',
    'nosuch.service.consul',
  ]) {
    console.log(`  dig ${at} ${q}`);
  }
  console.log('');
  for (const line of backend.failHelp) console.log(line);
  if (haveProxy) console.log(`Metrics: curl http://${PROXY.metrics}/metrics`);
  console.log('\nCtrl-C to stop.');

  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    if (proxy && proxy.exitCode === null) proxy.kill('SIGTERM');
    void backend.stop().then(() => process.exit(0));
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.stack : err);
  process.exit(1);
});
