/**
 * Soak (issue 9): mixed traffic through the real CLI for a set time while faults are switched on
 * and off on the Consul agents (two simulators) and the Consul HTTP API, next to a real unbound
 * recursor. Reports, per sample interval, the proxy's resident memory and heap, event-loop lag
 * (from its /metrics: consul_dns_proxy_nodejs_eventloop_lag_p99_seconds / _max_seconds), queries
 * sent, answers by rcode and client timeouts, as a table on stdout and as JSON in
 * bench/results/soak.json.
 *
 *   node dist/bench/soak.js [--minutes 10] [--qps 200] [--period-s 20] [--sample-s 10]
 *
 * Loopback only. Expected while faults are on: no client timeouts while one agent is healthy;
 * SERVFAIL (not silence) while both agents are down; memory flat across fault cycles.
 *
 * Fails (exit 1) when the proxy died, or when any query got no answer within the proxy's
 * upstream.deadlineMs + 100 ms while it lived: every exchange ends by its deadline, so a later
 * answer or none at all is a bug whatever the faults are.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { startJanusCluster, type Sim } from '../test/support/consul-sim/index.js';
import { startProxy, startUnbound } from '../test/support/proc.js';
import { queryMessage } from '../test/support/query.js';

const HOST = '127.0.0.1';
const { values: opt } = parseArgs({
  options: {
    minutes: { type: 'string', default: '10' },
    qps: { type: 'string', default: '200' },
    'period-s': { type: 'string', default: '20' },
    'sample-s': { type: 'string', default: '10' },
    out: { type: 'string', default: new URL('../../bench/results/soak.json', import.meta.url).pathname },
  },
});

interface Phase {
  name: string;
  apply(a: Sim, b: Sim): Promise<void>;
}
const clear = async (a: Sim, b: Sim) => {
  await a.setFault({ dns: null, http: null });
  await b.setFault({ dns: null, http: null });
};
const PHASES: Phase[] = [
  { name: 'healthy', apply: clear },
  {
    name: 'agent A silent',
    apply: async (a, b) => {
      await clear(a, b);
      await a.setFault({ dns: 'silent' });
    },
  },
  {
    name: 'agent A slow 3s',
    apply: async (a, b) => {
      await clear(a, b);
      await a.setFault({ dns: 'slow', delayMs: 3000 });
    },
  },
  {
    name: 'agent A SERVFAIL + HTTP 500',
    apply: async (a, b) => {
      await clear(a, b);
      await a.setFault({ dns: 'servfail', http: '500' });
    },
  },
  {
    name: 'agent A garbage',
    apply: async (a, b) => {
      await clear(a, b);
      await a.setFault({ dns: 'garbage' });
    },
  },
  {
    name: 'agent A wrong ID',
    apply: async (a, b) => {
      await clear(a, b);
      await a.setFault({ dns: 'wrongid' });
    },
  },
  {
    name: 'HTTP API down',
    apply: async (a, b) => {
      await clear(a, b);
      await a.setFault({ http: 'refuse' });
    },
  },
  {
    name: 'both agents down',
    apply: async (a, b) => {
      await clear(a, b);
      await a.setFault({ dns: 'silent' });
      await b.setFault({ dns: 'refuse' });
    },
  },
];

/** Longer than the proxy's upstream.deadlineMs (3 s): a late SERVFAIL is an answer, not a timeout. */
const CLIENT_TIMEOUT_MS = 4000;
/** The proxy runs with the default upstream.deadlineMs; an answer later than this + 100 ms is late. */
const DEADLINE_MS = 3000;
const LATE_MS = DEADLINE_MS + 100;

const RCODES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED'];

/** `late`: answered, but after LATE_MS; `timeouts`: no answer within CLIENT_TIMEOUT_MS. */
interface Window {
  sent: number;
  rcodes: Record<string, number>;
  timeouts: number;
  late: number;
  tc: number;
}
const emptyWindow = (): Window => ({ sent: 0, rcodes: {}, timeouts: 0, late: 0, tc: 0 });

