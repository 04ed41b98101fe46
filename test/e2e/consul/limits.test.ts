/**
 * Watches over plain HTTP against a real agent's connection limit (issue 15 item 2, bounded part):
 * a `consul agent -dev` on 127.0.24.1 with `limits.http_max_conns_per_client = 8`, 20 services,
 * a proxy whose cache.maxWatches (64) is above that limit. Consul refuses the connections past
 * its limit; the proxy counts them, stops those watches (their services keep Consul's TTL), and
 * every answer stays right. A refused port (ECONNREFUSED) is still the agent being gone: the
 * other tests cover that failover.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { consulSkip, startDevAgent, httpRequest } from '../../support/consul-cluster.js';
import { ask, aAddrs } from '../../support/dns-ask.js';
import { startProxy, type ProxyProc } from '../../support/proc.js';
import { waitFor } from '../../support/wait.js';
import { metricValue, scrape } from '../../support/scripted-upstream.js';

const skip = consulSkip();
const DEV = '127.0.24.1';
const N = 20;
let real: { http: string; dns: string; stop(): Promise<void> };
let proxy: ProxyProc;

after(async () => {
  await proxy?.stop();
  await real?.stop();
});

before(async () => {
  if (skip) return;
  real = await startDevAgent(DEV, ['-hcl', 'limits { http_max_conns_per_client = 8 }']);
  for (let i = 1; i <= N; i++) {
    const r = await httpRequest(
      'PUT',
      `${real.http}/v1/agent/service/register`,
      { ID: `s${i}`, Name: `s${i}`, Address: `127.0.24.${100 + i}`, Port: 80 },
      '',
      5000,
    );
    assert.equal(r.status, 200);
  }
  proxy = await startProxy(['--metrics', '127.0.0.1:0'], {
    config:
      [
        'consul:',
        `  agents: ["${real.dns}"]`,
        `  http: ["${real.http}"]`,
        'cache:',
        '  maxWatches: 64',
        'upstream:',
        '  probeIntervalMs: 3600000',
      ].join('\n') + '\n',
  });
});

/** An unlabelled metric of the proxy; NaN when it is not exported. */
async function metric(name: string): Promise<number> {
  return metricValue(await scrape(proxy.metrics!), `consul_dns_proxy_${name}`) ?? NaN;
}

test(
  '20 watched services against http_max_conns_per_client 8: over the limit counted, watches stay under it, every answer right',
  { skip },
  async () => {
    const server = `${proxy.host}:${proxy.port}`;
    for (let round = 0; round < 3; round++) {
      for (let i = 1; i <= N; i++) {
        const r = await ask(server, `s${i}.service.consul`);
        assert.equal(r.rcode, 0, `s${i}`);
        assert.deepEqual(aAddrs(r), [`127.0.24.${100 + i}`]);
      }
    }
    await waitFor(async () => (await metric('health_watch_over_limit_total')) >= 1, {
      timeoutMs: 10_000,
      what: 'a watch refused as over the limit',
    });
    // Once the queries stop, the watches that were refused are gone and those that fit stay:
    // never more open than the agent accepts.
    await waitFor(async () => (await metric('health_watches')) <= 8, {
      timeoutMs: 10_000,
      what: 'the watches to settle under the agent limit',
    });
    const watches = await metric('health_watches');
    const refused = await metric('health_watch_over_limit_total');
    console.log(`# ${watches} watches open, ${refused} refused as over the limit`);
    assert.ok(watches >= 1, 'the watches that fit keep running');
    // The proxy is still answering, and right, after the refusals.
    const r = await ask(server, 's1.service.consul');
    assert.deepEqual(aAddrs(r), ['127.0.24.101']);
  },
);
