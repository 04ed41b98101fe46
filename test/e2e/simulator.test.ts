/*
 * Holds the Consul agent simulator (test/support/consul-sim/) to the checklist in
 * /work/shared/consul-dns.md: through the real `dig`, through dns2 as an independent decoder of raw
 * UDP/TCP replies, and through the `consul` npm client for HTTP API compatibility. Each fault mode
 * has a test. Everything binds 127.0.0.1 port 0 and is closed in t.after.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import http from 'node:http';
import dns2 from 'dns2';
import Consul from 'consul';
import { startSim, startJanusCluster, type Sim, type SimOptions } from '../support/consul-sim/index.js';
import { dig, hasDig, parseDig } from '../support/dig.js';
import { waitFor } from '../support/wait.js';

const { Packet } = dns2;
const TYPE = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  MX: 15,
  TXT: 16,
  AAAA: 28,
  SRV: 33,
  DS: 43,
  AXFR: 252,
  ANY: 255,
};
const RC = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 };
const noDig = !hasDig() && 'dig not installed (apt-get install -y bind9-dnsutils)';

// ------------------------------------------------------------------ raw DNS client helpers

interface QOpts {
  id?: number;
  /** EDNS UDP size; omitted = no OPT record. */
  edns?: number;
  dnssecOk?: boolean;
  /** ECS option: IPv4 address and source prefix. */
  ecs?: { addr: string; prefix: number };
  rd?: boolean;
}

function buildQuery(name: string, type: number, o: QOpts = {}): Buffer {
  const labels = name.split('.').filter(Boolean);
  const head = Buffer.alloc(12);
  head.writeUInt16BE(o.id ?? 0x1234, 0);
  head.writeUInt16BE(o.rd === false ? 0 : 0x0100, 2);
  head.writeUInt16BE(1, 4);
  head.writeUInt16BE(o.edns !== undefined ? 1 : 0, 10);
  const parts = [head];
  for (const l of labels) parts.push(Buffer.from([l.length]), Buffer.from(l, 'latin1'));
  parts.push(Buffer.from([0, type >> 8, type & 255, 0, 1]));
  if (o.edns !== undefined) {
    let opt = Buffer.alloc(0);
    if (o.ecs) {
      const addr = Buffer.from(o.ecs.addr.split('.').map(Number)).subarray(0, Math.ceil(o.ecs.prefix / 8));
      opt = Buffer.alloc(8 + addr.length);
      opt.writeUInt16BE(8, 0);
      opt.writeUInt16BE(4 + addr.length, 2);
      opt.writeUInt16BE(1, 4);
      opt[6] = o.ecs.prefix;
      opt[7] = 0;
      addr.copy(opt, 8);
    }
    const rr = Buffer.alloc(11);
    rr[0] = 0;
    rr.writeUInt16BE(41, 1);
    rr.writeUInt16BE(o.edns, 3);
    rr.writeUInt32BE(o.dnssecOk ? 0x8000 : 0, 5);
    rr.writeUInt16BE(opt.length, 9);
    parts.push(rr, opt);
  }
  return Buffer.concat(parts);
}

function udpExchange(port: number, msg: Buffer, timeoutMs = 3000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    const timer = setTimeout(() => {
      s.close();
      reject(Object.assign(new Error('udp timeout'), { code: 'TIMEOUT' }));
    }, timeoutMs);
    s.on('error', (e) => {
      clearTimeout(timer);
      s.close();
      reject(e);
    });
    s.on('message', (b) => {
      clearTimeout(timer);
      s.close();
      resolve(b);
    });
    s.connect(port, '127.0.0.1', () => s.send(msg));
  });
}

function tcpExchange(port: number, msgs: Buffer[], timeoutMs = 3000): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const out: Buffer[] = [];
    let acc = Buffer.alloc(0);
    const s = net.connect({ port, host: '127.0.0.1' });
    const timer = setTimeout(() => {
      s.destroy();
      reject(Object.assign(new Error('tcp timeout'), { code: 'TIMEOUT' }));
    }, timeoutMs);
    s.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    s.on('data', (d) => {
      acc = Buffer.concat([acc, d]);
      while (acc.length >= 2 && acc.length >= 2 + acc.readUInt16BE(0)) {
        out.push(acc.subarray(2, 2 + acc.readUInt16BE(0)));
        acc = acc.subarray(2 + acc.readUInt16BE(0));
      }
      if (out.length === msgs.length) {
        clearTimeout(timer);
        s.destroy();
        resolve(out);
      }
    });
    s.write(Buffer.concat(msgs.map((m) => Buffer.concat([Buffer.from([m.length >> 8, m.length & 255]), m]))));
  });
}

type Pkt = ReturnType<typeof Packet.parse>;
type Rec = Record<string, unknown> & { name: string; type: number; ttl: number };
const recs = (a: unknown[]): Rec[] => a as Rec[];

async function ask(port: number, name: string, type: number, o: QOpts & { tcp?: boolean } = {}): Promise<Pkt> {
  const q = buildQuery(name, type, o);
  const buf = o.tcp ? (await tcpExchange(port, [q]))[0]! : await udpExchange(port, q);
  return Packet.parse(buf);
}

const opt = (p: Pkt): Rec | undefined => recs(p.additionals).find((r) => r.type === 41);
const nonOpt = (p: Pkt): Rec[] => recs(p.additionals).filter((r) => r.type !== 41);

// ------------------------------------------------------------------ the Janus cluster, read-only