async function main(): Promise<void> {
  const minutes = Number(opt.minutes);
  const qps = Number(opt.qps);
  const periodMs = Number(opt['period-s']) * 1000;
  const sampleMs = Number(opt['sample-s']) * 1000;
  const a = await startJanusCluster();
  const b = await startJanusCluster();
  for (const s of [a, b])
    for (let i = 0; i < 20; i++)
      s.register({ id: `web-${i}`, name: 'web', node: `w${i}`, nodeAddress: `127.0.2.${i + 1}`, port: 80 });
  const ub = await startUnbound();
  const p = await startProxy([
    '--agent',
    `${HOST}:${a.dnsPort}`,
    '--agent',
    `${HOST}:${b.dnsPort}`,
    '--recursor',
    `${HOST}:${ub.port}`,
    '--consul-http',
    `http://${HOST}:${a.httpPort}`,
    '--metrics',
    `${HOST}:0`,
  ]);
  const pid = p.proc.pid!;
  const rssKb = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
  const scrape = async () => {
    const text = await (await fetch(`http://${p.metrics}/metrics`)).text();
    const v = (n: string) =>
      Number(
        text
          .split('\n')
          .find((l) => l.startsWith(n + ' '))
          ?.split(' ')[1] ?? NaN,
      );
    return {
      lagP99Ms: +(v('consul_dns_proxy_nodejs_eventloop_lag_p99_seconds') * 1000).toFixed(1),
      lagMaxMs: +(v('consul_dns_proxy_nodejs_eventloop_lag_max_seconds') * 1000).toFixed(1),
      heapMb: +(v('consul_dns_proxy_nodejs_heap_size_used_bytes') / 1048576).toFixed(1),
      cacheEntries: v('consul_dns_proxy_cache_entries'),
    };
  };

  // Client: one UDP socket, IDs matched to send times; 5% of queries over a fresh TCP connection.
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, HOST, () => r()));
  let win = emptyWindow();
  const pending = new Map<number, { at: number; win: Window }>();
  const record = (w: Window, m: Buffer, sentAt: number) => {
    if (Date.now() - sentAt > LATE_MS) w.late++;
    const rc = RCODES[m[3]! & 0xf] ?? 'other';
    w.rcodes[rc] = (w.rcodes[rc] ?? 0) + 1;
    if (m[2]! & 2) w.tc++;
  };
  sock.on('message', (m) => {
    if (m.length < 12) return;
    const e = pending.get(m.readUInt16BE(0));
    if (!e) return;
    pending.delete(m.readUInt16BE(0));
    record(e.win, m, e.at);
  });
  const viaTcp = (msg: Buffer, w: Window) => {
    const sentAt = Date.now();
    const s = net.connect(p.port, HOST);
    let buf = Buffer.alloc(0);
    const t = setTimeout(() => {
      w.timeouts++;
      s.destroy();
    }, CLIENT_TIMEOUT_MS);
    s.on('error', () => {
      /* counted by the timer */
    });
    s.on('connect', () => {
      const l = Buffer.alloc(2);
      l.writeUInt16BE(msg.length);
      s.write(Buffer.concat([l, msg]));
    });
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        clearTimeout(t);
        record(w, buf.subarray(2), sentAt);
        s.destroy();
      }
    });
  };
  let nextId = 1;
  let seq = 0;
  const names = (): [string, number] => {
    const k = seq++;
    switch (k % 10) {
      case 0:
      case 1:
      case 2:
        return ['janus.service.consul', 1];
      case 3:
        return ['web.service.consul', 33];
      case 4:
        return ['janus.service.starlings', 1];
      case 5:
        return [`server${(k % 2) + 1}.janus.service.consul`, 1];
      case 6:
        return [`miss${k}.service.consul`, 1];
      case 7:
        return ['www.example', 1];
      case 8:
        return [`nx${k}.example`, 1];
      default:
        return ['api.example', 28];
    }
  };
  const tick = setInterval(() => {
    const now = Date.now();
    for (const [id, e] of pending)
      if (now - e.at > CLIENT_TIMEOUT_MS) {
        pending.delete(id);
        e.win.timeouts++;
      }
    for (let i = 0; i < qps / 20; i++) {
      const [n, t] = names();
      let id = nextId++ & 0xffff;
      if (id === 0) id = nextId++ & 0xffff;
      const msg = queryMessage(id, n, t);
      win.sent++;
      if (seq % 20 === 0) viaTcp(msg, win);
      else {
        pending.set(id, { at: now, win });
        sock.send(msg, p.port, HOST);
      }
    }
  }, 50);

  const rows: Record<string, unknown>[] = [];
  const t0 = Date.now();
  const end = t0 + minutes * 60_000;
  let phaseIdx = 0;
  let phase = PHASES[0]!;
  let nextPhaseAt = t0 + periodMs;
  const header =
    ' t(s) | phase                        |  sent | NOERROR | NXDOMAIN | SERVFAIL | other | timeouts |  late | RSS MB | heap MB | lag p99 ms | lag max ms | cache';
  console.log(header);
  console.log('-'.repeat(header.length));
  let phaseLabel = phase.name;
  let samples = 0;
  while (Date.now() < end) {
    const wake = Math.min(nextPhaseAt, t0 + (samples + 1) * sampleMs, end);
    await new Promise((r) => setTimeout(r, Math.max(0, wake - Date.now())));
    if (Date.now() >= nextPhaseAt && Date.now() < end) {
      phaseIdx = (phaseIdx + 1) % PHASES.length;
      phase = PHASES[phaseIdx]!;
      await phase.apply(a, b);
      phaseLabel += ` → ${phase.name}`;
      nextPhaseAt += periodMs;
    }
    if (Date.now() >= t0 + (samples + 1) * sampleMs || Date.now() >= end) {
      // Give this window's last queries their time to answer before reading it.
      const w = win;
      win = emptyWindow();
      const label = phaseLabel;
      phaseLabel = phase.name;
      samples++;
      const m = await scrape();
      const at = { t: Math.round((Date.now() - t0) / 1000), rssMb: +(rssKb() / 1024).toFixed(1) };
      setTimeout(() => {
        const row = { t: at.t, phase: label, ...w, rssMb: at.rssMb, ...m };
        rows.push(row);
        const other = Object.entries(w.rcodes)
          .filter(([k]) => !['NOERROR', 'NXDOMAIN', 'SERVFAIL'].includes(k))
          .reduce((s, [, v]) => s + v, 0);
        console.log(
          `${String(row.t).padStart(5)} | ${label.slice(0, 28).padEnd(28)} | ${String(w.sent).padStart(5)} | ${String(w.rcodes.NOERROR ?? 0).padStart(7)} | ${String(w.rcodes.NXDOMAIN ?? 0).padStart(8)} | ${String(w.rcodes.SERVFAIL ?? 0).padStart(8)} | ${String(other).padStart(5)} | ${String(w.timeouts).padStart(8)} | ${String(w.late).padStart(5)} | ${String(row.rssMb).padStart(6)} | ${String(m.heapMb).padStart(7)} | ${String(m.lagP99Ms).padStart(10)} | ${String(m.lagMaxMs).padStart(10)} | ${String(m.cacheEntries).padStart(5)}`,
        );
      }, CLIENT_TIMEOUT_MS + 100);
    }
  }
  clearInterval(tick);
  await new Promise((r) => setTimeout(r, CLIENT_TIMEOUT_MS + 300));
  sock.close();
  const alive = p.proc.exitCode === null;
  const totals = rows.reduce<{ sent: number; timeouts: number; late: number; servfail: number }>(
    (s, r) => {
      const w = r as unknown as Window;
      return {
        sent: s.sent + w.sent,
        timeouts: s.timeouts + w.timeouts,
        late: s.late + w.late,
        servfail: s.servfail + (w.rcodes.SERVFAIL ?? 0),
      };
    },
    { sent: 0, timeouts: 0, late: 0, servfail: 0 },
  );
  const rss = rows.map((r) => r.rssMb as number);
  const summary = {
    minutes,
    qps,
    periodS: periodMs / 1000,
    alive,
    ...totals,
    rssMbFirst: rss[0],
    rssMbLast: rss[rss.length - 1],
    rssMbMax: Math.max(...rss),
    lagP99MsMax: Math.max(...rows.map((r) => r.lagP99Ms as number)),
  };
  console.log(`\nsummary: ${JSON.stringify(summary)}`);
  mkdirSync(new URL('.', `file://${opt.out}`).pathname, { recursive: true });
  writeFileSync(opt.out, JSON.stringify({ summary, samples: rows }, null, 2) + '\n');
  console.log(`written: ${opt.out}`);
  await p.stop();
  await ub.stop();
  await a.stop();
  await b.stop();
  const unanswered = totals.timeouts + totals.late;
  if (alive && unanswered > 0)
    console.log(
      `FAIL: ${totals.timeouts} queries unanswered and ${totals.late} answered after ${LATE_MS} ms while the proxy was running`,
    );
  if (!alive) console.log('FAIL: the proxy exited during the soak');
  process.exitCode = alive && unanswered === 0 ? 0 : 1;
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
