/**
 * The forwarding-loop guard (src/loop.ts) on its own: real UDP sockets on 127.0.0.1 stand in for
 * the upstreams (one that relays every question to "our listener", one that answers, one that
 * never answers) and for the proxy's listener, which asks the guard's hot-path hook exactly as the
 * handler does. What is probed, what counts as a loop, what is swapped out, what is let through.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { LoopGuard, LoopedPool, LOOP_PROBE_ZONE } from '../../src/query/loop-guard.js';
import { type PoolOptions } from '../../src/upstream/types.js';
import { UpstreamSockets } from '../../src/upstream/udp.js';
import { UpstreamPool } from '../../src/upstream/pool.js';
import { parseQuery, buildQuestion } from '../../src/dns/wire.js';
import { RCODE } from '../../src/dns/constants.js';

const HINFO = 13;
const POOL_OPTS: PoolOptions = {
  timeoutMs: 500,
  hedgeMs: 500,
  deadlineMs: 1000,
  maxFails: 3,
  probeIntervalMs: 1 << 30,
  probeQuestion: buildQuestion('probe.test', 1),
  udpSize: 1232,
  maxInFlight: 16,
};

interface Seen {
  name: string;
  qtype: number;
}

/** A log that keeps what it was told. */
function recordingLog() {
  const lines: { level: string; o: object; m?: string }[] = [];
  const at = (level: string) => (o: object, m?: string) => {
    lines.push({ level, o, m });
  };
  return { lines, error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug') };
}

async function udpSocket(
  t: TestContext,
  onMessage: (msg: Buffer, rinfo: dgram.RemoteInfo, s: dgram.Socket) => void,
): Promise<dgram.Socket> {
  const s = dgram.createSocket('udp4');
  s.on('message', (msg, rinfo) => onMessage(msg, rinfo, s));
  await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve));
  t.after(() => {
    try {
      s.close();
    } catch {
      /* closed */
    }
  });
  return s;
}

function portOf(s: dgram.Socket): number {
  return s.address().port;
}

/** The same header back with QR set and the given rcode, question kept: a minimal reply. */
function replyTo(query: Buffer, rcode: number): Buffer {
  const r = Buffer.from(query);
  r.writeUInt16BE(0x8000 | (query.readUInt16BE(2) & 0x0100) | 0x0080 | rcode, 2);
  return r;
}

/** Upstreams and the listener, wired the way a loop happens in the field. */
async function setup(t: TestContext, guard: LoopGuard) {
  const seen = { looping: [] as Seen[], honest: [] as Seen[], silent: [] as Seen[], consul: [] as Seen[] };
  const note = (list: Seen[], msg: Buffer) => {
    const p = parseQuery(msg);
    if (p.kind === 'query') list.push({ name: p.q.name, qtype: p.q.qtype });
  };
  // Our own listener: what the handler does first with every query's lowercased name.
  const hits: boolean[] = [];
  const listener = await udpSocket(t, (msg) => {
    const p = parseQuery(msg);
    if (p.kind === 'query') hits.push(guard.isProbe(p.q.name));
  });
  // A recursor that forwards everything to us (systemd-resolved pointed back at the proxy), then
  // gives up with SERVFAIL.
  const looping = await udpSocket(t, (msg, rinfo, s) => {
    note(seen.looping, msg);
    s.send(msg, portOf(listener), '127.0.0.1');
    s.send(replyTo(msg, RCODE.SERVFAIL), rinfo.port, rinfo.address);
  });
  const honest = await udpSocket(t, (msg, rinfo, s) => {
    note(seen.honest, msg);
    s.send(replyTo(msg, RCODE.NXDOMAIN), rinfo.port, rinfo.address);
  });
  const silent = await udpSocket(t, (msg) => note(seen.silent, msg));
  const consul = await udpSocket(t, (msg) => note(seen.consul, msg));
  const transport = new UpstreamSockets(1, 1);
  t.after(() => transport.close());
  const pool = (name: string, s: dgram.Socket) => {
    const p = new UpstreamPool(name, [{ host: '127.0.0.1', port: portOf(s) }], POOL_OPTS, transport);
    t.after(() => p.close());
    return p;
  };
  return { seen, hits, pool, looping, honest, silent, consul };
}

