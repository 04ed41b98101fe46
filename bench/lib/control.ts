/**
 * The control server (bench/lib/control-responder.ts) from the bench's side: learning the
 * proxy's replies for the hit scenarios' queries, and starting the responder as its own process
 * like the other servers.
 *
 * Learning goes through a relay in front of the proxy: dnsperf runs once through each hit file,
 * with the same flags as the measured runs (EDNS options included), and every query the relay
 * passes on is recorded with the proxy's reply. The control then answers those queries with the
 * same bytes the proxy sends, so both servers put the same datagrams on the wire.
 */
import dgram from 'node:dgram';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runDnsperf } from './dnsperf.js';
import { startServer, type Server } from './servers.js';

const CONTROL_CLI = fileURLToPath(new URL('./control-responder.js', import.meta.url));

export interface LearnRun {
  file: string;
  ednsOption?: string;
}

/**
 * Runs dnsperf once through each file via a relay to `proxyPort` and writes the table of
 * (query after its ID → the proxy's reply) to `tableFile`. Throws if a query got no reply.
 */
export async function learnReplies(proxyPort: number, runs: LearnRun[], tableFile: string): Promise<number> {
  const front = dgram.createSocket('udp4');
  const back = dgram.createSocket('udp4');
  const waiting = new Map<number, { port: number; key: string }>();
  const table = new Map<string, string>();
  front.on('message', (msg, rinfo) => {
    if (msg.length < 12) return;
    waiting.set(msg.readUInt16BE(0), { port: rinfo.port, key: msg.toString('hex', 2) });
    back.send(msg, proxyPort, '127.0.0.1');
  });
  back.on('message', (msg) => {
    if (msg.length < 12) return;
    const id = msg.readUInt16BE(0);
    const w = waiting.get(id);
    if (!w) return;
    waiting.delete(id);
    table.set(w.key, msg.toString('hex'));
    front.send(msg, w.port, '127.0.0.1');
  });
  await Promise.all(
    [front, back].map((s) => new Promise<void>((r) => s.bind({ address: '127.0.0.1', port: 0 }, () => r()))),
  );
  try {
    for (const run of runs) {
      const r = await runDnsperf({
        port: front.address().port,
        file: run.file,
        maxRuns: 1,
        clients: 1,
        outstanding: 1,
        ednsOption: run.ednsOption,
      });
      if (r.completed !== r.sent)
        throw Object.assign(
          new Error(`learning the proxy's replies: ${r.sent - r.completed} of ${r.sent} queries unanswered`),
          { code: 'EBENCH_CONTROL' },
        );
    }
  } finally {
    front.close();
    back.close();
  }
  writeFileSync(tableFile, JSON.stringify([...table].map(([query, reply]) => ({ query, reply }))) + '\n');
  return table.size;
}

export function startControl(dir: string, port: number, tableFile: string): Promise<Server> {
  return startServer(
    'control',
    process.execPath,
    [CONTROL_CLI, '--port', String(port), '--table', tableFile],
    port,
    'www.example',
  );
}

export const controlTableFile = (dir: string) => join(dir, 'control-table.json');
