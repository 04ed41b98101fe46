/*
 * Test helper around the real `dig` binary (Debian bind9-dnsutils). Tests that go through dig see
 * exactly what a person typing the command would see, so the parser below reads dig's default
 * presentation output (header, flags, OPT pseudosection, the four sections) into plain objects.
 * It deliberately refuses to run without an explicit `@server`: tests must never reach the resolver
 * in /etc/resolv.conf (team NETWORK rule).
 */
import { execFile, execFileSync } from 'node:child_process';

export interface DigRecord {
  name: string;
  ttl: number;
  class: string;
  type: string;
  /** Everything after the type, as dig prints it (e.g. `1 1 8800 c000020a.addr.dc1.consul.`). */
  data: string;
}

export interface DigQuestion {
  name: string;
  class: string;
  type: string;
}

export interface DigOpt {
  version: number;
  /** EDNS flags dig lists after `flags:` (e.g. ['do']); empty when none. */
  flags: string[];
  udp: number;
  /** Extended DNS Error (RFC 8914) if the reply carried one. */
  ede?: { code: number; name?: string; text?: string };
  /** Every other `; NAME: value` line of the pseudosection (COOKIE, NSID, CLIENT-SUBNET...). */
  options: Record<string, string>;
}

export interface DigResult {
  /** rcode name (NOERROR, NXDOMAIN, SERVFAIL, REFUSED...), or null when no reply was parsed. */
  status: string | null;
  opcode: string | null;
  id: number | null;
  /** Header flags in dig's order: qr aa tc rd ra ad cd. */
  flags: string[];
  counts: { query: number; answer: number; authority: number; additional: number } | null;
  opt: DigOpt | null;
  question: DigQuestion[];
  answer: DigRecord[];
  authority: DigRecord[];
  additional: DigRecord[];
  /** `;; SERVER: ...(UDP|TCP)` transport if printed. */
  transport: 'UDP' | 'TCP' | null;
  msgSize: number | null;
  /** True when dig printed ";; Truncated, retrying in TCP mode." */
  retriedTcp: boolean;
  /** dig's process exit status (0 ok, 9 no reply, 10 internal error...). */
  exitCode: number;
  /** The complete stdout + stderr text. */
  raw: string;
}

let digPresent: boolean | undefined;

/** Whether a `dig` binary is on PATH (cached). Suites can `skip` when it is not. */
export function hasDig(): boolean {
  if (digPresent === undefined) {
    try {
      execFileSync('dig', ['-v'], { stdio: 'ignore' });
      digPresent = true;
    } catch {
      digPresent = false;
    }
  }
  return digPresent;
}

/**
 * Run `dig +tries=1 +time=2 ...args`. Later options win in dig, so callers may override the
 * defaults (e.g. `+time=5`). Resolves even when dig got no reply (status null, exitCode 9);
 * rejects only when dig cannot be run or no `@server` was given.
 */
export function dig(args: string[]): Promise<DigResult> {
  if (!args.some((a) => a.startsWith('@'))) {
    return Promise.reject(
      Object.assign(new Error('dig(): an explicit @server is required (never use the system resolver)'), {
        code: 'DIG_NO_SERVER',
      }),
    );
  }
  return new Promise((resolve, reject) => {
    execFile(
      'dig',
      ['+tries=1', '+time=2', ...args],
      { timeout: 60_000, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const raw = stdout + (stderr ? stderr : '');
        let exitCode = 0;
        if (err) {
          const e = err as NodeJS.ErrnoException & { code?: unknown; killed?: boolean };
          if (typeof e.code === 'number') exitCode = e.code;
          else if (e.code === 'ENOENT') {
            reject(
              Object.assign(new Error('dig not found: apt-get install -y bind9-dnsutils'), { code: 'DIG_MISSING' }),
            );
            return;
          } else {
            reject(err instanceof Error ? err : new Error(String(err)));
            return;
          }
        }
        resolve({ ...parseDig(raw), exitCode, raw });
      },
    );
  });
}

type Section = 'question' | 'answer' | 'authority' | 'additional' | 'opt' | null;

