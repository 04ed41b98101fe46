/**
 * TCP abuse limits (issue 9, RFC 7766 §6.2.3 and §10): connections capped in total and per client,
 * an idle timeout, a read timeout that cuts a client dribbling a message one byte at a time, and at
 * most `maxPipelined` queries in flight per connection. The real CLI with small limits from a
 * --config YAML file; clients on different loopback source addresses (127.0.0.x) play different
 * hosts. Rejections are read back from /metrics.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { startJanusCluster, type Sim } from '../support/consul-sim/index.js';
import { dig } from '../support/dig.js';
import { startProxy, type ProxyProc } from '../support/proc.js';
import { waitFor } from '../support/wait.js';
import { queryMessage, tcpFrame } from '../support/query.js';

let sim: Sim;

before(async () => {
  sim = await startJanusCluster();
});
after(async () => {
  await sim?.stop();
});

async function proxyWith(
  t: { after(fn: () => unknown): void },
  yaml: string,
  agent = `127.0.0.1:${sim.dnsPort}`,
): Promise<ProxyProc> {
  const p = await startProxy(['--agent', agent, '--metrics', '127.0.0.1:0'], { config: yaml });
  t.after(() => p.stop());
  return p;
}

const frame = (id: number, name: string): Buffer => tcpFrame(queryMessage(id, name));

/** A TCP client that records replies (by ID) and whether the server closed it. */
interface Client {
  sock: net.Socket;
  ids: number[];
  closed: boolean;
  bytesWritten: number;
}
function connect(p: ProxyProc, localAddress = '127.0.0.1'): Promise<Client> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port: p.port, host: '127.0.0.1', localAddress });
    const c: Client = { sock, ids: [], closed: false, bytesWritten: 0 };
    let buf = Buffer.alloc(0);
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        c.ids.push(buf.readUInt16BE(2));
        buf = buf.subarray(2 + buf.readUInt16BE(0));
      }
    });
    sock.on('close', () => {
      c.closed = true;
    });
    sock.on('error', () => {
      /* reset by the server: seen as close */
    });
    sock.once('connect', () => resolve(c));
    sock.once('error', reject);
  });
}

async function metric(p: ProxyProc, name: string, labels = ''): Promise<number> {
  const text = await (await fetch(`http://${p.metrics}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ''} `));
  return line ? Number(line.split(' ').pop()) : NaN;
}

test('at a cap (per client, then in total) the connection idle longest is closed for the new one and counted (RFC 7766 §6.2.3)', async (t) => {
  const p = await proxyWith(
    t,
    'limits:\n  tcp: {maxConnections: 3, maxPerClient: 2, idleTimeoutMs: 60000, readTimeoutMs: 60000}\n',
  );
  const a1 = await connect(p, '127.0.0.1');
  await new Promise((r) => setTimeout(r, 20));
  const a2 = await connect(p, '127.0.0.1');
  await waitFor(async () => (await metric(p, 'consul_dns_proxy_tcp_connections')) === 2, {
    what: 'two connections open',
  });
  const a3 = await connect(p, '127.0.0.1');
  await waitFor(() => a1.closed, { what: 'the oldest idle connection of the client to be evicted' });
  const b1 = await connect(p, '127.0.0.2');
  await waitFor(async () => (await metric(p, 'consul_dns_proxy_tcp_connections')) === 3, {
    what: 'a connection from another client accepted',
  });
  const c1 = await connect(p, '127.0.0.3');
  await waitFor(() => a2.closed, { what: 'the oldest idle connection of all to be evicted at the total cap' });
  // The new ones work, the others stay.
  for (const [i, c] of [a3, b1, c1].entries()) c.sock.write(frame(100 + i, 'janus.service.consul'));
  await waitFor(() => a3.ids.length === 1 && b1.ids.length === 1 && c1.ids.length === 1, {
    what: 'answers on the open connections',
  });
  assert.equal(await metric(p, 'consul_dns_proxy_tcp_connections_evicted_total'), 2);
  assert.equal(await metric(p, 'consul_dns_proxy_tcp_connections_rejected_total', 'reason="max_per_client"'), 0);
  assert.equal(await metric(p, 'consul_dns_proxy_tcp_connections_rejected_total', 'reason="max_connections"'), 0);
  for (const c of [a3, b1, c1]) c.sock.destroy();
  // Closing frees the slots.
  await waitFor(async () => (await metric(p, 'consul_dns_proxy_tcp_connections')) === 0, { what: 'slots freed' });
  const again = await connect(p, '127.0.0.3');
  again.sock.write(frame(7, 'janus.service.consul'));
  await waitFor(() => again.ids.length === 1, { what: 'a new connection accepted after others closed' });
  again.sock.destroy();
});

