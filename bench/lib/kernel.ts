/**
 * What the kernel says about the machine during a run: datagrams dropped on a server's socket
 * (the `drops` column of /proc/net/udp and /proc/net/udp6: a full receive buffer, so the server
 * or the machine stalled) and the steal time of the whole machine (/proc/stat: time the
 * hypervisor gave our vCPUs to someone else). Both are counters; the bench reads them before and
 * after each run.
 */
import { readFileSync } from 'node:fs';

/** Drops summed over the UDP sockets bound to local `port` (any address), or NaN without /proc. */
export function udpDrops(port: number): number {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  let total = 0;
  let seen = false;
  for (const f of ['/proc/net/udp', '/proc/net/udp6']) {
    let text: string;
    try {
      text = readFileSync(f, 'utf8');
    } catch {
      continue;
    }
    seen = true;
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 13) continue;
      const local = cols[1]!;
      if (local.slice(local.lastIndexOf(':') + 1) !== hex) continue;
      total += Number(cols[cols.length - 1]);
    }
  }
  return seen ? total : NaN;
}

export interface CpuTicks {
  steal: number;
  total: number;
}

/** The machine's aggregate CPU ticks (all cores) and the steal share of them, from /proc/stat. */
export function cpuTicks(): CpuTicks {
  try {
    const first = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
    // cpu user nice system idle iowait irq softirq steal guest guest_nice; guest time is
    // already inside user, so it is not added again.
    const v = first.trim().split(/\s+/).slice(1).map(Number);
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
    return { steal: v[7] ?? NaN, total };
  } catch {
    return { steal: NaN, total: NaN };
  }
}

/** Steal between two readings: seconds (USER_HZ 100, summed over cores) and % of all CPU time. */
export function stealBetween(a: CpuTicks, b: CpuTicks): { seconds: number; pct: number } {
  const s = b.steal - a.steal,
    t = b.total - a.total;
  return { seconds: s / 100, pct: t > 0 ? (100 * s) / t : NaN };
}