describe('DNS against the seed Janus cluster', () => {
  let sim: Sim;
  before(async () => {
    sim = await startJanusCluster();
  });
  after(() => sim.stop());

  test('dig A: AA, no RA, two TTL-0 answers, OPT echoed with the client size', { skip: noDig }, async () => {
    const r = await dig([`@127.0.0.1`, '-p', String(sim.dnsPort), 'janus.service.consul', 'A']);
    assert.equal(r.status, 'NOERROR');
    assert.deepEqual(r.flags, ['qr', 'aa', 'rd']);
    assert.deepEqual(r.answer.map((a) => a.data).sort(), ['127.0.0.11', '127.0.0.12']);
    assert.ok(r.answer.every((a) => a.ttl === 0 && a.name === 'janus.service.consul.'));
    assert.equal(r.opt?.udp, 1232);
    assert.equal(r.opt?.version, 0);
    const big = await dig([
      `@127.0.0.1`,
      '-p',
      String(sim.dnsPort),
      '+bufsize=4000',
      '+dnssec',
      'janus.service.consul',
    ]);
    assert.equal(big.opt?.udp, 4000);
    assert.deepEqual(big.opt?.flags, [], 'DO is not echoed');
    const none = await dig([`@127.0.0.1`, '-p', String(sim.dnsPort), '+noedns', 'janus.service.consul']);
    assert.equal(none.opt, null);
  });

  test('dig SRV: .addr targets for explicit service addresses, glue and node-meta TXT', { skip: noDig }, async () => {
    const r = await dig([`@127.0.0.1`, '-p', String(sim.dnsPort), 'janus.service.consul', 'SRV']);
    assert.equal(r.status, 'NOERROR');
    const data = r.answer.map((a) => a.data).sort();
    assert.deepEqual(data, ['1 1 8800 7f00000b.addr.dc1.consul.', '1 1 8800 7f00000c.addr.dc1.consul.']);
    const glue = r.additional
      .filter((a) => a.type === 'A')
      .map((a) => `${a.name} ${a.data}`)
      .sort();
    assert.deepEqual(glue, ['7f00000b.addr.dc1.consul. 127.0.0.11', '7f00000c.addr.dc1.consul. 127.0.0.12']);
    const txt = r.additional
      .filter((a) => a.type === 'TXT')
      .map((a) => `${a.name} ${a.data}`)
      .sort();
    assert.deepEqual(txt, [
      'janus-1.node.dc1.consul. "consul-network-segment="',
      'janus-2.node.dc1.consul. "consul-network-segment="',
    ]);
  });

  test('dig nosuch: NXDOMAIN + apex SOA (hostmaster, serial = now, min 0, TTL 0)', { skip: noDig }, async () => {
    const r = await dig([`@127.0.0.1`, '-p', String(sim.dnsPort), 'nosuch.service.consul']);
    assert.equal(r.status, 'NXDOMAIN');
    assert.ok(r.flags.includes('aa') && !r.flags.includes('ra'));
    assert.equal(r.answer.length, 0);
    assert.equal(r.authority.length, 1);
    const soa = r.authority[0]!;
    assert.equal(soa.name, 'consul.');
    assert.equal(soa.type, 'SOA');
    assert.equal(soa.ttl, 0);
    const [mname, rname, serial, refresh, retry, expire, min] = soa.data.split(/\s+/);
    assert.deepEqual(
      [mname, rname, refresh, retry, expire, min],
      ['ns.consul.', 'hostmaster.consul.', '3600', '600', '86400', '0'],
    );
    assert.ok(Math.abs(Number(serial) - Date.now() / 1000) < 60);
  });

  test('tag, dc-qualified and RFC 2782 forms; the SRV-only _ rule', async () => {
    const one = await ask(sim.dnsPort, 'server1.janus.service.consul', TYPE.A);
    assert.deepEqual(
      recs(one.answers).map((a) => a.address),
      ['127.0.0.11'],
    );
    for (const name of ['janus.service.dc1.consul', 'janus.service.dc1.dc.consul', 'JANUS.service.DC1.consul']) {
      assert.equal((await ask(sim.dnsPort, name, TYPE.A)).answers.length, 2, name);
    }
    assert.equal((await ask(sim.dnsPort, 'janus.service.dc2.consul', TYPE.A)).header.rcode, RC.NXDOMAIN);
    const rfc = await ask(sim.dnsPort, '_janus._server2.service.consul', TYPE.SRV);
    assert.deepEqual(
      recs(rfc.answers).map((a) => a.target),
      ['7f00000c.addr.dc1.consul'],
    );
    assert.equal(
      (await ask(sim.dnsPort, '_janus._tcp.service.consul', TYPE.A)).answers.length,
      2,
      'RFC 2782 form with .service works for A',
    );
    assert.equal((await ask(sim.dnsPort, '_janus._tcp.consul', TYPE.SRV)).answers.length, 2);
    assert.equal(
      (await ask(sim.dnsPort, '_janus._tcp.consul', TYPE.A)).header.rcode,
      RC.NXDOMAIN,
      'without .service only SRV works',
    );
    for (const bad of ['consul', 'foo.consul', 'service.consul', 'node.consul']) {
      const r = await ask(sim.dnsPort, bad, TYPE.A);
      assert.equal(r.header.rcode, RC.NXDOMAIN, bad);
      assert.equal(recs(r.authorities)[0]?.type, TYPE.SOA, bad);
    }
  });

  test('a fresh shuffle per query', async () => {
    const seen = new Set<string>();
    for (let i = 0; i < 40 && seen.size < 2; i++) {
      const r = await ask(sim.dnsPort, 'janus.service.consul', TYPE.A);
      seen.add(
        recs(r.answers)
          .map((a) => a.address)
          .join(','),
      );
    }
    assert.equal(seen.size, 2, 'both orders appear');
  });

  test('AAAA on IPv4-only instances and MX on a service: NODATA + SOA', async () => {
    for (const t of [TYPE.AAAA, TYPE.MX, TYPE.CNAME]) {
      const r = await ask(sim.dnsPort, 'janus.service.consul', t);
      assert.equal(r.header.rcode, RC.NOERROR);
      assert.equal(r.answers.length, 0);
      assert.equal(recs(r.authorities)[0]?.type, TYPE.SOA);
    }
    // TXT and ANY on a service are answered with A records (makeARecord).
    for (const t of [TYPE.TXT, TYPE.ANY]) {
      const r = await ask(sim.dnsPort, 'janus.service.consul', t);
      assert.deepEqual(
        recs(r.answers).map((a) => a.type),
        [TYPE.A, TYPE.A],
      );
    }
  });

  test('node lookups: A + TXT in Additional, TXT/ANY in Answer, other types empty without SOA', async () => {
    const a = await ask(sim.dnsPort, 'janus-1.node.consul', TYPE.A);
    assert.deepEqual(
      recs(a.answers).map((x) => x.address),
      ['127.0.0.11'],
    );
    assert.deepEqual(
      nonOpt(a).map((x) => x.data),
      [['consul-network-segment=']],
    );
    const txt = await ask(sim.dnsPort, 'janus-1.node.dc1.consul', TYPE.TXT);
    assert.deepEqual(
      recs(txt.answers).map((x) => x.data),
      [['consul-network-segment=']],
    );
    const any = await ask(sim.dnsPort, 'janus-1.node.consul', TYPE.ANY);
    assert.deepEqual(
      recs(any.answers).map((x) => x.type),
      [TYPE.A, TYPE.TXT],
    );
    for (const t of [TYPE.MX, TYPE.SRV]) {
      const r = await ask(sim.dnsPort, 'janus-1.node.consul', t);
      assert.equal(r.header.rcode, RC.NOERROR);
      assert.equal(r.answers.length + r.authorities.length, 0, 'empty, no SOA');
    }
    const aaaa = await ask(sim.dnsPort, 'janus-1.node.consul', TYPE.AAAA);
    assert.equal(aaaa.header.rcode, RC.NOERROR);
    assert.equal(aaaa.answers.length + aaaa.authorities.length, 0);
    const none = await ask(sim.dnsPort, 'nobody.node.consul', TYPE.A);
    assert.equal(none.header.rcode, RC.NXDOMAIN);
    assert.equal(recs(none.authorities)[0]?.type, TYPE.SOA);
  });

  test('.addr. lookups: A for 8 hex digits, mismatched type goes to Additional', async () => {
    const a = await ask(sim.dnsPort, '7f00000b.addr.dc1.consul', TYPE.A);
    assert.deepEqual(
      recs(a.answers).map((x) => x.address),
      ['127.0.0.11'],
    );
    const mis = await ask(sim.dnsPort, '7f00000b.addr.dc1.consul', TYPE.AAAA);
    assert.equal(mis.header.rcode, RC.NOERROR);
    assert.equal(mis.answers.length + mis.authorities.length, 0);
    assert.deepEqual(
      nonOpt(mis).map((x) => x.address),
      ['127.0.0.11'],
    );
    const v6 = await ask(sim.dnsPort, '20010db8000000000000000000000001.addr.consul', TYPE.AAAA);
    assert.equal(recs(v6.answers)[0]?.type, TYPE.AAAA);
    assert.equal((await ask(sim.dnsPort, 'zz.addr.consul', TYPE.A)).header.rcode, RC.NXDOMAIN);
  });

  test("consulVersion '1.8': the .addr. A record in Answer for AAAA, Service.Meta null without meta", async (t) => {
    const old = await startSim({ consulVersion: '1.8' });
    t.after(() => old.stop());
    old.register({ id: 'db-1', name: 'db', address: '127.0.0.21', port: 5432 });
    old.register({ id: 'web-1', name: 'web', address: '127.0.0.22', port: 80, meta: { v: '1' } });
    const mis = await ask(old.dnsPort, '7f00000b.addr.dc1.consul', TYPE.AAAA);
    assert.equal(mis.header.rcode, RC.NOERROR);
    assert.deepEqual(
      recs(mis.answers).map((x) => x.address),
      ['127.0.0.11'],
    );
    const meta = async (sim: Sim, svc: string): Promise<unknown> => {
      const body = await new Promise<string>((resolve, reject) => {
        http
          .get(`http://127.0.0.1:${sim.httpPort}/v1/health/service/${svc}`, (res) => {
            let b = '';
            res.on('data', (d: Buffer) => (b += d.toString()));
            res.on('end', () => resolve(b));
          })
          .on('error', reject);
      });
      return (JSON.parse(body) as { Service: { Meta: unknown } }[])[0]!.Service.Meta;
    };
    assert.equal(await meta(old, 'db'), null);
    assert.deepEqual(await meta(old, 'web'), { v: '1' });
    sim.register({ id: 'nometa-1', name: 'nometa', address: '127.0.0.23', port: 1 });
    t.after(() => sim.deregister('nometa-1'));
    assert.deepEqual(await meta(sim, 'nometa'), {}, 'newer Consul (the default): {}');
  });

  test('consul. SOA and NS answered by the agent; SOA for any name under the domain', async () => {
    const soa = await ask(sim.dnsPort, 'consul', TYPE.SOA);
    assert.equal(soa.header.rcode, RC.NOERROR);
    assert.equal(recs(soa.answers)[0]?.type, TYPE.SOA);
    assert.deepEqual(
      recs(soa.authorities).map((x) => x.ns),
      ['sim-agent.node.dc1.consul'],
    );
    assert.deepEqual(
      nonOpt(soa).map((x) => `${x.name} ${x.address}`),
      ['sim-agent.node.dc1.consul 127.0.0.1'],
    );
    const ns = await ask(sim.dnsPort, 'consul', TYPE.NS);
    assert.deepEqual(
      recs(ns.answers).map((x) => x.ns),
      ['sim-agent.node.dc1.consul'],
    );
    const nx = await ask(sim.dnsPort, 'nosuch.service.consul', TYPE.SOA);
    assert.equal(nx.header.rcode, RC.NOERROR, '#15739');
    assert.equal(recs(nx.answers)[0]?.name, 'consul');
  });

  test('PTR for node and service addresses (TTL 0), unknown -> NXDOMAIN + SOA', async () => {
    const p = await ask(sim.dnsPort, '11.0.0.127.in-addr.arpa', TYPE.PTR);
    assert.deepEqual(
      recs(p.answers).map((x) => [x.domain, x.ttl]),
      [['janus-1.node.dc1.consul', 0]],
    );
    const agent = await ask(sim.dnsPort, '1.0.0.127.in-addr.arpa', TYPE.PTR);
    assert.deepEqual(
      recs(agent.answers).map((x) => x.domain),
      ['sim-agent.node.dc1.consul'],
    );
    const nx = await ask(sim.dnsPort, '9.9.9.10.in-addr.arpa', TYPE.PTR);
    assert.equal(nx.header.rcode, RC.NXDOMAIN);
    assert.equal(recs(nx.authorities)[0]?.name, 'consul');
  });

  test('REFUSED outside the domain: question echoed, no AA, RA or OPT', async () => {
    const r = await ask(sim.dnsPort, 'example.com', TYPE.A, { edns: 1232 });
    assert.equal(r.header.rcode, RC.REFUSED);
    assert.equal(r.header.aa, 0);
    assert.equal(r.header.ra, 0);
    assert.equal(r.header.rd, 1);
    assert.deepEqual(
      r.questions.map((q) => q.name),
      ['example.com'],
    );
    assert.equal(r.additionals.length, 0);
  });

  test('0x20: answers and SRV targets keep the case the client sent', async () => {
    const r = await ask(sim.dnsPort, 'JaNuS.SeRvIcE.CoNsUl', TYPE.SRV);
    assert.equal(r.questions[0]?.name, 'JaNuS.SeRvIcE.CoNsUl');
    assert.ok(recs(r.answers).every((a) => a.name === 'JaNuS.SeRvIcE.CoNsUl'));
    assert.ok(recs(r.answers).every((a) => String(a.target).endsWith('.addr.dc1.CoNsUl')));
  });

  test('EDNS: ECS echoed with scope 0 for service answers; DS consul. NXDOMAIN; AXFR NOTIMP', async () => {
    const r = await ask(sim.dnsPort, 'janus.service.consul', TYPE.A, {
      edns: 1400,
      ecs: { addr: '10.1.2.0', prefix: 24 },
    });
    const o = opt(r);
    assert.equal(o?.class, 1400);
    const ecs = (o?.rdata as { ednsCode: number; sourcePrefixLength?: number; scopePrefixLength?: number }[])[0];
    assert.equal(ecs?.ednsCode, 8);
    assert.equal(ecs?.scopePrefixLength, 0);
    assert.equal((await ask(sim.dnsPort, 'consul', TYPE.DS)).header.rcode, RC.NXDOMAIN);
    assert.equal((await ask(sim.dnsPort, 'consul', TYPE.AXFR, { tcp: true })).header.rcode, RC.NOTIMP);
  });

  test('TCP: same port, pipelined queries, same answers', async () => {
    const [a, b] = await tcpExchange(sim.dnsPort, [
      buildQuery('janus.service.consul', TYPE.A, { id: 1 }),
      buildQuery('nosuch.service.consul', TYPE.A, { id: 2 }),
    ]);
    const pa = Packet.parse(a!);
    const pb = Packet.parse(b!);
    const byId = new Map([pa, pb].map((p) => [p.header.id, p]));
    assert.equal(byId.get(1)?.answers.length, 2);
    assert.equal(byId.get(2)?.header.rcode, RC.NXDOMAIN);
  });
});

