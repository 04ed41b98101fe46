/**
 * The systemd files as shipped: `systemd-analyze verify` accepts the socket and service units in
 * both set-ups (the proxy owns 127.0.0.1:53; or resolved keeps 53 and the socket drop-in moves the
 * proxy to 127.0.0.1:8053), and the pieces agree with each other: the socket feeds the service,
 * the service waits for it and accepts notifications from its children, resolved forwards to the
 * address the drop-in binds. verify checks that ExecStart's binary exists, so it runs on copies
 * whose Exec lines name this node and this checkout.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CLI } from '../support/proc.js';
import { DEFAULTS } from '../../src/config/schema.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const read = (p: string) => readFileSync(join(ROOT, p), 'utf8');
const HAVE_ANALYZE = !spawnSync('systemd-analyze', ['--version'], { stdio: 'ignore' }).error;
const SKIP = HAVE_ANALYZE ? false : 'systemd-analyze is not installed here: the units were not verified';

/** key → values of one section of a unit file (repeated keys keep their order; "" resets). */
function section(text: string, name: string): Map<string, string[]> {
  const m = new Map<string, string[]>();
  const body = text.split(/^\[/m).find((s) => s.startsWith(`${name}]`)) ?? '';
  for (const line of body.split('\n').slice(1)) {
    const kv = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (kv) m.set(kv[1]!, [...(m.get(kv[1]!) ?? []), kv[2]!]);
  }
  return m;
}

/** The list a Listen*= key ends up with after the unit and its drop-ins (an empty value resets it). */
function effective(values: string[]): string[] {
  const out: string[] = [];
  for (const v of values) {
    if (v === '') out.length = 0;
    else out.push(v);
  }
  return out;
}

/** Copies of the shipped units in a temporary directory, Exec lines pointing at this checkout. */
function unitDir(t: { after(fn: () => void): void }, opts: { dropIn?: boolean; execStart?: string } = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'cdp-units-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const service = read('config/consul-dns-proxy.service').replaceAll(
    '/usr/bin/node /opt/consul-dns-proxy/dist/src/cli.js',
    opts.execStart ?? `${process.execPath} ${CLI}`,
  );
  assert.notEqual(
    service,
    read('config/consul-dns-proxy.service'),
    'the Exec lines name /usr/bin/node and /opt/consul-dns-proxy',
  );
  writeFileSync(join(dir, 'consul-dns-proxy.service'), service);
  writeFileSync(join(dir, 'consul-dns-proxy.socket'), read('config/consul-dns-proxy.socket'));
  if (opts.dropIn) {
    mkdirSync(join(dir, 'consul-dns-proxy.socket.d'));
    writeFileSync(
      join(dir, 'consul-dns-proxy.socket.d', 'resolved.conf'),
      read('config/consul-dns-proxy.socket.d/resolved.conf'),
    );
  }
  return dir;
}

function verify(dir: string): { code: number | null; out: string } {
  const r = spawnSync(
    'systemd-analyze',
    ['verify', join(dir, 'consul-dns-proxy.socket'), join(dir, 'consul-dns-proxy.service')],
    {
      encoding: 'utf8',
      env: { PATH: process.env.PATH ?? '', SYSTEMD_LOG_COLOR: '0' },
      timeout: 30_000,
    },
  );
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

test('systemd-analyze verify: socket and service units, the proxy on 127.0.0.1:53', { skip: SKIP }, (t) => {
  const r = verify(unitDir(t));
  // verify exits 0 on unknown keys but prints them: any output is a finding.
  assert.deepEqual(r, { code: 0, out: '' });
});

test(
  'systemd-analyze verify: with the socket drop-in beside systemd-resolved (127.0.0.1:8053)',
  { skip: SKIP },
  (t) => {
    const r = verify(unitDir(t, { dropIn: true }));
    assert.deepEqual(r, { code: 0, out: '' });
  },
);

test(
  'systemd-analyze verify fails on a unit whose ExecStart does not exist (the check can fail)',
  { skip: SKIP },
  (t) => {
    const r = verify(unitDir(t, { execStart: '/nonexistent/node /nonexistent/cli.js' }));
    assert.notEqual(r.code, 0);
    assert.match(r.out, /nonexistent/);
  },
);

test('the units agree: socket feeds the service, notify from children, resolved forwards where the drop-in binds', () => {
  const socket = read('config/consul-dns-proxy.socket');
  const service = read('config/consul-dns-proxy.service');
  const dropIn = read('config/consul-dns-proxy.socket.d/resolved.conf');
  const resolved = read('config/resolved.conf.d/consul.conf');
  const sock = section(socket, 'Socket');
  const one = (m: Map<string, string[]>, k: string) => (m.get(k) ?? [])[0] ?? '';
  assert.deepEqual(effective(sock.get('ListenDatagram') ?? []), ['127.0.0.1:53']);
  assert.deepEqual(effective(sock.get('ListenStream') ?? []), ['127.0.0.1:53']);
  // The proxy looks its sockets up by this name in LISTEN_FDNAMES.
  assert.equal(one(sock, 'FileDescriptorName'), 'dns');
  assert.equal(one(sock, 'Service'), 'consul-dns-proxy.service');
  assert.equal(one(sock, 'ReceiveBuffer'), '4M');
  assert.notEqual(one(sock, 'Accept'), 'yes');

  const unit = section(service, 'Unit');
  const svc = section(service, 'Service');
  assert.ok((unit.get('Requires') ?? []).join(' ').split(/\s+/).includes('consul-dns-proxy.socket'));
  assert.ok((unit.get('After') ?? []).join(' ').split(/\s+/).includes('consul-dns-proxy.socket'));
  assert.equal(one(svc, 'Type'), 'notify');
  // The notification comes from a systemd-notify child, not from the main process.
  assert.equal(one(svc, 'NotifyAccess'), 'all');
  // Long enough for the lame duck the docker config sets (5 s) plus the upstream deadline.
  assert.ok(
    Number(one(svc, 'TimeoutStopSec')) * 1000 >= 5000 + DEFAULTS.upstream.deadlineMs,
    one(svc, 'TimeoutStopSec'),
  );

  // systemd applies the drop-in's values after the unit's.
  const over = section(dropIn, 'Socket');
  for (const k of ['ListenDatagram', 'ListenStream']) {
    assert.deepEqual(effective([...(sock.get(k) ?? []), ...(over.get(k) ?? [])]), ['127.0.0.1:8053'], k);
  }
  const res = section(resolved, 'Resolve');
  assert.equal(one(res, 'DNS'), '127.0.0.1:8053');
  // Without systemd the proxy's own default listens there too.
  assert.deepEqual(DEFAULTS.listen, ['127.0.0.1:8053']);
  assert.deepEqual(one(res, 'Domains').split(/\s+/).sort(), ['~consul', '~starlings']);
});
