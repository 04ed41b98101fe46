/**
 * Tail latency of cache hits at a fixed rate, against the real CLI, with the proxy's GC trace:
 * `npm run build && node dist/bench/hit-latency.js [qps] [seconds]` (default 20000, 10). Prints
 * dnsperf's p50/p99/p99.9 (from its per-query lines) and the scavenges/mark-compacts seen during
 * the run, to tell a collector pause from scheduling noise. Loopback only, against the simulator.
 */
import { spawn } from 'node:child_process';
import { writeFileSync, rmSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startJanusCluster } from '../test/support/consul-sim/index.js';
import { freePort, CLI } from '../test/support/proc.js';

const qps = Number(process.argv[2] ?? 20_000);
const seconds = Number(process.argv[3] ?? 10);
const dir = mkdtempSync(join(tmpdir(), 'cdp-lat-'));
const qfile = join(dir, 'q.txt');
writeFileSync(qfile, 'janus.service.consul A\n');
const sim = await startJanusCluster();
const port = await freePort();
const proxy = spawn(
  process.execPath,
  [
    '--trace-gc',
    CLI,
    '--listen',
    `127.0.0.1:${port}`,
    '--agent',
    `127.0.0.1:${sim.dnsPort}`,
    '--consul-http',
    `http://127.0.0.1:${sim.httpPort}`,
    '--metrics',
    'off',
    '--log-level',
    'info',
  ],
  { stdio: ['ignore', 'pipe', 'inherit'] },
);
let trace = '';
proxy.stdout.on('data', (d: Buffer) => {
  trace += d.toString();
});
const run = (args: string[]) =>
  new Promise<string>((resolve) => {
    const p = spawn(args[0]!, args.slice(1), { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    p.on('exit', () => resolve(out));
  });
try {
  while (!trace.includes('"listening"')) await new Promise((r) => setTimeout(r, 50));
  // Warm: a miss starts the health watch; an answer fetched after it is live is held.
  for (let i = 0; i < 3; i++) {
    await run(['dig', `@127.0.0.1`, '-p', String(port), 'janus.service.consul']);
    await new Promise((r) => setTimeout(r, 200));
  }
  const mark = trace.length;
  const out = await run([
    'dnsperf',
    '-s',
    '127.0.0.1',
    '-p',
    String(port),
    '-d',
    qfile,
    '-l',
    String(seconds),
    '-Q',
    String(qps),
    '-c',
    '4',
    '-v',
  ]);
  const lat = out
    .split('\n')
    .filter((l) => / NOERROR /.test(l))
    .map((l) => Number(l.trim().split(/\s+/).pop()))
    .filter(Number.isFinite)
    .sort((a, b) => a - b);
  const at = (p: number) => (lat[Math.min(lat.length - 1, Math.floor(lat.length * p))]! * 1000).toFixed(3);
  console.log(`${lat.length} answers at ${qps} q/s: p50 ${at(0.5)} ms, p99 ${at(0.99)} ms, p99.9 ${at(0.999)} ms`);
  const gcs = trace
    .slice(mark)
    .split('\n')
    .filter((l) => /Scavenge|Mark-Compact/.test(l));
  const pauses = gcs.map((l) => Number(/MB, ([0-9.]+) \//.exec(l)?.[1] ?? NaN)).filter(Number.isFinite);
  console.log(
    `GC during the run: ${gcs.length} events, pauses max ${Math.max(0, ...pauses).toFixed(2)} ms, total ${pauses.reduce((a, b) => a + b, 0).toFixed(1)} ms`,
  );
} finally {
  proxy.kill('SIGTERM');
  await new Promise((r) => proxy.on('exit', r));
  await sim.stop();
  rmSync(dir, { recursive: true, force: true });
}