// ------------------------------------------------------------------ state-changing DNS tests

async function withSim(t: { after: (fn: () => Promise<void>) => void }, o: SimOptions = {}): Promise<Sim> {
  const sim = await startSim(o);
  t.after(() => sim.stop());
  return sim;
}

test('health: critical hidden, warning kept (weight Warning), only_passing drops warning, none -> NXDOMAIN', async (t) => {
  const sim = await withSim(t);
  sim.register({
    id: 'w1',
    name: 'web',
    node: 'n1',
    nodeAddress: '10.0.0.1',
    port: 80,
    weights: { passing: 10, warning: 2 },
  });
  sim.register({
    id: 'w2',
    name: 'web',
    node: 'n2',
    nodeAddress: '10.0.0.2',
    port: 80,
    weights: { passing: 10, warning: 2 },
  });
  sim.setHealth('w1', 'warning');
  const srv = await ask(sim.dnsPort, 'web.service.consul', TYPE.SRV);
  const byTarget = new Map(recs(srv.answers).map((a) => [a.target, a.weight]));
  assert.equal(byTarget.get('n1.node.dc1.consul'), 2, 'warning weight; node target without service address');
  assert.equal(byTarget.get('n2.node.dc1.consul'), 10);
  assert.deepEqual(
    nonOpt(srv)
      .filter((x) => x.type === TYPE.A)
      .map((x) => x.name)
      .sort(),
    ['n1.node.dc1.consul', 'n2.node.dc1.consul'],
  );
  sim.setHealth('w2', 'critical');
  assert.deepEqual(
    recs((await ask(sim.dnsPort, 'web.service.consul', TYPE.A)).answers).map((a) => a.address),
    ['10.0.0.1'],
  );
  sim.setHealth('w2', 'passing');
  sim.setNodeHealth('n2', 'critical'); // serfHealth failing removes every service on the node
  assert.deepEqual(
    recs((await ask(sim.dnsPort, 'web.service.consul', TYPE.A)).answers).map((a) => a.address),
    ['10.0.0.1'],
  );
  sim.setHealth('w1', 'critical');
  const nx = await ask(sim.dnsPort, 'web.service.consul', TYPE.A);
  assert.equal(nx.header.rcode, RC.NXDOMAIN);
  assert.equal(recs(nx.authorities)[0]?.type, TYPE.SOA);

  const strict = await withSim(t, { onlyPassing: true });
  strict.register({ id: 'a', name: 'api', nodeAddress: '10.0.0.3', node: 'n3' });
  strict.register({ id: 'b', name: 'api', nodeAddress: '10.0.0.4', node: 'n4', status: 'warning' });
  assert.deepEqual(
    recs((await ask(strict.dnsPort, 'api.service.consul', TYPE.A)).answers).map((a) => a.address),
    ['10.0.0.3'],
  );
});

