/**
 * TTL and caching rules, end to end through the real CLI with a scripted recursor: a TTL with the
 * top bit set is 0 (RFC 2181 §8), cache.maxTtl clamps what clients see, TTL 0 from a recursor is
 * not cached, a negative answer's TTL is min(SOA TTL, MINIMUM) (RFC 2308 §5), the first client's
 * letter case does not reach the next client's RDATA, and AD follows what the upstream gave for a
 * query with AD set (RFC 6840 §5.7).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startProxy, type ProxyProc } from '../support/proc.js';
import { dig } from '../support/dig.js';
import {
  startScripted,
  reply,
  isProbe,
  a,
  rr,
  soaRecord,
  RCODE,
  type Scripted,
  type Script,
  scriptedProxyArgs,
} from '../support/scripted-upstream.js';
import { nameToWire } from '../../src/dns/message.js';

type T = { after(fn: () => unknown): void };

async function setup(
  t: T,
  script: Script,
  config = '{}\n',
): Promise<{ up: Scripted; p: ProxyProc; ask: (...args: string[]) => ReturnType<typeof dig> }> {
  const up = await startScripted((q) => (isProbe(q) ? reply(q) : script(q)));
  t.after(() => up.stop());
  const p = await startProxy(await scriptedProxyArgs(up.address), { config });
  t.after(() => p.stop());
  return { up, p, ask: (...args) => dig(['@127.0.0.1', '-p', String(p.port), ...args]) };
}

test('item 7: a TTL with the top bit set (0x80000005) reaches the client as 0 and is not cached', async (t) => {
  const { up, ask } = await setup(t, (q) => reply(q, { answers: [a(q.rawName, '192.0.2.7', 0x80000005)] }));
  const r1 = await ask('topbit.example', 'A');
  assert.equal(r1.status, 'NOERROR', r1.raw);
  assert.equal(r1.answer[0]?.ttl, 0, r1.raw);
  await ask('topbit.example', 'A');
  assert.equal(up.queriesFor('topbit.example').length, 2, 'the second query reached the upstream');
});

test('item 7: cache.maxTtl clamps the TTL clients see', async (t) => {
  const { ask } = await setup(
    t,
    (q) => reply(q, { answers: [a(q.rawName, '192.0.2.7', 100000)] }),
    'cache:\n  maxTtl: 300\n',
  );
  const r1 = await ask('long.example', 'A');
  assert.ok((r1.answer[0]?.ttl ?? Infinity) <= 300, `from the upstream: ${r1.raw}`);
  const r2 = await ask('long.example', 'A');
  assert.ok((r2.answer[0]?.ttl ?? Infinity) <= 300, `from the cache: ${r2.raw}`);
});

test('item 8: TTL 0 from a recursor is not cached: a second query reaches the upstream, no stale answer', async (t) => {
  let silent = false;
  const { up, ask } = await setup(
    t,
    (q) => (silent ? null : reply(q, { answers: [a(q.rawName, '192.0.2.8', 0)] })),
    'upstream:\n  timeoutMs: 300\n  deadlineMs: 800\n',
  );
  const r1 = await ask('zero.example', 'A');
  assert.equal(r1.status, 'NOERROR', r1.raw);
  await ask('zero.example', 'A');
  assert.equal(up.queriesFor('zero.example').length, 2, 'the second query reached the upstream');
  silent = true;
  const r3 = await ask('zero.example', 'A');
  assert.notEqual(r3.status, 'NOERROR', `no stale copy of a TTL-0 answer: ${r3.raw}`);
});

test('item 9: a cached negative answer shows min(SOA TTL, MINIMUM), aged', async (t) => {
  const { up, ask } = await setup(t, (q) =>
    reply(q, { rcode: RCODE.NXDOMAIN, flags: 0x0400, authorities: [soaRecord('example', 3600, 300)] }),
  );
  const r1 = await ask('nx.example', 'A');
  assert.equal(r1.status, 'NXDOMAIN', r1.raw);
  const r2 = await ask('nx.example', 'A');
  assert.equal(up.queriesFor('nx.example').length, 1, 'the second answer came from the cache');
  const soa = r2.authority.find((x) => x.type === 'SOA');
  assert.ok(soa && soa.ttl <= 300, `SOA TTL ${soa?.ttl}: ${r2.raw}`);
});

test('item 7: without a cache the same rules apply: top bit 0, maxTtl in every section', async (t) => {
  const { ask } = await setup(
    t,
    (q) =>
      reply(q, {
        answers: [a(q.rawName, '192.0.2.7', 0x80000005)],
        authorities: [rr('example', 2, 100000, nameToWire('ns.example'))],
        additionals: [a('ns.example', '192.0.2.53', 0xffffffff)],
      }),
    'cache:\n  enabled: false\n  maxTtl: 300\n',
  );
  const r = await ask('nocache.example', 'A');
  assert.equal(r.status, 'NOERROR', r.raw);
  assert.equal(r.answer[0]?.ttl, 0, r.raw);
  assert.equal(r.authority[0]?.ttl, 300, r.raw);
  assert.equal(r.additional.find((x) => x.type === 'A')?.ttl, 0, r.raw);
});

test('item 9: NODATA too, and cache.negativeMaxTtl caps the SOA TTL shown', async (t) => {
  const { up, ask } = await setup(
    t,
    (q) => reply(q, { flags: 0x0400, authorities: [soaRecord('example', 3600, 1800)] }),
    'cache:\n  negativeMaxTtl: 120\n',
  );
  const r1 = await ask('nodata.example', 'AAAA');
  assert.equal(r1.status, 'NOERROR', r1.raw);
  assert.ok((r1.authority.find((x) => x.type === 'SOA')?.ttl ?? Infinity) <= 120, `from the upstream: ${r1.raw}`);
  const r2 = await ask('nodata.example', 'AAAA');
  const seen = up.queriesFor('nodata.example');
  // Arrival times and transports, so that a failure seen once on CI says which query came twice.
  const when = seen.map((x) => `${x.transport} +${x.at - seen[0]!.at} ms`).join(', ');
  assert.equal(seen.length, 1, `the second answer came from the cache (upstream saw: ${when}; ${r2.raw})`);
  assert.ok((r2.authority.find((x) => x.type === 'SOA')?.ttl ?? Infinity) <= 120, `from the cache: ${r2.raw}`);
});

test('item 10: recursor path: names written in full (SRV target, owners) are cached lowercase', async (t) => {
  // SRV targets are never compressed (RFC 2782): the first client's case would be in the bytes.
  const srv = (owner: string, target: string) => {
    const d = Buffer.alloc(6);
    d.writeUInt16BE(1, 0);
    d.writeUInt16BE(1, 2);
    d.writeUInt16BE(5060, 4);
    return rr(owner, 33, 300, Buffer.concat([d, nameToWire(target)]));
  };
  const { up, ask } = await setup(t, (q) =>
    reply(q, {
      answers: [srv(q.rawName, 'Host.' + q.rawName)],
      additionals: [a('Host.' + q.rawName, '192.0.2.10', 300)],
    }),
  );
  await ask('_sip._udp.SiP.CaSe.ExAmPlE', 'SRV');
  const r2 = await ask('_sip._udp.sip.case.example', 'SRV');
  assert.equal(up.queriesFor('_sip._udp.sip.case.example').length, 1, 'the second answer came from the cache');
  assert.equal(r2.answer[0]?.data, '1 1 5060 host._sip._udp.sip.case.example.', r2.raw);
  assert.equal(r2.additional.find((x) => x.type === 'A')?.name, 'host._sip._udp.sip.case.example.', r2.raw);
});

test("item 10: recursor path: the first client's letter case does not leak into the cached RDATA names", async (t) => {
  // As a server that compresses RDATA names against the question does: the MX target carries the question's case.
  const mx = (owner: string, pref: number, exchange: string) => {
    const p = Buffer.alloc(2);
    p.writeUInt16BE(pref);
    return rr(owner, 15, 300, Buffer.concat([p, nameToWire(exchange)]));
  };
  const { up, ask } = await setup(t, (q) => reply(q, { answers: [mx(q.rawName, 10, 'mail.' + q.rawName)] }));
  await ask('WwW.CaSe.ExAmPlE', 'MX');
  const r2 = await ask('www.case.example', 'MX');
  assert.equal(up.queriesFor('www.case.example').length, 1, 'the second answer came from the cache');
  assert.equal(r2.answer[0]?.data, '10 mail.www.case.example.', r2.raw);
});

test('item 11: an AD=0 query fills the cache; a later AD=1 client gets AD as the upstream gives it for AD=1', async (t) => {
  // RFC 6840 §5.7: a validating server sets AD only when the query had AD or DO.
  const { ask } = await setup(t, (q) =>
    reply(q, { flags: q.flags & 0x0020 ? 0x0020 : 0, answers: [a(q.rawName, '192.0.2.11', 300)] }),
  );
  const r1 = await ask('ad.example', 'A', '+noadflag', '+noedns');
  assert.equal(r1.flags.includes('ad'), false, r1.raw);
  const r2 = await ask('ad.example', 'A', '+adflag', '+noedns');
  assert.equal(r2.flags.includes('ad'), true, r2.raw);
});

test("item 10: Consul path: the first client's case in the domain does not leak into the next client's SRV target", async (t) => {
  // Consul writes SRV targets under the domain as the question spelt it (`7f00000b.addr.dc1.cOnSuL.`).
  const srvTarget = (q: { rawName: string }) => {
    const domain = q.rawName.slice(q.rawName.lastIndexOf('.') + 1);
    const d = Buffer.alloc(6);
    d.writeUInt16BE(1, 0);
    d.writeUInt16BE(1, 2);
    d.writeUInt16BE(8080, 4);
    return rr(q.rawName, 33, 30, Buffer.concat([d, nameToWire(`7f00000b.addr.dc1.${domain}`)]));
  };
  const { up, ask } = await setup(t, (q) =>
    reply(q, {
      flags: 0x0400,
      answers: [srvTarget(q)],
      additionals: [a(`7f00000b.addr.dc1.${q.rawName.slice(q.rawName.lastIndexOf('.') + 1)}`, '127.0.0.11', 30)],
    }),
  );
  const r1 = await ask('web.service.cOnSuL', 'SRV');
  assert.equal(r1.status, 'NOERROR', r1.raw);
  const r2 = await ask('web.service.consul', 'SRV');
  assert.equal(up.queriesFor('web.service.consul').length, 1, 'the second answer came from the cache');
  assert.equal(r2.answer[0]?.data, '1 1 8080 7f00000b.addr.dc1.consul.', r2.raw);
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('item 5: a silent upstream and a stale entry: stale by cache.staleClientTimeoutMs (1.8 s), not the 3 s deadline; then at once while the recheck window lasts', async (t) => {
  let silent = false;
  // maxFails high: the upstream is never marked down, so "at once" below is the recheck window's doing.
  const { up, ask } = await setup(
    t,
    (q) => (silent && q.name === 'slow.example' ? null : reply(q, { answers: [a(q.rawName, '192.0.2.5', 1)] })),
    // Two tries of 1.5 s: without the client timer the exchange itself ends at 3 s.
    'upstream:\n  timeoutMs: 1500\n  deadlineMs: 3000\n  maxFails: 100\n',
  );
  const r1 = await ask('slow.example', 'A');
  assert.equal(r1.status, 'NOERROR', r1.raw);
  await sleep(1100); // the TTL of 1 s is over: the entry is stale
  silent = true;
  const t0 = Date.now();
  const r2 = await ask('slow.example', 'A', '+tries=1', '+time=5');
  const took = Date.now() - t0;
  assert.equal(r2.status, 'NOERROR', r2.raw);
  assert.equal(r2.opt?.ede?.code, 3, `EDE 3 Stale Answer: ${r2.raw}`);
  assert.equal(r2.answer[0]?.ttl, 30, r2.raw);
  assert.ok(took >= 1700 && took < 2700, `answered after ${took} ms: the client timer, not the deadline`);
  // The refresh went on to the deadline and failed: for staleRecheckSeconds nobody is asked.
  await sleep(Math.max(0, t0 + 3300 - Date.now()));
  const asked = up.queriesFor('slow.example').length;
  const t1 = Date.now();
  const r3 = await ask('slow.example', 'A', '+tries=1', '+time=5');
  const took3 = Date.now() - t1;
  assert.equal(r3.opt?.ede?.code, 3, `stale again: ${r3.raw}`);
  assert.ok(took3 < 900, `answered at once (${took3} ms) inside the recheck window`);
  assert.equal(up.queriesFor('slow.example').length, asked, 'the upstream was not asked again');
});

test('item 5: every upstream of the pool marked down: SERVFAIL with EDE 22 at once, or the stale entry at once', async (t) => {
  let dead = false;
  const { up, p, ask } = await setup(
    t,
    (q) => (dead ? null : reply(q, { answers: [a(q.rawName, '192.0.2.6', 1)] })),
    'upstream:\n  timeoutMs: 1000\n  deadlineMs: 3000\n  probeIntervalMs: 250\n',
  );
  // setup's script answers every probe; a dead server answers nothing, probes included.
  up.setScript((q) => (dead ? null : isProbe(q) ? reply(q) : reply(q, { answers: [a(q.rawName, '192.0.2.6', 1)] })));
  const r1 = await ask('kept.example', 'A');
  assert.equal(r1.status, 'NOERROR', r1.raw);
  dead = true;
  const downBy = Date.now() + 10_000;
  while (!p.logs.some((l) => l.msg === 'upstream down' && l.pool === 'recursor') && Date.now() < downBy)
    await sleep(50);
  assert.ok(
    p.logs.some((l) => l.msg === 'upstream down' && l.pool === 'recursor'),
    'the probes marked the recursor down',
  );
  const t0 = Date.now();
  const r2 = await ask('new.example', 'A', '+tries=1', '+time=5');
  const took = Date.now() - t0;
  assert.equal(r2.status, 'SERVFAIL', r2.raw);
  assert.equal(r2.opt?.ede?.code, 22, `EDE 22 No Reachable Authority: ${r2.raw}`);
  assert.ok(took < 900, `answered at once (${took} ms), not after a try`);
  assert.equal(up.queriesFor('new.example').length, 0, 'nobody was asked');
  const t1 = Date.now();
  const r3 = await ask('kept.example', 'A', '+tries=1', '+time=5');
  const took3 = Date.now() - t1;
  assert.equal(r3.status, 'NOERROR', r3.raw);
  assert.equal(r3.opt?.ede?.code, 3, `the stale entry: ${r3.raw}`);
  assert.ok(took3 < 900, `answered at once (${took3} ms)`);
  assert.equal(up.queriesFor('kept.example').length, 1, 'nobody was asked');
});
