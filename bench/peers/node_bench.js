'use strict';
// bench/peers, Node.js side: from this one process, no-op tasks at 256 in
// flight and ~5 ms SHA-256 tasks on 2 workers, through the taskhost client
// against Piscina doing the same in worker threads. Prints one JSON line
// per figure.
//
//   node node_bench.js SOCKET PISCINA_DIR NOOP_POOL SHA_POOL SECONDS SIZE
//
// SIZE is the bytes each SHA-256 task hashes (bench/peers/shabuf.c), set
// by the caller for about 5 ms; the Piscina task hashes as many.

const path = require('node:path');
const [sock, piscinaDir, noopPool, shaPool, secondsArg, sizeArg] =
  process.argv.slice(2);
const seconds = Number(secondsArg);
const th = require(path.join(__dirname, '..', '..', 'bindings', 'node'));
let Piscina;
try {
  Piscina = require(path.join(piscinaDir, 'node_modules', 'piscina'));
  Piscina = Piscina.Piscina || Piscina;
} catch (e) {
  Piscina = null;
}

// Keeps `window` tasks in flight for `seconds`; resolves tasks/s.
function drive(start, window, secs) {
  return new Promise((resolve, reject) => {
    let done = 0;
    let inflight = 0;
    let stop = false;
    const t0 = process.hrtime.bigint();
    const timer = setTimeout(() => { stop = true; }, secs * 1000);
    const one = () => {
      inflight++;
      start().then(() => {
        inflight--;
        done++;
        if (!stop) one();
        else if (inflight === 0) {
          clearTimeout(timer);
          resolve(done / (Number(process.hrtime.bigint() - t0) / 1e9));
        }
      }, (e) => { stop = true; reject(e); });
    };
    for (let i = 0; i < window; i++) one();
  });
}

function median(v) {
  const s = [...v].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

// The fastest of n runs of one task at a time, in ms.
async function single(run, n = 5) {
  let best = Infinity;
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await run();
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return best;
}

async function main() {
  const client = await th.connect(sock);
  const pis = Piscina && new Piscina({
    filename: path.join(__dirname, 'piscina_worker.js'),
    minThreads: 2, maxThreads: 2, idleTimeout: 60000,
  });
  const size = Number(sizeArg);
  // Each side's task, one at a time: both should take about 5 ms.
  const taskMs = {
    taskhost: await single(() => client.run(shaPool, 'sha256', 'taskhost')),
    piscina: pis ? await single(() => pis.run(size, { name: 'sha' })) : undefined,
  };
  const empty = Buffer.alloc(0);
  const figures = [
    ['noop', 'taskhost', () => client.run(noopPool, 'echo', empty), 256],
    ['noop', 'piscina', () => pis.run(empty, { name: 'noop' }), 256],
    ['sha', 'taskhost', () => client.run(shaPool, 'sha256', 'taskhost'), 4],
    ['sha', 'piscina', () => pis.run(size, { name: 'sha' }), 4],
  ].filter((f) => pis || f[1] !== 'piscina');
  const runs = {};
  for (const [what, who, fn, window] of figures) await drive(fn, window, 0.3);
  for (let r = 0; r < 3; r++) { // take turns, so that drift hits all alike
    for (const [what, who, fn, window] of figures) {
      const k = `${what} ${who}`;
      (runs[k] = runs[k] || []).push(await drive(fn, window, seconds));
    }
  }
  for (const [k, v] of Object.entries(runs)) {
    const [what, who] = k.split(' ');
    console.log(JSON.stringify({ side: 'node', what, who, rate: median(v),
      runs: v, task_ms: what === 'sha' ? taskMs[who] : undefined,
    }));
  }
  if (!pis) console.log(JSON.stringify({ side: 'node', missing: 'piscina' }));
  client.close();
  if (pis) await pis.destroy();
}

main().catch((e) => { console.error(e); process.exit(1); });
