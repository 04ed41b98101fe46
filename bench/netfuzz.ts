/**
 * Network fuzz (issue 9): throws random and mutated DNS packets over UDP and TCP at a running proxy
 * on loopback, then checks that it still answers correctly and that its resident memory ended
 * within 20% of where it stood after a warm-up. Seeds are the real dig queries in
 * test/fixtures/corpus/queries-dig (falling back to /work/shared/corpus/queries-dig); mutations come
 * from the wire fuzzer's `mutate` (test/support/fuzz.ts).
 *
 *   node dist/bench/netfuzz.js                       # starts its own simulator + proxy (the CLI)
 *   node dist/bench/netfuzz.js --proxy-port 8053 --proxy-pid 1234 [--agent-name janus.service.consul]
 *   options: --packets 100000 --warmup 20000 --seed 1 --rate 6000 (packets per second) --tcp-share 0.15
 *
 * Loopback only (team rule): the target host is always 127.0.0.1. Exit code 0 when the proxy is
 * alive, answers correctly and the memory check holds; 1 otherwise. Prints a summary and one JSON
 * line (figures for the README / docs/hardening.md).
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Rng, mutate } from '../test/support/fuzz.js';
import { startJanusCluster, type Sim } from '../test/support/consul-sim/index.js';
import { startProxy, type ProxyProc } from '../test/support/proc.js';
import { queryMessage } from '../test/support/query.js';

const HOST = '127.0.0.1';

const { values: opt } = parseArgs({
  options: {
    'proxy-port': { type: 'string' },
    'proxy-pid': { type: 'string' },
    'agent-name': { type: 'string', default: 'janus.service.consul' },
    packets: { type: 'string', default: '100000' },
    seed: { type: 'string', default: '1' },
    rate: { type: 'string', default: '6000' },
    'tcp-share': { type: 'string', default: '0.15' },
    warmup: { type: 'string', default: '20000' },
  },
});

function loadSeeds(): Buffer[] {
  const dirs = [
    new URL('../../test/fixtures/corpus/queries-dig/', import.meta.url).pathname,
    '/work/shared/corpus/queries-dig/',
  ];
  const dir = dirs.find((d) => existsSync(d));
  if (!dir) throw new Error('no query corpus found');
  return readdirSync(dir)
    .filter((f) => f.endsWith('.bin'))
    .sort()
    .map((f) => readFileSync(dir + f));
}

export function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

/** Asks over UDP; resolves {rcode, an} or null after timeoutMs. */
export function askUdp(
  port: number,
  msg: Buffer,
  timeoutMs = 2000,
): Promise<{ rcode: number; an: number; tc: boolean } | null> {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    const t = setTimeout(() => {
      s.close();
      resolve(null);
    }, timeoutMs);
    s.on('message', (m) => {
      if (m.length < 12 || m.readUInt16BE(0) !== msg.readUInt16BE(0)) return;
      clearTimeout(t);
      s.close();
      resolve({ rcode: m[3]! & 0xf, an: m.readUInt16BE(6), tc: (m[2]! & 2) !== 0 });
    });
    s.send(msg, port, HOST);
  });
}

export function askTcp(port: number, msg: Buffer, timeoutMs = 2000): Promise<{ rcode: number; an: number } | null> {
  return new Promise((resolve) => {
    const s = net.connect(port, HOST);
    let buf = Buffer.alloc(0);
    const done = (v: { rcode: number; an: number } | null) => {
      clearTimeout(t);
      s.destroy();
      resolve(v);
    };
    const t = setTimeout(() => done(null), timeoutMs);
    s.on('error', () => done(null));
    s.on('connect', () => {
      const l = Buffer.alloc(2);
      l.writeUInt16BE(msg.length);
      s.write(Buffer.concat([l, msg]));
    });
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const m = buf.subarray(2);
        done({ rcode: m[3]! & 0xf, an: m.readUInt16BE(6) });
      }
    });
  });
}

