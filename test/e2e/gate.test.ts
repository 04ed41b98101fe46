/**
 * The hardening guards (issue 9): access control, per-client rate limits and the forwarding-loop
 * probe. Unit tests of src/gate.ts and src/loop.ts with an injected clock, then the same guards on
 * a running proxy (in-process, real sockets on 127.0.0.1) checked with dig, and a bounded network
 * fuzz (3,000 packets) after which the proxy still answers.
 *
 * The running-proxy tests use the real wiring (src/app.ts builds the gate and the loop guard; the
 * handler asks the gate first), in-process; the last test goes through the CLI.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { Acl, RateLimiter, Gate, createGate, rateKey, GATE_TC, GATE_DROP, tcReply } from '../../src/query/gate.js';
import { parseIpWords } from '../../src/net/address.js';
import { LoopedPool } from '../../src/query/loop-guard.js';
import { DEFAULTS, type Config } from '../../src/config/schema.js';
import { loadConfig } from '../../src/config/load.js';
import { startApp, type App } from '../../src/app.js';
import { createLogger } from '../../src/observability/log.js';
import { parseQuery } from '../../src/dns/wire.js';
import { RCODE } from '../../src/dns/constants.js';
import type { QueryHandlerDeps } from '../../src/query/handler.js';
import { startJanusCluster } from '../support/consul-sim/index.js';
import { dig } from '../support/dig.js';
import { startProxy, startUnbound } from '../support/proc.js';
import { waitFor } from '../support/wait.js';
import { Rng, mutate } from '../support/fuzz.js';

const counters = () => ({ acl: { refuse: 0, drop: 0 }, ratelimited: { refuse: 0, drop: 0, tc: 0 } });

// ---------------------------------------------------------------------------------------------
// Units

test('address parsing: IPv4, IPv6 with ::, zones and embedded IPv4; junk rejected', () => {
  const w = new Uint32Array(4);
  const v4 = (s: string): number => (parseIpWords(s, w) === 4 ? w[3]! : -1);
  assert.equal(v4('10.1.2.3'), 0x0a010203);
  assert.equal(v4('255.255.255.255'), 0xffffffff);
  for (const bad of ['1.2.3', '1.2.3.4.5', '256.1.1.1', '1..2.3', '', 'a.b.c.d', '1.2.3.4 '])
    assert.equal(parseIpWords(bad, w), 0, bad);
  assert.ok(parseIpWords('::1', w));
  assert.deepEqual([...w], [0, 0, 0, 1]);
  assert.ok(parseIpWords('fe80::1%eth0', w));
  assert.equal(w[0], 0xfe800000);
  assert.ok(parseIpWords('::ffff:10.0.0.1', w));
  assert.deepEqual([...w], [0, 0, 0xffff, 0x0a000001]);
  assert.ok(parseIpWords('2001:db8:1:2:3:4:5:6', w));
  assert.deepEqual([...w], [0x20010db8, 0x00010002, 0x00030004, 0x00050006]);
  for (const bad of ['1:2:3', ':::1', '1::2::3', 'g::1', '12345::1', '1:2:3:4:5:6:7:8:9', '1:'])
    assert.equal(parseIpWords(bad, w), 0, bad);
});

test("default ACL is dnsdist's: loopback, RFC 1918, RFC 6598, link-local, ULA; nothing else", () => {
  const acl = new Acl(DEFAULTS.acl.allow);
  for (const ok of [
    '127.0.0.1',
    '127.9.9.9',
    '10.200.0.1',
    '172.16.0.1',
    '172.31.255.255',
    '192.168.1.1',
    '100.64.0.1',
    '100.127.255.255',
    '169.254.3.4',
    '::1',
    'fd00::53',
    'fc12::1',
    'fe80::1%eth0',
    '::ffff:10.0.0.1',
    '::ffff:127.0.0.1',
  ]) {
    assert.ok(acl.allows(ok), ok);
  }
  for (const no of [
    '8.8.8.8',
    '172.32.0.1',
    '100.128.0.1',
    '192.169.0.1',
    '2001:db8::1',
    '::ffff:8.8.8.8',
    '::',
    'not-an-ip',
  ]) {
    assert.ok(!acl.allows(no), no);
  }
});

test('a configured allow list replaces the default entirely, loopback included', () => {
  const acl = new Acl(['10.0.0.0/8', '2001:db8::/32']);
  assert.ok(acl.allows('10.9.8.7'));
  assert.ok(acl.allows('2001:db8:ffff::1'));
  assert.ok(!acl.allows('127.0.0.1'));
  assert.ok(!acl.allows('::1'));
  // An IPv6 rule covering the mapped range admits IPv4 clients.
  assert.ok(new Acl(['::ffff:0:0/96']).allows('192.0.2.1'));
  const c = counters();
  assert.equal(
    new Gate({ allow: ['10.0.0.0/8'], aclAction: 'refuse', rate: null }, c).check('127.0.0.1', true),
    RCODE.REFUSED,
  );
  assert.equal(
    new Gate({ allow: ['10.0.0.0/8'], aclAction: 'drop', rate: null }, c).check('127.0.0.1', false),
    GATE_DROP,
  );
  assert.deepEqual(c.acl, { refuse: 1, drop: 1 });
  // Allow-all and no limits: nothing to check, no gate.
  const open = { ...DEFAULTS, acl: { allow: ['0.0.0.0/0', '::/0'], action: 'refuse' as const } } as Config;
  assert.equal(createGate(open, counters()), null);
  assert.notEqual(createGate(DEFAULTS, counters()), null, 'the default ACL is on');
});

test('token bucket: burst, refill at qps, one bucket per IPv4 /32 and per IPv6 /64', () => {
  let now = 1_000_000;
  const lim = new RateLimiter({ qps: 2, burst: 3, now: () => now });
  const k = '192.0.2.1';
  assert.deepEqual([lim.take(k), lim.take(k), lim.take(k), lim.take(k)], [true, true, true, false]);
  assert.ok(lim.take('192.0.2.2'), 'another /32 has its own bucket');
  now += 499;
  assert.equal(lim.take(k), false);
  now += 1;
  assert.equal(lim.take(k), true, '2 qps: one token every 500 ms');
  now += 60_000;
  assert.deepEqual(
    [lim.take(k), lim.take(k), lim.take(k), lim.take(k)],
    [true, true, true, false],
    'refills to burst, no more',
  );
  assert.equal(rateKey('2001:db8:1:2:aaaa::1'), rateKey('2001:db8:1:2:bbbb::2'));
  assert.notEqual(rateKey('2001:db8:1:2::1'), rateKey('2001:db8:1:3::1'));
  assert.equal(rateKey('::ffff:192.0.2.1'), '192.0.2.1', 'IPv4-mapped clients share the IPv4 bucket');
});

test('rate actions: refuse, drop, and tc for UDP only (TCP is never limited by tc); counted', () => {
  let now = 0;
  for (const action of ['refuse', 'drop', 'tc'] as const) {
    const c = counters();
    const g = new Gate(
      {
        allow: DEFAULTS.acl.allow,
        aclAction: 'refuse',
        rate: { enabled: true, qps: 1, burst: 2, action },
        now: () => now,
      },
      c,
    );
    assert.equal(g.check('10.0.0.1', true), 0);
    assert.equal(g.check('10.0.0.1', true), 0);
    const want = action === 'refuse' ? RCODE.REFUSED : action === 'drop' ? GATE_DROP : GATE_TC;
    assert.equal(g.check('10.0.0.1', true), want);
    assert.equal(g.check('10.0.0.1', false), action === 'tc' ? 0 : want, 'TCP');
    assert.equal(c.ratelimited[action], action === 'tc' ? 1 : 2);
    now += 10_000;
  }
  const off = new Gate(
    { allow: DEFAULTS.acl.allow, aclAction: 'refuse', rate: { ...DEFAULTS.limits.rate } },
    counters(),
  );
  for (let i = 0; i < 1000; i++) assert.equal(off.check('10.0.0.1', true), 0, 'limits are off by default');
});

test('memory stays bounded under a flood from many sources', () => {
  let now = 0;
  const g = new Gate(
    {
      allow: ['0.0.0.0/0', '::/0'],
      aclAction: 'refuse',
      rate: { enabled: true, qps: 10, burst: 20, action: 'drop' },
      memoSize: 500,
      maxBuckets: 1000,
      now: () => now,
    },
    counters(),
  );
  for (let i = 0; i < 50_000; i++) {
    g.check(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, true);
    if (i % 100 === 0) now++;
  }
  assert.ok(g.buckets <= 1000, `buckets ${g.buckets}`);
  // A client hammering throughout is still limited after the sweeps.
  let passed = 0;
  for (let i = 0; i < 100; i++) if (g.check('192.0.2.77', true) === 0) passed++;
  assert.equal(passed, 20, 'burst, then limited');
});

test("the TC reply is the client's header and question with TC, QR and RA, no records", () => {
  const q = Buffer.from('abcd01000001000000000000' + '03777777076578616d706c6500' + '00010001', 'hex');
  const p = parseQuery(q);
  assert.equal(p.kind, 'query');
  if (p.kind !== 'query') return;
  const r = tcReply(q, p.q, 1232);
  assert.equal(r.readUInt16BE(0), 0xabcd);
  const flags = r.readUInt16BE(2);
  assert.ok(flags & 0x8000 && flags & 0x0200 && flags & 0x0080 && flags & 0x0100, flags.toString(16));
  assert.deepEqual([r.readUInt16BE(4), r.readUInt16BE(6), r.readUInt16BE(8), r.readUInt16BE(10)], [1, 0, 0, 0]);
  assert.equal(r.length, q.length);
});

// ---------------------------------------------------------------------------------------------
// On a running proxy

/** A validated Config from flags and, optionally, a YAML file's text (loadConfig reads it through `readFile`). */
function configFrom(args: string[], yaml = ''): Config {
  const file = yaml ? ['--config', 'test.yaml'] : [];
  return loadConfig({
    argv: ['--listen', '127.0.0.1:0', '--metrics', 'off', ...file, ...args],
    env: {},
    readFile: () => yaml,
  }).config;
}

