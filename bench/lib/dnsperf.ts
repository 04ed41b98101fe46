/**
 * Runs dnsperf (Debian's 2.10) against one server and reads its summary. With `verbose`, dnsperf
 * prints one line per answered query ("> NOERROR name type 0.000123"); dnsperf 2.10 prints no
 * percentiles itself, so latency percentiles are computed here from those lines.
 */
import { spawn } from 'node:child_process';
import { percentileSorted } from './util.js';

export interface PerfOptions {
  port: number;
  file: string;
  seconds?: number;
  /** Run through the file at most this many times (dnsperf -n). */
  maxRuns?: number;
  clients?: number;
  outstanding?: number;
  qps?: number;
  verbose?: boolean;
  timeoutSeconds?: number;
  /** An EDNS option on every query, dnsperf's `-E code:hex` (e.g. `10:<16 hex>`, a client COOKIE). */
  ednsOption?: string;
}

export interface PerfResult {
  sent: number;
  completed: number;
  lost: number;
  qps: number;
  runSeconds: number;
  rcodes: Record<string, number>;
  /** Present with `verbose`: latency percentiles in ms over answered queries. */
  latency?: { n: number; p50: number; p90: number; p99: number; p999: number; max: number };
}

export function runDnsperf(o: PerfOptions): Promise<PerfResult> {
  const args = [
    '-s',
    '127.0.0.1',
    '-p',
    String(o.port),
    '-d',
    o.file,
    '-c',
    String(o.clients ?? 8),
    '-q',
    String(o.outstanding ?? 200),
    '-t',
    String(o.timeoutSeconds ?? 2),
  ];
  if (o.seconds !== undefined) args.push('-l', String(o.seconds));
  if (o.maxRuns !== undefined) args.push('-n', String(o.maxRuns));
  if (o.qps !== undefined) args.push('-Q', String(o.qps));
  if (o.verbose) args.push('-v');
  if (o.ednsOption !== undefined) args.push('-E', o.ednsOption);
  return new Promise((resolve, reject) => {
    const p = spawn('dnsperf', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    // Latencies are kept as integers of microseconds in a growable typed array (no per-line objects).
    let lat = new Uint32Array(o.verbose ? 1 << 16 : 0);
    let nLat = 0;
    let partial = '';
    let summary = '';
    let stderr = '';
    p.stdout.setEncoding('latin1');
    p.stdout.on('data', (chunk: string) => {
      const text = partial + chunk;
      const lines = text.split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        if (o.verbose && line.charCodeAt(0) === 62 /* '>' */) {
          const sp = line.lastIndexOf(' ');
          const v = Math.round(Number(line.slice(sp + 1)) * 1e6);
          if (Number.isFinite(v)) {
            if (nLat === lat.length) {
              const n = new Uint32Array(lat.length * 2);
              n.set(lat);
              lat = n;
            }
            lat[nLat++] = v;
          }
        } else {
          summary += line + '\n';
        }
      }
    });
    p.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    p.on('error', reject);
    p.on('close', (code) => {
      summary += partial;
      const num = (re: RegExp): number => {
        const m = re.exec(summary);
        return m ? Number(m[1]) : NaN;
      };
      const sent = num(/Queries sent:\s+(\d+)/);
      if (code !== 0 || !Number.isFinite(sent)) {
        reject(
          Object.assign(new Error(`dnsperf exited ${code}: ${stderr.slice(0, 500)} ${summary.slice(-500)}`), {
            code: 'EBENCH_DNSPERF',
          }),
        );
        return;
      }
      const rcodes: Record<string, number> = {};
      const rc = /Response codes:\s+(.*)/.exec(summary);
      if (rc) for (const m of rc[1]!.matchAll(/([A-Z]+) (\d+)/g)) rcodes[m[1]!] = Number(m[2]);
      const r: PerfResult = {
        sent,
        completed: num(/Queries completed:\s+(\d+)/),
        lost: num(/Queries lost:\s+(\d+)/),
        qps: num(/Queries per second:\s+([\d.]+)/),
        runSeconds: num(/Run time \(s\):\s+([\d.]+)/),
        rcodes,
      };
      if (o.verbose) {
        const s = lat.subarray(0, nLat).sort();
        r.latency = {
          n: nLat,
          p50: percentileSorted(s, 50) / 1000,
          p90: percentileSorted(s, 90) / 1000,
          p99: percentileSorted(s, 99) / 1000,
          p999: percentileSorted(s, 99.9) / 1000,
          max: (nLat ? s[nLat - 1]! : NaN) / 1000,
        };
      }
      resolve(r);
    });
  });
}
