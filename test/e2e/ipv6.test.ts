/**
 * IPv6 upstream addresses, end to end through the real CLI: a long-form address such as
 * `[0:0:0:0:0:0:0:1]:PORT` must reach the same server as `[::1]:PORT`, whose replies come from `::1`,
 * whether it is a recursor or a forward zone's upstream; and an IPv4-mapped upstream written in hex
 * (`[::ffff:7f00:1]`) must hear replies that the kernel reports from `::ffff:127.0.0.1`.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { decodeMessage } from '../../src/dns/message.js';
import { startProxy, freePort } from '../support/proc.js';
import { startScripted, reply, isProbe, a, clientQuery, askUdp } from '../support/scripted-upstream.js';

/** Whether a UDP socket can bind ::1 here (containers without IPv6 cannot). */
async function hasIpv6Loopback(): Promise<boolean> {
  const s = dgram.createSocket('udp6');
  const ok = await new Promise<boolean>((r) => {
    s.once('error', () => r(false));
    s.bind(0, '::1', () => r(true));
  });
  await new Promise<void>((r) => {
    try {
      s.close(() => r());
    } catch {
      r();
    }
  });
  return ok;
}

/** An upstream on `host` answering every name with A `ip`, stopped after the test. */
async function upstream(t: TestContext, ip: string, host?: string) {
  const up = await startScripted((q) => (isProbe(q) ? reply(q) : reply(q, { answers: [a(q.rawName, ip, 300)] })), host);
  t.after(() => up.stop());
  return up;
}

/** The CLI with these agent and recursor addresses (and extra config), stopped after the test. */
async function proxy(t: TestContext, agent: string, recursor: string, extra = '') {
  const p = await startProxy(
    [
      '--metrics',
      'off',
      '--consul-http',
      `http://127.0.0.1:${await freePort()}`,
      '--agent',
      agent,
      '--recursor',
      recursor,
    ],
    { config: 'upstream:\n  timeoutMs: 300\n  deadlineMs: 800\n' + extra },
  );
  t.after(() => p.stop());
  return p;
}

async function expectA(port: number, id: number, name: string, ip: string): Promise<void> {
  const r = await askUdp(port, clientQuery(id, name, 1));
  assert.ok(r, `no answer for ${name}`);
  const m = decodeMessage(r);
  assert.equal(m.flags & 0xf, 0, `NOERROR for ${name}`);
  assert.deepEqual([...m.answers[0]!.rdata], ip.split('.').map(Number), name);
}

test('a long-form IPv6 upstream [0:0:0:0:0:0:0:1]:PORT answers', async (t) => {
  if (!(await hasIpv6Loopback())) {
    t.skip('::1 is not available');
    return;
  }
  const up = await upstream(t, '192.0.2.22', '::1');
  const zone = `zones: [{name: corp.example, upstreams: ["[0000:0:0:0:0:0:0:0001]:${up.port}"]}]\n`;
  const p = await proxy(t, `[::1]:${up.port}`, `[0:0:0:0:0:0:0:1]:${up.port}`, zone);
  await expectA(p.port, 22, 'v6.example', '192.0.2.22');
  await expectA(p.port, 23, 'v6.corp.example', '192.0.2.22');
});

test('an IPv4-mapped upstream written in hex [::ffff:7f00:1]:PORT answers', async (t) => {
  if (!(await hasIpv6Loopback())) {
    t.skip('IPv6 sockets are not available');
    return;
  }
  const up = await upstream(t, '192.0.2.24');
  const p = await proxy(t, `127.0.0.1:${up.port}`, `[::FFFF:7F00:1]:${up.port}`);
  await expectA(p.port, 24, 'mapped.example', '192.0.2.24');
});