async function withApp(config: Config): Promise<{ app: App; port: number }> {
  const app = await startApp(config, createLogger('silent'));
  const udp = app.udpAddresses[0]!;
  return { app, port: Number(udp.slice(udp.lastIndexOf(':') + 1)) };
}

test('ACL on a running proxy: a source outside acl.allow gets REFUSED (or nothing), inside is answered', async (t) => {
  const sim = await startJanusCluster();
  t.after(() => sim.stop());
  const cfg = configFrom(['--agent', `127.0.0.1:${sim.dnsPort}`], 'acl:\n  allow: ["127.0.0.2/32", "10.0.0.0/8"]\n');
  const { app, port } = await withApp(cfg);
  t.after(() => app.close());
  const at = ['@127.0.0.1', '-p', String(port)];
  const out = await dig([...at, '-b', '127.0.0.1', 'janus.service.consul']);
  assert.equal(out.status, 'REFUSED');
  assert.equal(out.answer.length, 0);
  const outTcp = await dig([...at, '-b', '127.0.0.1', 'janus.service.consul', '+tcp']);
  assert.equal(outTcp.status, 'REFUSED', 'TCP too');
  const inside = await dig([...at, '-b', '127.0.0.2', 'janus.service.consul']);
  assert.equal(inside.status, 'NOERROR');
  assert.equal(inside.answer.length, 2);
  assert.equal(app.metrics.acl.refuse, 2);

  const dropCfg = configFrom(
    ['--agent', `127.0.0.1:${sim.dnsPort}`],
    'acl:\n  allow: ["127.0.0.2/32"]\n  action: drop\n',
  );
  const d = await withApp(dropCfg);
  t.after(() => d.app.close());
  const silent = await dig(['@127.0.0.1', '-p', String(d.port), '-b', '127.0.0.1', 'janus.service.consul', '+time=1']);
  assert.equal(silent.status, null, 'dropped: no reply at all');
  assert.equal(d.app.metrics.acl.drop, 1);
  assert.equal(
    (await dig(['@127.0.0.1', '-p', String(d.port), '-b', '127.0.0.2', 'janus.service.consul'])).status,
    'NOERROR',
  );
});

