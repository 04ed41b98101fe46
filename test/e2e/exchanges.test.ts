/**
 * Upstream exchanges, end to end through the real CLI with scripted upstreams: source-port spread
 * (RFC 5452 §9.2), late replies accepted until the deadline, REFUSED/SERVFAIL answers that fail over
 * without marking a healthy server down, the upstream's EDE and extended RCODE passed on, trailing
 * bytes after a valid reply ignored, and every query answered within the deadline while all agents
 * are down (one silent, one with its port closed).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { decodeMessage } from '../../src/dns/message.js';
import { startProxy, freePort, type ProxyProc } from '../support/proc.js';
import { dig } from '../support/dig.js';
import {
  startScripted,
  reply,
  isProbe,
  a,
  optRecord,
  edeOption,
  soaRecord,
  clientQuery,
  askUdp,
  fullRcode,
  metricValue,
  scrape,
  RCODE,
  type Scripted,
  type Script,
} from '../support/scripted-upstream.js';

type T = { after(fn: () => unknown): void };

/** Answers probes and every name with one A record. */
const answerAll =
  (ip: string): Script =>
  (q) =>
    isProbe(q) ? reply(q) : reply(q, { answers: [a(q.rawName, ip, 300)] });

async function scripted(t: T, s: Script, host?: string): Promise<Scripted> {
  const u = await startScripted(s, host);
  t.after(() => u.stop());
  return u;
}

/** The proxy with `recursors` as its recursors; the agent is a scripted server answering probes only. */
async function proxy(t: T, recursors: Scripted[], config = '', agents?: string[]): Promise<ProxyProc> {
  const agent = agents ? null : await scripted(t, (q) => reply(q, isProbe(q) ? {} : { rcode: RCODE.NXDOMAIN }));
  const args = ['--metrics', '127.0.0.1:0', '--consul-http', `http://127.0.0.1:${await freePort()}`];
  for (const g of agents ?? [agent!.address]) args.push('--agent', g);
  for (const r of recursors) args.push('--recursor', r.address);
  const p = await startProxy(args, { config: config || '{}\n' });
  t.after(() => p.stop());
  return p;
}

test('item 1: over 2,000 misses the upstream sees >= 256 distinct source ports, none used for more than 2% of queries', async (t) => {
  const up = await scripted(t, answerAll('192.0.2.1'));
  const p = await proxy(t, [up]);
  const client = dgram.createSocket('udp4');
  await new Promise<void>((r) => client.bind(0, '127.0.0.1', () => r()));
  t.after(() => client.close());
  const N = 2000;
  let answered = 0;
  const waiting = new Map<number, () => void>();
  client.on('message', (m) => {
    const w = waiting.get(m.readUInt16BE(0));
    if (w) {
      waiting.delete(m.readUInt16BE(0));
      answered++;
      w();
    }
  });
  // 50 at a time: enough to be quick, few enough not to trip maxInFlight or drop datagrams.
  let next = 0;
  await Promise.all(
    Array.from({ length: 50 }, async () => {
      while (next < N) {
        const i = next++;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            waiting.delete(i);
            resolve();
          }, 3000);
          waiting.set(i, () => {
            clearTimeout(timer);
            resolve();
          });
          client.send(clientQuery(i, `n${i}.ports.example`, 1), p.port, '127.0.0.1');
        });
      }
    }),
  );
  assert.ok(answered > N * 0.95, `answered ${answered} of ${N}`);
  const counts = new Map<number, number>();
  for (const q of up.queries) if (q.name.endsWith('.ports.example')) counts.set(q.port, (counts.get(q.port) ?? 0) + 1);
  const total = [...counts.values()].reduce((s, n) => s + n, 0);
  const max = Math.max(...counts.values());
  assert.ok(counts.size >= 256, `${counts.size} distinct source ports over ${total} upstream queries`);
  assert.ok(max <= total * 0.02, `one source port carried ${max} of ${total} queries`);
});

test('item 2: one upstream replying at 1.5 s (timeoutMs 1000, deadlineMs 3000) → NOERROR, upstream not marked down', async (t) => {
  const up = await scripted(t, (q) =>
    isProbe(q) ? reply(q) : { bytes: reply(q, { answers: [a(q.rawName, '192.0.2.15', 300)] }), delayMs: 1500 },
  );
  const p = await proxy(
    t,
    [up],
    'upstream:\n  timeoutMs: 1000\n  deadlineMs: 3000\n  maxFails: 2\n  probeIntervalMs: 60000\n',
  );
  // Two at once and one more: with maxFails 2, counting slow replies as failures marks it down.
  const rs = await Promise.all(
    ['s1', 's2', 's3'].map((n) => dig(['@127.0.0.1', '-p', String(p.port), `${n}.slow.example`, 'A', '+time=5'])),
  );
  for (const r of rs) {
    assert.equal(r.status, 'NOERROR', r.raw);
    assert.deepEqual(
      r.answer.map((x) => x.data),
      ['192.0.2.15'],
    );
  }
  const m = await scrape(p.metrics!);
  assert.equal(
    metricValue(m, 'consul_dns_proxy_upstream_healthy', { pool: 'recursor', upstream: up.address }),
    1,
    'the slow upstream is still up',
  );
});

