/**
 * The start-up rules around sockets: inherited fds (sd_listen_fds semantics and the UDP/TCP lookup
 * in /proc), the warning about systemd-resolved's stub among the recursors, `shutdown.lameDuckMs`,
 * and `listen` being a key a reload changes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { readdirSync, readlinkSync } from 'node:fs';
import { kindInTables, parseListenFds, socketInode, socketKinds } from '../../src/net/listen-fds.js';
import { expandResolvConf, resolvedStubs } from '../../src/net/resolv-conf.js';
import { DEFAULTS, restartOnlyChanges, type Config } from '../../src/config/schema.js';
import { loadConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';

test('parseListenFds: fds from 3 with their names, only for our own pid', () => {
  assert.deepEqual(parseListenFds({ LISTEN_PID: '42', LISTEN_FDS: '2', LISTEN_FDNAMES: 'dns:dns' }, 42), [
    { fd: 3, name: 'dns' },
    { fd: 4, name: 'dns' },
  ]);
  // Leaked from a parent that was activated: not ours.
  assert.equal(parseListenFds({ LISTEN_PID: '41', LISTEN_FDS: '2' }, 42), null);
  assert.equal(parseListenFds({}, 42), null);
  assert.equal(parseListenFds({ LISTEN_FDS: '2' }, 42), null, 'no LISTEN_PID: not for us');
  assert.equal(parseListenFds({ LISTEN_PID: '42', LISTEN_FDS: '0' }, 42), null);
  // Names missing or empty are "unknown", as sd_listen_fds_with_names reports them.
  assert.deepEqual(parseListenFds({ LISTEN_PID: '42', LISTEN_FDS: '3', LISTEN_FDNAMES: 'udp::' }, 42), [
    { fd: 3, name: 'udp' },
    { fd: 4, name: 'unknown' },
    { fd: 5, name: 'unknown' },
  ]);
  assert.throws(() => parseListenFds({ LISTEN_PID: '42', LISTEN_FDS: 'two' }, 42), /LISTEN_FDS/);
  assert.throws(() => parseListenFds({ LISTEN_PID: 'me', LISTEN_FDS: '2' }, 42), /LISTEN_PID/);
});

test('socketInode and kindInTables: the kind and family by inode in /proc/net tables', () => {
  assert.equal(socketInode('socket:[123456]'), '123456');
  assert.equal(socketInode('pipe:[123456]'), null);
  assert.equal(socketInode('/dev/null'), null);
  const head =
    '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n';
  const row = (inode: string) =>
    ` 12: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 ${inode} 2 0000000000000000 0\n`;
  const tables = { udp: head + row('111'), tcp: head + row('222'), udp6: head + row('333'), tcp6: head };
  assert.deepEqual(kindInTables('111', tables), { kind: 'udp', ipv6: false });
  assert.deepEqual(kindInTables('222', tables), { kind: 'tcp', ipv6: false });
  assert.deepEqual(kindInTables('333', tables), { kind: 'udp', ipv6: true });
  assert.equal(kindInTables('444', tables), null);
  // The inode column, not any column that happens to hold the same digits (uid 101 here).
  assert.equal(kindInTables('101', tables), null);
  assert.equal(kindInTables('111', {}), null);
});

test('socketKinds: this process’s own UDP and TCP sockets are found as such', async (t) => {
  const udp = dgram.createSocket('udp4');
  await new Promise<void>((r) => udp.bind(0, '127.0.0.1', () => r()));
  const tcp = net.createServer();
  await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', () => r()));
  const udp6 = dgram.createSocket({ type: 'udp6', ipv6Only: true });
  const has6 = await new Promise<boolean>((r) => {
    udp6.once('error', () => r(false));
    udp6.bind(0, '::1', () => r(true));
  });
  t.after(() => {
    udp.close();
    tcp.close();
    if (has6) udp6.close();
  });
  const socketFds = readdirSync('/proc/self/fd')
    .map(Number)
    .filter((fd) => {
      try {
        return socketInode(readlinkSync(`/proc/self/fd/${fd}`)) !== null;
      } catch {
        return false;
      }
    });
  const kinds = socketKinds(socketFds.map((fd) => ({ fd, name: 'x' })));
  assert.ok(
    kinds.some((k) => k?.kind === 'udp' && !k.ipv6),
    JSON.stringify(kinds),
  );
  assert.ok(
    kinds.some((k) => k?.kind === 'tcp' && !k.ipv6),
    JSON.stringify(kinds),
  );
  if (has6)
    assert.ok(
      kinds.some((k) => k?.kind === 'udp' && k.ipv6),
      JSON.stringify(kinds),
    );
  // Not a socket at all (stdin may be anything; a closed number is certainly not one).
  assert.deepEqual(socketKinds([{ fd: 99999, name: 'x' }]), [null]);
});

test('resolvedStubs: systemd-resolved’s 127.0.0.53 and 127.0.0.54 among the expanded resolv.conf', () => {
  const own = [{ host: '127.0.0.1', port: 53 }];
  const stub = expandResolvConf('nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n', own);
  assert.deepEqual(resolvedStubs(stub), ['127.0.0.53:53']);
  assert.deepEqual(resolvedStubs(['127.0.0.54:53', '10.0.0.2:53']), ['127.0.0.54:53']);
  assert.deepEqual(resolvedStubs(['10.0.0.2:53', '127.0.0.1:53', '127.0.0.53:5353']), []);
});

test('shutdown.lameDuckMs: default 0, milliseconds, a bad value names the key', () => {
  assert.equal(DEFAULTS.shutdown.lameDuckMs, 0);
  const load = (yaml: string) => loadConfig({ argv: ['--config', 'x.yaml'], env: {}, readFile: () => yaml }).config;
  assert.equal(load('shutdown:\n  lameDuckMs: 5000\n').shutdown.lameDuckMs, 5000);
  assert.equal(load('shutdown:\n  lameDuckMs: 0\n').shutdown.lameDuckMs, 0);
  for (const bad of ['-1', '1.5', '"5s"']) {
    assert.throws(
      () => load(`shutdown:\n  lameDuckMs: ${bad}\n`),
      (e: unknown) => e instanceof ConfigError && e.problems.some((p) => p.includes('shutdown.lameDuckMs')),
      bad,
    );
  }
});

test('listen is no longer a restart-only key: a reload that changes it warns about nothing', () => {
  const next: Config = { ...DEFAULTS, listen: ['127.0.0.1:5353'] };
  assert.deepEqual(restartOnlyChanges(DEFAULTS, next), []);
  const logChange: Config = { ...DEFAULTS, log: { ...DEFAULTS.log, level: 'debug' } };
  assert.deepEqual(
    restartOnlyChanges(DEFAULTS, logChange).map((c) => c.key),
    ['log.level'],
  );
});