test('rate limit tc on a running proxy: UDP over the rate gets TC, dig retries over TCP and gets the answer', async (t) => {
  const sim = await startJanusCluster();
  t.after(() => sim.stop());
  const cfg = configFrom(
    ['--agent', `127.0.0.1:${sim.dnsPort}`],
    'limits:\n  rate: {enabled: true, qps: 1, burst: 2, action: tc}\n',
  );
  const { app, port } = await withApp(cfg);
  t.after(() => app.close());
  const at = ['@127.0.0.1', '-p', String(port), '-b', '127.0.0.3'];
  for (let i = 0; i < 2; i++) assert.ok(!(await dig([...at, 'janus.service.consul'])).flags.includes('tc'));
  const tc = await dig([...at, 'janus.service.consul', '+ignore']);
  assert.ok(tc.flags.includes('tc'), 'over the rate: TC');
  assert.equal(tc.answer.length, 0);
  const retried = await dig([...at, 'janus.service.consul']);
  assert.equal(retried.status, 'NOERROR');
  assert.equal(retried.answer.length, 2, 'the TCP retry is answered');
  assert.ok(app.metrics.ratelimited.tc >= 2);
  const other = await dig(['@127.0.0.1', '-p', String(port), '-b', '127.0.0.4', 'janus.service.consul']);
  assert.ok(!other.flags.includes('tc'), 'another client has its own bucket');
});

