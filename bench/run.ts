/**
 * `npm run bench`: the proxy side by side with dnsmasq, unbound and dnsdist set up as Consul
 * forwarders (../shared/anchor-configs/), everything on loopback, in one run. What each scenario
 * means, and how to read the table, is in docs/benchmarks.md. Results go to bench/results/
 * (results.md, results.json, ratios.svg).
 *
 *   node dist/bench/run.js [--rounds 5] [--seconds 6] [--quick] [--no-profile] [--profile-only] [--out DIR]
 *
 * Scenarios 1-3 run interleaved: each round runs every scenario against every server, in an order
 * rotated per round, so slow drifts of the shared machine spread over all servers; the table
 * gives medians over rounds. A fifth server runs beside them there, the control (a raw Node dgram
 * responder, bench/lib/control-responder.ts): proxy ÷ control is our pipeline with the runtime and
 * the machine divided out. Every run records the servers' socket drops and the machine's steal
 * time; a latency round counts as undisturbed when neither the control nor dnsmasq dropped a
 * datagram in it, and p99 targets are judged on undisturbed rounds only. Scenarios 4-6 need servers configured differently (a TTL-0 agent, a
 * silent first agent, an empty cache) and run after, once.
 */
import { mkdtempSync, rmSync, writeFileSync, mkdirSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startJanusCluster } from '../test/support/consul-sim/index.js';
import { VERSION } from '../src/version.js';
import { ensureTools, machineInfo } from './lib/tools.js';
import { runDnsperf, type PerfResult } from './lib/dnsperf.js';
import { Asker, startSilentAgent } from './lib/dnsq.js';
import {
  startAgentStandin,
  startRecursor,
  startAnchor,
  startProxy,
  type Server,
  type Addr,
  type AnchorKind,
} from './lib/servers.js';
import { learnReplies, startControl, controlTableFile } from './lib/control.js';
import { udpDrops, cpuTicks, stealBetween } from './lib/kernel.js';
import { freePort, median, percentileSorted, progress, sleep, elapsedSeconds } from './lib/util.js';
import { summariseProfile, profileTable } from './lib/cpuprofile.js';
import { writeReport, type Results, type ScenarioRow } from './lib/report.js';

// ---- options ----------------------------------------------------------------------------------

interface Options {
  rounds: number;
  seconds: number;
  quick: boolean;
  profile: boolean;
  profileOnly: boolean;
  out: string;
  failoverTrials: number;
  failoverCapMs: number;
}

function parseArgs(argv: string[]): Options {
  const o: Options = {
    rounds: 5,
    seconds: 6,
    quick: false,
    profile: true,
    profileOnly: false,
    out: fileURLToPath(new URL('../../bench/results/', import.meta.url)),
    failoverTrials: 10,
    failoverCapMs: 3000,
  };
  let roundsSet = false,
    secondsSet = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const val = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--rounds') {
      o.rounds = Math.max(1, Number(val()));
      roundsSet = true;
    } else if (a === '--seconds') {
      o.seconds = Math.max(1, Number(val()));
      secondsSet = true;
    } else if (a === '--quick') o.quick = true;
    else if (a === '--profile') o.profile = true;
    else if (a === '--no-profile') o.profile = false;
    else if (a === '--profile-only') o.profileOnly = true;
    else if (a === '--out') o.out = val();
    else if (a === '--help' || a === '-h') {
      process.stdout.write(
        'usage: node dist/bench/run.js [--rounds N] [--seconds S] [--quick] [--no-profile] [--profile-only] [--out DIR]\n',
      );
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  if (o.quick) {
    if (!roundsSet) o.rounds = 1;
    if (!secondsSet) o.seconds = 3;
    o.failoverTrials = 4;
    o.failoverCapMs = 1500;
    o.profile = false;
  }
  return o;
}

const SERVERS = ['proxy', 'dnsmasq', 'unbound', 'dnsdist'] as const;
/** Scenarios 1-3 also run the control; scenarios 4-6 compare the DNS servers only. */
const MAIN_SERVERS = [...SERVERS, 'control'] as const;
type ServerName = (typeof MAIN_SERVERS)[number];
const ANCHORS: AnchorKind[] = ['dnsmasq', 'unbound', 'dnsdist'];
/** Cache floor given to the anchors so they cache Consul's TTL-0 answers at all. */
const ANCHOR_MIN_TTL = 60;
const LATENCY_QPS = 20_000;
/** A realistic host's load, beside the 20k q/s of scenario 3. */
const LATENCY_LOW_QPS = 5_000;
/** A client COOKIE option (RFC 7873, option 10: 8 bytes of client cookie), as dig and BIND send. */
const CLIENT_COOKIE = '10:c0ffee0123456789';
/** Undisturbed rounds needed before a p99 target is judged at all. */
const MIN_UNDISTURBED = 3;
const SC_HITS = '1 cache hits, full load';
const SC_COOKIE = '1 cache hits with a client COOKIE, full load';
const SILENT_QPS = 2_000;
const MEMORY_NAMES = 100_000;
const MEMORY_SETTLE_MS = 30_000;
const HITS_FILE =
  ['janus.service.consul A', 'www.example A', '_janus._tcp.service.consul SRV', 'api.example A'].join('\n') + '\n';

