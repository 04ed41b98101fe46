/**
 * The forwarding proxy end to end: the real CLI as a child process, the Consul agent simulator and
 * a real unbound recursor on loopback, checked with dig as a user would (issue 3).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { writeFileSync } from 'node:fs';
import { startJanusCluster, startSim, type Sim } from '../support/consul-sim/index.js';
import { dig } from '../support/dig.js';
import { startProxy, startUnbound, type Unbound, type ProxyProc } from '../support/proc.js';
import { waitFor } from '../support/wait.js';
import { queryMessage, tcpFrame } from '../support/query.js';

let sim: Sim;
let unbound: Unbound;
let proxy: ProxyProc;
const at = () => [`@${proxy.host}`, '-p', String(proxy.port)];

before(async () => {
  sim = await startJanusCluster();
  for (let i = 0; i < 30; i++)
    sim.register({ id: `many-${i}`, name: 'many', node: `m${i}`, nodeAddress: `127.0.1.${i + 1}`, port: 9000 + i });
  unbound = await startUnbound();
  proxy = await startProxy([
    '--agent',
    `127.0.0.1:${sim.dnsPort}`,
    '--recursor',
    `127.0.0.1:${unbound.port}`,
    '--consul-http',
    `http://127.0.0.1:${sim.httpPort}`,
    '--metrics',
    'off',
  ]);
});

after(async () => {
  await proxy?.stop();
  await unbound?.stop();
  await sim?.stop();
});

function addrs(r: { answer: { type: string; data: string }[] }, type = 'A'): string[] {
  return r.answer
    .filter((a) => a.type === type)
    .map((a) => a.data)
    .sort();
}

test('Consul service names resolve to what the agent gives, over UDP and TCP', async () => {
  const direct = await dig([`@127.0.0.1`, '-p', String(sim.dnsPort), 'janus.service.consul']);
  assert.equal(direct.status, 'NOERROR');
  for (const tcp of [false, true]) {
    const r = await dig([...at(), 'janus.service.consul', ...(tcp ? ['+tcp'] : [])]);
    assert.equal(r.status, 'NOERROR');
    assert.deepEqual(addrs(r), addrs(direct));
    assert.equal(addrs(r).length, 2);
    assert.ok(r.flags.includes('ra'), 'RA set on answers to QUERY');
    assert.ok(r.flags.includes('aa'), "the agent's AA is kept");
    assert.equal(r.transport, tcp ? 'TCP' : 'UDP');
  }
});

test("SRV answers keep the agent's targets, ports and glue", async () => {
  const direct = await dig([`@127.0.0.1`, '-p', String(sim.dnsPort), 'janus.service.consul', 'SRV']);
  const r = await dig([...at(), 'janus.service.consul', 'SRV']);
  assert.equal(r.status, 'NOERROR');
  assert.deepEqual(r.answer.map((a) => a.data).sort(), direct.answer.map((a) => a.data).sort());
  assert.deepEqual(addrs({ answer: r.additional }), addrs({ answer: direct.additional }));
});

test('recursor names resolve through the recursor, over UDP and TCP', async () => {
  for (const tcp of [false, true]) {
    const r = await dig([...at(), 'www.example', ...(tcp ? ['+tcp'] : [])]);
    assert.equal(r.status, 'NOERROR');
    assert.deepEqual(addrs(r), ['192.0.2.1']);
  }
  const nx = await dig([...at(), 'nosuch.example']);
  assert.equal(nx.status, 'NXDOMAIN');
  assert.equal(nx.authority[0]?.type, 'SOA');
});

test('unknown Consul names get NXDOMAIN with the SOA of the Consul domain', async () => {
  const r = await dig([...at(), 'nosuch.service.consul']);
  assert.equal(r.status, 'NXDOMAIN');
  assert.equal(r.authority[0]?.type, 'SOA');
  assert.equal(r.authority[0]?.name, 'consul.');
});

test('0x20 mixed case in the question is kept', async () => {
  const r = await dig([...at(), 'JaNuS.SeRvIcE.CoNsUl']);
  assert.equal(r.status, 'NOERROR');
  assert.equal(r.question[0]?.name, 'JaNuS.SeRvIcE.CoNsUl.');
});

test('EDNS: our OPT is returned, version 1 gets BADVERS, unknown options are ignored', async () => {
  const r = await dig([...at(), 'janus.service.consul', '+bufsize=4096']);
  assert.equal(r.opt?.udp, 1232, 'advertised size capped at maxUdpSize');
  const v1 = await dig([...at(), 'janus.service.consul', '+edns=1', '+noednsneg']);
  assert.equal(v1.status, 'BADVERS');
  assert.equal(v1.opt?.version, 0);
  const opt = await dig([...at(), 'janus.service.consul', '+ednsopt=100:abcd']);
  assert.equal(opt.status, 'NOERROR');
  const noedns = await dig([...at(), 'janus.service.consul', '+noedns']);
  assert.equal(noedns.status, 'NOERROR');
  assert.equal(noedns.opt, null);
});

test('odd opcodes and flags are answered as BIND does', async () => {
  const notimp = await dig([...at(), 'janus.service.consul', '+opcode=15']);
  assert.equal(notimp.status, 'NOTIMP');
  assert.ok(!notimp.flags.includes('ra') && !notimp.flags.includes('aa'));
  const z = await dig([...at(), 'janus.service.consul', '+zflag', '+norec']);
  assert.equal(z.status, 'NOERROR');
  assert.ok(!z.flags.includes('rd'), 'RD echoes the client');
  const axfr = await dig([...at(), 'consul', 'AXFR']);
  assert.match(axfr.raw, /Transfer failed|REFUSED/);
});

test('a large Consul answer: Consul-style trim for clients without EDNS, TC then TCP for small buffers', async () => {
  const plain = await dig([...at(), 'many.service.consul', '+noedns', '+ignore']);
  assert.equal(plain.status, 'NOERROR');
  assert.equal(plain.answer.length, 3, 'udpAnswerLimit (3) records, as Consul gives non-EDNS clients');
  assert.ok(!plain.flags.includes('tc'));
  const small = await dig([...at(), 'many.service.consul', '+bufsize=512', '+ignore']);
  assert.ok(small.flags.includes('tc'), 'does not fit 512: TC');
  assert.equal(small.answer.length, 0, 'a TC reply is header and question only');
  const retried = await dig([...at(), 'many.service.consul', '+bufsize=512']);
  assert.equal(retried.answer.length, 30, 'the TCP retry gets every healthy instance');
});

test('TCP: pipelined queries in one write, answered on one connection', async () => {
  const names = ['janus.service.consul', 'www.example', 'api.example'];
  const frames = names.map((n, i) => tcpFrame(queryMessage(i + 1, n)));
  const ids = await new Promise<number[]>((resolve, reject) => {
    const s = net.connect(proxy.port, proxy.host);
    const got: number[] = [];
    let buf = Buffer.alloc(0);
    s.on('connect', () => {
      // Split the three frames at odd places: framing must cope with any chunking.
      const all = Buffer.concat(frames);
      s.write(all.subarray(0, 1));
      setImmediate(() => {
        s.write(all.subarray(1, 17));
        s.write(all.subarray(17));
      });
    });
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const m = buf.subarray(2, 2 + buf.readUInt16BE(0));
        got.push(m.readUInt16BE(0));
        assert.equal(m[3]! & 0xf, 0);
        buf = buf.subarray(2 + m.length);
      }
      if (got.length === 3) {
        s.destroy();
        resolve(got);
      }
    });
    s.on('error', reject);
  });
  assert.deepEqual(ids.sort(), [1, 2, 3]);
});

test('malformed packets get FORMERR or silence, and the proxy keeps answering', async () => {
  const sock = dgram.createSocket('udp4');
  const replies: Buffer[] = [];
  sock.on('message', (m) => replies.push(m));
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  const send = (b: Buffer) => new Promise<void>((r) => sock.send(b, proxy.port, proxy.host, () => r()));
  await send(Buffer.from([1, 2, 3])); // shorter than a header: dropped
  await send(Buffer.from([0, 7, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0])); // QDCOUNT 2, no questions: FORMERR
  await send(Buffer.from([0, 8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1])); // pointer loop in the question
  await send(Buffer.from([0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x40, 0x41])); // reserved label type, cut short
  await waitFor(() => replies.length >= 3, { what: 'three FORMERR replies' });
  for (const r of replies) assert.equal(r[3]! & 0xf, 1, 'FORMERR');
  assert.deepEqual(replies.map((r) => r.readUInt16BE(0)).sort(), [7, 8, 9]);
  sock.close();
  const ok = await dig([...at(), 'janus.service.consul']);
  assert.equal(ok.status, 'NOERROR');
});

test('no recursors: names outside the Consul domain are REFUSED, .consul still answered', async (t) => {
  const p = await startProxy(['--agent', `127.0.0.1:${sim.dnsPort}`, '--metrics', 'off']);
  t.after(() => p.stop());
  const r = await dig([`@127.0.0.1`, '-p', String(p.port), 'www.example']);
  assert.equal(r.status, 'REFUSED');
  const c = await dig([`@127.0.0.1`, '-p', String(p.port), 'janus.service.consul']);
  assert.equal(c.status, 'NOERROR');
});

test('forward zones route to their own upstreams; .consul never goes to the recursors', async (t) => {
  // The agent is dead: if .consul leaked to a recursor, the answer would come from unbound.
  const dead = await startSim();
  await dead.setFault({ dns: 'refuse' });
  const p = await startProxy(
    ['--agent', `127.0.0.1:${dead.dnsPort}`, '--recursor', `127.0.0.1:${unbound.port}`, '--metrics', 'off'],
    { config: `zones:\n  - name: example\n    upstreams: ["127.0.0.1:${unbound.port}"]\n` },
  );
  t.after(async () => {
    await p.stop();
    await dead.stop();
  });
  const z = await dig([`@127.0.0.1`, '-p', String(p.port), 'api.example']);
  assert.deepEqual(addrs(z), ['192.0.2.2']);
  const c = await dig([`@127.0.0.1`, '-p', String(p.port), 'janus.service.consul', '+time=6']);
  assert.equal(c.status, 'SERVFAIL');
});

test('failover: a silent first agent costs milliseconds, not a timeout, and no SERVFAIL', async (t) => {
  const silent = await startSim();
  await silent.setFault({ dns: 'silent' });
  const p = await startProxy([
    '--agent',
    `127.0.0.1:${silent.dnsPort}`,
    '--agent',
    `127.0.0.1:${sim.dnsPort}`,
    '--metrics',
    '127.0.0.1:0',
    '--no-alias',
  ]);
  t.after(async () => {
    await p.stop();
    await silent.stop();
  });
  const times: number[] = [];
  for (let i = 0; i < 10; i++) {
    const t0 = Date.now();
    // No health watch (no Consul HTTP API here) and Consul's TTL 0: every query goes upstream.
    const r = await dig([
      `@127.0.0.1`,
      '-p',
      String(p.port),
      `server${(i % 2) + 1}.janus.service.consul`,
      i % 2 ? 'A' : 'SRV',
    ]);
    times.push(Date.now() - t0);
    assert.equal(r.status, 'NOERROR');
  }
  // A hedge happens only when a query went to the silent agent first and it stayed silent.
  const text = await (await fetch(`http://${p.metrics}/metrics`)).text();
  const hedged = Number(/^consul_dns_proxy_upstream_hedged_total\{pool="consul"\} (\d+)/m.exec(text)?.[1] ?? 0);
  assert.ok(hedged >= 1, `the silent agent was asked first and hedged past (${hedged} hedges)`);
  assert.ok(hedged <= 3, `then marked down and skipped, not hedged on every query (${hedged} hedges)`);
  t.diagnostic(`silent first agent: dig wall times ms ${times.join(' ')}`);
});

test('failover: a refusing first agent', async (t) => {
  const gone = await startSim();
  await gone.setFault({ dns: 'refuse' });
  const p = await startProxy([
    '--agent',
    `127.0.0.1:${gone.dnsPort}`,
    '--agent',
    `127.0.0.1:${sim.dnsPort}`,
    '--metrics',
    'off',
  ]);
  t.after(async () => {
    await p.stop();
    await gone.stop();
  });
  for (let i = 0; i < 4; i++) {
    const r = await dig([`@127.0.0.1`, '-p', String(p.port), 'janus.service.consul', '+tcp']);
    assert.equal(r.status, 'NOERROR');
    assert.equal(addrs(r).length, 2);
  }
});

test('all agents down: SERVFAIL with an Extended DNS Error within the deadline, then recovery', async (t) => {
  const a = await startSim();
  await a.setFault({ dns: 'silent' });
  const p = await startProxy(['--agent', `127.0.0.1:${a.dnsPort}`, '--metrics', 'off']);
  t.after(async () => {
    await p.stop();
    await a.stop();
  });
  const t0 = Date.now();
  const r = await dig([`@127.0.0.1`, '-p', String(p.port), 'nosuch.service.consul', '+time=5']);
  assert.equal(r.status, 'SERVFAIL');
  assert.ok(r.opt?.ede, 'EDE present');
  assert.ok(Date.now() - t0 < 5000);
  await a.setFault({ dns: null });
  await waitFor(
    async () => (await dig([`@127.0.0.1`, '-p', String(p.port), 'nosuch.service.consul'])).status === 'NXDOMAIN',
    { timeoutMs: 15_000, what: 'recovery' },
  );
});

test('SIGHUP reloads the file; a bad file keeps the running configuration', async (t) => {
  const p = await startProxy(['--metrics', 'off'], { config: `consul:\n  agents: ["127.0.0.1:${sim.dnsPort}"]\n` });
  t.after(() => p.stop());
  const cfg = p.configPath!;
  const at2 = [`@127.0.0.1`, '-p', String(p.port)];
  assert.equal((await dig([...at2, 'www.example'])).status, 'REFUSED');
  writeFileSync(cfg, `consul:\n  agents: ["127.0.0.1:${sim.dnsPort}"]\nrecursors: ["127.0.0.1:${unbound.port}"]\n`);
  p.proc.kill('SIGHUP');
  await waitFor(() => p.logs.some((l) => l.msg === 'configuration reloaded'), { what: 'reload log' });
  assert.equal((await dig([...at2, 'www.example'])).status, 'NOERROR');
  writeFileSync(cfg, `consul:\n  agents: 8600\nbogus: 1\n`);
  p.proc.kill('SIGHUP');
  await waitFor(() => p.logs.some((l) => l.msg === 'reload failed; keeping the running configuration'), {
    what: 'reload failure log',
  });
  assert.equal((await dig([...at2, 'www.example'])).status, 'NOERROR');
});

test('SIGTERM: exits 0', async () => {
  const p = await startProxy(['--agent', `127.0.0.1:${sim.dnsPort}`, '--metrics', 'off']);
  assert.equal((await dig([`@127.0.0.1`, '-p', String(p.port), 'janus.service.consul'])).status, 'NOERROR');
  assert.equal(await p.stop('SIGTERM'), 0);
  assert.ok(p.logs.some((l) => l.msg === 'stopped'));
});

test('SIGTERM drains: an in-flight TCP query is answered, a query sent after it is not, exit 0', async (t) => {
  const slow = await startJanusCluster();
  await slow.setFault({ dns: 'slow', delayMs: 800 });
  const p = await startProxy(['--agent', `127.0.0.1:${slow.dnsPort}`, '--metrics', 'off']);
  t.after(async () => {
    await p.stop();
    await slow.stop();
  });
  const s = net.connect(p.port, p.host);
  const ids: number[] = [];
  let buf = Buffer.alloc(0);
  s.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
      ids.push(buf.readUInt16BE(2));
      buf = buf.subarray(2 + buf.readUInt16BE(0));
    }
  });
  const closed = new Promise<void>((r) => s.on('close', () => r()));
  s.on('error', () => {
    /* closed by the server */
  });
  await new Promise<void>((r) => s.once('connect', () => r()));
  // The pool probes the agent once at start: count from after that, so the next query seen is ours.
  await waitFor(() => slow.queries >= 1, { what: 'the start-up probe at the agent' });
  const q0 = slow.queries;
  s.write(tcpFrame(queryMessage(1, 'janus.service.consul')));
  await waitFor(() => slow.queries > q0, { what: 'the first query at the (slow) agent' });
  p.proc.kill('SIGTERM');
  await waitFor(() => p.logs.some((l) => l.msg === 'shutting down'), { what: 'drain started' });
  s.write(tcpFrame(queryMessage(2, 'nosuch.service.consul')));
  await closed;
  assert.deepEqual(ids, [1], 'the in-flight query is answered, the late one is not');
  assert.equal(await p.exited, 0);
});
