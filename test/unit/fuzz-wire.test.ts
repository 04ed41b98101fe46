/**
 * Bounded, seeded mutation fuzzer over the wire corpus (test/fixtures/corpus: BIND replies, dig
 * queries) plus random Consul-like replies, for decodeMessage, encode(decode(x)) and toAliasReply:
 * only WireError may escape (a RangeError would be an out-of-bounds Buffer read, a TypeError a
 * missing check), decode(encode(decode(x))) must equal decode(x), our own output must decode, and
 * no call may take long. The run happens in a worker thread so that an endless loop (which no
 * in-thread timer could interrupt) fails the test instead of hanging the suite.
 * See test/support/fuzz.ts for the long-run command.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { loadCorpus, mutate, Rng, type FuzzResult } from '../support/fuzz.js';

test('mutate is deterministic for a seed and changes its input', () => {
  const corpus = loadCorpus(0);
  const a = new Rng(42);
  const b = new Rng(42);
  let changed = 0;
  for (let i = 0; i < 200; i++) {
    const src = corpus[i % corpus.length]!;
    const x = mutate(src, a);
    assert.ok(x.equals(mutate(src, b)));
    if (!x.equals(src)) changed++;
  }
  assert.ok(changed > 150, `${changed}/200 inputs changed`);
});

/** runFuzz in a worker; rejects when it does not report within `ceilingMs` (an endless loop). */
function fuzzInWorker(iterations: number, seed: number, ceilingMs: number): Promise<FuzzResult> {
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    import(workerData.url).then((f) => {
      const r = f.runFuzz({ iterations: workerData.iterations, seed: workerData.seed, targets: f.wireTargets(), corpus: f.loadCorpus(), maxCallMs: 1000 });
      parentPort.postMessage(r);
    });`;
  const url = new URL('../support/fuzz.js', import.meta.url).href;
  const w = new Worker(code, { eval: true, workerData: { url, iterations, seed } });
  return new Promise<FuzzResult>((resolve, reject) => {
    const timer = setTimeout(() => {
      void w.terminate();
      reject(new Error(`fuzzer did not finish within ${ceilingMs} ms: an endless loop? replay with FUZZ_SEED=${seed}`));
    }, ceilingMs);
    w.once('message', (r: FuzzResult) => {
      clearTimeout(timer);
      void w.terminate();
      resolve(r);
    });
    w.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

test('20,000 mutated messages: only WireError escapes, round trips hold, no slow call, no hang', async () => {
  const seed = Number(process.env.FUZZ_SEED ?? 0x5eed);
  const iterations = Number(process.env.FUZZ_ITERATIONS ?? 20000);
  // Generous ceiling for a shared 2-core machine; the run takes about a second.
  const r = await fuzzInWorker(iterations, seed, Number(process.env.FUZZ_CEILING_MS ?? 60000));
  const s = r.summary;
  console.log(
    `# fuzz seed=${seed} iterations=${s.iterations} calls=${s.calls} accepted=${s.accepted} wireErrors=${s.wireErrors} slowest=${s.slowestMs.toFixed(2)}ms (${s.slowestTarget}) elapsed=${(s.elapsedMs / 1000).toFixed(2)}s`,
  );
  assert.deepEqual(r.failures.slice(0, 3), []);
  assert.equal(s.iterations, iterations);
  // The mutations must reach both outcomes, or the fuzzer is not testing much.
  assert.ok(s.accepted > s.calls / 10, `accepted ${s.accepted} of ${s.calls}`);
  assert.ok(s.wireErrors > s.calls / 10, `wireErrors ${s.wireErrors} of ${s.calls}`);
});