// ---- helpers ----------------------------------------------------------------------------------

/** A file of `n` unique names (written just before the run that uses it, removed after). */
function namesFile(dir: string, tag: string, suffix: string, n: number): string {
  const f = join(dir, `names-${tag}.txt`);
  const lines = new Array<string>(n);
  for (let i = 0; i < n; i++) lines[i] = `${tag}-${i}.${suffix} A`;
  writeFileSync(f, lines.join('\n') + '\n');
  return f;
}

const fmt = (x: number, d = 0) =>
  Number.isFinite(x) ? x.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d }) : 'n/a';

type Measured = PerfResult & { cpuPer100k: number; drops: number; stealSeconds: number; stealPct: number };

/**
 * Runs dnsperf while reading the server's CPU time, its socket's drops and the machine's steal
 * time before and after.
 */
async function measured(s: Server, run: () => Promise<PerfResult>): Promise<Measured> {
  const d0 = udpDrops(s.port),
    t0 = cpuTicks();
  const c0 = s.cpu();
  const r = await run();
  const c1 = s.cpu();
  const d1 = udpDrops(s.port),
    t1 = cpuTicks();
  const st = stealBetween(t0, t1);
  return {
    ...r,
    cpuPer100k: r.completed > 0 ? ((c1 - c0) / r.completed) * 1e5 : NaN,
    drops: d1 - d0,
    stealSeconds: st.seconds,
    stealPct: st.pct,
  };
}

const machineNote = (r: Measured) => `drops ${r.drops}, steal ${fmt(r.stealPct, 1)}%`;

