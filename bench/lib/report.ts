/**
 * Writes the bench's results: results.json (everything, per round), results.md (the tables the
 * README quotes) and ratios.svg (proxy/anchor per scenario, drawn by hand: no chart package).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { MachineInfo } from './tools.js';
import type { SelfTime } from './cpuprofile.js';

type ServerName = 'proxy' | 'dnsmasq' | 'unbound' | 'dnsdist' | 'control';
const SERVERS: ServerName[] = ['proxy', 'dnsmasq', 'unbound', 'dnsdist', 'control'];
const ANCHORS: ServerName[] = ['dnsmasq', 'unbound', 'dnsdist'];
/** What the proxy is divided by in the summary table: the anchors, then the control. */
const DIVISORS: ServerName[] = [...ANCHORS, 'control'];

export interface ScenarioRow {
  scenario: string;
  metric: string;
  better: 'higher' | 'lower';
  digits: number;
  values: Record<ServerName, number>;
  perRound?: Record<ServerName, number[]>;
}

export interface Results {
  machine: MachineInfo;
  options: { rounds: number; seconds: number; quick: boolean };
  durationSeconds?: number;
  setup: string[];
  rows: ScenarioRow[];
  lost?: Record<string, number>;
  ttlZero: { server: string; agentQueriesPer100: number; clientTtl: number }[];
  failover: {
    server: string;
    trials: number;
    capped: boolean;
    capMs: number;
    medianMs: number;
    p99Ms: number;
    lagsMs: number[];
  }[];
  silent: {
    server: ServerName;
    baselineP50: number;
    baselineP99: number;
    p50: number;
    p99: number;
    max: number;
    addedP99: number;
    servfail: number;
    lost: number;
    sent: number;
  }[];
  memory: {
    server: ServerName;
    rssBeforeMb: number;
    rssAfterMb: number;
    rssSettledMb: number;
    deltaMb: number;
    answered: number;
    lost: number;
  }[];
  profile: { qps: number; table: string; rows: SelfTime[]; idlePct: number; gcPct: number } | null;
  /** `status` is 'not judged' when the data cannot decide (too few undisturbed rounds); `met` is then false. */
  targets: { target: string; met: boolean; status?: 'met' | 'not met' | 'not judged'; value: string }[];
  notes: string[];
  /** Every run of scenarios 1-3 with what the kernel saw during it. */
  runs?: {
    round: number;
    scenario: string;
    server: ServerName;
    qps: number;
    lost: number;
    drops: number;
    stealSeconds: number;
    stealPct: number;
    p99?: number | undefined;
  }[];
  /** Per latency rate ('5k', '20k'): the rounds (1-based) in which neither the control nor dnsmasq dropped a datagram. */
  undisturbed?: Record<string, number[]>;
  /** Socket drops over all runs of scenarios 1-3, per server. */
  drops?: Record<string, number>;
}

/** Short names of the run kinds of scenarios 1-3 (the `scenario` keys of `runs`). */
const RUN_LABELS: Record<string, string> = {
  hits: '1 hits',
  hitsCookie: '1 hits + COOKIE',
  missAgent: '2 misses → agent',
  missRecursor: '2 misses → recursor',
  latency: '3 latency @20k',
  latencyLow: '3 latency @5k',
};

const num = (x: number, d: number) =>
  Number.isFinite(x) ? x.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d }) : 'n/a';
const ratio = (a: number, b: number) => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? a / b : NaN);

/** The rows of the summary table and chart: scenarios 1-3 as measured, 5 and 6 folded in. */
function summaryRows(r: Results): ScenarioRow[] {
  // Grouped by scenario number for reading; results.json keeps the order rows were measured in.
  const rank = (x: ScenarioRow) => parseInt(x.scenario, 10);
  const rows = r.rows
    .map((x, i) => ({ x, i }))
    .sort((a, b) => rank(a.x) - rank(b.x) || a.i - b.i)
    .map((y) => y.x);
  const pick = <T extends { server: string }>(list: T[], f: (x: T) => number) =>
    Object.fromEntries(SERVERS.map((s) => [s, f(list.find((x) => x.server === s) ?? ({} as T)) ?? NaN])) as Record<
      ServerName,
      number
    >;
  if (r.silent.length)
    rows.push({
      scenario: '5 silent first agent (misses at 2k q/s)',
      metric: 'p99 ms',
      better: 'lower',
      digits: 2,
      values: pick(r.silent, (x) => x.p99),
    });
  if (r.memory.length) {
    rows.push({
      scenario: '6 100k cached names',
      metric: 'RSS MB just after the fill',
      better: 'lower',
      digits: 1,
      values: pick(r.memory, (x) => x.rssAfterMb),
    });
    rows.push({
      scenario: '6 100k cached names',
      metric: 'RSS MB after 30 s idle',
      better: 'lower',
      digits: 1,
      values: pick(r.memory, (x) => x.rssSettledMb),
    });
  }
  return rows;
}