test('non-EDNS UDP: at most udp_answer_limit (3) answers, no TC; EDNS and TCP get all', async (t) => {
  const sim = await withSim(t);
  for (let i = 1; i <= 6; i++)
    sim.register({ id: `s${i}`, name: 'many', node: `m${i}`, nodeAddress: `10.0.1.${i}`, port: 1000 + i });
  const plain = await ask(sim.dnsPort, 'many.service.consul', TYPE.A);
  assert.equal(plain.answers.length, 3);
  assert.equal(plain.header.tc, 0, 'enable_truncate defaults to false (#375, #788)');
  assert.equal(
    (await ask(sim.dnsPort, 'many.service.consul', TYPE.A, { edns: 1232 })).answers.length,
    6,
    'limit ignored with EDNS (#3355)',
  );
  assert.equal((await ask(sim.dnsPort, 'many.service.consul', TYPE.A, { tcp: true })).answers.length, 6);
  // SRV: Additional is resynced to the remaining targets; node-meta TXT dropped.
  const srv = await ask(sim.dnsPort, 'many.service.consul', TYPE.SRV);
  assert.equal(srv.answers.length, 3);
  const targets = recs(srv.answers)
    .map((a) => a.target)
    .sort();
  assert.deepEqual(
    recs(srv.additionals)
      .map((x) => x.name)
      .sort(),
    targets,
  );
  if (!noDig) {
    const r = await dig([`@127.0.0.1`, '-p', String(sim.dnsPort), '+noedns', 'many.service.consul']);
    assert.equal(r.answer.length, 3);
    assert.ok(!r.flags.includes('tc'));
  }
  const lim = await withSim(t, { udpAnswerLimit: 5, enableTruncate: true });
  for (let i = 1; i <= 6; i++) lim.register({ id: `s${i}`, name: 'many', node: `m${i}`, nodeAddress: `10.0.1.${i}` });
  const five = await ask(lim.dnsPort, 'many.service.consul', TYPE.A);
  assert.equal(five.answers.length, 5);
  assert.equal(five.header.tc, 1, 'enable_truncate sets TC when trimmed');
});

test('512-8 uncompressed size rule trims below udp_answer_limit', async (t) => {
  const sim = await withSim(t, { udpAnswerLimit: 8 });
  const tag = 'x'.repeat(60);
  const svc = 'long-service-name-' + 'y'.repeat(40);
  // More instances than the cap: the cap applies and sizes are then measured uncompressed.
  for (let i = 1; i <= 10; i++)
    sim.register({ id: `l${i}`, name: svc, node: `l${i}`, nodeAddress: `10.0.2.${i}`, tags: [tag] });
  const q = buildQuery(`${tag}.${svc}.service.consul`, TYPE.A);
  const buf = await udpExchange(sim.dnsPort, q);
  const p = Packet.parse(buf);
  // Each uncompressed A record is ~ 140 bytes, so 8 cannot fit in 504 bytes; only a few do.
  assert.ok(p.answers.length >= 1 && p.answers.length < 8, `got ${p.answers.length}`);
  assert.ok(buf.length <= 512);
  assert.equal(p.header.tc, 0);
});

test('TTLs: node_ttl, service_ttl exact > longest prefix* > *, prepared query TTL', async (t) => {
  const sim = await withSim(t, {
    nodeTtl: 30,
    serviceTtl: { '*': 5, 'jan*': 10, janus: 15 },
    soaMinTtl: 7,
    preparedQueries: [
      { name: 'pq-janus', service: 'janus', ttl: 42 },
      { name: 'pq-plain', service: 'janet', tag: 'blue' },
    ],
  });
  sim.register({ id: 'j', name: 'janus', nodeAddress: '10.0.3.1', node: 'j1' });
  sim.register({ id: 'k', name: 'janet', nodeAddress: '10.0.3.2', node: 'j2', tags: ['blue'] });
  sim.register({ id: 'o', name: 'other', nodeAddress: '10.0.3.3', node: 'j3' });
  const ttl = async (n: string, ty = TYPE.A): Promise<number> => recs((await ask(sim.dnsPort, n, ty)).answers)[0]!.ttl;
  assert.equal(await ttl('janus.service.consul'), 15);
  assert.equal(await ttl('janet.service.consul'), 10);
  assert.equal(await ttl('other.service.consul'), 5);
  assert.equal(await ttl('j1.node.consul'), 30);
  assert.equal(await ttl('0a000301.addr.consul'), 30);
  assert.equal(recs((await ask(sim.dnsPort, 'consul', TYPE.NS)).answers)[0]!.ttl, 30);
  assert.equal(await ttl('pq-janus.query.consul'), 42);
  assert.equal(await ttl('pq-plain.query.consul'), 10, 'no query TTL: service_ttl');
  assert.equal(await ttl('_pq-janus._tcp.query.consul', TYPE.SRV), 42);
  const nx = await ask(sim.dnsPort, 'nope.query.consul', TYPE.A);
  assert.equal(nx.header.rcode, RC.NXDOMAIN);
  const soa = recs(nx.authorities)[0]!;
  assert.equal(soa.ttl, 7);
  assert.equal(soa.minimum, 7);
  // Prepared queries are not "global" for ECS: scope = source prefix.
  const e = await ask(sim.dnsPort, 'pq-janus.query.consul', TYPE.A, {
    edns: 1232,
    ecs: { addr: '10.9.8.0', prefix: 24 },
  });
  assert.equal((opt(e)?.rdata as { scopePrefixLength: number }[])[0]?.scopePrefixLength, 24);
});