/**
 * A "recursor" that forwards every question to `target` (set once the proxy is up) and relays the
 * reply: what systemd-resolved or a site resolver pointing back at us would do.
 */
async function startForwarder(): Promise<{ port: number; target: number; sock: dgram.Socket; close(): void }> {
  const sock = dgram.createSocket('udp4');
  const out = dgram.createSocket('udp4');
  const waiting = new Map<number, dgram.RemoteInfo>();
  const f = {
    port: 0,
    target: 0,
    sock,
    close: () => {
      sock.close();
      out.close();
    },
  };
  const held: [Buffer, dgram.RemoteInfo][] = [];
  const forward = (m: Buffer, r: dgram.RemoteInfo) => {
    waiting.set(m.readUInt16BE(0), r);
    out.send(m, f.target, '127.0.0.1');
  };
  sock.on('message', (m, r) => {
    if (m.length < 12) return;
    if (f.target) forward(m, r);
    else held.push([m, r]);
  });
  out.on('message', (m) => {
    const r = waiting.get(m.readUInt16BE(0));
    if (r) sock.send(m, r.port, r.address);
  });
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  await new Promise<void>((r) => out.bind(0, '127.0.0.1', () => r()));
  f.port = sock.address().port;
  Object.defineProperty(f, 'target', {
    get: () => tgt,
    set: (v: number) => {
      tgt = v;
      for (const [m, r] of held.splice(0)) forward(m, r);
    },
  });
  let tgt = 0;
  return f;
}

test('loop guard: a recursor that forwards back to us is found, its pool answers SERVFAIL at once; .consul unaffected', async (t) => {
  const sim = await startJanusCluster();
  const fwd = await startForwarder();
  t.after(async () => {
    fwd.close();
    await sim.stop();
  });
  const cfg = configFrom(['--agent', `127.0.0.1:${sim.dnsPort}`, '--recursor', `127.0.0.1:${fwd.port}`]);
  const { app, port } = await withApp(cfg);
  t.after(() => app.close());
  const deps = (app.proxy as unknown as { deps: QueryHandlerDeps }).deps;
  assert.ok(deps.loop, 'the app has a loop guard');
  // The guard probed at start; the forwarder held the probe until it knows where "back to us" is.
  fwd.target = port;
  await waitFor(() => deps.pools.get('recursor') instanceof LoopedPool, {
    what: 'the recursor pool marked as looping',
  });
  const t0 = Date.now();
  const r = await dig(['@127.0.0.1', '-p', String(port), 'www.example', '+time=5']);
  assert.equal(r.status, 'SERVFAIL');
  assert.ok(r.opt?.ede, 'with an Extended DNS Error');
  t.diagnostic(`SERVFAIL for the looped pool in ${Date.now() - t0} ms`);
  assert.equal((await dig(['@127.0.0.1', '-p', String(port), 'janus.service.consul'])).status, 'NOERROR');
});