function markdown(r: Results): string {
  const m = r.machine;
  const L: string[] = [];
  L.push('# Benchmark results', '');
  L.push(
    `Run ${m.date} on ${m.nproc} cores (${m.cpuModel}), ${m.memGb} GB, Linux ${m.kernel}; ${r.options.rounds} round(s), ${r.options.seconds} s per run${r.options.quick ? ' (--quick)' : ''}; took ${r.durationSeconds ?? '?'} s.`,
  );
  L.push(
    `Versions: ${Object.entries(m.versions)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}.`,
  );
  L.push(
    'Rerun: `npm run bench` (see docs/benchmarks.md). Everything runs on loopback on the same cores as the load generator (dnsperf); other work on the machine shows up as noise: compare servers within one run, not across runs.',
    '',
  );
  L.push('## Setup', '', ...r.setup.map((s) => `- ${s}`), '');
  L.push('## Summary (medians over rounds; ratio = proxy ÷ anchor or control)', '');
  L.push(
    "The control is a raw Node dgram responder sending the proxy's own reply bytes (scenarios 1-3 only): the floor of this runtime on this machine. On misses it does not forward (one receive, one send per query).",
    '',
  );
  L.push(
    '| scenario | metric | proxy | dnsmasq | unbound | dnsdist | control | ÷ dnsmasq | ÷ unbound | ÷ dnsdist | ÷ control |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  );
  for (const row of summaryRows(r)) {
    const v = row.values;
    L.push(
      `| ${row.scenario} | ${row.metric} (${row.better} is better) | ${SERVERS.map((s) => num(v[s], row.digits)).join(' | ')} | ${DIVISORS.map((a) => num(ratio(v.proxy, v[a]), 2)).join(' | ')} |`,
    );
  }
  if (r.lost)
    L.push(
      '',
      `Queries lost over scenarios 1-3 (dnsperf timeouts, 2 s): ${Object.entries(r.lost)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ')}.`,
    );
  if (r.drops)
    L.push(
      '',
      `Datagrams dropped on the servers' sockets over scenarios 1-3 (/proc/net/udp): ${Object.entries(r.drops)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ')}.`,
    );
  const spreadRows = r.rows.filter((x) => x.perRound && x.perRound.proxy.length > 1);
  if (spreadRows.length) {
    L.push(
      '',
      '### Spread (min–max over rounds)',
      '',
      '| scenario | metric | ' + SERVERS.join(' | ') + ' |',
      '|---|---|' + SERVERS.map(() => '---:|').join(''),
    );
    for (const row of spreadRows) {
      L.push(
        `| ${row.scenario} | ${row.metric} | ${SERVERS.map((s) => {
          const xs = (row.perRound?.[s] ?? []).filter((x) => Number.isFinite(x));
          return xs.length ? `${num(Math.min(...xs), row.digits)}–${num(Math.max(...xs), row.digits)}` : 'n/a';
        }).join(' | ')} |`,
      );
    }
  }
  if (r.runs?.length) {
    const scenarios = [...new Set(r.runs.map((x) => x.scenario))];
    const rounds = [...new Set(r.runs.map((x) => x.round))];
    L.push('', '### What the kernel saw per run (socket drops / machine steal %)', '');
    if (r.undisturbed)
      L.push(
        `Undisturbed latency rounds (neither the control nor dnsmasq dropped a datagram): ${Object.entries(
          r.undisturbed,
        )
          .map(
            ([k, v]) => `at ${k} q/s ${v.length ? `round ${v.join(', ')}` : 'none'} (${v.length} of ${rounds.length})`,
          )
          .join('; ')}.`,
        '',
      );
    L.push('| round | scenario | ' + SERVERS.join(' | ') + ' |', '|---:|---|' + SERVERS.map(() => '---:|').join(''));
    for (const rd of rounds) {
      for (const sc of scenarios) {
        L.push(
          `| ${rd} | ${RUN_LABELS[sc] ?? sc} | ${SERVERS.map((s) => {
            const x = r.runs!.find((y) => y.round === rd && y.scenario === sc && y.server === s);
            return x ? `${x.drops} / ${num(x.stealPct, 1)}%` : 'n/a';
          }).join(' | ')} |`,
        );
      }
    }
  }
  if (r.rows.some((x) => x.perRound && x.perRound.proxy.length > 1)) {
    L.push(
      '',
      '<details><summary>Per round</summary>',
      '',
      '| scenario | metric | ' + SERVERS.join(' | ') + ' |',
      '|---|---|' + SERVERS.map(() => '---|').join(''),
    );
    for (const row of r.rows)
      L.push(
        `| ${row.scenario} | ${row.metric} | ${SERVERS.map((s) => (row.perRound?.[s] ?? []).map((x) => num(x, row.digits)).join(' / ')).join(' | ')} |`,
      );
    L.push('', '</details>');
  }
  L.push('', '## Targets', '', '| target | met | value |', '|---|---|---|');
  for (const t of r.targets) {
    const status = t.status ?? (t.met ? 'met' : 'not met');
    L.push(
      `| ${t.target} | ${status === 'met' ? 'met' : status === 'not met' ? '**not met**' : '*not judged*'} | ${t.value} |`,
    );
  }
  L.push('', "## Consul's TTL 0 and failover (scenario 4; agent = the simulator's DNS, TTL 0)", '');
  L.push(
    '| server | agent queries per 100 client queries | TTL clients see | failover lag median | failover lag p99 (max of trials) | trials |',
    '|---|---:|---:|---:|---:|---:|',
  );
  for (const f of r.failover) {
    const z = r.ttlZero.find((x) => x.server === f.server);
    const lag = (x: number) => (f.capped ? `> ${f.capMs} ms` : `${num(x, 1)} ms`);
    L.push(
      `| ${f.server} | ${z?.agentQueriesPer100 ?? 'n/a'} | ${z?.clientTtl ?? 'n/a'} | ${lag(f.medianMs)} | ${lag(f.p99Ms)} | ${f.trials} |`,
    );
  }
  L.push(
    '',
    'An anchor with a TTL floor keeps naming the critical instance until its cached copy expires (up to the floor, 60 s); the measurement stops at the cap. Without a floor an anchor asks the agent for every client query (no cache at all), which is why its lag is one round trip. The proxy caches and still drops the answer when the health watch reports the change.',
  );
  L.push('', '## Silent first agent (scenario 5: unique agent names at 2k q/s from the moment the server starts)', '');
  L.push(
    '| server | p50 ms | p99 ms | p99 with one live agent | added at p99 | max ms | SERVFAIL | lost (of sent) |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
  );
  for (const s of r.silent)
    L.push(
      `| ${s.server} | ${num(s.p50, 2)} | ${num(s.p99, 2)} | ${num(s.baselineP99, 2)} | ${num(s.addedP99, 2)} | ${num(s.max, 0)} | ${s.servfail} | ${s.lost} (of ${s.sent}) |`,
    );
  L.push('', '## Memory (scenario 6: 100k distinct recursor names, each cached once)', '');
  L.push(
    '| server | RSS before MB | RSS just after the fill MB | RSS after 30 s idle MB | added MB (idle) | names answered | lost |',
    '|---|---:|---:|---:|---:|---:|---:|',
  );
  for (const s of r.memory)
    L.push(
      `| ${s.server} | ${num(s.rssBeforeMb, 1)} | ${num(s.rssAfterMb, 1)} | ${num(s.rssSettledMb, 1)} | ${num(s.deltaMb, 1)} | ${s.answered} | ${s.lost} |`,
    );
  if (r.profile) {
    L.push(
      '',
      `## Profile of the proxy on cache hits (node --cpu-prof, dnsperf full load 10 s: ${num(r.profile.qps, 0)} q/s under the profiler)`,
      '',
      r.profile.table,
    );
  }
  if (r.notes.length) L.push('', '## Notes', '', ...r.notes.map((n) => `- ${n}`));
  L.push('', '![proxy ÷ anchor per scenario](ratios.svg)', '');
  return L.join('\n');
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** Horizontal bars of proxy ÷ anchor (and ÷ control) on a log scale, solid where the proxy is better. */
function svg(r: Results): string {
  const rows = summaryRows(r);
  const W = 900,
    left = 330,
    right = 40,
    barH = 9,
    gap = 3,
    groupGap = 14,
    top = 56;
  const groupH = DIVISORS.length * (barH + gap) + groupGap;
  const H = top + rows.length * groupH + 50;
  const lo = Math.log2(1 / 16),
    hi = Math.log2(16);
  const x = (v: number) =>
    left + ((Math.log2(Math.min(16, Math.max(1 / 16, v))) - lo) / (hi - lo)) * (W - left - right);
  const colours: Record<string, string> = {
    dnsmasq: '#4e79a7',
    unbound: '#9c755f',
    dnsdist: '#b07aa1',
    control: '#59a14f',
  };
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`,
  );
  out.push(`<rect width="${W}" height="${H}" fill="#fff"/>`);
  out.push(
    `<text x="${W / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">consul-dns-proxy ÷ anchor and ÷ control (log scale; median of ${r.options.rounds} round(s), ${esc(r.machine.date.slice(0, 10))})</text>`,
  );
  out.push(
    `<text x="${W / 2}" y="34" text-anchor="middle" fill="#555">solid bar: the proxy is better on that metric; hatched: worse. Left of 1× is smaller.</text>`,
  );
  out.push(
    '<defs><pattern id="h" width="4" height="4" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="2" height="4" fill="#d62728"/></pattern></defs>',
  );
  for (const t of [1 / 16, 1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8, 16]) {
    const tx = x(t);
    out.push(
      `<line x1="${tx}" y1="${top - 6}" x2="${tx}" y2="${H - 40}" stroke="${t === 1 ? '#000' : '#ddd'}" stroke-width="${t === 1 ? 1.5 : 1}"/>`,
    );
    out.push(`<text x="${tx}" y="${H - 26}" text-anchor="middle">${t >= 1 ? `${t}×` : `1/${1 / t}×`}</text>`);
  }
  rows.forEach((row, i) => {
    const gy = top + i * groupH;
    out.push(`<text x="${left - 8}" y="${gy + 10}" text-anchor="end" font-weight="bold">${esc(row.scenario)}</text>`);
    out.push(
      `<text x="${left - 8}" y="${gy + 23}" text-anchor="end" fill="#555">${esc(row.metric)} (${row.better} is better)</text>`,
    );
    DIVISORS.forEach((a, j) => {
      const v = ratio(row.values.proxy, row.values[a]);
      const y = gy + j * (barH + gap);
      if (!Number.isFinite(v)) {
        out.push(`<text x="${x(1) + 4}" y="${y + barH - 1}" fill="#999">${a}: n/a</text>`);
        return;
      }
      const better = row.better === 'higher' ? v >= 1 : v <= 1;
      const x0 = Math.min(x(1), x(v)),
        w = Math.max(1, Math.abs(x(v) - x(1)));
      out.push(
        `<rect x="${x0.toFixed(1)}" y="${y}" width="${w.toFixed(1)}" height="${barH}" fill="${better ? colours[a] : 'url(#h)'}" stroke="${colours[a]}"/>`,
      );
      const lx = v >= 1 ? x0 + w + 4 : x0 - 4;
      out.push(
        `<text x="${lx.toFixed(1)}" y="${y + barH - 1}" text-anchor="${v >= 1 ? 'start' : 'end'}" fill="#333">${a} ${num(v, 2)}×</text>`,
      );
    });
  });
  out.push(
    `<text x="${left}" y="${H - 8}" fill="#555">${esc(`${r.machine.nproc} cores, ${r.machine.cpuModel}; node ${r.machine.versions.node}, dnsmasq ${r.machine.versions.dnsmasq}, unbound ${r.machine.versions.unbound}, dnsdist ${r.machine.versions.dnsdist}`)}</text>`,
  );
  out.push('</svg>');
  return out.join('\n') + '\n';
}

export function writeReport(dir: string, r: Results): string[] {
  const files = [join(dir, 'results.json'), join(dir, 'results.md'), join(dir, 'ratios.svg')];
  writeFileSync(
    files[0]!,
    JSON.stringify(r, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2) + '\n',
  );
  writeFileSync(files[1]!, markdown(r));
  writeFileSync(files[2]!, svg(r));
  return files;
}