test('alt_domain: answers under the domain that was asked; PTR always primary', async (t) => {
  const sim = await startJanusCluster({ altDomain: 'starlings' });
  t.after(() => sim.stop());
  const a = await ask(sim.dnsPort, 'janus.service.starlings', TYPE.SRV);
  assert.ok(recs(a.answers).every((x) => String(x.target).endsWith('.addr.dc1.starlings')));
  assert.ok(nonOpt(a).every((x) => x.name.endsWith('.dc1.starlings')));
  const nx = await ask(sim.dnsPort, 'nosuch.service.starlings', TYPE.A);
  assert.equal(recs(nx.authorities)[0]?.name, 'starlings');
  assert.equal(recs(nx.authorities)[0]?.primary, 'ns.starlings');
  const ns = await ask(sim.dnsPort, 'starlings', TYPE.NS);
  assert.deepEqual(
    recs(ns.answers).map((x) => `${x.name} ${x.ns}`),
    ['starlings sim-agent.node.dc1.starlings'],
  );
  const ptr = await ask(sim.dnsPort, '12.0.0.127.in-addr.arpa', TYPE.PTR);
  assert.equal(recs(ptr.answers)[0]?.domain, 'janus-2.node.dc1.consul');
  assert.equal((await ask(sim.dnsPort, 'janus.service.consul', TYPE.A)).answers.length, 2);
});

test('NS: at most 3 healthy servers, named <server>.node.<dc>.<domain>, with glue', async (t) => {
  const servers = [1, 2, 3, 4].map((i) => ({ name: `srv${i}`, address: `10.0.4.${i}` }));
  const sim = await withSim(t, { servers, datacenter: 'east' });
  const ns = await ask(sim.dnsPort, 'consul', TYPE.NS);
  assert.equal(ns.answers.length, 3);
  for (const r of recs(ns.answers)) assert.match(String(r.ns), /^srv[1-4]\.node\.east\.consul$/);
  assert.equal(nonOpt(ns).length, 3);
  if (!noDig) {
    const d = await dig([`@127.0.0.1`, '-p', String(sim.dnsPort), 'consul.', 'NS']);
    assert.equal(d.status, 'NOERROR');
    assert.equal(d.answer.length, 3);
    assert.equal(d.additional.length, 3);
  }
});

test('PTR for a service address; AAAA for IPv6 instances', async (t) => {
  const sim = await withSim(t);
  sim.register({ id: 'v6', name: 'six', node: 'h6', nodeAddress: '10.0.5.1', address: '2001:db8::5', port: 99 });
  sim.register({ id: 'v4', name: 'svc4', node: 'h4', nodeAddress: '10.0.5.2', address: '10.0.5.99' });
  const aaaa = await ask(sim.dnsPort, 'six.service.consul', TYPE.AAAA);
  assert.deepEqual(
    recs(aaaa.answers).map((x) => x.address),
    ['2001:db8::5'],
  );
  const a = await ask(sim.dnsPort, 'six.service.consul', TYPE.A);
  assert.equal(a.answers.length, 0);
  assert.equal(recs(a.authorities)[0]?.type, TYPE.SOA, 'NODATA for the missing family');
  const srv = await ask(sim.dnsPort, 'six.service.consul', TYPE.SRV);
  assert.equal(recs(srv.answers)[0]?.target, '20010db8000000000000000000000005.addr.dc1.consul');
  const ptr = await ask(sim.dnsPort, '99.5.0.10.in-addr.arpa', TYPE.PTR);
  assert.equal(recs(ptr.answers)[0]?.domain, 'svc4.service.dc1.consul');
});

// ------------------------------------------------------------------ recursors

test('recursors: verbatim relay over the client transport, next on SERVFAIL, SERVFAIL+RA when all fail', async (t) => {
  const upstream = await withSim(t, { domain: 'example', nodeName: 'up' });
  const broken = await withSim(t, { domain: 'example' });
  await broken.setFault({ dns: 'servfail' });
  const sim = await withSim(t, {
    recursors: [`127.0.0.1:${broken.dnsPort}`, `127.0.0.1:${upstream.dnsPort}`],
    recursorTimeoutMs: 500,
  });
  // RA on our own answers once recursors exist.
  assert.equal((await ask(sim.dnsPort, 'sim-agent.node.consul', TYPE.A)).header.ra, 1);
  const q = buildQuery('up.node.example', TYPE.A, { edns: 1232, id: 77 });
  for (const tcp of [false, true]) {
    const direct = tcp ? (await tcpExchange(upstream.dnsPort, [q]))[0]! : await udpExchange(upstream.dnsPort, q);
    const via = tcp ? (await tcpExchange(sim.dnsPort, [q]))[0]! : await udpExchange(sim.dnsPort, q);
    assert.deepEqual(via, direct, `verbatim over ${tcp ? 'tcp' : 'udp'}`);
    assert.equal(Packet.parse(via).header.ra, 0, 'upstream flags kept');
  }
  assert.ok(broken.queries >= 2, 'the failing recursor was tried first');
  // PTR not found locally goes to the recursors too.
  assert.equal((await ask(sim.dnsPort, '9.9.9.10.in-addr.arpa', TYPE.PTR)).header.aa, 1);
  await upstream.setFault({ dns: 'refuse' });
  const fail = await ask(sim.dnsPort, 'www.example', TYPE.A, { edns: 1232 });
  assert.equal(fail.header.rcode, RC.SERVFAIL);
  assert.equal(fail.header.ra, 1);
  assert.equal(fail.header.aa, 0);
  assert.equal(opt(fail)?.class, 1232);
  await assert.rejects(startSim({ recursors: ['8.8.8.8'] }), /not loopback/);
});

// ------------------------------------------------------------------ DNS fault modes

