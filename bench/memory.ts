/**
 * Memory of the cache with N unique recursor names, in-process so the heap can be read before
 * and after a forced collection: what a cache entry really costs, apart from the garbage of the
 * fill. `npm run build && node --expose-gc dist/bench/memory.js [N]` (default 100,000).
 * Loopback only: a test unbound with `local-zone: "." static` answers every *.m.example name.
 */
import { spawn } from 'node:child_process';
import { writeFileSync, rmSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startUnbound, freePort } from '../test/support/proc.js';
import { startApp } from '../src/app.js';
import { loadConfig } from '../src/config/load.js';
import { createLogger } from '../src/observability/log.js';

const n = Number(process.argv[2] ?? 100_000);
const gc = (globalThis as { gc?: () => void }).gc;
const mb = (x: number) => (x / 1e6).toFixed(1);
const report = (label: string) => {
  const m = process.memoryUsage();
  console.log(
    `${label.padEnd(22)} rss ${mb(m.rss)} MB, heap used ${mb(m.heapUsed)} of ${mb(m.heapTotal)} MB, array buffers ${mb(m.arrayBuffers)} MB`,
  );
  return m;
};

const dir = mkdtempSync(join(tmpdir(), 'cdp-mem-'));
const names = join(dir, 'names.txt');
writeFileSync(names, Array.from({ length: n }, (_, i) => `n${i}.m.example A`).join('\n') + '\n');
const ub = await startUnbound(['  local-zone: "m.example." redirect', '  local-data: "m.example. 300 IN A 192.0.2.7"']);
const port = await freePort();
const cfg = loadConfig({
  argv: [
    '--listen',
    `127.0.0.1:${port}`,
    '--agent',
    '127.0.0.1:1',
    '--recursor',
    `127.0.0.1:${ub.port}`,
    '--metrics',
    'off',
  ],
  env: {},
}).config;
const app = await startApp(cfg, createLogger('warn'));
try {
  gc?.();
  const before = report('before');
  const d = spawn(
    'dnsperf',
    ['-s', '127.0.0.1', '-p', String(port), '-d', names, '-n', '1', '-c', '4', '-q', '100', '-Q', '25000'],
    { stdio: 'ignore' },
  );
  await new Promise((r) => d.on('exit', r));
  report('just after the fill');
  if (gc) {
    gc();
    const after = report('after a full GC');
    console.log(
      `live heap per cached name: ${Math.round((after.heapUsed - before.heapUsed) / n)} B (+ ${Math.round((after.arrayBuffers - before.arrayBuffers) / n)} B of cache slabs)`,
    );
  } else {
    console.log('(run with node --expose-gc for the live heap per name)');
  }
} finally {
  await app.close();
  await ub.stop();
  rmSync(dir, { recursive: true, force: true });
}
