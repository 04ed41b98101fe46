/**
 * Sockets inherited from a service manager (systemd's socket activation, sd_listen_fds(3)):
 * LISTEN_PID names the process they are for, LISTEN_FDS counts them from fd 3, LISTEN_FDNAMES
 * names them (colon-separated). Which fd is UDP and which TCP is looked up, not assumed: the order
 * is the socket unit's order of ListenDatagram=/ListenStream= lines. Node has no getsockopt, so the
 * kind comes from the kernel's socket tables (/proc/net/udp, tcp, udp6, tcp6) by the inode that
 * /proc/self/fd/N links to.
 */
import { readFileSync, readlinkSync } from 'node:fs';

/** sd_listen_fds' SD_LISTEN_FDS_START. */
const FIRST_FD = 3;

export interface InheritedFd {
  fd: number;
  name: string;
}

export interface SocketKind {
  kind: 'udp' | 'tcp';
  /** Found in /proc/net/udp6 or tcp6: an AF_INET6 socket (dgram needs 'udp6' for it). */
  ipv6: boolean;
}

/**
 * The fds passed to process `pid` by `env`, or null when none are (no LISTEN_FDS, or LISTEN_PID is
 * another process's: the variables leaked through from a parent). Throws on a malformed value,
 * which is the service manager's set-up gone wrong rather than something to ignore.
 */
export function parseListenFds(env: Record<string, string | undefined>, pid: number): InheritedFd[] | null {
  if (env.LISTEN_FDS === undefined || env.LISTEN_PID === undefined) return null;
  if (!/^\d+$/.test(env.LISTEN_PID)) throw new Error(`LISTEN_PID is not a process id: ${env.LISTEN_PID}`);
  if (Number(env.LISTEN_PID) !== pid) return null;
  if (!/^\d+$/.test(env.LISTEN_FDS)) throw new Error(`LISTEN_FDS is not a count: ${env.LISTEN_FDS}`);
  const n = Number(env.LISTEN_FDS);
  if (n === 0) return null;
  // sd_listen_fds_with_names: names missing or empty become "unknown"; a count mismatch is ignored.
  const names = env.LISTEN_FDNAMES === undefined ? [] : env.LISTEN_FDNAMES.split(':');
  const out: InheritedFd[] = [];
  for (let i = 0; i < n; i++) out.push({ fd: FIRST_FD + i, name: names[i] || 'unknown' });
  return out;
}

/** The inode of a socket from its /proc/self/fd link text ("socket:[12345]"), or null for anything else. */
export function socketInode(link: string): string | null {
  return /^socket:\[(\d+)\]$/.exec(link)?.[1] ?? null;
}

/**
 * Whether `inode` is a row of one of the tables (the text of /proc/net/udp, udp6, tcp, tcp6, keyed by
 * file name). Rows: "sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...".
 */
export function kindInTables(inode: string, tables: Partial<Record<string, string>>): SocketKind | null {
  for (const kind of ['udp', 'tcp'] as const) {
    for (const table of [kind, `${kind}6`]) {
      const text = tables[table];
      if (!text) continue;
      const lines = text.split('\n');
      for (let i = 1; i < lines.length; i++)
        if (lines[i]!.trim().split(/\s+/)[9] === inode) return { kind, ipv6: table !== kind };
    }
  }
  return null;
}

/** UDP or TCP for each inherited fd, from this process's /proc; null for an fd that is neither. */
export function socketKinds(fds: InheritedFd[]): (SocketKind | null)[] {
  const tables: Record<string, string> = {};
  for (const t of ['udp', 'udp6', 'tcp', 'tcp6']) {
    try {
      tables[t] = readFileSync(`/proc/net/${t}`, 'utf8');
    } catch {
      /* no such family here */
    }
  }
  return fds.map((f) => {
    let link = '';
    try {
      link = readlinkSync(`/proc/self/fd/${f.fd}`);
    } catch {
      return null;
    }
    const inode = socketInode(link);
    return inode === null ? null : kindInTables(inode, tables);
  });
}
