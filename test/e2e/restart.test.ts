/**
 * Restarts of the real CLI under load: 500 q/s over UDP (a socket per query, as stub resolvers
 * send) plus a persistent pipelining TCP client that reconnects and resends what was outstanding,
 * for 10 s with three restarts. Upstreams are loopback only: the Consul simulator as the agent
 * and a small responder as the recursor for `*.example.` (every query a new name, so each one
 * goes through the upstream path rather than the cache).
 *
 * Without socket activation a restart closes the sockets and the test shows the loss; with the
 * activator holding them (systemd's socket unit in production) nothing may be lost. Lame duck
 * and readiness notification are checked on the running process.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, chmodSync, readFileSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TYPE } from '../../src/dns/constants.js';
import { queryMessage } from '../support/query.js';
import { startJanusCluster, startSim, type Sim } from '../support/consul-sim/index.js';
import { CLI, freePort, startProxy } from '../support/proc.js';
import { startActivator, type Activator } from '../support/activator.js';
import { udpLoad, tcpLoad, summarize, type TcpStats, type Stats } from '../support/load.js';
import { waitFor } from '../support/wait.js';

const LOAD_MS = 10_000;
const UDP_QPS = 500;
const TCP_QPS = 100;
const RESTARTS_AT_MS = [2500, 5500, 8500];

interface Recursor {
  port: number;
  close(): Promise<void>;
}

/** Answers every A question with 192.0.2.1 (TTL 60) and anything else with an empty NOERROR, over UDP and TCP. */
async function startRecursor(): Promise<Recursor> {
  const respond = (q: Buffer): Buffer | null => {
    if (q.length < 17) return null;
    let end = 12;
    while (end < q.length && q[end] !== 0) end += q[end]! + 1;
    const qEnd = end + 5;
    if (qEnd > q.length) return null;
    const isA = q.readUInt16BE(end + 1) === TYPE.A;
    const header = Buffer.from(q.subarray(0, 12));
    header.writeUInt16BE(0x8180 | (q.readUInt16BE(2) & 0x0100), 2);
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(isA ? 1 : 0, 6);
    header.writeUInt32BE(0, 8);
    const rr = Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
    return Buffer.concat([header, q.subarray(12, qEnd), isA ? rr : Buffer.alloc(0)]);
  };
  const udp = dgram.createSocket('udp4');
  udp.on('message', (m, r) => {
    const a = respond(m);
    if (a) udp.send(a, r.port, r.address);
  });
  await new Promise<void>((res) => udp.bind(0, '127.0.0.1', () => res()));
  const conns = new Set<net.Socket>();
  const tcp = net.createServer((s) => {
    conns.add(s);
    s.on('close', () => conns.delete(s));
    s.on('error', () => {});
    let buf = Buffer.alloc(0);
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const a = respond(buf.subarray(2, 2 + buf.readUInt16BE(0)));
        buf = buf.subarray(2 + buf.readUInt16BE(0));
        if (a) s.write(Buffer.concat([Buffer.from([a.length >> 8, a.length & 0xff]), a]));
      }
    });
  });
  await new Promise<void>((res) => tcp.listen(udp.address().port, '127.0.0.1', () => res()));
  return {
    port: udp.address().port,
    async close() {
      for (const c of conns) c.destroy();
      await Promise.all([
        new Promise<void>((r) => udp.close(() => r())),
        new Promise<void>((r) => tcp.close(() => r())),
      ]);
    },
  };
}

async function upstreams(t: {
  after(fn: () => Promise<void>): void;
}): Promise<{ sim: Sim; rec: Recursor; args: string[] }> {
  const sim = await startSim();
  t.after(() => sim.stop());
  const rec = await startRecursor();
  t.after(() => rec.close());
  return {
    sim,
    rec,
    args: [
      '--agent',
      `127.0.0.1:${sim.dnsPort}`,
      '--consul-http',
      `http://127.0.0.1:${sim.httpPort}`,
      '--recursor',
      `127.0.0.1:${rec.port}`,
    ],
  };
}