test('an idle connection is closed after idleTimeoutMs, also after it was used', async (t) => {
  const p = await proxyWith(t, 'limits:\n  tcp: {idleTimeoutMs: 300, readTimeoutMs: 5000}\n');
  const quiet = await connect(p);
  await waitFor(() => quiet.closed, { what: 'a silent connection to be closed', timeoutMs: 5000 });
  const used = await connect(p);
  used.sock.write(frame(1, 'janus.service.consul'));
  await waitFor(() => used.ids.length === 1, { what: 'an answer' });
  assert.equal(used.closed, false);
  await waitFor(() => used.closed, { what: 'the used connection to be closed once idle', timeoutMs: 5000 });
});

test('a client sending one byte at a time is cut by the read timeout before its message completes', async (t) => {
  const p = await proxyWith(t, 'limits:\n  tcp: {idleTimeoutMs: 60000, readTimeoutMs: 700}\n');
  const c = await connect(p);
  const bytes = frame(9, 'janus.service.consul');
  let i = 0;
  const timer = setInterval(() => {
    if (c.closed || i >= bytes.length) {
      clearInterval(timer);
      return;
    }
    c.sock.write(bytes.subarray(i, i + 1));
    i++;
    c.bytesWritten = i;
  }, 200); // one byte per 200 ms: the 41-byte frame would need 8 s
  t.after(() => clearInterval(timer));
  await waitFor(() => c.closed, { what: 'the dribbling connection to be closed', timeoutMs: 8000 });
  clearInterval(timer);
  assert.ok(c.bytesWritten < bytes.length, `cut after ${c.bytesWritten} of ${bytes.length} bytes`);
  assert.equal(c.ids.length, 0, 'never answered');
});

/**
 * An agent that holds every question for a service name until released (the simulator's 'slow'
 * fault with an unbounded delay, plus a count of what it holds); anything else (the proxy's
 * health probe) is answered NXDOMAIN at once.
 */
async function startHoldingAgent(): Promise<{ port: number; held: number; release(n: number): void; close(): void }> {
  const sock = dgram.createSocket('udp4');
  const queue: [Buffer, dgram.RemoteInfo][] = [];
  const reply = (q: Buffer, r: dgram.RemoteInfo) => {
    let end = 12;
    while (q[end]! !== 0 && end < q.length) end += q[end]! + 1;
    end += 5;
    const out = Buffer.from(q.subarray(0, end));
    out.writeUInt16BE(0x8583, 2); // QR AA RD RA, NXDOMAIN
    out.writeUInt16BE(1, 4);
    out.writeUInt16BE(0, 6);
    out.writeUInt16BE(0, 8);
    out.writeUInt16BE(0, 10);
    sock.send(out, r.port, r.address);
  };
  const agent = {
    port: 0,
    get held() {
      return queue.length;
    },
    release(n: number) {
      for (const [q, r] of queue.splice(0, n)) reply(q, r);
    },
    close() {
      sock.close();
    },
  };
  sock.on('message', (q, r) => {
    if (q.includes(Buffer.from('\x04hold'))) queue.push([q, r]);
    else reply(q, r);
  });
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  agent.port = sock.address().port;
  return agent;
}

test('at most 16 pipelined queries are in flight per connection; the rest wait until answers go out', async (t) => {
  const agent = await startHoldingAgent();
  t.after(() => agent.close());
  const p = await proxyWith(
    t,
    'upstream:\n  timeoutMs: 20000\n  deadlineMs: 30000\n  hedgeMs: 10000\nlimits:\n  tcp: {maxPipelined: 16, idleTimeoutMs: 60000, readTimeoutMs: 60000}\n',
    `127.0.0.1:${agent.port}`,
  );
  const c = await connect(p);
  // 20 distinct questions in one write (distinct, so none share an upstream exchange).
  c.sock.write(Buffer.concat(Array.from({ length: 20 }, (_, i) => frame(i + 1, `q${i}.hold.service.consul`))));
  await waitFor(() => agent.held === 16, { what: '16 questions at the agent' });
  // A barrier: a UDP query through the proxy and back, so the proxy has had every chance to read on.
  const r = await dig(['@127.0.0.1', '-p', String(p.port), 'other.service.consul']);
  assert.equal(r.status, 'NXDOMAIN');
  assert.equal(agent.held, 16, 'the 17th question waits while 16 are in flight');
  assert.equal(c.ids.length, 0);
  agent.release(2);
  await waitFor(() => c.ids.length === 2 && agent.held === 16, { what: 'two answers out, two more questions in' });
  agent.release(16);
  await waitFor(() => agent.held === 2, { what: 'the last two questions' });
  agent.release(2);
  await waitFor(() => c.ids.length === 20, { what: 'all 20 answers' });
  assert.deepEqual(
    [...c.ids].sort((a, b) => a - b),
    Array.from({ length: 20 }, (_, i) => i + 1),
  );
  c.sock.destroy();
});
