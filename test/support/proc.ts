/**
 * Test processes: the real proxy CLI as a child process (as a user runs it), and a real unbound
 * recursor with only static zones (`local-zone: "." static`: it never iterates to the Internet).
 * Both bind loopback ports and are stopped in `stop()`; tests call it from t.after.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import dgram from 'node:dgram';
import { fileURLToPath } from 'node:url';

export const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));

export interface ProxyProc {
  proc: ChildProcess;
  host: string;
  port: number;
  metrics: string | null;
  /** Every stdout line so far, parsed as JSON where possible. */
  logs: Record<string, unknown>[];
  stderr: string;
  exited: Promise<number | null>;
  /** The YAML file given with `opts.config` (rewrite it, then SIGHUP, to test a reload). */
  configPath: string | null;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/**
 * Starts `node dist/src/cli.js ARGS` and resolves once it logs "listening". With `opts.config`,
 * that YAML goes to a temporary file passed as `--config`, removed when the process has exited.
 */
export async function startProxy(
  args: string[],
  opts: { env?: Record<string, string>; config?: string } = {},
): Promise<ProxyProc> {
  if (opts.config === undefined) return spawnProxy(args, opts.env, null);
  const dir = mkdtempSync(join(tmpdir(), 'cdp-proxy-'));
  const configPath = join(dir, 'config.yaml');
  writeFileSync(configPath, opts.config);
  try {
    const p = await spawnProxy(['--config', configPath, ...args], opts.env, configPath);
    void p.exited.then(() => rmSync(dir, { recursive: true, force: true }));
    return p;
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

function spawnProxy(
  args: string[],
  env: Record<string, string> | undefined,
  configPath: string | null,
): Promise<ProxyProc> {
  const proc = spawn(process.execPath, [CLI, '--listen', '127.0.0.1:0', ...args], {
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: Record<string, unknown>[] = [];
  let stderr = '';
  let out = '';
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`proxy did not start: ${stderr}\n${out}`));
    }, 15_000);
    proc.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    proc.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      let nl: number;
      while ((nl = out.indexOf('\n')) >= 0) {
        const line = out.slice(0, nl);
        out = out.slice(nl + 1);
        let rec: Record<string, unknown>;
        try {
          rec = JSON.parse(line) as Record<string, unknown>;
        } catch {
          rec = { msg: line };
        }
        logs.push(rec);
        if (rec.msg === 'listening') {
          clearTimeout(timer);
          const udp = (rec.udp as string[])[0]!;
          const i = udp.lastIndexOf(':');
          const metrics = typeof rec.metrics === 'string' && rec.metrics !== 'off' ? rec.metrics : null;
          resolve({
            proc,
            host: udp.slice(0, i).replace(/^\[|\]$/g, ''),
            port: Number(udp.slice(i + 1)),
            metrics,
            logs,
            configPath,
            get stderr() {
              return stderr;
            },
            exited,
            async stop(signal: NodeJS.Signals = 'SIGTERM') {
              if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
              const t = setTimeout(() => proc.kill('SIGKILL'), 8000);
              const code = await exited;
              clearTimeout(t);
              return code;
            },
          });
        }
      }
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`proxy exited with ${code} before listening: ${stderr}`));
    });
  });
}

/** Runs the CLI to completion (for --check-config, --help...). */
export function runCli(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const proc = spawn(process.execPath, [CLI, ...args], {
      env: { PATH: process.env.PATH ?? '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '',
      stderr = '';
    proc.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    proc.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    proc.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** A port free on 127.0.0.1 for both UDP and TCP (for servers that cannot report port 0 back). */
export async function freePort(): Promise<number> {
  for (;;) {
    const srv = net.createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    const port = (srv.address() as net.AddressInfo).port;
    await new Promise<void>((r) => srv.close(() => r()));
    const u = dgram.createSocket('udp4');
    const ok = await new Promise<boolean>((r) => {
      u.once('error', () => r(false));
      u.bind(port, '127.0.0.1', () => r(true));
    });
    await new Promise<void>((r) => {
      try {
        u.close(() => r());
      } catch {
        r();
      }
    });
    if (ok) return port;
  }
}

export interface Unbound {
  port: number;
  stop(): Promise<void>;
}

/**
 * A real unbound serving a static `example.` zone on a free loopback port. `local-zone: "." static`
 * answers everything else NXDOMAIN locally: it never sends a packet off this machine.
 */
export async function startUnbound(extra: string[] = []): Promise<Unbound> {
  const dir = mkdtempSync(join(tmpdir(), 'cdp-unbound-'));
  const port = await freePort();
  const conf = join(dir, 'unbound.conf');
  writeFileSync(
    conf,
    [
      'server:',
      `  interface: 127.0.0.1@${port}`,
      '  do-daemonize: no',
      '  username: ""',
      '  chroot: ""',
      '  pidfile: ""',
      '  use-syslog: no',
      '  logfile: ""',
      '  verbosity: 0',
      '  num-threads: 1',
      '  do-ip6: no',
      '  access-control: 127.0.0.0/8 allow',
      '  module-config: "iterator"',
      '  local-zone: "." static',
      '  local-zone: "example." static',
      '  local-data: "example. 300 IN SOA ns.example. hostmaster.example. 1 3600 600 86400 300"',
      '  local-data: "example. 300 IN NS ns.example."',
      '  local-data: "ns.example. 300 IN A 192.0.2.53"',
      '  local-data: "www.example. 300 IN A 192.0.2.1"',
      '  local-data: "api.example. 300 IN A 192.0.2.2"',
      '  local-data: "big.example. 300 IN TXT \\"' + 'x'.repeat(200) + '\\""',
      ...extra,
    ].join('\n') + '\n',
  );
  const proc = spawn('unbound', ['-d', '-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  proc.stderr.on('data', (d: Buffer) => {
    err += d.toString();
  });
  const exited = new Promise<void>((r) => proc.on('exit', () => r()));
  // Ready when it answers over TCP.
  const deadline = Date.now() + 10_000;
  for (;;) {
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        r(true);
      });
      s.once('error', () => r(false));
    });
    if (ok) break;
    if (proc.exitCode !== null || Date.now() > deadline) throw new Error(`unbound did not start: ${err}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    async stop() {
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