/** Resolves once child `pid` logs "listening"; rejects if it exits first. */
async function ready(a: Activator, pid: number): Promise<number> {
  const started = performance.now();
  const exited = a
    .waitEvent((e) => e.event === 'exited' && e.pid === pid, { timeoutMs: 20_000 })
    .then((e) => {
      throw new Error(
        `proxy ${pid} exited with ${e.code} before listening: ${a.lines
          .filter((l) => l.pid === pid)
          .map((l) => l.line)
          .join('\n')}\n${a.stderr}`,
      );
    });
  exited.catch(() => {});
  await Promise.race([
    a.waitLine((l) => l.pid === pid && l.json?.msg === 'listening', {
      timeoutMs: 20_000,
      what: `proxy ${pid} to listen`,
    }),
    exited,
  ]);
  return performance.now() - started;
}

interface RestartReport {
  n: number;
  gapMs: number;
  startupMs: number;
  udp: Stats;
  tcp: Pick<TcpStats, 'refusedConnects' | 'resends' | 'closes' | 'closesMidAnswer'>;
}

/** The 10 s run with three restarts; per-restart numbers cover queries sent from that restart until the next. */
async function restartUnderLoad(
  activated: boolean,
  args: string[],
): Promise<{ reports: RestartReport[]; udp: Stats; tcp: TcpStats; before: Stats }> {
  let a: Activator;
  // With activation the proxy is told to listen where the socket unit is bound, as the shipped
  // set-up does (config listen 127.0.0.1:53 and the socket on 127.0.0.1:53): inherited sockets
  // must replace the configured ones rather than collide with them.
  const port = await freePort();
  const command = [process.execPath, CLI, ...args, '--listen', `127.0.0.1:${port}`];
  if (activated) {
    a = await startActivator(command, { port });
  } else {
    a = await startActivator(command, { sockets: false });
  }
  try {
    await ready(a, a.childPid!);
    const name = (n: number) => queryMessage(0, `u${n}.example.`, TYPE.A);
    const udp = udpLoad({ host: '127.0.0.1', port, qps: UDP_QPS, durationMs: LOAD_MS, timeoutMs: 2000, query: name });
    const tcp = tcpLoad({
      host: '127.0.0.1',
      port,
      qps: TCP_QPS,
      durationMs: LOAD_MS,
      timeoutMs: 2000,
      query: (n) => queryMessage(0, `t${n}.example.`, TYPE.A),
    });
    const t0 = performance.now();
    const marks: { at: number; gapMs: number; startupMs: number; tcpBefore: TcpStats }[] = [];
    for (const at of RESTARTS_AT_MS) {
      const wait = t0 + at - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      const start = performance.now();
      const tcpBefore = tcp.client.stats();
      const r = await a.restart();
      const startupMs = await ready(a, r.newPid);
      // From SIGTERM to the new process listening.
      marks.push({ at: start, gapMs: performance.now() - start, startupMs, tcpBefore });
    }
    const [udpAll, tcpAll] = await Promise.all([udp.done, tcp.tcpDone]);
    const reports = marks.map((m, i): RestartReport => {
      const until = marks[i + 1]?.at ?? Infinity;
      const after = marks[i + 1]?.tcpBefore ?? tcpAll;
      return {
        n: i + 1,
        gapMs: Math.round(m.gapMs),
        startupMs: Math.round(m.startupMs),
        udp: summarize(udp.records, (r) => r.sentAt >= m.at && r.sentAt < until),
        tcp: {
          refusedConnects: after.refusedConnects - m.tcpBefore.refusedConnects,
          resends: after.resends - m.tcpBefore.resends,
          closes: after.closes - m.tcpBefore.closes,
          closesMidAnswer: after.closesMidAnswer - m.tcpBefore.closesMidAnswer,
        },
      };
    });
    const label = activated ? 'with socket activation' : 'without socket activation';
    for (const r of reports) {
      console.log(
        `restart ${r.n} ${label}: SIGTERM→listening ${r.gapMs} ms (startup ${r.startupMs} ms); UDP ${r.udp.refused} refused + ${r.udp.unanswered} unanswered of ${r.udp.sent}, slowest ${Math.round(r.udp.maxMs)} ms; TCP ${r.tcp.refusedConnects} refused connects, ${r.tcp.resends} resends, ${r.tcp.closes} closes (${r.tcp.closesMidAnswer} mid-answer)`,
      );
    }
    console.log(`total ${label}: UDP ${JSON.stringify(udpAll)}; TCP ${JSON.stringify(tcpAll)}`);
    // Queries sent well before the first SIGTERM (100 ms: more than any read delay here).
    const before = summarize(udp.records, (r) => r.sentAt < marks[0]!.at - 100);
    return { reports, udp: udpAll, tcp: tcpAll, before };
  } finally {
    await a.stop();
  }
}

