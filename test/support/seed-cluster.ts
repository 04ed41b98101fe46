/**
 * The seed's topology on real Consul, in one loopback block `net` ("127.0.20"): three servers
 * (.21-.23), two Janus hosts (client agents .31 and .32, each with the seed's `janus` service and
 * a TCP check on 8800) and the Alien4Cloud host's client agent (.41), the one a proxy asks first.
 * The seed test, `npm run demo` and `npm run failover-lag -- --real` start it; each runs the Janus
 * stand-ins (janusStandIn) that make the checks pass.
 */
import http from 'node:http';
import type { AgentSpec, TcpCheckedService } from './consul-cluster.js';

/** The addresses of one block: the Janus hosts, the Alien4Cloud agent, server 1. */
export function seedAddresses(net: string): { janus: [string, string]; a4c: string; s1: string } {
  return { janus: [`${net}.31`, `${net}.32`], a4c: `${net}.41`, s1: `${net}.21` };
}

/** The seed's service definition for Janus host `n` at `address`. */
export function janusService(n: number, address: string): TcpCheckedService {
  return { id: `janus-${n}`, name: 'janus', port: 8800, tags: ['server', `server${n}`], address };
}

export function seedAgents(net: string): AgentSpec[] {
  const { janus, a4c } = seedAddresses(net);
  return [
    { name: 's1', address: `${net}.21`, server: true },
    { name: 's2', address: `${net}.22`, server: true },
    { name: 's3', address: `${net}.23`, server: true },
    { name: 'janus-1', address: janus[0], services: [janusService(1, janus[0])] },
    { name: 'janus-2', address: janus[1], services: [janusService(2, janus[1])] },
    { name: 'a4c', address: a4c },
  ];
}

/** A Janus stand-in: an HTTP server on addr:8800 (listening makes its TCP check pass). */
export async function janusStandIn(addr: string): Promise<http.Server> {
  const srv = http.createServer((_q, res) => res.end(`janus stand-in on ${addr}\n`));
  await new Promise<void>((r, j) => {
    srv.once('error', j);
    srv.listen(8800, addr, () => r());
  });
  return srv;
}
