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

test('onProgress gets the reports in order, before the output', async () => {
  const seen = [];
  const out = await c.run('chatty', 'steps', '3', {
    onProgress: (done, total, message) => seen.push([done, total, message]),
  });
  assert.strictEqual(out.toString(), 'done');
  assert.deepStrictEqual(seen, [[1, 3, 'step 1'], [2, 3, 'step 2'], [3, 3, 'step 3']]);
});

test('runWithProgress yields reports, then the output', async () => {
  const got = [];
  for await (const x of c.runWithProgress('chatty', 'steps', '2')) got.push(x);
  assert.deepStrictEqual(got.slice(0, -1),
    [{ done: 1, total: 2, message: 'step 1' }, { done: 2, total: 2, message: 'step 2' }]);
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