describe('DNS fault modes', () => {
  let sim: Sim;
  before(async () => {
    sim = await startJanusCluster();
  });
  after(() => sim.stop());

  test('silent: nothing comes back, queries are still counted', async () => {
    await sim.setFault({ dns: 'silent' });
    const before = sim.queries;
    await assert.rejects(udpExchange(sim.dnsPort, buildQuery('janus.service.consul', TYPE.A), 300), /timeout/);
    await assert.rejects(tcpExchange(sim.dnsPort, [buildQuery('janus.service.consul', TYPE.A)], 300), /timeout/);
    assert.equal(sim.queries, before + 2);
    if (!noDig) {
      const r = await dig([`@127.0.0.1`, '-p', String(sim.dnsPort), '+time=1', 'janus.service.consul']);
      assert.equal(r.status, null);
      assert.equal(r.exitCode, 9);
    }
    await sim.setFault({ dns: null });
  });

  test('slow: the reply comes after delayMs', async () => {
    await sim.setFault({ dns: 'slow', delayMs: 400 });
    const t0 = Date.now();
    const p = Packet.parse(await udpExchange(sim.dnsPort, buildQuery('janus.service.consul', TYPE.A), 5000));
    assert.ok(Date.now() - t0 >= 350, 'not before the delay');
    assert.equal(p.answers.length, 2);
    await sim.setFault({ dns: null });
  });

  test('servfail: SERVFAIL with AA, no SOA', async () => {
    await sim.setFault({ dns: 'servfail' });
    const p = await ask(sim.dnsPort, 'janus.service.consul', TYPE.A);
    assert.equal(p.header.rcode, RC.SERVFAIL);
    assert.equal(p.header.aa, 1);
    assert.equal(p.authorities.length, 0);
    await sim.setFault({ dns: null });
  });

  test('garbage: bytes that do not decode', async () => {
    await sim.setFault({ dns: 'garbage' });
    const b = await udpExchange(sim.dnsPort, buildQuery('janus.service.consul', TYPE.A, { id: 4242 }));
    // dns2 is lenient: it either throws or stops early, never matching the claimed 65535 questions.
    let decodable = false;
    try {
      const p = Packet.parse(b);
      decodable = p.questions.length === p.header.qdcount;
    } catch {
      decodable = false;
    }
    assert.equal(decodable, false);
    if (!noDig) {
      const r = await dig([`@127.0.0.1`, '-p', String(sim.dnsPort), '+time=1', 'janus.service.consul']);
      assert.equal(r.status, null);
    }
    await sim.setFault({ dns: null });
  });

  test('wrongid: a correct answer with another ID', async () => {
    await sim.setFault({ dns: 'wrongid' });
    const p = Packet.parse(await udpExchange(sim.dnsPort, buildQuery('janus.service.consul', TYPE.A, { id: 100 })));
    assert.equal(p.header.id, 101);
    assert.equal(p.answers.length, 2);
    await sim.setFault({ dns: null });
  });

  test('wrongquestion: right ID, another name', async () => {
    await sim.setFault({ dns: 'wrongquestion' });
    const p = Packet.parse(await udpExchange(sim.dnsPort, buildQuery('janus.service.consul', TYPE.A, { id: 9 })));
    assert.equal(p.header.id, 9);
    assert.notEqual(p.questions[0]?.name.toLowerCase(), 'janus.service.consul');
    await sim.setFault({ dns: null });
  });

  test('truncated: TC + header and question on UDP, full answer on TCP', async () => {
    await sim.setFault({ dns: 'truncated' });
    const u = await ask(sim.dnsPort, 'janus.service.consul', TYPE.A);
    assert.equal(u.header.tc, 1);
    assert.equal(u.questions.length, 1);
    assert.equal(u.answers.length + u.authorities.length + u.additionals.length, 0);
    const tc = await ask(sim.dnsPort, 'janus.service.consul', TYPE.A, { tcp: true });
    assert.equal(tc.header.tc, 0);
    assert.equal(tc.answers.length, 2);
    if (!noDig) {
      const r = await dig([`@127.0.0.1`, '-p', String(sim.dnsPort), 'janus.service.consul']);
      assert.ok(r.retriedTcp);
      assert.equal(r.transport, 'TCP');
      assert.equal(r.answer.length, 2);
    }
    await sim.setFault({ dns: null });
  });

  test('refuse: sockets closed (UDP and TCP), clearing rebinds the same port', async () => {
    const port = sim.dnsPort;
    await sim.setFault({ dns: 'refuse' });
    await assert.rejects(
      udpExchange(port, buildQuery('janus.service.consul', TYPE.A), 1000),
      (e: NodeJS.ErrnoException) => e.code === 'ECONNREFUSED' || e.code === 'TIMEOUT',
    );
    await assert.rejects(
      tcpExchange(port, [buildQuery('janus.service.consul', TYPE.A)]),
      (e: NodeJS.ErrnoException) => e.code === 'ECONNREFUSED',
    );
    await sim.setFault({ dns: null });
    assert.equal(sim.dnsPort, port);
    assert.equal((await ask(port, 'janus.service.consul', TYPE.A)).answers.length, 2);
    assert.equal((await ask(port, 'janus.service.consul', TYPE.A, { tcp: true })).answers.length, 2);
  });

  test('FORMERR for QDCOUNT != 1; responses are ignored', async () => {
    const q = buildQuery('janus.service.consul', TYPE.A);
    q.writeUInt16BE(2, 4);
    assert.equal(Packet.parse(await udpExchange(sim.dnsPort, q)).header.rcode, RC.FORMERR);
  });
});

// ------------------------------------------------------------------ HTTP API

interface HttpRes {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function httpReq(
  port: number,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
  timeoutMs = 5000,
): Promise<HttpRes> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      { host: '127.0.0.1', port, method, path, headers, agent: false, timeout: timeoutMs },
      (res) => {
        let b = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (b += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: b }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(Object.assign(new Error('http timeout'), { code: 'TIMEOUT' })));
    req.on('error', reject);
    req.end(data);
  });
}

test('consul npm client: register (+check), health.service, passing filter, deregister', async (t) => {
  const sim = await withSim(t);
  const consul = new Consul({ host: '127.0.0.1', port: sim.httpPort });
  await consul.agent.service.register({
    name: 'yorc',
    id: 'yorc-1',
    port: 8800,
    tags: ['server', 'y1'],
    check: { name: 'http', http: 'http://127.0.0.1:8800/health', interval: '5s', timeout: '2s' },
  });
  // Checks start critical unless a status is given, so DNS does not serve it yet.
  let list = (await consul.health.service({ service: 'yorc' })) as {
    Service: { ID: string; Port: number; Tags: string[] };
    Checks: { CheckID: string; Status: string }[];
  }[];
  assert.equal(list.length, 1);
  assert.equal(list[0]!.Service.Port, 8800);
  assert.deepEqual(list[0]!.Service.Tags, ['server', 'y1']);
  assert.deepEqual(list[0]!.Checks.map((c) => `${c.CheckID}=${c.Status}`).sort(), [
    'serfHealth=passing',
    'service:yorc-1=critical',
  ]);
  assert.equal((await ask(sim.dnsPort, 'yorc.service.consul', TYPE.A)).header.rcode, RC.NXDOMAIN);
  await consul.agent.check.pass({ id: 'service:yorc-1' });
  assert.deepEqual(
    recs((await ask(sim.dnsPort, 'yorc.service.consul', TYPE.A)).answers).map((a) => a.address),
    ['127.0.0.1'],
  );
  await consul.agent.check.warn({ id: 'service:yorc-1' });
  assert.equal((await ask(sim.dnsPort, 'yorc.service.consul', TYPE.A)).answers.length, 1, 'warning still in DNS');
  list = (await consul.health.service({ service: 'yorc', passing: true })) as typeof list;
  assert.equal(list.length, 0, '?passing drops warning instances');
  const services = (await consul.catalog.service.list()) as Record<string, string[]>;
  assert.deepEqual(services['yorc'], ['server', 'y1']);
  assert.deepEqual(services['consul'], []);
  await consul.agent.service.deregister('yorc-1');
  assert.deepEqual(await consul.health.service({ service: 'yorc' }), []);
  assert.equal(await consul.status.leader(), '127.0.0.1:8300');
});

