/*
 * `npm run demo`: a Janus-like cluster in the Consul simulator and, once it is built, the proxy in
 * front of it, with loopback upstreams only (no recursor). Prints the dig lines to try and how to
 * fail an instance through the simulator's HTTP API, then runs until Ctrl-C.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { startJanusCluster } from './consul-sim/index.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const cli = path.resolve(here, '../../src/cli.js'); // dist/src/cli.js
const PROXY = { host: '127.0.0.1', port: 8053, metrics: '127.0.0.1:9153' };

async function main(): Promise<void> {
  const haveProxy = existsSync(cli);
  // With the proxy, `starlings` is the proxy's alias (rewritten to consul on the way in and back on
  // the way out). Without it, the simulator answers it natively as alt_domain so the same dig lines
  // still work.
  const sim = await startJanusCluster(haveProxy ? {} : { altDomain: 'starlings' });
  const simDns = `127.0.0.1:${sim.dnsPort}`;
  const simHttp = `http://127.0.0.1:${sim.httpPort}`;
  console.log(`Consul simulator: DNS ${simDns} (udp+tcp), HTTP ${simHttp}`);
  console.log('  janus-1 at 127.0.0.11:8800 tags [server, server1]; janus-2 at 127.0.0.12:8800 tags [server, server2]');

  let proxy: ChildProcess | null = null;
  let target = { host: '127.0.0.1', port: sim.dnsPort };
  if (haveProxy) {
    const args = [
      cli,
      '--listen',
      `${PROXY.host}:${PROXY.port}`,
      '--agent',
      simDns,
      '--consul-http',
      simHttp,
      '--metrics',
      PROXY.metrics,
    ];
    proxy = spawn(process.execPath, args, { stdio: ['ignore', 'inherit', 'inherit'] });
    proxy.on('exit', (code, sig) => {
      if (!stopping) console.log(`proxy exited (${code ?? sig}); the simulator keeps running`);
    });
    target = { host: PROXY.host, port: PROXY.port };
    console.log(`Proxy: node ${args.map((a) => (a === cli ? 'dist/src/cli.js' : a)).join(' ')}`);
  } else {
    console.log('Proxy not built (dist/src/cli.js missing): the dig lines below query the simulator directly.');
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
  console.log('\nMark janus-1 critical (it leaves DNS), then passing again:');
  console.log(`  curl -X PUT ${simHttp}/v1/agent/check/fail/service:janus-1`);
  console.log(`  curl -X PUT ${simHttp}/v1/agent/check/pass/service:janus-1`);
  console.log('\nCtrl-C to stop.');

  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    if (proxy && proxy.exitCode === null) proxy.kill('SIGTERM');
    void sim.stop().then(() => process.exit(0));
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.stack : err);
  process.exit(1);
});
