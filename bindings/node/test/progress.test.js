'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert');
const th = require('..');
const { Daemon } = require('./daemon');

let d;
let c;
before(async () => {
  d = await new Daemon().start();
  c = await th.connect(d.sock);
});
after(async () => {
  c.close();
  await d.stop();
});

// Reports of the 'steps' task: latest wins under load, so some may be
// coalesced away, but those seen are in order and the last is step n.
function assertSteps(seen, n) {
  assert.ok(seen.length >= 1 && seen.length <= n, `${seen.length} reports`);
  for (let i = 0; i < seen.length; i++) {
    const [done, total, message] = seen[i];
    assert.strictEqual(total, n);
    assert.strictEqual(message, `step ${done}`);
    if (i > 0) assert.ok(done > seen[i - 1][0], 'reports in order');
  }
  assert.deepStrictEqual(seen.at(-1), [n, n, `step ${n}`]);
}

test('onProgress gets the reports in order, before the output', async () => {
  const seen = [];
  const out = await c.run('chatty', 'steps', '3', {
    onProgress: (done, total, message) => seen.push([done, total, message]),
  });
  assert.strictEqual(out.toString(), 'done');
  assertSteps(seen, 3);
});

test('runWithProgress yields reports, then the output', async () => {
  const got = [];
  for await (const x of c.runWithProgress('chatty', 'steps', '2')) got.push(x);
  assertSteps(got.slice(0, -1).map((p) => [p.done, p.total, p.message]), 2);
  assert.strictEqual(got.at(-1).output.toString(), 'done');
});

test('a chatty plugin is coalesced', async () => {
  const seen = [];
  const calls = Number((await c.run('chatty', 'chatty', '300', {
    onProgress: (done) => seen.push(done),
  })).toString());
  assert.ok(calls > 10000);
  assert.ok(seen.length >= 2 && seen.length <= 300 / 50 + 3, `${seen.length} reports`);
  assert.strictEqual(seen.at(-1), calls - 1);
});

test('the sleep example reports progress', async () => {
  const seen = [];
  const out = await c.run('sleep', 'sleep', '200', { onProgress: (d, t, m) => seen.push([d, t, m]) });
  assert.strictEqual(out.toString(), 'slept 200');
  assert.deepStrictEqual(seen[0], [0, 200, 'sleeping']);
});