test('restart without socket activation loses queries (the measured comparison)', { timeout: 60_000 }, async (t) => {
  const { args } = await upstreams(t);
  const { reports, udp, tcp, before } = await restartUnderLoad(false, [...args, '--metrics', 'off']);
  assert.equal(reports.length, 3);
  for (const r of reports) {
    assert.ok(r.udp.sent > 0);
    // The loss this set-up exists to remove: the port is closed between the two processes.
    assert.ok(
      r.udp.refused + r.udp.unanswered > 0,
      `restart ${r.n}: expected the restart to lose UDP queries: ${JSON.stringify(r.udp)}`,
    );
  }
  // Before the first restart everything is answered: the loss is the restarts' alone.
  assert.deepEqual([before.refused, before.unanswered], [0, 0], JSON.stringify(before));
  assert.equal(udp.sent, (UDP_QPS * LOAD_MS) / 1000);
  assert.equal(udp.errors, 0);
  assert.equal(tcp.sent, (TCP_QPS * LOAD_MS) / 1000);
});

test(
  'restart under socket activation: 0 unanswered, 0 refused, slowest < 1 s, TCP closed only between answers',
  { timeout: 60_000 },
  async (t) => {
    const { args } = await upstreams(t);
    const { reports, udp, tcp } = await restartUnderLoad(true, [...args, '--metrics', 'off']);
    assert.equal(reports.length, 3);
    assert.equal(udp.sent, (UDP_QPS * LOAD_MS) / 1000);
    assert.deepEqual([udp.refused, udp.unanswered, udp.errors], [0, 0, 0], JSON.stringify(udp));
    assert.ok(udp.maxMs < 1000, `slowest UDP answer ${udp.maxMs} ms`);
    assert.deepEqual([tcp.refusedConnects, tcp.unanswered, tcp.errors], [0, 0, 0], JSON.stringify(tcp));
    assert.ok(tcp.maxMs < 1000, `slowest TCP answer ${tcp.maxMs} ms`);
    // The old process closed each connection between answers: no partial answer at a close, and
    // no query answered twice (every resend was of a query the old process had not read).
    assert.equal(tcp.closesMidAnswer, 0);
    assert.equal(tcp.duplicates, 0);
    assert.ok(tcp.closes >= 3, 'each restart closed the connection');
  },
);

async function getReady(metrics: string): Promise<number> {
  const res = await fetch(`http://${metrics}/ready`);
  await res.arrayBuffer();
  return res.status;
}

function udpAnswered(port: number, n: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    const done = (ok: boolean) => {
      clearTimeout(timer);
      try {
        s.close();
      } catch {
        /* closed */
      }
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), 1000);
    s.on('error', () => done(false));
    s.on('message', (m) => done(m.readUInt16BE(0) === (n & 0xffff)));
    s.connect(port, '127.0.0.1', () => s.send(queryMessage(n, `lame${n}.example.`, TYPE.A)));
  });
}

test(
  'lame duck: after SIGTERM /ready is 503 at once while queries are still answered for shutdown.lameDuckMs',
  { timeout: 30_000 },
  async (t) => {
    const { args } = await upstreams(t);
    const p = await startProxy([...args, '--metrics', '127.0.0.1:0'], { config: 'shutdown:\n  lameDuckMs: 1000\n' });
    t.after(() => p.stop('SIGKILL'));
    assert.ok(p.metrics);
    await waitFor(async () => (await getReady(p.metrics!)) === 200, { what: '/ready 200', timeoutMs: 10_000 });
    const t0 = performance.now();
    p.proc.kill('SIGTERM');
    await waitFor(async () => (await getReady(p.metrics!)) === 503, {
      what: '/ready 503 after SIGTERM',
      timeoutMs: 300,
      intervalMs: 10,
    });
    const readyOffAt = performance.now() - t0;
    // Answers keep coming after the readiness flip, for most of the lame-duck period.
    let answered = 0;
    for (let n = 1; performance.now() - t0 < 700; n++) {
      assert.ok(await udpAnswered(p.port, n), `query ${n} at ${Math.round(performance.now() - t0)} ms after SIGTERM`);
      answered++;
    }
    assert.ok(answered >= 5);
    const code = await p.exited;
    const exitAt = performance.now() - t0;
    assert.equal(code, 0);
    assert.ok(exitAt >= 950, `exited ${Math.round(exitAt)} ms after SIGTERM, before lameDuckMs`);
    console.log(
      `lame duck: /ready 503 after ${Math.round(readyOffAt)} ms, ${answered} answered after it, exit after ${Math.round(exitAt)} ms`,
    );
  },
);