// ---- main -------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  progress(`bench: ${o.rounds} round(s) of ${o.seconds} s per run${o.quick ? ' (quick)' : ''}; results to ${o.out}`);
  await ensureTools();
  const machine = machineInfo(VERSION);
  progress(
    `machine: ${machine.nproc} cores, ${machine.cpuModel}; ${Object.entries(machine.versions)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}`,
  );
  const dir = mkdtempSync(join(tmpdir(), 'cdp-bench-'));
  const hitsFile = join(dir, 'hits.txt');
  writeFileSync(hitsFile, HITS_FILE);
  const cleanups: (() => Promise<void> | void)[] = [];
  const results: Results = {
    machine,
    options: { rounds: o.rounds, seconds: o.seconds, quick: o.quick },
    setup: [],
    rows: [],
    ttlZero: [],
    failover: [],
    silent: [],
    memory: [],
    profile: null,
    targets: [],
    notes: [],
    runs: [],
    undisturbed: {},
  };
  try {
    // ---- shared helpers: the simulator (HTTP API, and the TTL-0 agent of scenario 4), the agent
    // stand-in (DNS of scenarios 1-3, 5, 6: the simulator's DNS would be the bottleneck), the recursor.
    const sim = await startJanusCluster({ host: '127.0.0.1' });
    cleanups.push(() => sim.stop());
    const http = `http://127.0.0.1:${sim.httpPort}`;
    const standin = await startAgentStandin(dir, await freePort());
    cleanups.push(() => standin.stop());
    const recursor = await startRecursor(dir, await freePort());
    cleanups.push(() => recursor.stop());
    const agentAddr: Addr = { host: '127.0.0.1', port: standin.port };
    const recAddr: Addr = { host: '127.0.0.1', port: recursor.port };
    results.setup.push(
      `Agent DNS for scenarios 1-3, 5, 6: a dnsmasq stand-in (anchor-configs/agent-dnsmasq.conf: static janus.service.consul, TTL 30, plus *.node.consul for miss names) on 127.0.0.1:${standin.port}; the Consul simulator (test/support/consul-sim/, Janus cluster) serves the HTTP API with the same janus service, so the proxy's health watch is live.`,
      `Agent for scenario 4 and the TTL-0 check: the simulator's own DNS (TTL 0, as a real Consul agent), with its HTTP API.`,
      `Recursor: unbound with local-zone "." static, a static example. zone and a redirect zone m.example. (any name answers, TTL 300): it never iterates to the Internet.`,
      `Anchors cache Consul answers through their TTL floor of ${ANCHOR_MIN_TTL} s: dnsmasq min-cache-ttl=${ANCHOR_MIN_TTL}, unbound cache-min-ttl: ${ANCHOR_MIN_TTL}, dnsdist a response rule raising TTLs to ${ANCHOR_MIN_TTL} before its packet cache (1.7's packet-cache minTTL means "do not cache below", not a floor). Clients then see TTL ${ANCHOR_MIN_TTL}; the proxy's clients see Consul's TTL.`,
      `Proxy: default configuration (cache on, consulTtl 60 s while the health watch is live, hedgeMs 50) except cache.maxEntries 200000, metrics off, log level warn; one Node process.`,
      `Control (scenarios 1-3): a raw Node dgram responder (bench/lib/control-responder.ts) in its own process, socket made and written as the proxy's UDP listener; it answers the hit queries with the proxy's own reply bytes (learned once at start through a relay), ID patched into a copy; other queries (the miss names) get a synthesized one-address answer, so on misses it is the floor of one receive and one send, without forwarding.`,
      `Per run: drops on the server's UDP socket (/proc/net/udp, drops column, before/after) and the machine's steal time (/proc/stat). A latency round (scenario 3, per rate) is undisturbed when neither the control nor dnsmasq dropped a datagram in it; p99 targets need ${MIN_UNDISTURBED} undisturbed rounds, or are "not judged".`,
    );

    if (o.profileOnly) {
      const p = await profileHits(dir, agentAddr, recAddr, http, hitsFile);
      if (p) process.stdout.write(p.table + '\n');
      return;
    }

    // ---- scenarios 1-3: interleaved rounds ----------------------------------------------------
    progress('starting the servers for scenarios 1-3');
    const proxy = await startProxy(dir, {
      port: await freePort(),
      agents: [agentAddr],
      recursor: recAddr,
      http,
      cacheEntries: 200_000,
    });
    cleanups.push(() => proxy.stop());
    const cookieFile = join(dir, 'hits-cookie.txt');
    writeFileSync(cookieFile, HITS_FILE);
    // Warm the proxy's cache, then learn its replies (the control answers with those bytes).
    await runDnsperf({ port: proxy.port, file: hitsFile, maxRuns: 50, clients: 1, outstanding: 4 });
    await runDnsperf({
      port: proxy.port,
      file: cookieFile,
      maxRuns: 50,
      clients: 1,
      outstanding: 4,
      ednsOption: CLIENT_COOKIE,
    });
    const tableFile = controlTableFile(dir);
    const learned = await learnReplies(
      proxy.port,
      [{ file: hitsFile }, { file: cookieFile, ednsOption: CLIENT_COOKIE }],
      tableFile,
    );
    progress(`control: ${learned} prebuilt replies learned from the proxy`);
    const main: Record<ServerName, Server> = {
      proxy,
      dnsmasq: await startAnchor('dnsmasq', dir, {
        port: await freePort(),
        agents: [agentAddr],
        recursor: recAddr,
        minTtl: ANCHOR_MIN_TTL,
        cacheEntries: 10_000,
      }),
      unbound: await startAnchor('unbound', dir, {
        port: await freePort(),
        agents: [agentAddr],
        recursor: recAddr,
        minTtl: ANCHOR_MIN_TTL,
        cacheEntries: 10_000,
      }),
      dnsdist: await startAnchor('dnsdist', dir, {
        port: await freePort(),
        agents: [agentAddr],
        recursor: recAddr,
        minTtl: ANCHOR_MIN_TTL,
        cacheEntries: 10_000,
      }),
      control: await startControl(dir, await freePort(), tableFile),
    };
    for (const s of Object.values(main)) if (s !== proxy) cleanups.push(() => s.stop());
    for (const name of MAIN_SERVERS) {
      await runDnsperf({ port: main[name].port, file: hitsFile, maxRuns: 50, clients: 1, outstanding: 4 });
      await runDnsperf({
        port: main[name].port,
        file: cookieFile,
        maxRuns: 50,
        clients: 1,
        outstanding: 4,
        ednsOption: CLIENT_COOKIE,
      });
    }

    type Raw = {
      hits: Measured;
      hitsCookie: Measured;
      missAgent: Measured;
      missRecursor: Measured;
      latency: Measured;
      latencyLow: Measured;
    };
    const raw: Record<ServerName, Partial<Raw>[]> = { proxy: [], dnsmasq: [], unbound: [], dnsdist: [], control: [] };
    const record = (round: number, scenario: keyof Raw, server: ServerName, r: Measured) => {
      raw[server][round]![scenario] = r;
      results.runs!.push({
        round: round + 1,
        scenario,
        server,
        qps: r.qps,
        lost: r.lost,
        drops: r.drops,
        stealSeconds: r.stealSeconds,
        stealPct: r.stealPct,
        p99: r.latency?.p99,
      });
    };
    const missLines = Math.max(50_000, o.seconds * 90_000);
    for (let round = 0; round < o.rounds; round++) {
      const order = MAIN_SERVERS.map((_, i) => MAIN_SERVERS[(i + round) % MAIN_SERVERS.length]!);
      for (const name of MAIN_SERVERS) raw[name][round] = {};
      for (const name of order) {
        const s = main[name];
        const r = await measured(s, () =>
          runDnsperf({ port: s.port, file: hitsFile, seconds: o.seconds, clients: 8, outstanding: 200 }),
        );
        record(round, 'hits', name, r);
        progress(
          `round ${round + 1}/${o.rounds} (1) cache hits   ${name.padEnd(8)} ${fmt(r.qps)} q/s, ${fmt(r.cpuPer100k, 2)} CPU-s/100k, lost ${r.lost}; ${machineNote(r)}`,
        );
      }
      for (const name of order) {
        const s = main[name];
        const r = await measured(s, () =>
          runDnsperf({
            port: s.port,
            file: cookieFile,
            seconds: o.seconds,
            clients: 8,
            outstanding: 200,
            ednsOption: CLIENT_COOKIE,
          }),
        );
        record(round, 'hitsCookie', name, r);
        progress(
          `round ${round + 1}/${o.rounds} (1) hits+COOKIE  ${name.padEnd(8)} ${fmt(r.qps)} q/s, ${fmt(r.cpuPer100k, 2)} CPU-s/100k, lost ${r.lost}; ${machineNote(r)}`,
        );
      }
      for (const [key, suffix, label] of [
        ['missAgent', 'node.consul', 'agent'],
        ['missRecursor', 'm.example', 'recursor'],
      ] as const) {
        for (const name of order) {
          const s = main[name];
          const f = namesFile(dir, `r${round}${name}${label}`, suffix, missLines);
          const r = await measured(s, () =>
            runDnsperf({ port: s.port, file: f, seconds: o.seconds, clients: 8, outstanding: 100 }),
          );
          rmSync(f);
          if (r.sent > missLines && name !== 'control')
            results.notes.push(
              `${name} ${label} misses round ${round + 1}: ${r.sent} queries > ${missLines} names: the file wrapped and later queries were hits.`,
            );
          record(round, key, name, r);
          progress(
            `round ${round + 1}/${o.rounds} (2) misses→${label.padEnd(8)} ${name.padEnd(8)} ${fmt(r.qps)} q/s, ${fmt(r.cpuPer100k, 2)} CPU-s/100k, lost ${r.lost}; ${machineNote(r)}`,
          );
        }
      }
      for (const [key, qps] of [
        ['latency', LATENCY_QPS],
        ['latencyLow', LATENCY_LOW_QPS],
      ] as const) {
        for (const name of order) {
          const s = main[name];
          const r = await measured(s, () =>
            runDnsperf({
              port: s.port,
              file: hitsFile,
              seconds: o.seconds,
              clients: 4,
              outstanding: 200,
              qps,
              verbose: true,
            }),
          );
          record(round, key, name, r);
          progress(
            `round ${round + 1}/${o.rounds} (3) latency @${qps / 1000}k ${name.padEnd(8)} p50 ${fmt(r.latency!.p50, 3)} ms, p99 ${fmt(r.latency!.p99, 3)} ms, lost ${r.lost}; ${machineNote(r)}`,
          );
        }
      }
    }
    // Undisturbed latency rounds: the floor (control) and the leanest server (dnsmasq) both kept
    // every datagram, so a tail seen then is the server's own, not the machine's.
    const quiet = (key: 'latency' | 'latencyLow') =>
      raw.control
        .map((_, i) => i)
        .filter((i) => raw.control[i]![key]?.drops === 0 && raw.dnsmasq[i]![key]?.drops === 0);
    results.undisturbed = {
      [`${LATENCY_QPS / 1000}k`]: quiet('latency').map((i) => i + 1),
      [`${LATENCY_LOW_QPS / 1000}k`]: quiet('latencyLow').map((i) => i + 1),
    };
    progress(
      `undisturbed latency rounds: ${Object.entries(results.undisturbed)
        .map(([k, v]) => `@${k} ${v.length}/${o.rounds}`)
        .join(', ')}`,
    );
    const med = (name: ServerName, f: (r: Partial<Raw>) => number | undefined) =>
      median(raw[name].map((r) => f(r) ?? NaN));
    const row = (
      scenario: string,
      metric: string,
      better: 'higher' | 'lower',
      f: (r: Partial<Raw>) => number | undefined,
      digits: number,
    ): ScenarioRow => ({
      scenario,
      metric,
      better,
      digits,
      values: Object.fromEntries(MAIN_SERVERS.map((n) => [n, med(n, f)])) as Record<ServerName, number>,
      perRound: Object.fromEntries(MAIN_SERVERS.map((n) => [n, raw[n].map((r) => f(r) ?? NaN)])) as Record<
        ServerName,
        number[]
      >,
    });
    results.rows.push(
      row('1 cache hits, full load', 'q/s', 'higher', (r) => r.hits?.qps, 0),
      row('1 cache hits, full load', 'CPU-s per 100k queries', 'lower', (r) => r.hits?.cpuPer100k, 2),
      row('2 misses to the agent (unique names)', 'q/s', 'higher', (r) => r.missAgent?.qps, 0),
      row('2 misses to the agent (unique names)', 'CPU-s per 100k queries', 'lower', (r) => r.missAgent?.cpuPer100k, 2),
      row('2 misses to the recursor (unique names)', 'q/s', 'higher', (r) => r.missRecursor?.qps, 0),
      row(
        '2 misses to the recursor (unique names)',
        'CPU-s per 100k queries',
        'lower',
        (r) => r.missRecursor?.cpuPer100k,
        2,
      ),
      row(`3 latency, hits at ${LATENCY_QPS / 1000}k q/s`, 'median ms', 'lower', (r) => r.latency?.latency?.p50, 3),
      row(`3 latency, hits at ${LATENCY_QPS / 1000}k q/s`, 'p99 ms', 'lower', (r) => r.latency?.latency?.p99, 3),
      row(SC_COOKIE, 'q/s', 'higher', (r) => r.hitsCookie?.qps, 0),
      row(SC_COOKIE, 'CPU-s per 100k queries', 'lower', (r) => r.hitsCookie?.cpuPer100k, 2),
      row(
        `3 latency, hits at ${LATENCY_LOW_QPS / 1000}k q/s`,
        'median ms',
        'lower',
        (r) => r.latencyLow?.latency?.p50,
        3,
      ),
      row(`3 latency, hits at ${LATENCY_LOW_QPS / 1000}k q/s`, 'p99 ms', 'lower', (r) => r.latencyLow?.latency?.p99, 3),
    );
    results.lost = Object.fromEntries(
      MAIN_SERVERS.map((n) => [
        n,
        raw[n].reduce(
          (a, r) =>
            a + (r.hits?.lost ?? 0) + (r.missAgent?.lost ?? 0) + (r.missRecursor?.lost ?? 0) + (r.latency?.lost ?? 0),
          0,
        ),
      ]),
    );
    results.drops = Object.fromEntries(
      MAIN_SERVERS.map((n) => [
        n,
        raw[n].reduce((a, r) => a + Object.values(r).reduce((b, x) => b + (x?.drops ?? 0), 0), 0),
      ]),
    );

    // ---- profile of the cache-hit path (the main servers are idle now) ------------------------
    if (o.profile) results.profile = await profileHits(dir, agentAddr, recAddr, http, hitsFile);

    // ---- scenario 5: a silent first agent ------------------------------------------------------
    results.silent = await silentAgent(dir, o, agentAddr, recAddr, http);
    for (const s of Object.values(main)) await s.stop();

    // ---- scenario 4 and TTL 0: the simulator's DNS as the agent --------------------------------
    const ttl = await ttlZeroAndFailover(dir, o, sim, http, recAddr);
    results.ttlZero = ttl.ttlZero;
    results.failover = ttl.failover;

    // ---- scenario 6: resident memory with 100k cached names ------------------------------------
    results.memory = await memory(dir, o, agentAddr, recAddr, http);

    results.targets = targets(results);
    results.durationSeconds = Math.round(elapsedSeconds());
    mkdirSync(o.out, { recursive: true });
    const files = writeReport(o.out, results);
    progress(`done in ${Math.round(elapsedSeconds())} s: ${files.join(', ')}`);
    for (const t of results.targets)
      progress(`target ${(t.status ?? (t.met ? 'met' : 'not met')).toUpperCase().padEnd(10)} ${t.target}: ${t.value}`);
  } finally {
    for (const c of cleanups.reverse()) {
      try {
        await c();
      } catch {
        /* already stopped */
      }
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- scenario 5 -------------------------------------------------------------------------------

async function silentAgent(dir: string, o: Options, agentAddr: Addr, recAddr: Addr, http: string) {
  const silent = await startSilentAgent();
  const silentAddr: Addr = { host: '127.0.0.1', port: silent.port };
  const out: Results['silent'] = [];
  const lines = Math.max(10_000, (o.seconds + 2) * SILENT_QPS);
  try {
    for (const name of SERVERS) {
      // Both runs on fresh servers, loaded from the moment they answer (so the first seconds, before
      // a server learns that its first agent is silent, are in the sample): first with the live
      // agent alone (the baseline), then with the silent agent first. A server kept from
      // scenarios 1-3 would carry their cache and its garbage collector into the baseline.
      const run = async (agents: Addr[], tag: string) => {
        const port = await freePort();
        const s =
          name === 'proxy'
            ? await startProxy(dir, { port, agents, recursor: recAddr, http, cacheEntries: 200_000 })
            : await startAnchor(name, dir, {
                port,
                agents,
                recursor: recAddr,
                minTtl: ANCHOR_MIN_TTL,
                cacheEntries: 10_000,
              });
        const f = namesFile(dir, `${tag}${name}`, 'node.consul', lines);
        try {
          return await runDnsperf({
            port: s.port,
            file: f,
            seconds: o.seconds,
            clients: 4,
            outstanding: 100,
            qps: SILENT_QPS,
            verbose: true,
          });
        } finally {
          rmSync(f);
          await s.stop();
        }
      };
      const base = await run([agentAddr], 'sb');
      const r = await run([silentAddr, agentAddr], 'ss');
      const row = {
        server: name,
        baselineP50: base.latency!.p50,
        baselineP99: base.latency!.p99,
        p50: r.latency!.p50,
        p99: r.latency!.p99,
        max: r.latency!.max,
        addedP99: r.latency!.p99 - base.latency!.p99,
        servfail: r.rcodes.SERVFAIL ?? 0,
        lost: r.lost,
        sent: r.sent,
      };
      out.push(row);
      progress(
        `(5) silent first agent ${name.padEnd(8)} p50 ${fmt(row.p50, 2)} ms, p99 ${fmt(row.p99, 2)} ms (one agent: ${fmt(row.baselineP99, 2)}), max ${fmt(row.max, 0)} ms, SERVFAIL ${row.servfail}, lost ${row.lost}/${row.sent}`,
      );
    }
  } finally {
    silent.close();
  }
  return out;
}

// ---- scenario 4 and TTL 0 ---------------------------------------------------------------------

type Sim = Awaited<ReturnType<typeof startJanusCluster>>;

async function setJanus1(http: string, state: 'fail' | 'pass'): Promise<void> {
  const res = await fetch(`${http}/v1/agent/check/${state}/service:janus-1`, { method: 'PUT' });
  await res.arrayBuffer();
  if (!res.ok)
    throw Object.assign(new Error(`simulator refused check/${state}: ${res.status}`), { code: 'EBENCH_SIM' });
}

async function ttlZeroAndFailover(dir: string, o: Options, sim: Sim, http: string, recAddr: Addr) {
  const agent: Addr = { host: '127.0.0.1', port: sim.dnsPort };
  const cfgs: { label: string; kind: 'proxy' | AnchorKind; minTtl: number }[] = [
    { label: 'proxy', kind: 'proxy', minTtl: 0 },
    ...ANCHORS.map((k) => ({ label: `${k} (TTL floor ${ANCHOR_MIN_TTL} s)`, kind: k, minTtl: ANCHOR_MIN_TTL })),
    ...ANCHORS.map((k) => ({ label: `${k} (Consul's TTL 0)`, kind: k, minTtl: 0 })),
  ];
  const ttlZero: Results['ttlZero'] = [];
  const failover: Results['failover'] = [];
  const asker = new Asker();
  try {
    for (const c of cfgs) {
      const port = await freePort();
      const s =
        c.kind === 'proxy'
          ? await startProxy(dir, { port, agents: [agent], recursor: recAddr, http, cacheEntries: 10_000 })
          : await startAnchor(c.kind, dir, {
              port,
              agents: [agent],
              recursor: recAddr,
              minTtl: c.minTtl,
              cacheEntries: 10_000,
            });
      try {
        // Agent queries per 100 client queries (after one warm-up query and a moment for the watch).
        await asker.ask(s.port, 'janus.service.consul');
        await waitNames(asker, s.port, 2, 5000);
        await sleep(300);
        const q0 = sim.queries;
        let ttlSeen = -1;
        for (let i = 0; i < 100; i++) {
          const r = await asker.ask(s.port, 'janus.service.consul');
          if (r && r.ttls.length) ttlSeen = r.ttls[0]!;
        }
        const perHundred = sim.queries - q0;
        ttlZero.push({ server: c.label, agentQueriesPer100: perHundred, clientTtl: ttlSeen });
        // Failover lag: mark janus-1 critical through the HTTP API; time until answers stop naming it.
        const lags: number[] = [];
        let capped = false;
        for (let t = 0; t < o.failoverTrials; t++) {
          await waitNames(asker, s.port, 2, 5000);
          await sleep(250); // changes in real clusters are seconds apart; keep the watch's min interval out of it
          const t0 = performance.now();
          await setJanus1(http, 'fail');
          let lag = NaN;
          while (performance.now() - t0 < o.failoverCapMs) {
            const r = await asker.ask(s.port, 'janus.service.consul', 1, 200);
            if (r && r.rcode === 0 && r.addresses.length > 0 && !r.addresses.includes('127.0.0.11')) {
              lag = performance.now() - t0;
              break;
            }
            await sleep(1);
          }
          await setJanus1(http, 'pass');
          if (Number.isNaN(lag)) {
            capped = true;
            break;
          }
          lags.push(lag);
        }
        const sorted = [...lags].sort((a, b) => a - b);
        const row = {
          server: c.label,
          trials: lags.length,
          capped,
          capMs: o.failoverCapMs,
          medianMs: capped ? NaN : median(lags),
          p99Ms: capped ? NaN : percentileSorted(sorted, 99),
          lagsMs: lags.map((x) => Math.round(x * 10) / 10),
        };
        failover.push(row);
        progress(
          `(4) failover ${c.label.padEnd(28)} agent queries per 100 client queries: ${perHundred} (client TTL ${ttlSeen}); lag ${capped ? `> ${o.failoverCapMs} ms (still naming the critical instance)` : `median ${fmt(row.medianMs, 1)} ms, p99 ${fmt(row.p99Ms, 1)} ms over ${lags.length}`}`,
        );
      } finally {
        await s.stop();
        await setJanus1(http, 'pass');
      }
    }
  } finally {
    asker.close();
  }
  return { ttlZero, failover };
}

/** Waits until an answer names `n` addresses (both Janus instances healthy again), up to `ms`. */
async function waitNames(asker: Asker, port: number, n: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const r = await asker.ask(port, 'janus.service.consul', 1, 200);
    if (r && r.addresses.length >= n) return true;
    await sleep(5);
  }
  return false;
}

// ---- scenario 6 -------------------------------------------------------------------------------

async function memory(dir: string, o: Options, agentAddr: Addr, recAddr: Addr, http: string) {
  const out: Results['memory'] = [];
  const f = namesFile(dir, 'mem', 'm.example', MEMORY_NAMES);
  try {
    for (const name of SERVERS) {
      const port = await freePort();
      const s =
        name === 'proxy'
          ? await startProxy(dir, { port, agents: [agentAddr], recursor: recAddr, http, cacheEntries: 200_000 })
          : await startAnchor(name, dir, {
              port,
              agents: [agentAddr],
              recursor: recAddr,
              minTtl: ANCHOR_MIN_TTL,
              cacheEntries: 200_000,
            });
      try {
        const before = s.rss();
        const warm = await runDnsperf({
          port: s.port,
          file: f,
          maxRuns: 1,
          clients: 4,
          outstanding: 100,
          qps: o.quick ? 40_000 : 25_000,
        });
        await sleep(500);
        const after = s.rss();
        // Then idle: a garbage-collected server (the proxy) frees the fill's garbage only when its
        // collector runs (V8's memory reducer, once allocation stops); C servers do not change.
        await sleep(MEMORY_SETTLE_MS);
        const settled = s.rss();
        out.push({
          server: name,
          rssBeforeMb: before,
          rssAfterMb: after,
          rssSettledMb: settled,
          deltaMb: settled - before,
          answered: warm.completed,
          lost: warm.lost,
        });
        progress(
          `(6) memory ${name.padEnd(8)} RSS ${fmt(before, 1)} MB → ${fmt(after, 1)} MB just after ${fmt(warm.completed)} names → ${fmt(settled, 1)} MB after ${MEMORY_SETTLE_MS / 1000} s idle (lost ${warm.lost})`,
        );
      } finally {
        await s.stop();
      }
    }
  } finally {
    rmSync(f, { force: true });
  }
  return out;
}

// ---- profile ----------------------------------------------------------------------------------

async function profileHits(dir: string, agentAddr: Addr, recAddr: Addr, http: string, hitsFile: string) {
  const profDir = join(dir, 'prof');
  mkdirSync(profDir);
  const s = await startProxy(
    dir,
    { port: await freePort(), agents: [agentAddr], recursor: recAddr, http, cacheEntries: 200_000 },
    ['--cpu-prof', `--cpu-prof-dir=${profDir}`],
  );
  let r: PerfResult;
  try {
    await runDnsperf({ port: s.port, file: hitsFile, maxRuns: 50, clients: 1, outstanding: 4 });
    r = await runDnsperf({ port: s.port, file: hitsFile, seconds: 10, clients: 8, outstanding: 200 });
  } finally {
    await s.stop();
  }
  const file = readdirSync(profDir).find((n) => n.endsWith('.cpuprofile'));
  if (!file) {
    progress('profile: no .cpuprofile written');
    return null;
  }
  const summary = summariseProfile(join(profDir, file), 25);
  progress(
    `profile: cache hits under --cpu-prof ${fmt(r.qps)} q/s; top self time: ${summary.rows
      .slice(0, 5)
      .map((x) => `${x.fn} ${x.pct.toFixed(1)}%`)
      .join(', ')}`,
  );
  return {
    qps: r.qps,
    table: profileTable(summary),
    rows: summary.rows,
    idlePct: summary.idlePct,
    gcPct: summary.gcPct,
  };
}

// ---- targets ----------------------------------------------------------------------------------

function targets(r: Results): Results['targets'] {
  const row = (scenario: string, metric: string) => r.rows.find((x) => x.scenario === scenario && x.metric === metric);
  const v = (metric: string, scenario: string, s: ServerName) =>
    r.rows.find((x) => x.scenario.startsWith(scenario) && x.metric === metric)?.values[s] ?? NaN;
  const t: Results['targets'] = [];
  const verdict = (target: string, ok: boolean, value: string) =>
    t.push({ target, met: ok, status: ok ? 'met' : 'not met', value });
  const hits = v('q/s', '1', 'proxy') / v('q/s', '1', 'dnsmasq');
  verdict('cache hits ≥ 0.5× dnsmasq q/s', hits >= 0.5, `${hits.toFixed(2)}×`);
  const ma = v('q/s', '2 misses to the agent', 'proxy') / v('q/s', '2 misses to the agent', 'dnsmasq');
  verdict('misses to the agent ≥ 1.0× dnsmasq q/s', ma >= 1, `${ma.toFixed(2)}×`);
  const mr = v('q/s', '2 misses to the recursor', 'proxy') / v('q/s', '2 misses to the recursor', 'dnsmasq');
  verdict('misses to the recursor ≥ 1.0× dnsmasq q/s', mr >= 1, `${mr.toFixed(2)}×`);
  const p99 = v('p99 ms', `3 latency, hits at ${LATENCY_QPS / 1000}k`, 'proxy');
  verdict(`p99 < 1 ms at ${LATENCY_QPS / 1000}k q/s on hits`, p99 < 1, `${p99.toFixed(3)} ms`);
  const fo = r.failover.find((x) => x.server === 'proxy');
  verdict(
    'failover lag p99 < 100 ms with caching',
    !!fo && !fo.capped && fo.p99Ms < 100,
    fo ? (fo.capped ? `> ${fo.capMs} ms` : `${fo.p99Ms.toFixed(1)} ms (max of ${fo.trials})`) : 'n/a',
  );
  const si = r.silent.find((x) => x.server === 'proxy');
  verdict(
    'silent first agent: < 100 ms added at p99, no SERVFAIL',
    !!si && si.addedP99 < 100 && si.servfail === 0,
    si ? `+${si.addedP99.toFixed(1)} ms, ${si.servfail} SERVFAIL, ${si.lost} lost` : 'n/a',
  );
  const mem = r.memory.find((x) => x.server === 'proxy');
  verdict(
    '100k cached names < 150 MB RSS (after 30 s idle)',
    !!mem && mem.rssSettledMb < 150,
    mem ? `${mem.rssSettledMb.toFixed(1)} MB (${mem.rssAfterMb.toFixed(1)} MB just after the fill)` : 'n/a',
  );

  // The speed targets: ratios against the control (the runtime's floor here) and unbound.
  const ratioTarget = (target: string, a: number, b: number, limit: number, atMost: boolean, detail: string) => {
    const x = a / b;
    if (!Number.isFinite(x)) {
      t.push({ target, met: false, status: 'not judged', value: `n/a (${detail})` });
      return;
    }
    verdict(target, atMost ? x <= limit : x >= limit, `${x.toFixed(2)}× (${detail})`);
  };
  const hq = row(SC_HITS, 'q/s')?.values,
    hc = row(SC_HITS, 'CPU-s per 100k queries')?.values;
  ratioTarget(
    'hits: CPU per 100k ≤ 1.1× control',
    hc?.proxy ?? NaN,
    hc?.control ?? NaN,
    1.1,
    true,
    `proxy ${(hc?.proxy ?? NaN).toFixed(2)} s, control ${(hc?.control ?? NaN).toFixed(2)} s`,
  );
  ratioTarget(
    'hits: q/s ≥ 0.9× control',
    hq?.proxy ?? NaN,
    hq?.control ?? NaN,
    0.9,
    false,
    `proxy ${Math.round(hq?.proxy ?? NaN)}, control ${Math.round(hq?.control ?? NaN)}`,
  );
  const cq = row(SC_COOKIE, 'q/s')?.values,
    cc = row(SC_COOKIE, 'CPU-s per 100k queries')?.values;
  ratioTarget(
    'hits with a client COOKIE: CPU per 100k ≤ 1.1× control',
    cc?.proxy ?? NaN,
    cc?.control ?? NaN,
    1.1,
    true,
    `proxy ${(cc?.proxy ?? NaN).toFixed(2)} s, control ${(cc?.control ?? NaN).toFixed(2)} s`,
  );
  ratioTarget(
    'hits with a client COOKIE: q/s ≥ 0.9× control',
    cq?.proxy ?? NaN,
    cq?.control ?? NaN,
    0.9,
    false,
    `proxy ${Math.round(cq?.proxy ?? NaN)}, control ${Math.round(cq?.control ?? NaN)}`,
  );
  for (const qps of [LATENCY_LOW_QPS, LATENCY_QPS]) {
    const target = `p99 at ${qps / 1000}k q/s ≤ 1.5× control's p99 (undisturbed rounds)`;
    const pr = row(`3 latency, hits at ${qps / 1000}k q/s`, 'p99 ms')?.perRound;
    const quiet = r.undisturbed?.[`${qps / 1000}k`] ?? [];
    const rounds = r.options.rounds;
    if (!pr || quiet.length < MIN_UNDISTURBED) {
      t.push({
        target,
        met: false,
        status: 'not judged',
        value: `${quiet.length} of ${rounds} round(s) undisturbed, ${MIN_UNDISTURBED} needed`,
      });
      continue;
    }
    const mp = median(quiet.map((i) => pr.proxy[i - 1] ?? NaN)),
      mc = median(quiet.map((i) => pr.control[i - 1] ?? NaN));
    ratioTarget(
      target,
      mp,
      mc,
      1.5,
      true,
      `proxy ${mp.toFixed(3)} ms, control ${mc.toFixed(3)} ms, medians over ${quiet.length} of ${rounds} undisturbed rounds`,
    );
  }
  const hitCpu = hc?.proxy ?? NaN;
  for (const [label, sc] of [
    ['agent', '2 misses to the agent (unique names)'],
    ['recursor', '2 misses to the recursor (unique names)'],
  ] as const) {
    const q = row(sc, 'q/s')?.values,
      c = row(sc, 'CPU-s per 100k queries')?.values;
    ratioTarget(
      `misses to the ${label}: q/s ≥ 1.0× unbound`,
      q?.proxy ?? NaN,
      q?.unbound ?? NaN,
      1.0,
      false,
      `proxy ${Math.round(q?.proxy ?? NaN)}, unbound ${Math.round(q?.unbound ?? NaN)}`,
    );
    ratioTarget(
      `misses to the ${label}: CPU per 100k ≤ 2.2× the proxy's hit CPU`,
      c?.proxy ?? NaN,
      hitCpu,
      2.2,
      true,
      `${(c?.proxy ?? NaN).toFixed(2)} s against ${hitCpu.toFixed(2)} s on hits`,
    );
  }
  verdict(
    '100k cached names < 100 MB RSS (after 30 s idle)',
    !!mem && mem.rssSettledMb < 100,
    mem ? `${mem.rssSettledMb.toFixed(1)} MB (idle at start ${mem.rssBeforeMb.toFixed(1)} MB)` : 'n/a',
  );
  return t;
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
