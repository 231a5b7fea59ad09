'use strict';
// Piscina, one task at a time: the reference that th-bench's latency rows
// are held to. A no-op task on 2 worker threads, awaited before the next
// is sent, timed from just before run() to its promise settling.
//
//   node piscina_latency.js PISCINA_DIR COUNT
//
// Prints "ready" once warm, then for every line read on stdin runs COUNT
// tasks and prints "P50_US P99_US TASKS_PER_S", so that the caller can
// take turns with its own figures. Ends at EOF.

const path = require('node:path');
const readline = require('node:readline');
const [piscinaDir, countArg] = process.argv.slice(2);
const count = Number(countArg);

let Piscina = require(path.resolve(piscinaDir, 'node_modules', 'piscina'));
Piscina = Piscina.Piscina || Piscina;

async function round(pis, input, n) {
  const lat = new Float64Array(n);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const t = process.hrtime.bigint();
    await pis.run(input, { name: 'noop' });
    lat[i] = Number(process.hrtime.bigint() - t) / 1e3;
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  lat.sort();
  return [lat[Math.floor(n * 0.5)], lat[Math.floor(n * 0.99)], n / secs];
}

async function main() {
  const pis = new Piscina({
    filename: path.join(__dirname, 'piscina_worker.js'),
    minThreads: 2, maxThreads: 2, idleTimeout: 60000,
  });
  const input = Buffer.from('0123456789abcdef');
  await round(pis, input, 20000); // warm: threads started, code compiled
  console.log('ready');
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    void line;
    const [p50, p99, rate] = await round(pis, input, count);
    console.log(`${p50.toFixed(2)} ${p99.toFixed(2)} ${rate.toFixed(0)}`);
  }
  await pis.destroy();
}

main().catch((e) => { console.error(e); process.exit(1); });