test(
  'readiness notification: READY=1 once listening (agent down or not), RELOADING=1 on SIGHUP, STOPPING=1 on SIGTERM',
  { timeout: 30_000 },
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'cdp-notify-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const log = join(dir, 'notify.log');
    // A stand-in for systemd-notify(1) first on PATH: it records its arguments, one call a line.
    writeFileSync(join(dir, 'systemd-notify'), `#!/bin/sh\nprintf '%s\\n' "$*" >> '${log}'\n`);
    chmodSync(join(dir, 'systemd-notify'), 0o755);
    const rec = await startRecursor();
    t.after(() => rec.close());
    // No agent answers on this port: readiness to systemd must not wait for Consul.
    const deadAgent = await freePort();
    const p = await startProxy(
      [
        '--agent',
        `127.0.0.1:${deadAgent}`,
        '--consul-http',
        `http://127.0.0.1:${deadAgent}`,
        '--recursor',
        `127.0.0.1:${rec.port}`,
        '--metrics',
        'off',
      ],
      {
        env: { PATH: `${dir}:${process.env.PATH ?? ''}`, NOTIFY_SOCKET: join(dir, 'notify.sock') },
        config: 'log:\n  level: info\n',
      },
    );
    t.after(() => p.stop('SIGKILL'));
    const calls = () => (existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n') : []);
    const has = (re: RegExp, from = 0) =>
      calls()
        .slice(from)
        .some((l) => re.test(l));
    await waitFor(() => has(/\bREADY=1\b|--ready\b/), { what: 'READY=1', timeoutMs: 5000 });
    const n = calls().length;
    p.proc.kill('SIGHUP');
    await waitFor(() => has(/\bRELOADING=1\b|--reloading\b/, n), { what: 'RELOADING=1 after SIGHUP', timeoutMs: 5000 });
    await waitFor(() => has(/\bREADY=1\b|--ready\b/, n), { what: 'READY=1 after the reload', timeoutMs: 5000 });
    const m = calls().length;
    p.proc.kill('SIGTERM');
    assert.equal(await p.exited, 0);
    assert.ok(has(/\bSTOPPING=1\b|--stopping\b/, m), `calls: ${calls().join(' | ')}`);
  },
);