/** One fuzz packet: random bytes, a mutated seed, a seed with a random ID, or an oversized blob. */
function packet(rng: Rng, seeds: Buffer[]): Buffer {
  const k = rng.int(100);
  if (k < 15) return Buffer.from(Array.from({ length: rng.int(64) }, () => rng.int(256)));
  if (k < 20) {
    const b = Buffer.alloc(12 + rng.int(1400));
    for (let i = 0; i < b.length; i++) b[i] = rng.int(256);
    return b;
  }
  if (k < 30) {
    const s = Buffer.from(rng.pick(seeds));
    s.writeUInt16BE(rng.int(65536), 0);
    return s;
  }
  let m = mutate(rng.pick(seeds), rng);
  if (rng.bool(0.3)) m = mutate(m, rng);
  return m;
}

/** A few figures from the proxy's /metrics (when we started it with metrics on). */
async function scrape(at: string | null): Promise<{ heapMb: number; cacheEntries: number; watches: number } | null> {
  if (!at) return null;
  const text = await (await fetch(`http://${at}/metrics`)).text();
  const v = (n: string) =>
    Number(/^(\S+) (\S+)$/m.exec(text.split('\n').find((l) => l.startsWith(n + ' ')) ?? '')?.[2] ?? NaN);
  return {
    heapMb: +(v('consul_dns_proxy_nodejs_heap_size_used_bytes') / 1048576).toFixed(1),
    cacheEntries: v('consul_dns_proxy_cache_entries'),
    watches: v('consul_dns_proxy_health_watches'),
  };
}

