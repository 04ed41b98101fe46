/** The nameservers of a resolv.conf text, without the proxy's own listen addresses. */
import { canonicalIp, isUnspecified, type HostPort, formatHostPort, ownAddress } from './address.js';

/**
 * The nameservers of a resolv.conf text, as "host:port" (resolv.conf(5): always port 53), in
 * order, without duplicates and without the proxy's own addresses: a resolver of this host must
 * not forward to itself. Which addresses are "ours" follows `ownAddress`:
 * - listen 127.0.0.1:53 skips `nameserver 127.0.0.1` but keeps e.g. systemd-resolved's
 *   127.0.0.53 (a different socket; if that one forwards back to us, the loop probe catches it);
 * - listen 0.0.0.0:53 skips every IPv4 loopback address (if we could bind 0.0.0.0:53, no other
 *   process owns a 127.x:53 socket) and the host's own IPv4 addresses given in `localAddresses`;
 * - listen [::]:53 (dual stack) skips loopback and local addresses of both families;
 * - listening on another port skips nothing, since resolv.conf can only name port 53.
 * `nameserver 0.0.0.0` / `::` (which the kernel delivers locally) are always skipped.
 * Lines that are not a valid `nameserver IP` are ignored, as glibc does.
 */
export function expandResolvConf(text: string, ownListen: HostPort[], localAddresses: string[] = []): string[] {
  const out: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/[#;].*$/, '').trim();
    const [keyword, address] = line.split(/\s+/);
    const host = keyword === 'nameserver' && address !== undefined ? canonicalIp(address) : undefined;
    if (host === undefined) continue;
    if (isUnspecified(host)) continue;
    if (ownAddress({ host, port: 53 }, ownListen, localAddresses)) continue;
    const entry = formatHostPort({ host, port: 53 });
    if (!out.includes(entry)) out.push(entry);
  }
  return out;
}

/**
 * The entries of an expanded recursor list that are systemd-resolved's stub listeners
 * (127.0.0.53:53, and 127.0.0.54:53, its "proxy" stub since systemd 247). Forwarding to them
 * hands every name to resolved, which sends the Consul names it routes to this proxy back to us:
 * a loop when resolved forwards `~consul` here, and a detour through resolved otherwise.
 */
export function resolvedStubs(recursors: string[]): string[] {
  return recursors.filter((r) => r === '127.0.0.53:53' || r === '127.0.0.54:53');
}
