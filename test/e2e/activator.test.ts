/**
 * The test activator passes sockets as systemd does, and holds them across a restart: a fixture
 * child (test/fixtures/activated-child.ts) takes fds 3 and 4 itself and reports what it got.
 * Datagrams and connections that arrive while no child runs are queued by the kernel and answered
 * by the next child.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { TYPE } from '../../src/dns/constants.js';
import { queryMessage, tcpFrame } from '../support/query.js';
import { startActivator, type ChildLine } from '../support/activator.js';

const CHILD = fileURLToPath(new URL('../fixtures/activated-child.js', import.meta.url));

const isListening = (pid: number) => (l: ChildLine) => l.json?.msg === 'listening' && l.json.pid === pid;

/** One UDP query on a connected socket: the reply, or the error (ECONNREFUSED when nothing is bound). */
function udpAsk(
  port: number,
  id: number,
  timeoutMs = 5000,
): Promise<{ reply?: Buffer; error?: string; sentAt: number; sentAtWall: number }> {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    const out = { sentAt: 0, sentAtWall: 0 };
    const done = (v: { reply?: Buffer; error?: string }) => {
      clearTimeout(timer);
      try {
        s.close();
      } catch {
        /* closed */
      }
      resolve({ ...out, ...v });
    };
    const timer = setTimeout(() => done({ error: 'timeout' }), timeoutMs);
    s.on('error', (e: NodeJS.ErrnoException) => done({ error: e.code ?? e.message }));
    s.on('message', (m) => done({ reply: m }));
    s.connect(port, '127.0.0.1', () => {
      out.sentAt = performance.now();
      out.sentAtWall = Date.now();
      s.send(queryMessage(id, 'x.example.', TYPE.A));
    });
  });
}

/** Connects, sends one framed query, resolves with the framed reply's message. */
function tcpAsk(port: number, id: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(tcpFrame(queryMessage(id, 'x.example.', TYPE.A))));
    let buf = Buffer.alloc(0);
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        s.destroy();
        resolve(buf.subarray(2, 2 + buf.readUInt16BE(0)));
      }
    });
    s.on('error', reject);
  });
}

const answeredBy = (m: Buffer) => /pid=(\d+)$/.exec(m.toString('latin1'))?.[1];

test('activator: the child gets fds 3 and 4, LISTEN_FDS=2, LISTEN_FDNAMES=dns:dns and LISTEN_PID = its own pid', async (t) => {
  const a = await startActivator([process.execPath, CHILD]);
  t.after(() => a.stop());
  const pid = a.childPid!;
  const l = await a.waitLine(isListening(pid));
  assert.deepEqual(l.json!.env, { LISTEN_FDS: '2', LISTEN_FDNAMES: 'dns:dns', LISTEN_PID: String(pid) });
  // fd 3 is the UDP socket and fd 4 the TCP one (the socket unit's order), both on the activator's port.
  assert.deepEqual(l.json!.kinds, { 3: 'udp', 4: 'tcp' });
  assert.equal(l.json!.udp, `127.0.0.1:${a.port}`);
  assert.equal(l.json!.tcp, `127.0.0.1:${a.port}`);
  const u = await udpAsk(a.port!, 7);
  assert.equal(u.reply?.readUInt16BE(0), 7);
  assert.equal(answeredBy(u.reply), String(pid));
  const m = await tcpAsk(a.port!, 8);
  assert.equal(m.readUInt16BE(0), 8);
  assert.equal(answeredBy(m), String(pid));
});

test('activator: datagrams and connections during a restart are queued and answered by the next child', async (t) => {
  // The next child waits 500 ms before taking its sockets: the gap in which nothing reads them.
  const a = await startActivator([process.execPath, CHILD], { env: { START_DELAY_MS: '500' } });
  t.after(() => a.stop());
  const first = a.childPid!;
  await a.waitLine(isListening(first));
  const before = await udpAsk(a.port!, 1);
  assert.equal(answeredBy(before.reply!), String(first));

  const r = await a.restart();
  assert.equal(r.oldPid, first);
  // Sent after the old child exited, before the new one has its sockets.
  const udp = Array.from({ length: 20 }, (_, i) => udpAsk(a.port!, 100 + i));
  const tcp = tcpAsk(a.port!, 200);
  const listening = await a.waitLine(isListening(r.newPid));
  const replies = await Promise.all(udp);
  for (const u of replies) {
    assert.equal(u.error, undefined, 'no query refused or lost');
    assert.ok(
      u.sentAtWall <= (listening.json!.takingAt as number),
      'sent in the gap, before the new child touched its sockets',
    );
    assert.equal(answeredBy(u.reply!), String(r.newPid));
  }
  assert.deepEqual(
    replies.map((u) => u.reply!.readUInt16BE(0)),
    Array.from({ length: 20 }, (_, i) => 100 + i),
  );
  assert.equal(answeredBy(await tcp), String(r.newPid));
  assert.deepEqual(listening.json!.env, { LISTEN_FDS: '2', LISTEN_FDNAMES: 'dns:dns', LISTEN_PID: String(r.newPid) });
});

test('activator with ListenStream= first: TCP is fd 3, UDP fd 4, and a child that looks the kinds up answers on both', async (t) => {
  const a = await startActivator([process.execPath, CHILD], { streamFirst: true });
  t.after(() => a.stop());
  const pid = a.childPid!;
  const l = await a.waitLine(isListening(pid));
  assert.deepEqual(l.json!.kinds, { 3: 'tcp', 4: 'udp' });
  assert.equal(answeredBy((await udpAsk(a.port!, 9)).reply!), String(pid));
  assert.equal(answeredBy(await tcpAsk(a.port!, 10)), String(pid));
});

test('activator without sockets: the child gets no LISTEN_* variables (the comparison mode)', async (t) => {
  const a = await startActivator([process.execPath, CHILD], { sockets: false });
  t.after(() => a.stop());
  const pid = a.childPid!;
  const l = await a.waitLine((x) => x.json?.msg === 'not for us' && x.json.pid === pid);
  assert.deepEqual(l.json!.env, {});
  const ex = await a.waitEvent((e) => e.event === 'exited' && e.pid === pid);
  assert.equal(ex.code, 3);
});