test('HTTP: snake_case register, Checks, maintenance, check update/register, health/state', async (t) => {
  const sim = await withSim(t);
  const p = sim.httpPort;
  let r = await httpReq(p, 'PUT', '/v1/agent/service/register', {
    name: 'db',
    id: 'db1',
    address: '10.0.6.1',
    port: 5432,
    tags: ['primary'],
    enable_tag_override: true,
    checks: [
      { ttl: '10s', status: 'passing' },
      { tcp: '10.0.6.1:5432', interval: '10s', status: 'passing' },
    ],
    weights: { passing: 3, warning: 1 },
  });
  assert.equal(r.status, 200, r.body);
  const h = JSON.parse((await httpReq(p, 'GET', '/v1/health/service/db')).body) as {
    Service: Record<string, unknown>;
    Checks: { CheckID: string; Type: string }[];
  }[];
  assert.equal(h[0]!.Service['EnableTagOverride'], true);
  assert.deepEqual(h[0]!.Service['Weights'], { Passing: 3, Warning: 1 });
  assert.deepEqual(h[0]!.Checks.map((c) => c.CheckID).sort(), ['serfHealth', 'service:db1:1', 'service:db1:2']);
  assert.equal(recs((await ask(sim.dnsPort, 'db.service.consul', TYPE.SRV)).answers)[0]?.weight, 3);

  r = await httpReq(p, 'PUT', '/v1/agent/service/maintenance/db1?enable=true&reason=upgrade');
  assert.equal(r.status, 200);
  let crit = JSON.parse((await httpReq(p, 'GET', '/v1/health/state/critical')).body) as {
    CheckID: string;
    Notes: string;
  }[];
  assert.deepEqual(
    crit.map((c) => [c.CheckID, c.Notes]),
    [['_service_maintenance:db1', 'upgrade']],
  );
  assert.equal((await ask(sim.dnsPort, 'db.service.consul', TYPE.A)).header.rcode, RC.NXDOMAIN);
  await httpReq(p, 'PUT', '/v1/agent/service/maintenance/db1?enable=false');
  assert.equal((await ask(sim.dnsPort, 'db.service.consul', TYPE.A)).answers.length, 1);
  assert.equal((await httpReq(p, 'PUT', '/v1/agent/service/maintenance/db1')).status, 400);

  // Node maintenance: _node_maintenance on the agent's node removes every service on it.
  await httpReq(p, 'PUT', '/v1/agent/maintenance?enable=true');
  crit = JSON.parse((await httpReq(p, 'GET', '/v1/health/state/critical')).body) as typeof crit;
  assert.deepEqual(
    crit.map((c) => c.CheckID),
    ['_node_maintenance'],
  );
  assert.equal((await ask(sim.dnsPort, 'db.service.consul', TYPE.A)).header.rcode, RC.NXDOMAIN);
  await httpReq(p, 'PUT', '/v1/agent/maintenance?enable=false');

  r = await httpReq(p, 'PUT', '/v1/agent/check/update/service:db1:1', { Status: 'critical', Output: 'down' });
  assert.equal(r.status, 200);
  assert.equal((await ask(sim.dnsPort, 'db.service.consul', TYPE.A)).header.rcode, RC.NXDOMAIN);
  assert.equal((await httpReq(p, 'PUT', '/v1/agent/check/update/service:db1:1', { Status: 'bogus' })).status, 400);
  await httpReq(p, 'PUT', '/v1/agent/check/pass/service:db1:1?note=ok');
  r = await httpReq(p, 'PUT', '/v1/agent/check/register', { Name: 'disk', ServiceID: 'db1', TTL: '30s' });
  assert.equal(r.status, 200);
  const any = JSON.parse((await httpReq(p, 'GET', '/v1/health/state/critical')).body) as { CheckID: string }[];
  assert.deepEqual(
    any.map((c) => c.CheckID),
    ['disk'],
    'new checks start critical',
  );
  await httpReq(p, 'PUT', '/v1/agent/check/deregister/disk');
  assert.equal((await ask(sim.dnsPort, 'db.service.consul', TYPE.A)).answers.length, 1);
  assert.equal((await httpReq(p, 'PUT', '/v1/agent/check/pass/nope')).status, 404);
  assert.equal((await httpReq(p, 'PUT', '/v1/agent/service/deregister/nope')).status, 404);
  assert.equal((await httpReq(p, 'GET', '/v1/health/service/db?passing=maybe')).status, 400);
  assert.equal((await httpReq(p, 'GET', '/v1/health/service/db?dc=dc9')).status, 500);
  assert.equal((await httpReq(p, 'GET', '/v1/health/state/bogus')).status, 400);
  assert.equal((await httpReq(p, 'PUT', '/v1/agent/service/register', { port: 1 })).status, 400);
});

test('HTTP blocking queries: X-Consul-Index, wake on change, wait timeout, bumpIndex', async (t) => {
  const sim = await startJanusCluster();
  t.after(() => sim.stop());
  const p = sim.httpPort;
  const first = await httpReq(p, 'GET', '/v1/health/service/janus');
  const idx = Number(first.headers['x-consul-index']);
  assert.ok(idx > 0);
  assert.equal(first.headers['x-consul-knownleader'], 'true');
  assert.equal(first.headers['x-consul-lastcontact'], '0');
  // Timeout: returns the same index.
  const timedOut = await httpReq(p, 'GET', `/v1/health/service/janus?index=${idx}&wait=50ms`);
  assert.equal(Number(timedOut.headers['x-consul-index']), idx);
  // A write to an unrelated service does not wake it; a health change does.
  const blocked = httpReq(p, 'GET', `/v1/health/service/janus?index=${idx}&wait=30s`, undefined, {}, 40_000);
  let settled = false;
  void blocked.then(() => (settled = true));
  await waitFor(() => sim.httpRequests >= 3, { what: 'blocking request to arrive' });
  sim.register({ name: 'other', port: 1 });
  sim.setHealth('janus-1', 'critical');
  const woke = await blocked;
  assert.ok(settled);
  assert.ok(Number(woke.headers['x-consul-index']) > idx);
  const body = JSON.parse(woke.body) as { Checks: { Status: string }[] }[];
  assert.ok(body.some((e) => e.Checks.some((c) => c.Status === 'critical')));
  const passing = JSON.parse((await httpReq(p, 'GET', '/v1/health/service/janus?passing')).body) as unknown[];
  assert.equal(passing.length, 1);
  // bumpIndex: an idempotent write wakes the watcher with an unchanged result.
  const idx2 = Number(woke.headers['x-consul-index']);
  const again = httpReq(p, 'GET', `/v1/health/service/janus?index=${idx2}&wait=30s`, undefined, {}, 40_000);
  const n = sim.httpRequests;
  await waitFor(() => sim.httpRequests > n, { what: 'second blocking request' });
  sim.bumpIndex();
  const bumped = await again;
  assert.ok(Number(bumped.headers['x-consul-index']) > idx2);
  assert.equal(bumped.body, woke.body);
  assert.equal((await httpReq(p, 'GET', '/v1/health/service/janus?index=x')).status, 400);
  assert.equal((await httpReq(p, 'GET', '/v1/health/service/janus?index=1&wait=soon')).status, 400);
});

