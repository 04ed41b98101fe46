/**
 * Small helpers shared by the benchmark: progress lines, order statistics, free loopback ports,
 * and per-process CPU time and resident memory read from /proc (the same numbers `top` shows, so
 * a server's cost is measured from outside, whatever language it is written in).
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { readFileSync } from 'node:fs';

const started = Date.now();

/** One progress line on stderr, prefixed with the time since the bench started. */
export function progress(msg: string): void {
  const s = Math.round((Date.now() - started) / 1000);
  process.stderr.write(`[${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}] ${msg}\n`);
}

export function elapsedSeconds(): number {
  return (Date.now() - started) / 1000;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The median of the finite values, or NaN when there are none. */
export function median(xs: number[]): number {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
}

/** Nearest-rank percentile (p in 0..100) of an already sorted array, NaN when empty. */
export function percentileSorted(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1]!;
}

/**
 * A loopback port free for both UDP and TCP at the time of asking (the servers we start want a
 * fixed port in their configuration files). Raced only by other processes binding port 0.
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const srv = net.createServer();
    const port = await new Promise<number>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () =>
        resolve((srv.address() as net.AddressInfo).port),
      );
    });
    const udp = dgram.createSocket('udp4');
    const ok = await new Promise<boolean>((resolve) => {
      udp.once('error', () => resolve(false));
      udp.bind({ address: '127.0.0.1', port, exclusive: true }, () => resolve(true));
    });
    await new Promise<void>((r) => srv.close(() => r()));
    if (ok) await new Promise<void>((r) => udp.close(() => r()));
    else udp.close();
    if (ok) return port;
  }
  throw Object.assign(new Error('no free loopback port'), { code: 'EBENCH_PORT' });
}

/** Clock ticks per second for /proc/<pid>/stat (USER_HZ, 100 on Linux for every architecture we run on). */
const USER_HZ = 100;

/** User + system CPU seconds used so far by a process (all its threads), or NaN if it is gone. */
export function cpuSeconds(pid: number): number {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces) start at state (field 3): utime is
    // field 14 and stime field 15 (proc(5)).
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) / USER_HZ;
  } catch {
    return NaN;
  }
}

/** Resident set size in MB (VmRSS of /proc/<pid>/status), or NaN. */
export function rssMb(pid: number): number {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(s);
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}