test('item 3: REFUSED/SERVFAIL from A for some names → B answers them; after 20 such answers A is still up and still used', async (t) => {
  // A answers probes only after 900 ms, so a probe started when A is marked down cannot hide it.
  const A = await scripted(t, (q) => {
    if (isProbe(q)) return { bytes: reply(q), delayMs: 900 };
    if (q.name.startsWith('bad'))
      return reply(q, { rcode: Number(q.name.slice(3, q.name.indexOf('.'))) % 2 ? RCODE.REFUSED : RCODE.SERVFAIL });
    return reply(q, { answers: [a(q.rawName, '192.0.2.1', 300)] });
  });
  const B = await scripted(t, answerAll('192.0.2.2'));
  const p = await proxy(t, [A, B], 'upstream:\n  maxFails: 2\n  probeIntervalMs: 60000\n');
  for (let i = 0; i < 20; i++) {
    const r = await askUdp(p.port, clientQuery(i, `bad${i}.names.example`, 1));
    assert.ok(r, `bad${i}: no answer`);
    const m = decodeMessage(r);
    assert.equal(m.flags & 0xf, 0, `bad${i}: rcode`);
    assert.deepEqual([...m.answers[0]!.rdata], [192, 0, 2, 2], `bad${i}: B's answer`);
  }
  const text = await scrape(p.metrics!);
  assert.ok(
    (metricValue(text, 'consul_dns_proxy_upstream_failures_total', {
      pool: 'recursor',
      upstream: A.address,
      reason: 'refused',
    }) ?? 0) >= 1,
    'REFUSED still counted',
  );
  assert.equal(
    metricValue(text, 'consul_dns_proxy_upstream_healthy', { pool: 'recursor', upstream: A.address }),
    1,
    'A is still up',
  );
  const good = decodeMessage((await askUdp(p.port, clientQuery(99, 'good.names.example', 1)))!);
  assert.deepEqual([...good.answers[0]!.rdata], [192, 0, 2, 1], 'A still answers other names');
});

test('item 3: an Extended DNS Error from the upstream reaches the client', async (t) => {
  const up = await scripted(t, (q) =>
    isProbe(q)
      ? reply(q)
      : reply(q, {
          rcode: RCODE.NXDOMAIN,
          authorities: [soaRecord('example', 300, 300)],
          additionals: [optRecord(1232, edeOption(16, 'scripted censor'))],
        }),
  );
  const p = await proxy(t, [up]);
  const r = await dig(['@127.0.0.1', '-p', String(p.port), 'ede.example', 'A']);
  assert.equal(r.status, 'NXDOMAIN', r.raw);
  assert.equal(r.opt?.ede?.code, 16, r.raw);
});

test('item 3: an extended RCODE (BADVERS) from the upstream reaches the client', async (t) => {
  const up = await scripted(t, (q) =>
    isProbe(q) ? reply(q) : reply(q, { additionals: [optRecord(1232, Buffer.alloc(0), 1)] }),
  );
  const p = await proxy(t, [up]);
  const r = await askUdp(p.port, clientQuery(7, 'badvers.example', 1, { additionals: [optRecord(1232)] }));
  assert.ok(r, 'no answer');
  assert.equal(fullRcode(decodeMessage(r)), 16, 'BADVERS (16)');
});

test('item 4: trailing bytes after a valid reply are ignored: the answer is served', async (t) => {
  const up = await scripted(t, (q) =>
    isProbe(q)
      ? reply(q)
      : reply(q, { answers: [a(q.rawName, '192.0.2.4', 300)], trailing: Buffer.from([0, 0, 0, 0, 0]) }),
  );
  const p = await proxy(t, [up], 'upstream:\n  timeoutMs: 300\n  deadlineMs: 800\n');
  const r = await dig(['@127.0.0.1', '-p', String(p.port), 'trailing.example', 'A']);
  assert.equal(r.status, 'NOERROR', r.raw);
  assert.deepEqual(
    r.answer.map((x) => x.data),
    ['192.0.2.4'],
  );
});

test('item 6: agent A silent and agent B port closed → every query answered within deadline + 100 ms', async (t) => {
  const silent = await scripted(t, () => null);
  const closed = await freePort();
  const deadlineMs = 1500;
  const p = await proxy(t, [], `upstream:\n  timeoutMs: 400\n  deadlineMs: ${deadlineMs}\n  probeIntervalMs: 1000\n`, [
    silent.address,
    `127.0.0.1:${closed}`,
  ]);
  const late: string[] = [];
  // 40 queries over ~2 s, so some arrive while both agents are marked down and probed.
  await Promise.all(
    Array.from({ length: 40 }, async (_, i) => {
      await new Promise((r) => setTimeout(r, i * 50));
      const t0 = Date.now();
      const r = await askUdp(p.port, clientQuery(i, `s${i}.service.consul`, 1), deadlineMs + 2000);
      const ms = Date.now() - t0;
      if (!r || ms > deadlineMs + 100) late.push(`s${i}: ${r ? `answered after ${ms} ms` : 'no answer'}`);
    }),
  );
  assert.equal(p.proc.exitCode, null, 'the proxy is running');
  assert.deepEqual(late, []);
});
