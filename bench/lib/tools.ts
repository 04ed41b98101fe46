/**
 * The external programs the bench drives: dnsperf (load), dnsmasq, unbound and dnsdist (the
 * anchors, and dnsmasq/unbound also as agent stand-in and recursor). Missing ones are installed
 * from Debian's packages, quietly; apt is shared with other people on this machine, so a busy
 * dpkg lock is waited for rather than treated as a failure.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { progress, sleep } from './util.js';

const TOOLS: { bin: string; pkg: string }[] = [
  { bin: 'dnsperf', pkg: 'dnsperf' },
  { bin: 'dnsmasq', pkg: 'dnsmasq' },
  { bin: 'unbound', pkg: 'unbound' },
  { bin: 'dnsdist', pkg: 'dnsdist' },
];

function has(bin: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${bin} || test -x /usr/sbin/${bin}`], { stdio: 'ignore' }).status === 0;
}

/** Installs whatever is missing; throws with code EBENCH_TOOLS if it cannot. */
export async function ensureTools(): Promise<void> {
  const missing = TOOLS.filter((t) => !has(t.bin));
  if (missing.length === 0) return;
  const pkgs = missing.map((t) => t.pkg);
  progress(`installing ${pkgs.join(', ')} from Debian (apt-get, quiet)`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  let updated = false;
  for (let attempt = 1; attempt <= 40; attempt++) {
    if (!updated) updated = spawnSync('apt-get', ['-qq', 'update'], { env, stdio: 'ignore' }).status === 0;
    // The packaged services must not start on their default ports (53!) or at all: policy-rc.d says no.
    const r = spawnSync(
      'sh',
      [
        '-c',
        `printf '#!/bin/sh\\nexit 101\\n' > /tmp/bench-policy-rc.d && chmod +x /tmp/bench-policy-rc.d && ` +
          `apt-get -qq -y -o Dpkg::Use-Pty=0 install --no-install-recommends ${pkgs.join(' ')}`,
      ],
      { env: { ...env, POLICYRCD: '/tmp/bench-policy-rc.d' }, encoding: 'utf8' },
    );
    if (r.status === 0 && TOOLS.every((t) => has(t.bin))) return;
    const out = `${r.stdout ?? ''}${r.stderr ?? ''}`;
    if (/lock|Could not get lock|is another process using it/i.test(out)) {
      progress(`dpkg lock busy, waiting (attempt ${attempt})`);
      await sleep(5000);
      continue;
    }
    if (!updated) {
      await sleep(2000);
      continue;
    }
    throw Object.assign(new Error(`cannot install ${pkgs.join(' ')}: ${out.slice(-800)}`), { code: 'EBENCH_TOOLS' });
  }
  throw Object.assign(new Error('dpkg lock stayed busy'), { code: 'EBENCH_TOOLS' });
}

function firstLine(cmd: string, args: string[], re: RegExp): string {
  try {
    const out = execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    const m = re.exec(out);
    return m ? m[1]! : out.split('\n')[0]!.trim();
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    const out = `${e.stdout ?? ''}${e.stderr ?? ''}`;
    const m = re.exec(out);
    return m ? m[1]! : 'unknown';
  }
}

export interface MachineInfo {
  date: string;
  nproc: number;
  cpuModel: string;
  memGb: number;
  kernel: string;
  versions: Record<string, string>;
}

export function machineInfo(proxyVersion: string): MachineInfo {
  let cpuModel = 'unknown';
  try {
    cpuModel = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? cpuModel;
  } catch {
    /* not Linux */
  }
  return {
    date: new Date().toISOString(),
    nproc: os.availableParallelism(),
    cpuModel,
    memGb: Math.round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
    versions: {
      node: process.version,
      'consul-dns-proxy': proxyVersion,
      dnsperf: firstLine('dnsperf', ['-h'], /Version ([\d.]+)/),
      dnsmasq: firstLine('dnsmasq', ['--version'], /version ([\d.]+)/i),
      unbound: firstLine('unbound', ['-V'], /Version ([\d.]+)/),
      dnsdist: firstLine('dnsdist', ['--version'], /dnsdist ([\d.]+)/),
    },
  };
}