test('loop guard: a real recursor (unbound) is not a loop', async (t) => {
  const sim = await startJanusCluster();
  const ub = await startUnbound();
  t.after(async () => {
    await ub.stop();
    await sim.stop();
  });
  const cfg = configFrom(
    ['--agent', `127.0.0.1:${sim.dnsPort}`, '--recursor', `127.0.0.1:${ub.port}`],
    `zones:\n  - name: example\n    upstreams: ["127.0.0.1:${ub.port}"]\n`,
  );
  const { app, port } = await withApp(cfg);
  t.after(() => app.close());
  const deps = (app.proxy as unknown as { deps: QueryHandlerDeps }).deps;
  const report = await deps.loop!.check(deps.pools);
  assert.equal(report.probed, 2, 'the recursor and the zone upstream');
  assert.equal(report.answered, 2);
  assert.deepEqual(report.loops, []);
  assert.equal((await dig(['@127.0.0.1', '-p', String(port), 'www.example'])).status, 'NOERROR');
});

// ---------------------------------------------------------------------------------------------
// Bounded network fuzz (the 100k-packet run is `node dist/bench/netfuzz.js`)

function corpusQueries(): Buffer[] {
  const dir = new URL('../../../test/fixtures/corpus/queries-dig/', import.meta.url);
  const names = [
    'a-janus.service.starlings.bin',
    'aaaa-mixedcase-JaNuS.SeRvIcE.CoNsUl.bin',
    'srv-noedns-_janus._tcp.service.consul.bin',
    'cookie-example.org.bin',
    'nsid-subnet-example.org.bin',
    'opcode15-header-only.bin',
    'soa-bufsize512-consul.bin',
    'edns-version1-example.org.bin',
  ];
  return names.map((n) => readFileSync(new URL(n, dir)));
}

test('bounded network fuzz: 3,000 random and mutated packets over UDP and TCP; the proxy still answers', async (t) => {
  const sim = await startJanusCluster();
  const p = await startProxy(['--agent', `127.0.0.1:${sim.dnsPort}`, '--metrics', 'off']);
  t.after(async () => {
    await p.stop();
    await sim.stop();
  });
  const seeds = corpusQueries();
  const rng = new Rng(0x5eed);
  const sock = dgram.createSocket('udp4');
  let replies = 0;
  sock.on('message', () => {
    replies++;
  });
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  const packet = () =>
    rng.bool(0.2) ? Buffer.from(Array.from({ length: rng.int(80) }, () => rng.int(256))) : mutate(rng.pick(seeds), rng);
  for (let i = 0; i < 2500; i++) {
    sock.send(packet(), p.port, '127.0.0.1');
    if (i % 50 === 49) await new Promise((r) => setImmediate(r));
  }
  // TCP: a few connections each carrying framed mutants, some with lying lengths, then closed.
  for (let c = 0; c < 10; c++) {
    await new Promise<void>((resolve) => {
      const s = net.connect(p.port, '127.0.0.1');
      s.on('error', () => resolve());
      s.on('close', () => resolve());
      s.on('data', () => {
        /* replies ignored */
      });
      s.on('connect', () => {
        const frames: Buffer[] = [];
        for (let i = 0; i < 50; i++) {
          const m = packet();
          const len = Buffer.alloc(2);
          len.writeUInt16BE(rng.bool(0.1) ? rng.int(65536) : m.length);
          frames.push(len, m);
        }
        s.end(Buffer.concat(frames));
      });
      s.setTimeout(3000, () => s.destroy());
    });
  }
  sock.close();
  const ok = await dig(['@127.0.0.1', '-p', String(p.port), 'janus.service.consul']);
  assert.equal(ok.status, 'NOERROR');
  assert.equal(ok.answer.length, 2);
  assert.equal(p.proc.exitCode, null, 'still running');
  t.diagnostic(`udp replies to 2,500 fuzz packets: ${replies}`);
});

// ---------------------------------------------------------------------------------------------
// The real wiring, through the CLI

test('CLI: a source outside acl.allow gets REFUSED', async (t) => {
  const sim = await startJanusCluster();
  const p = await startProxy(['--agent', `127.0.0.1:${sim.dnsPort}`, '--metrics', 'off'], {
    config: 'acl:\n  allow: ["127.0.0.2/32"]\n',
  });
  t.after(async () => {
    await p.stop();
    await sim.stop();
  });
  assert.equal(
    (await dig(['@127.0.0.1', '-p', String(p.port), '-b', '127.0.0.1', 'janus.service.consul'])).status,
    'REFUSED',
  );
  assert.equal(
    (await dig(['@127.0.0.1', '-p', String(p.port), '-b', '127.0.0.2', 'janus.service.consul'])).status,
    'NOERROR',
  );
});
