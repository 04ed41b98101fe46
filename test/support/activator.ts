/**
 * Drives test/support/activator.pl: a holder process that owns a UDP and a TCP socket on
 * 127.0.0.1 and starts a child with them as systemd's socket activation does (fds 3 and 4, UDP
 * first unless `streamFirst`, LISTEN_FDS=2, LISTEN_FDNAMES=dns:dns, LISTEN_PID=<child pid>), and
 * restarts the child on the same sockets. With `sockets: false` the same holder starts the child without sockets, so a test
 * can compare a restart with and without activation through one interface.
 *
 * Events come on the holder's fd 3 (a pipe of its own), so the child's stdout stays the child's.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Readable } from 'node:stream';

/** The .pl beside the .ts source (tsc does not copy it into dist/). */
export const ACTIVATOR_PL = fileURLToPath(new URL('../../../test/support/activator.pl', import.meta.url));

export interface ActivatorEvent {
  event: 'listening' | 'spawned' | 'exited';
  port?: number;
  pid?: number;
  code?: number | null;
  signal?: number | null;
}

export interface ChildLine {
  pid: number | null;
  line: string;
  json: Record<string, unknown> | null;
  at: number;
}

export interface Activator {
  proc: ChildProcess;
  /** The port both sockets are bound to (null with `sockets: false`). */
  port: number | null;
  /** Every control event so far, in order. */
  events: ActivatorEvent[];
  /** Every line the children wrote on stdout, with the pid of the child running when it came. */
  lines: ChildLine[];
  stderr: string;
  /** The pid of the current child (null between a child's exit and the next start). */
  readonly childPid: number | null;
  /** Resolves with the first line (from `fromIndex` on) that `pred` accepts; rejects after `timeoutMs`. */
  waitLine(
    pred: (l: ChildLine) => boolean,
    opts?: { fromIndex?: number; timeoutMs?: number; what?: string },
  ): Promise<ChildLine>;
  /** Resolves with the first event (from `fromIndex` on) that `pred` accepts. */
  waitEvent(
    pred: (e: ActivatorEvent) => boolean,
    opts?: { fromIndex?: number; timeoutMs?: number; what?: string },
  ): Promise<ActivatorEvent>;
  /** SIGTERM the child, wait for it to exit, start a new one. Resolves with the old and new pids once the new one is spawned. */
  restart(): Promise<{ oldPid: number; newPid: number; exitedAt: number; spawnedAt: number }>;
  /** Stops the child and the holder (the sockets close with it). */
  stop(): Promise<void>;
}

export interface ActivatorOptions {
  /** Hold sockets and pass them (default true). */
  sockets?: boolean;
  /** Port to bind (default 0: a free one, the same for UDP and TCP). */
  port?: number;
  /** TCP as fd 3 and UDP as fd 4, as a socket unit listing ListenStream= before ListenDatagram= passes them. */
  streamFirst?: boolean;
  env?: Record<string, string>;
}

export async function startActivator(command: string[], opts: ActivatorOptions = {}): Promise<Activator> {
  const args = [ACTIVATOR_PL];
  if (opts.sockets === false) args.push('--no-sockets');
  if (opts.port !== undefined) args.push('--port', String(opts.port));
  if (opts.streamFirst) args.push('--stream-first');
  args.push('--', ...command);
  const proc = spawn('perl', args, {
    env: { PATH: process.env.PATH ?? '', ...opts.env },
    stdio: ['pipe', 'pipe', 'pipe', 'pipe'],
  });
  const events: ActivatorEvent[] = [];
  const lines: ChildLine[] = [];
  let stderr = '';
  let childPid: number | null = null;
  const waiters = new Set<() => void>();
  const wake = () => {
    for (const w of [...waiters]) w();
  };
  const exited = new Promise<void>((r) =>
    proc.on('exit', () => {
      wake();
      r();
    }),
  );

  const splitLines = (stream: Readable, onLine: (line: string) => void) => {
    let buf = '';
    stream.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        onLine(line);
      }
    });
  };
  splitLines(proc.stdio[3] as Readable, (line) => {
    let e: ActivatorEvent;
    try {
      e = JSON.parse(line) as ActivatorEvent;
    } catch {
      stderr += `activator: bad event line ${line}\n`;
      return;
    }
    if (e.event === 'spawned') childPid = e.pid ?? null;
    if (e.event === 'exited' && e.pid === childPid) childPid = null;
    events.push(e);
    wake();
  });
  splitLines(proc.stdout, (line) => {
    let json: Record<string, unknown> | null = null;
    try {
      const v = JSON.parse(line) as unknown;
      if (v && typeof v === 'object') json = v as Record<string, unknown>;
    } catch {
      /* not JSON */
    }
    lines.push({ pid: childPid, line, json, at: performance.now() });
    wake();
  });
  proc.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });

  function waitUntil<T>(find: () => T | undefined, timeoutMs: number, what: string): Promise<T> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const v = find();
        if (v !== undefined) {
          done();
          resolve(v);
          return;
        }
        if (proc.exitCode !== null || proc.signalCode !== null) {
          done();
          reject(new Error(`activator exited while waiting for ${what}: ${stderr}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; stderr: ${stderr}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        waiters.delete(check);
      };
      waiters.add(check);
      check();
    });
  }

  const api: Activator = {
    proc,
    port: null,
    events,
    lines,
    get stderr() {
      return stderr;
    },
    get childPid() {
      return childPid;
    },
    waitLine(pred, o = {}) {
      return waitUntil(() => lines.slice(o.fromIndex ?? 0).find(pred), o.timeoutMs ?? 15_000, o.what ?? 'a child line');
    },
    waitEvent(pred, o = {}) {
      return waitUntil(
        () => events.slice(o.fromIndex ?? 0).find(pred),
        o.timeoutMs ?? 15_000,
        o.what ?? 'an activator event',
      );
    },
    async restart() {
      const oldPid = childPid;
      if (oldPid === null) throw new Error('restart: no child running');
      const from = events.length;
      proc.stdin.write('restart\n');
      const ex = await api.waitEvent((e) => e.event === 'exited' && e.pid === oldPid, {
        fromIndex: from,
        what: `child ${oldPid} to exit`,
      });
      const exitedAt = performance.now();
      void ex;
      const sp = await api.waitEvent((e) => e.event === 'spawned', { fromIndex: from, what: 'the next child' });
      return { oldPid, newPid: sp.pid!, exitedAt, spawnedAt: performance.now() };
    },
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.stdin.end();
        const t = setTimeout(() => proc.kill('SIGKILL'), 20_000);
        await exited;
        clearTimeout(t);
      }
    },
  };

  try {
    if (opts.sockets !== false) {
      const l = await api.waitEvent((e) => e.event === 'listening', { what: 'the activator to bind' });
      api.port = l.port!;
    }
    await api.waitEvent((e) => e.event === 'spawned', { what: 'the first child' });
  } catch (err) {
    proc.kill('SIGKILL');
    throw err;
  }
  return api;
}