test('a recursor that forwards the probe back to us is a loop: its pool is swapped for a LoopedPool, once', async (t) => {
  const log = recordingLog();
  const onLoop: [string, string][] = [];
  const guard = new LoopGuard({ log, timeoutMs: 1500, onLoop: (pool, upstream) => onLoop.push([pool, upstream]) });
  t.after(() => guard.close());
  const s = await setup(t, guard);
  const recursor = s.pool('recursor', s.looping);
  const zone = s.pool('zone:example.test', s.honest);
  const consul = s.pool('consul', s.consul);
  const pools = new Map<string, UpstreamPool>([
    ['consul', consul],
    ['recursor', recursor],
    ['zone:example.test', zone],
  ]);

  const report = await guard.check(pools);
  const loopLabel = `127.0.0.1:${portOf(s.looping)}`;
  assert.equal(report.probed, 2, 'the recursor and the zone upstream; never the Consul agents');
  assert.equal(report.answered, 2, 'a SERVFAIL from the looping recursor still counts as an answer');
  assert.deepEqual(report.loops, [{ pool: 'recursor', upstream: loopLabel }]);
  assert.deepEqual(report.brokenPools, ['recursor']);
  assert.deepEqual(guard.brokenPools(), ['recursor']);

  // What went out: one HINFO probe per upstream, named after the guard's prefix and the pool's zone.
  assert.deepEqual(s.seen.consul, []);
  assert.equal(s.seen.looping.length, 1);
  assert.equal(s.seen.honest.length, 1);
  assert.equal(s.seen.looping[0]!.qtype, HINFO);
  assert.equal(s.seen.honest[0]!.qtype, HINFO);
  assert.match(guard.prefix, /^cdp-[0-9a-f]{12}-$/);
  assert.ok(s.seen.looping[0]!.name.startsWith(guard.prefix));
  assert.ok(s.seen.looping[0]!.name.endsWith('.' + LOOP_PROBE_ZONE), s.seen.looping[0]!.name);
  assert.ok(s.seen.honest[0]!.name.startsWith(guard.prefix));
  assert.ok(s.seen.honest[0]!.name.endsWith('.example.test'), s.seen.honest[0]!.name);

  // The listener recognised exactly the one probe that came back.
  assert.deepEqual(s.hits, [true]);
  assert.equal(guard.arrivals, 1);

  // The looping pool is out of the map the handler reads; the others are untouched.
  const swapped = pools.get('recursor');
  assert.ok(swapped instanceof LoopedPool, 'recursor pool replaced');
  assert.equal(swapped.loopedVia, loopLabel);
  assert.equal(pools.get('zone:example.test'), zone);
  assert.equal(pools.get('consul'), consul);
  const q = buildQuestion('www.example.org', 1);
  const asPool: UpstreamPool = swapped; // what the handler holds
  assert.deepEqual(
    await asPool.exchange(q, 0, q.length, 0x0100, false),
    { failure: 'network', upstream: loopLabel },
    'a looped pool fails at once, sending nothing',
  );
  assert.deepEqual(onLoop, [['recursor', loopLabel]]);
  const errors = log.lines.filter((l) => l.level === 'error');
  assert.equal(errors.length, 1);
  assert.match(errors[0]!.m ?? '', /forwarding loop/);

  // The same probe arriving again (a second circle) is still answered as a probe but not re-reported.
  assert.equal(guard.isProbe(s.seen.looping[0]!.name), true);
  assert.equal(guard.arrivals, 2);
  assert.deepEqual(onLoop, [['recursor', loopLabel]]);
  assert.equal(log.lines.filter((l) => l.level === 'error').length, 1);

  // A second check (a reload with the same guard) does not probe the looped pool again.
  const again = await guard.check(pools);
  assert.equal(again.probed, 1);
  assert.equal(s.seen.looping.length, 1);
});

test("what the hot-path hook lets through: real names, look-alikes, another guard's probes", async (t) => {
  const guard = new LoopGuard({ log: recordingLog(), timeoutMs: 1500 });
  const other = new LoopGuard({ log: recordingLog(), timeoutMs: 1500 });
  t.after(() => {
    guard.close();
    other.close();
  });
  assert.notEqual(guard.prefix, other.prefix, 'each guard draws its own random prefix');
  const s = await setup(t, guard);
  const pools = new Map<string, UpstreamPool>([['recursor', s.pool('recursor', s.honest)]]);
  const report = await guard.check(pools);
  assert.equal(report.probed, 1);
  assert.equal(report.answered, 1);
  assert.deepEqual(report.loops, []);
  const probe = s.seen.honest[0]!.name;

  for (const name of [
    '',
    'janus.service.consul',
    'www.example.org',
    `cdp-000000000000-0.${LOOP_PROBE_ZONE}`,
    `${guard.prefix}999.${LOOP_PROBE_ZONE}`,
    `${other.prefix}0.${LOOP_PROBE_ZONE}`,
    probe.toUpperCase(),
    `x${probe}`,
  ]) {
    assert.equal(guard.isProbe(name), false, JSON.stringify(name));
  }
  assert.equal(guard.arrivals, 0);
  assert.ok(pools.get('recursor') instanceof UpstreamPool && !(pools.get('recursor') instanceof LoopedPool));
  assert.deepEqual(guard.brokenPools(), []);
});

test('an upstream that never answers is not a loop; a closed guard sends nothing', async (t) => {
  const guard = new LoopGuard({ log: recordingLog(), timeoutMs: 300 });
  t.after(() => guard.close());
  const s = await setup(t, guard);
  const pools = new Map<string, UpstreamPool>([['recursor', s.pool('recursor', s.silent)]]);
  const report = await guard.check(pools);
  assert.deepEqual(report, { probed: 1, answered: 0, loops: [], brokenPools: [] });
  assert.equal(s.seen.silent.length, 1, 'the probe was sent');
  assert.ok(!(pools.get('recursor') instanceof LoopedPool));

  const closed = new LoopGuard({ log: recordingLog(), timeoutMs: 300 });
  closed.close();
  const honestPools = new Map<string, UpstreamPool>([['recursor', s.pool('recursor', s.honest)]]);
  const r2 = await closed.check(honestPools);
  assert.equal(r2.probed, 1);
  assert.equal(r2.answered, 0);
  assert.equal(s.seen.honest.length, 0, 'nothing sent after close()');
});