async function main(): Promise<number> {
  const total = Number(opt.packets);
  const rate = Number(opt.rate);
  const tcpShare = Number(opt['tcp-share']);
  const warmup = Number(opt.warmup);
  const rng = new Rng(Number(opt.seed));
  const seeds = loadSeeds();
  let sim: Sim | null = null;
  let proc: ProxyProc | null = null;
  let port: number;
  let pid: number;
  let metricsAt: string | null = null;
  if (opt['proxy-port']) {
    port = Number(opt['proxy-port']);
    pid = Number(opt['proxy-pid'] ?? NaN);
  } else {
    sim = await startJanusCluster();
    proc = await startProxy([
      '--agent',
      `${HOST}:${sim.dnsPort}`,
      '--consul-http',
      `http://${HOST}:${sim.httpPort}`,
      '--metrics',
      `${HOST}:0`,
    ]);
    metricsAt = proc.metrics;
    port = proc.port;
    pid = proc.proc.pid!;
  }
  const name = opt['agent-name'];
  try {
    const udp = dgram.createSocket('udp4');
    let replies = 0;
    udp.on('message', () => {
      replies++;
    });
    await new Promise<void>((r) => udp.bind(0, HOST, () => r()));
    let sentUdp = 0,
      sentTcp = 0,
      tcpConns = 0,
      tcpClosedByServer = 0;
    let tcp: net.Socket | null = null;
    let tcpLeft = 0;
    let peak = 0;
    const openTcp = () => {
      const s = net.connect(port, HOST);
      tcpConns++;
      s.on('data', () => {
        /* replies ignored */
      });
      s.on('error', () => {
        /* reset: fine */
      });
      s.on('close', () => {
        tcpClosedByServer++;
        if (tcp === s) tcp = null;
      });
      tcpLeft = 50 + rng.int(300);
      return s;
    };
    /** Throws n packets at the proxy, paced to `rate` per second (CPU is shared: no flat-out flood). */
    const blast = async (n: number, label: string) => {
      const t0 = Date.now();
      const batch = 200;
      for (let i = 0; i < n;) {
        for (let j = 0; j < batch && i < n; j++, i++) {
          const p = packet(rng, seeds);
          if (rng.bool(tcpShare)) {
            if (!tcp || tcp.destroyed || tcpLeft-- <= 0) {
              tcp?.end();
              tcp = openTcp();
            }
            const len = Buffer.alloc(2);
            // Now and then a length that lies (longer than what follows, or cut short).
            len.writeUInt16BE(rng.bool(0.03) ? rng.int(65536) : p.length);
            tcp.write(Buffer.concat([len, p]));
            sentTcp++;
          } else {
            udp.send(p, port, HOST);
            sentUdp++;
          }
        }
        const wait = t0 + (i / rate) * 1000 - Date.now();
        await new Promise((r) => (wait > 0 ? setTimeout(r, wait) : setImmediate(r)));
        if (i % 10_000 < batch && Number.isFinite(pid)) {
          const r = rssKb(pid);
          peak = Math.max(peak, r);
          process.stderr.write(`.. ${label} ${i} packets, rss ${r} kB\n`);
        }
      }
      return Date.now() - t0;
    };
    const realTraffic = async () => {
      for (let i = 0; i < 400; i++) {
        await askUdp(port, queryMessage(i, i % 4 ? name : `w${i}.service.consul`));
        if (i % 20 === 0) await askTcp(port, queryMessage(i, name));
      }
    };

    // Warm-up: real traffic, then fuzz at the same rate, so V8's young generation, the allocator's
    // arenas, the cache and the pools reach their working size before the baseline is read.
    await realTraffic();
    await blast(warmup, 'warm-up');
    await realTraffic();
    const rss0 = Number.isFinite(pid) ? rssKb(pid) : NaN;
    const m0 = await scrape(metricsAt);
    peak = rss0;
    sentUdp = 0;
    sentTcp = 0;
    tcpConns = 0;
    tcpClosedByServer = 0;
    replies = 0;
    const fuzzMs = await blast(total, 'fuzz');
    (tcp as net.Socket | null)?.destroy();
    udp.close();

    // Afterwards: still alive and answering correctly, over both transports, hits and misses.
    const checks: { what: string; ok: boolean }[] = [];
    const u = await askUdp(port, queryMessage(4242, name));
    checks.push({ what: `UDP ${name}: NOERROR with answers`, ok: !!u && u.rcode === 0 && u.an > 0 });
    const tq = await askTcp(port, queryMessage(4243, name));
    checks.push({ what: `TCP ${name}: NOERROR with answers`, ok: !!tq && tq.rcode === 0 && tq.an > 0 });
    const nx = await askUdp(port, queryMessage(4244, `nosuch${Date.now()}.service.consul`));
    checks.push({ what: 'UDP fresh miss: NXDOMAIN from the agent', ok: !!nx && nx.rcode === 3 });
    const alive = proc ? proc.proc.exitCode === null && proc.proc.signalCode === null : true;
    checks.push({ what: 'process alive', ok: alive });

    // Memory after the same light real traffic as the warm-up (so both readings see a similar heap).
    await realTraffic();
    const rss1 = Number.isFinite(pid) ? rssKb(pid) : NaN;
    const m1 = await scrape(metricsAt);
    peak = Math.max(peak, rss1);
    const growth = (rss1 - rss0) / rss0;
    const memOk = Number.isFinite(growth) ? growth <= 0.2 : true;
    checks.push({ what: `RSS within 20% of the post-warm-up figure (${(growth * 100).toFixed(1)}%)`, ok: memOk });

    const result = {
      warmupPackets: warmup,
      packets: sentUdp + sentTcp,
      udp: sentUdp,
      tcp: sentTcp,
      tcpConnections: tcpConns,
      tcpClosed: tcpClosedByServer,
      udpReplies: replies,
      seconds: +(fuzzMs / 1000).toFixed(1),
      pps: Math.round((sentUdp + sentTcp) / (fuzzMs / 1000)),
      rssKb: { afterWarmup: rss0, peak, end: rss1 },
      proxyMetrics: { afterWarmup: m0, end: m1 },
      rssGrowthPct: +(growth * 100).toFixed(1),
      checks,
    };
    console.log(
      `network fuzz: ${result.packets} packets (${sentUdp} UDP, ${sentTcp} TCP over ${tcpConns} connections) in ${result.seconds} s (${result.pps}/s)`,
    );
    console.log(
      `  UDP replies: ${replies} (malformed queries get FORMERR/NOTIMP/BADVERS; unreadable ones are dropped)`,
    );
    console.log(`  RSS kB: after warm-up ${rss0}, peak ${peak}, end ${rss1} (${result.rssGrowthPct}%)`);
    if (m0 && m1)
      console.log(
        `  heap used MB ${m0.heapMb} -> ${m1.heapMb}; cache entries ${m0.cacheEntries} -> ${m1.cacheEntries}; health watches ${m0.watches} -> ${m1.watches}`,
      );
    for (const c of checks) console.log(`  ${c.ok ? 'ok  ' : 'FAIL'} ${c.what}`);
    console.log(JSON.stringify(result));
    return checks.every((c) => c.ok) ? 0 : 1;
  } finally {
    await proc?.stop();
    await sim?.stop();
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    console.error(err);
    process.exitCode = 1;
  },
);
