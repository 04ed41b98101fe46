// Does an answer fetched from an agent's DNS agree with what the service's health watch last
// reported? The watch and the agent's DNS can read from different Consul servers (a watch that
// failed over to a server, a client agent reading from a follower that applies a commit up to
// ~100 ms after the leader): right after the watch reported a change and the cache dropped the
// service's entries, the next miss can fetch the old answer from the lagging server. Held as
// watch-protected it would serve a failed instance for up to cache.consulTtl. So an answer is held
// only if it agrees with the watch's set; otherwise it keeps Consul's own TTL and is asked again.
//
// "Agrees" is judged on what DNS shows of the instances (agent/dns.go serviceNodeRecords /
// addServiceNodeRecordsToMessage / serviceSRVRecords):
// - every A/AAAA of the question name, and of an SRV target, is an address of an instance the
//   watch has as healthy (node address, service address or a tagged address);
// - every SRV port is the port of such an instance;
// - it names at least min(expected, 3) of them (3: Consul's UDP answer limit, so a trimmed answer
//   still agrees), where expected counts the distinct addresses (A/AAAA) or the instances (SRV);
// - a negative answer agrees only with a set that Consul would answer that way: NXDOMAIN with no
//   healthy instance (of the tag), NODATA with some healthy instance but none of the family asked
//   (AAAA of IPv4-only instances) or a type Consul does not answer from instances.
// A/AAAA records owned by other names (a CNAME's target resolved by the recursors) are not judged.
import { isIP } from 'node:net';
import { RCODE, TYPE } from '../dns/constants.js';
import { readName, type Message } from '../dns/message.js';

/** What DNS can show of one healthy instance. */
export interface DnsInstance {
  /** Lowercased tags (tag lookups are case-insensitive). */
  readonly tags: readonly string[];
  /** The address DNS answers with (service address, else node address), as ipKey(). */
  readonly primary: string;
  /** Every address DNS may use for it (node, service, tagged: WAN translation), as ipKey(). */
  readonly addrs: readonly string[];
  readonly port: number;
}

/** An address as a comparable key: 'v4:<hex>' / 'v6:<hex>' of its bytes, 'h:<name>' for a hostname. */
export function ipKey(a: string): string {
  const kind = isIP(a);
  if (kind === 4) return 'v4:' + Buffer.from(a.split('.').map(Number)).toString('hex');
  if (kind === 6) return 'v6:' + v6Bytes(a).toString('hex');
  let n = a.toLowerCase();
  while (n.endsWith('.')) n = n.slice(0, -1);
  return 'h:' + n;
}

/** The 16 bytes of a valid IPv6 literal (net.isIP said so), `::` and a trailing IPv4 included. */
function v6Bytes(a: string): Buffer {
  let s = a;
  const pct = s.indexOf('%');
  if (pct >= 0) s = s.slice(0, pct);
  const words: number[] = [];
  const parse = (part: string): number[] => {
    if (part === '') return [];
    const out: number[] = [];
    for (const g of part.split(':')) {
      if (g.includes('.')) {
        const b = g.split('.').map(Number);
        out.push(((b[0] as number) << 8) | (b[1] as number), ((b[2] as number) << 8) | (b[3] as number));
      } else out.push(parseInt(g, 16));
    }
    return out;
  };
  const dbl = s.indexOf('::');
  if (dbl >= 0) {
    const head = parse(s.slice(0, dbl));
    const tail = parse(s.slice(dbl + 2));
    words.push(...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail);
  } else words.push(...parse(s));
  const b = Buffer.alloc(16);
  for (let i = 0; i < 8; i++) b.writeUInt16BE((words[i] ?? 0) & 0xffff, i * 2);
  return b;
}

const lower = (n: string): string => n.toLowerCase();

/** The instances a lookup with this tag (or none) answers from. */
function candidates(view: readonly DnsInstance[], tag: string | undefined): readonly DnsInstance[] {
  if (tag === undefined || tag === '') return view;
  const t = tag.toLowerCase();
  return view.filter((i) => i.tags.includes(t));
}

/**
 * True when `msg` (the agent's reply to `qtype` for a service lookup with `tag`) agrees with `view`,
 * the healthy instances the service's watch last reported.
 */
export function answerAgrees(
  view: readonly DnsInstance[],
  tag: string | undefined,
  qtype: number,
  msg: Message,
): boolean {
  const cands = candidates(view, tag);
  const rcode = msg.flags & 0xf;
  if (rcode === RCODE.NXDOMAIN) return cands.length === 0;
  if (rcode !== RCODE.NOERROR) return false;
  if (msg.answers.length === 0) return negativeAgrees(cands, qtype);
  if (cands.length === 0) return false;
  const addrs = new Set<string>();
  const ports = new Set<number>();
  for (const c of cands) {
    for (const a of c.addrs) addrs.add(a);
    ports.add(c.port);
  }
  const qname = lower(msg.questions[0]?.name ?? '');
  const owners = new Set<string>([qname]);
  let srv = 0;
  for (const r of msg.answers) {
    if (r.type !== TYPE.SRV || r.rdata.length < 7) continue;
    srv++;
    if (!ports.has(r.rdata.readUInt16BE(4))) return false;
    owners.add(lower(readName(r.rdata, 6).name));
  }
  const named = new Set<string>();
  for (const r of [...msg.answers, ...msg.additionals]) {
    if ((r.type !== TYPE.A || r.rdata.length !== 4) && (r.type !== TYPE.AAAA || r.rdata.length !== 16)) continue;
    if (!owners.has(lower(r.name))) continue;
    const k = (r.type === TYPE.A ? 'v4:' : 'v6:') + r.rdata.toString('hex');
    if (!addrs.has(k)) return false;
    named.add(k);
  }
  if (qtype === TYPE.SRV) return srv >= Math.min(cands.length, 3);
  if (qtype === TYPE.A || qtype === TYPE.AAAA) {
    const fam = qtype === TYPE.A ? 'v4:' : 'v6:';
    const expected = new Set(cands.filter((c) => c.primary.startsWith(fam)).map((c) => c.primary)).size;
    return named.size >= Math.min(expected, 3);
  }
  return true;
}

/** A NOERROR reply without answers (NODATA) for a service lookup. */
function negativeAgrees(cands: readonly DnsInstance[], qtype: number): boolean {
  // No healthy instance: Consul answers NXDOMAIN, not NODATA.
  if (cands.length === 0) return false;
  if (qtype === TYPE.A) return !cands.some((c) => c.primary.startsWith('v4:') || c.primary.startsWith('h:'));
  if (qtype === TYPE.AAAA) return !cands.some((c) => c.primary.startsWith('v6:') || c.primary.startsWith('h:'));
  // SRV, TXT and ANY are answered from any healthy instance; other types are always NODATA.
  return qtype !== TYPE.SRV && qtype !== TYPE.ANY && qtype !== TYPE.TXT;
}