test(
  'inherited sockets in the other order (ListenStream= first): the proxy finds which is UDP and which TCP',
  { timeout: 30_000 },
  async (t) => {
    const { args } = await upstreams(t);
    const port = await freePort();
    const a = await startActivator(
      [process.execPath, CLI, ...args, '--metrics', 'off', '--listen', `127.0.0.1:${port}`],
      { port, streamFirst: true },
    );
    t.after(() => a.stop());
    await ready(a, a.childPid!);
    const udp = await udpLoad({
      host: '127.0.0.1',
      port,
      qps: 50,
      durationMs: 400,
      timeoutMs: 1000,
      query: (n) => queryMessage(0, `o${n}.example.`, TYPE.A),
    }).done;
    const tcp = await tcpLoad({
      host: '127.0.0.1',
      port,
      qps: 50,
      durationMs: 400,
      timeoutMs: 1000,
      query: (n) => queryMessage(0, `p${n}.example.`, TYPE.A),
    }).tcpDone;
    assert.deepEqual([udp.sent, udp.answered], [20, 20], JSON.stringify(udp));
    assert.deepEqual([tcp.sent, tcp.answered], [20, 20], JSON.stringify(tcp));
    // Taking the listening socket must not shrink the unit's Backlog= to Node's default of 511:
    // `ss` shows a listening socket's backlog as Send-Q.
    const ss = spawnSync('ss', ['-ltnH', `sport = :${port}`], { encoding: 'utf8' });
    if (ss.status === 0) {
      const backlog = Number(ss.stdout.trim().split(/\s+/)[2]);
      assert.equal(backlog, Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8').trim()), ss.stdout);
    } else t.diagnostic(`ss not run: ${ss.error?.message ?? ss.stderr}`);
  },
);

test(
  'listen on reload: SIGHUP with new addresses moves traffic, closes the old ones; a bind failure keeps the running set',
  { timeout: 30_000 },
  async (t) => {
    const { args } = await upstreams(t);
    const dir = mkdtempSync(join(tmpdir(), 'cdp-relisten-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const configPath = join(dir, 'config.yaml');
    const [p1, p2] = [await freePort(), await freePort()];
    writeFileSync(configPath, `listen: ["127.0.0.1:${p1}"]\n`);
    // No --listen flag: a flag would override the file, and the file is what a reload re-reads.
    const a = await startActivator([process.execPath, CLI, ...args, '--metrics', 'off', '--config', configPath], {
      sockets: false,
    });
    t.after(() => a.stop());
    const pid = a.childPid!;
    await ready(a, pid);
    assert.ok(await udpAnswered(p1, 1));

    writeFileSync(configPath, `listen: ["127.0.0.1:${p2}"]\n`);
    process.kill(pid, 'SIGHUP');
    await waitFor(() => udpAnswered(p2, 2), { what: `answers on the new address ${p2}`, timeoutMs: 5000 });
    const tcp = await tcpLoad({
      host: '127.0.0.1',
      port: p2,
      qps: 50,
      durationMs: 200,
      timeoutMs: 1000,
      query: (n) => queryMessage(0, `r${n}.example.`, TYPE.A),
    }).tcpDone;
    assert.equal(tcp.answered, 10);
    // The old address is closed once its in-flight queries are done: ICMP refused.
    await waitFor(
      async () =>
        (
          await udpLoad({
            host: '127.0.0.1',
            port: p1,
            qps: 10,
            durationMs: 100,
            timeoutMs: 500,
            query: () => queryMessage(0, 'old.example.', TYPE.A),
          }).done
        ).refused === 1,
      { what: `the old address ${p1} to be closed`, timeoutMs: 5000 },
    );

    // A port taken by someone else: the reload says why and keeps answering where it was.
    const squatter = dgram.createSocket('udp4');
    const p3 = await freePort();
    await new Promise<void>((r) => squatter.bind(p3, '127.0.0.1', () => r()));
    t.after(() => new Promise<void>((r) => squatter.close(() => r())));
    const from = a.lines.length;
    writeFileSync(configPath, `listen: ["127.0.0.1:${p3}"]\n`);
    process.kill(pid, 'SIGHUP');
    await a.waitLine((l) => (l.json?.level as number) >= 50 && l.line.includes(String(p3)), {
      fromIndex: from,
      timeoutMs: 5000,
      what: `an error naming ${p3}`,
    });
    assert.ok(await udpAnswered(p2, 3), 'still answering on the running address');
    assert.equal(a.childPid, pid, 'no restart');
  },
);

test(
  'SIGTERM drain over UDP: a query arriving while another is in flight is answered, not dropped',
  { timeout: 30_000 },
  async (t) => {
    const slow = await startJanusCluster();
    t.after(() => slow.stop());
    await slow.setFault({ dns: 'slow', delayMs: 800 });
    const p = await startProxy(['--agent', `127.0.0.1:${slow.dnsPort}`, '--metrics', 'off']);
    t.after(() => p.stop('SIGKILL'));
    await waitFor(() => slow.queries >= 1, { what: 'the start-up probe at the agent' });
    const ask = (id: number, name: string) =>
      new Promise<number | null>((resolve) => {
        const s = dgram.createSocket('udp4');
        const timer = setTimeout(() => finish(null), 3000);
        const finish = (v: number | null) => {
          clearTimeout(timer);
          s.close();
          resolve(v);
        };
        s.on('error', () => finish(null));
        s.on('message', (m) => finish(m.readUInt16BE(0)));
        s.connect(p.port, '127.0.0.1', () => s.send(queryMessage(id, name)));
      });
    const q0 = slow.queries;
    const first = ask(1, 'janus.service.consul');
    await waitFor(() => slow.queries > q0, { what: 'the first query at the (slow) agent' });
    p.proc.kill('SIGTERM');
    await waitFor(() => p.logs.some((l) => l.msg === 'shutting down'), { what: 'drain started' });
    // Read from the socket while the first is still in flight: answering it costs nothing more than
    // the wait already under way, and dropping it would lose a query a client sent before the close.
    const second = ask(2, 'nosuch.service.consul');
    assert.deepEqual(await Promise.all([first, second]), [1, 2]);
    assert.equal(await p.exited, 0);
  },
);
