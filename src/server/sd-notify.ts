/**
 * Readiness notification to systemd (sd_notify(3), `Type=notify`). The protocol is a datagram on
 * the AF_UNIX socket named by NOTIFY_SOCKET, which Node cannot send without a native module, so
 * each state is sent by `systemd-notify STATE...`, a child process (the unit needs
 * `NotifyAccess=all` to accept a message from it). Without NOTIFY_SOCKET nothing is spawned.
 * Calls run one after the other, so RELOADING=1 is never overtaken by the READY=1 that ends it.
 */
import { spawn } from 'node:child_process';
import type { Logger } from '../observability/log.js';

export interface Notifier {
  /** Queues one systemd-notify call with these assignments (READY=1, RELOADING=1, STOPPING=1, STATUS=...). */
  notify(...states: string[]): void;
  /** Resolves once every queued call has exited, or after `timeoutMs`. */
  flush(timeoutMs: number): Promise<void>;
}

export function createNotifier(env: Record<string, string | undefined>, log: Logger): Notifier {
  if (!env.NOTIFY_SOCKET) return { notify: () => {}, flush: () => Promise.resolve() };
  let chain: Promise<void> = Promise.resolve();
  let warned = false;
  const run = (states: string[]) =>
    new Promise<void>((resolve) => {
      const child = spawn('systemd-notify', states, { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
      });
      child.on('error', (err) => {
        if (!warned) log.warn({ err: String(err) }, 'cannot run systemd-notify; systemd is not told our state');
        warned = true;
        resolve();
      });
      child.on('close', (code) => {
        if (code !== 0 && !warned) {
          log.warn({ states, code, stderr: stderr.trim() }, 'systemd-notify failed');
          warned = true;
        }
        resolve();
      });
    });
  return {
    notify(...states) {
      chain = chain.then(() => run(states));
    },
    flush(timeoutMs) {
      let timer: NodeJS.Timeout | undefined;
      return Promise.race([
        chain,
        new Promise<void>((r) => {
          timer = setTimeout(r, timeoutMs);
        }),
      ]).finally(() => clearTimeout(timer));
    },
  };
}
