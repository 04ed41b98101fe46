/**
 * Summarises a V8 .cpuprofile (what `node --cpu-prof` writes): self time per function, from the
 * sample counts of each node (every sample is one tick of `timeDeltas`), grouped by function name
 * and location, so the hot path's cost reads as a short table. Also a CLI:
 *   node dist/bench/lib/cpuprofile.js FILE.cpuprofile [TOP]
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface SelfTime {
  fn: string;
  where: string;
  selfMs: number;
  pct: number;
}

/** Self time per function (descending), and the profile's total sampled time in ms. */
export function summariseProfile(
  file: string,
  top = 20,
): { totalMs: number; idlePct: number; gcPct: number; rows: SelfTime[] } {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map<number, ProfileNode>();
  for (const n of p.nodes) byId.set(n.id, n);
  // Time per node from samples + timeDeltas (each delta is the time since the previous sample).
  const selfUs = new Map<number, number>();
  const samples = p.samples ?? [];
  const deltas = p.timeDeltas ?? [];
  for (let i = 0; i < samples.length; i++) {
    const d = deltas[i + 1] ?? deltas[i] ?? 0;
    selfUs.set(samples[i]!, (selfUs.get(samples[i]!) ?? 0) + Math.max(0, d));
  }
  const total = [...selfUs.values()].reduce((a, b) => a + b, 0) || 1;
  const groups = new Map<string, SelfTime>();
  let idle = 0,
    gc = 0;
  for (const [id, us] of selfUs) {
    const n = byId.get(id);
    if (!n) continue;
    const cf = n.callFrame;
    const fn = cf.functionName || '(anonymous)';
    if (fn === '(idle)') idle += us;
    if (fn === '(garbage collector)') gc += us;
    const url = cf.url.replace(/^file:\/\//, '').replace(/^.*\/(dist|node_modules)\//, '$1/');
    const where = url ? `${url}:${cf.lineNumber + 1}` : '';
    const key = `${fn}@${where}`;
    const g = groups.get(key) ?? { fn, where, selfMs: 0, pct: 0 };
    g.selfMs += us / 1000;
    groups.set(key, g);
  }
  const rows = [...groups.values()].sort((a, b) => b.selfMs - a.selfMs).slice(0, top);
  for (const r of rows) r.pct = (100 * r.selfMs * 1000) / total;
  return { totalMs: total / 1000, idlePct: (100 * idle) / total, gcPct: (100 * gc) / total, rows };
}

/** A Markdown table of a summary. */
export function profileTable(s: ReturnType<typeof summariseProfile>): string {
  const lines = [
    `Sampled ${(s.totalMs / 1000).toFixed(1)} s; idle ${s.idlePct.toFixed(1)} %, GC ${s.gcPct.toFixed(1)} %.`,
    '',
    '| self % | self ms | function | where |',
    '|---:|---:|---|---|',
  ];
  for (const r of s.rows) lines.push(`| ${r.pct.toFixed(1)} | ${r.selfMs.toFixed(0)} | \`${r.fn}\` | ${r.where} |`);
  return lines.join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write('usage: cpuprofile.js FILE.cpuprofile [TOP]\n');
    process.exit(2);
  }
  process.stdout.write(profileTable(summariseProfile(file, Number(process.argv[3] ?? 25))) + '\n');
}