/** Parse dig's default output. Exported for unit use; `dig()` fills in exitCode and raw. */
export function parseDig(text: string): Omit<DigResult, 'exitCode' | 'raw'> {
  const res: Omit<DigResult, 'exitCode' | 'raw'> = {
    status: null,
    opcode: null,
    id: null,
    flags: [],
    counts: null,
    opt: null,
    question: [],
    answer: [],
    authority: [],
    additional: [],
    transport: null,
    msgSize: null,
    retriedTcp: false,
  };
  let section: Section = null;
  // dig prints one reply block per attempt; with "Truncated, retrying in TCP mode" the TCP reply
  // follows the UDP one. Each ";; Got answer:" starts a fresh block so the last reply wins.
  for (const rawLine of text.split('\n')) {
    const line = rawLine.replace(/\r$/, '');
    if (line.startsWith(';; Got answer:')) {
      res.status = null;
      res.flags = [];
      res.opt = null;
      res.question = [];
      res.answer = [];
      res.authority = [];
      res.additional = [];
      section = null;
      continue;
    }
    if (line.startsWith(';; Truncated, retrying in TCP mode')) {
      res.retriedTcp = true;
      continue;
    }
    let m = /^;; ->>HEADER<<- opcode: (\S+), status: (\S+), id: (\d+)/.exec(line);
    if (m) {
      res.opcode = m[1] ?? null;
      res.status = m[2] ?? null;
      res.id = Number(m[3]);
      continue;
    }
    m = /^;; flags:([^;]*); QUERY: (\d+), ANSWER: (\d+), AUTHORITY: (\d+), ADDITIONAL: (\d+)/.exec(line);
    if (m) {
      res.flags = (m[1] ?? '').trim().split(/\s+/).filter(Boolean);
      res.counts = { query: Number(m[2]), answer: Number(m[3]), authority: Number(m[4]), additional: Number(m[5]) };
      continue;
    }
    if (line.startsWith(';; OPT PSEUDOSECTION:')) {
      section = 'opt';
      res.opt = { version: 0, flags: [], udp: 0, options: {} };
      continue;
    }
    m = /^;; (QUESTION|ANSWER|AUTHORITY|ADDITIONAL) SECTION:/.exec(line);
    if (m) {
      section = (m[1] ?? '').toLowerCase() as Section;
      continue;
    }
    m = /^;; SERVER: .*\((UDP|TCP)\)/.exec(line);
    if (m) {
      res.transport = m[1] as 'UDP' | 'TCP';
      continue;
    }
    m = /^;; MSG SIZE\s+rcvd: (\d+)/.exec(line);
    if (m) {
      res.msgSize = Number(m[1]);
      continue;
    }
    if (line.trim() === '') {
      if (section !== 'opt') section = null;
      continue;
    }
    if (line.startsWith(';;')) {
      section = null;
      continue;
    }
    if (section === 'opt' && res.opt) {
      parseOptLine(line, res.opt);
      continue;
    }
    if (section === 'question') {
      const parts = line.replace(/^;/, '').trim().split(/\s+/);
      if (parts.length >= 3) res.question.push({ name: parts[0]!, class: parts[1]!, type: parts[2]! });
      continue;
    }
    if (section === 'answer' || section === 'authority' || section === 'additional') {
      const rec = parseRecord(line);
      if (rec) res[section].push(rec);
    }
  }
  return res;
}

function parseOptLine(line: string, opt: DigOpt): void {
  let m = /^; EDNS: version: (\d+), flags:([^;]*); udp: (\d+)/.exec(line);
  if (m) {
    opt.version = Number(m[1]);
    opt.flags = (m[2] ?? '').trim().split(/\s+/).filter(Boolean);
    opt.udp = Number(m[3]);
    return;
  }
  m = /^; EDE: (\d+)(?: \(([^)]*)\))?(?:: (.*))?$/.exec(line);
  if (m) {
    opt.ede = { code: Number(m[1]) };
    if (m[2] !== undefined) opt.ede.name = m[2];
    if (m[3] !== undefined) opt.ede.text = m[3].replace(/^\((.*)\)$/, '$1');
    return;
  }
  m = /^; ([A-Z0-9-]+): ?(.*)$/.exec(line);
  if (m) opt.options[m[1]!] = m[2] ?? '';
}

/** `name ttl class type data...` with tabs or spaces; data keeps its inner spacing. */
function parseRecord(line: string): DigRecord | null {
  const m = /^(\S+)\s+(\d+)\s+(\S+)\s+(\S+)\s*(.*)$/.exec(line);
  if (!m) return null;
  return { name: m[1]!, ttl: Number(m[2]), class: m[3]!, type: m[4]!, data: (m[5] ?? '').trim() };
}
