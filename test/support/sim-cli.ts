/*
 * Run the Consul agent simulator by hand:
 *   node dist/test/support/sim-cli.js --dns-port 8600 --http-port 8500 [--janus] [--domain consul]
 *     [--alt-domain starlings] [--recursor 127.0.0.1:5353] [--host 127.0.0.1]
 * Prints the bound ports as one JSON line, then serves until Ctrl-C.
 */
import { startSim, startJanusCluster, type SimOptions } from './consul-sim/index.js';

const USAGE =
  'usage: sim-cli [--dns-port N] [--http-port N] [--host ADDR] [--janus] [--domain D] [--alt-domain D] [--recursor HOST:PORT]...';

function parseArgs(argv: string[]): { opts: SimOptions; janus: boolean } {
  const opts: SimOptions = {};
  let janus = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const val = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value\n${USAGE}`);
      return v;
    };
    switch (a) {
      case '--dns-port':
        opts.dnsPort = Number(val());
        break;
      case '--http-port':
        opts.httpPort = Number(val());
        break;
      case '--host':
        opts.host = val();
        break;
      case '--domain':
        opts.domain = val();
        break;
      case '--alt-domain':
        opts.altDomain = val();
        break;
      case '--recursor':
        (opts.recursors ??= []).push(val());
        break;
      case '--janus':
        janus = true;
        break;
      case '--help':
      case '-h':
        console.log(USAGE);
        process.exit(0);
        break;
      default:
        throw new Error(`unknown argument ${a}\n${USAGE}`);
    }
  }
  return { opts, janus };
}

async function main(): Promise<void> {
  const { opts, janus } = parseArgs(process.argv.slice(2));
  const sim = janus ? await startJanusCluster(opts) : await startSim(opts);
  console.log(
    JSON.stringify({ msg: 'consul simulator listening', host: sim.host, dnsPort: sim.dnsPort, httpPort: sim.httpPort }),
  );
  const shutdown = (): void => {
    void sim.stop().then(() => process.exit(0));
  };
  process.on('SIGINT', shutdown);
  process.on('SIGTERM', shutdown);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(2);
});