test('HTTP ACL token: 403 without or with a wrong token', async (t) => {
  const sim = await withSim(t, { token: 's3cr3t' });
  const p = sim.httpPort;
  const none = await httpReq(p, 'GET', '/v1/health/service/consul');
  assert.equal(none.status, 403);
  assert.match(none.body, /Permission denied/);
  const wrong = await httpReq(p, 'GET', '/v1/health/service/consul', undefined, { 'X-Consul-Token': 'nope' });
  assert.equal(wrong.status, 403);
  assert.equal(wrong.body, 'ACL not found');
  assert.equal(
    (await httpReq(p, 'GET', '/v1/health/service/consul', undefined, { 'X-Consul-Token': 's3cr3t' })).status,
    200,
  );
  assert.equal((await httpReq(p, 'GET', '/v1/health/service/consul?token=s3cr3t')).status, 200);
  const consul = new Consul({ host: '127.0.0.1', port: p, defaults: { token: 's3cr3t' } });
  await consul.agent.service.register({ name: 'tok', port: 1 });
  assert.equal(((await consul.health.service('tok')) as unknown[]).length, 1);
});

describe('HTTP fault modes', () => {
  let sim: Sim;
  before(async () => {
    sim = await startJanusCluster();
  });
  after(() => sim.stop());

  test('500', async () => {
    await sim.setFault({ http: '500' });
    const r = await httpReq(sim.httpPort, 'GET', '/v1/health/service/janus');
    assert.equal(r.status, 500);
    await sim.setFault({ http: null });
    assert.equal((await httpReq(sim.httpPort, 'GET', '/v1/health/service/janus')).status, 200);
  });

  test('hang: accepted, never answered, dropped when cleared', async () => {
    await sim.setFault({ http: 'hang' });
    const n = sim.httpRequests;
    const pending = httpReq(sim.httpPort, 'GET', '/v1/health/service/janus', undefined, {}, 30_000);
    await waitFor(() => sim.httpRequests > n, { what: 'hanging request to arrive' });
    await sim.setFault({ http: null });
    await assert.rejects(pending, /socket hang up|ECONNRESET/);
    assert.equal((await httpReq(sim.httpPort, 'GET', '/v1/status/leader')).status, 200);
  });

  test('slow: answered after delayMs', async () => {
    await sim.setFault({ http: 'slow', delayMs: 300 });
    const t0 = Date.now();
    assert.equal((await httpReq(sim.httpPort, 'GET', '/v1/status/leader')).status, 200);
    assert.ok(Date.now() - t0 >= 250);
    await sim.setFault({ http: null });
  });

  test('refuse: listener closed, clearing rebinds the same port', async () => {
    const port = sim.httpPort;
    await sim.setFault({ http: 'refuse' });
    await assert.rejects(httpReq(port, 'GET', '/v1/status/leader'), /ECONNREFUSED/);
    await sim.setFault({ http: null });
    assert.equal(sim.httpPort, port);
    assert.equal((await httpReq(port, 'GET', '/v1/status/leader')).status, 200);
  });
});

test('stop() ends hanging and blocked HTTP requests and slow DNS replies', async () => {
  const sim = await startJanusCluster();
  const idx = Number((await httpReq(sim.httpPort, 'GET', '/v1/health/service/janus')).headers['x-consul-index']);
  const blocked = httpReq(
    sim.httpPort,
    'GET',
    `/v1/health/service/janus?index=${idx}&wait=5m`,
    undefined,
    {},
    60_000,
  ).catch((e: Error) => e);
  await waitFor(() => sim.httpRequests >= 2, { what: 'blocked request' });
  await sim.setFault({ http: 'hang', dns: 'slow', delayMs: 60_000 });
  const hung = httpReq(sim.httpPort, 'GET', '/v1/status/leader', undefined, {}, 60_000).catch((e: Error) => e);
  const slow = udpExchange(sim.dnsPort, buildQuery('janus.service.consul', TYPE.A), 1000).catch((e: Error) => e);
  await waitFor(() => sim.httpRequests >= 3 && sim.queries >= 1, { what: 'requests in flight' });
  await sim.stop();
  assert.ok((await hung) instanceof Error);
  await blocked;
  assert.ok((await slow) instanceof Error, 'the delayed reply is never sent');
});

test('parseDig: EDE, cookie and other pseudosection lines, last reply wins after a TCP retry', () => {
  const text = [
    ';; Truncated, retrying in TCP mode.',
    ';; Got answer:',
    ';; ->>HEADER<<- opcode: QUERY, status: SERVFAIL, id: 7',
    ';; flags: qr rd ra; QUERY: 1, ANSWER: 0, AUTHORITY: 0, ADDITIONAL: 1',
    '',
    ';; OPT PSEUDOSECTION:',
    '; EDNS: version: 0, flags: do; udp: 1232',
    '; COOKIE: 0011223344556677 (good)',
    '; EDE: 22 (No Reachable Authority): (at delegation consul.)',
    ';; QUESTION SECTION:',
    ';janus.service.consul.\t\tIN\tA',
    '',
    ';; SERVER: 127.0.0.1#8053(127.0.0.1) (TCP)',
    ';; MSG SIZE  rcvd: 60',
  ].join('\n');
  const r = parseDig(text);
  assert.equal(r.status, 'SERVFAIL');
  assert.equal(r.id, 7);
  assert.deepEqual(r.flags, ['qr', 'rd', 'ra']);
  assert.deepEqual(r.opt?.flags, ['do']);
  assert.equal(r.opt?.udp, 1232);
  assert.deepEqual(r.opt?.ede, { code: 22, name: 'No Reachable Authority', text: 'at delegation consul.' });
  assert.equal(r.opt?.options['COOKIE'], '0011223344556677 (good)');
  assert.deepEqual(r.question, [{ name: 'janus.service.consul.', class: 'IN', type: 'A' }]);
  assert.equal(r.transport, 'TCP');
  assert.equal(r.msgSize, 60);
  assert.ok(r.retriedTcp);
});

test('waitFor: resolves on a true condition, throws a clear coded error on timeout', async () => {
  let n = 0;
  await waitFor(() => ++n >= 3, { intervalMs: 1 });
  await assert.rejects(
    waitFor(() => false, { timeoutMs: 30, intervalMs: 5, what: 'the moon' }),
    (e: Error & { code?: string }) => e.code === 'WAIT_TIMEOUT' && /the moon/.test(e.message),
  );
});
