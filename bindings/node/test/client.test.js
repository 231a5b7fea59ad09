'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert');
const th = require('..');
const { Daemon, waitFor } = require('./daemon');

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

test('run resolves with the output', async () => {
  assert.deepStrictEqual(await c.run('echo', 'echo', Buffer.from('hello')),
    Buffer.from('hello'));
  assert.strictEqual((await c.run('echo', 'echo', 'h\u00e9')).toString(), 'h\u00e9');
  assert.strictEqual((await c.run('echo', 'echo')).length, 0);
});

test('many tasks in flight on one connection', async () => {
  const outs = await Promise.all(
    Array.from({ length: 5000 }, (_, i) => c.run('echo', 'echo', String(i))));
  outs.forEach((o, i) => assert.strictEqual(o.toString(), String(i)));
  assert.strictEqual(c.pending, 0);
});

test('runs of one tick are one write', async () => {
  const writes = [];
  const real = c._sock.write;
  c._sock.write = function (...args) { writes.push(args[0].length); return real.apply(this, args); };
  try {
    await Promise.all(Array.from({ length: 1000 }, () => c.run('echo', 'echo', 'x')));
  } finally {
    c._sock.write = real;
  }
  assert.strictEqual(writes.length, 1);
});

test('a plugin failure rejects with state, code and message', async () => {
  await assert.rejects(c.run('sleep', 'sleep', 'nope'), (e) => {
    assert.ok(e instanceof th.TaskError);
    assert.strictEqual(e.state, 'error');
    assert.strictEqual(e.code, -1);
    assert.match(e.reason, /milliseconds/);
    assert.ok(e.taskId > 0);
    return true;
  });
});

test('an unknown pool is rejected', async () => {
  await assert.rejects(c.run('nosuchpool', 'echo', ''),
    (e) => e.state === 'rejected' && e.code === -3);
});

test('timeout lowers the task time limit', async () => {
  await assert.rejects(c.run('sleep', 'sleep', '10000', { timeout: 0.1 }),
    (e) => e.state === 'timeout');
});

test('an AbortSignal cancels the task in the daemon', async () => {
  const before = (await c.stats('sleep')).pools[0].tasks.cancelled;
  const ac = new AbortController();
  const p = c.run('sleep', 'sleep', '20000', { signal: ac.signal });
  await waitFor(async () => (await c.stats('sleep')).pools[0].workers.busy > 0,
    'the task to run');
  ac.abort();
  await assert.rejects(p, (e) => e.name === 'AbortError');
  await waitFor(async () =>
    (await c.stats('sleep')).pools[0].tasks.cancelled > before, 'the cancel');
});

test('an aborted signal rejects at once', async () => {
  await assert.rejects(c.run('echo', 'echo', 'x', { signal: AbortSignal.abort() }),
    (e) => e.name === 'AbortError');
});

test('large payloads travel inline', async () => {
  const big = Buffer.alloc(5 << 20);
  for (let i = 0; i < big.length; i += 4096) big[i] = i & 0xff;
  const outs = await Promise.all([1, 2, 3].map(() => c.run('echo', 'echo', big)));
  for (const o of outs) assert.ok(o.equals(big));
});

test('stats in every format', async () => {
  const st = await c.stats();
  assert.strictEqual(st.version, 1);
  assert.ok(st.pools.some((p) => p.name === 'echo'));
  assert.match(await c.stats('echo', 'text'), /echo/);
  assert.match(await c.stats(undefined, 'prometheus'), /taskhost/);
  await assert.rejects(c.stats('nosuchpool'), (e) => e instanceof th.ControlError && e.code === -3);
});

test('connection loss rejects every waiting task once', async () => {
  const own = await new Daemon().start();
  try {
    const k = await th.connect(own.sock);
    let lost = 0;
    k.on('lost', () => lost++);
    const ps = Array.from({ length: 5 }, () => k.run('sleep', 'sleep', '20000'));
    await k.ping();
    own.proc.kill('SIGKILL');
    const res = await Promise.allSettled(ps);
    for (const r of res) {
      assert.strictEqual(r.status, 'rejected');
      assert.ok(r.reason instanceof th.ConnectionLost);
      assert.strictEqual(r.reason.state, 'cancelled');
    }
    assert.strictEqual(lost, 1);
    await assert.rejects(k.run('echo', 'echo', ''), th.ConnectionLost);
    k.close();
  } finally {
    await own.stop();
  }
});

test('an input over max_payload is rejected, the others fail', async () => {
  const own = await new Daemon({ hostExtra: 'max_payload = "64K";' }).start();
  try {
    const k = await th.connect(own.sock);
    const slow = k.run('sleep', 'sleep', '20000');
    const big = k.run('echo', 'echo', Buffer.alloc(100 << 10));
    await assert.rejects(big, (e) => e.state === 'rejected' && e.code === -12);
    await assert.rejects(slow, th.ConnectionLost);
    k.close();
  } finally {
    await own.stop();
  }
});

test('admin calls: restart, reload, shutdown', async () => {
  const own = await new Daemon().start();
  try {
    const k = await th.connect(own.sock);
    await k.restart('echo', { force: true });
    await assert.rejects(k.restart('nosuchpool'), (e) => e.code === -3);
    await k.reload();
    require('node:fs').appendFileSync(own.conf, 'not a config');
    await assert.rejects(k.reload(), (e) => e instanceof th.ControlError && e.reason.length > 0);
    await k.shutdown();
    const { code } = await own.exited;
    assert.strictEqual(code, 0);
    k.close();
  } finally {
    await own.stop();
  }
});

test('a large output comes inline', async () => {
  const out = await c.run('chatty', 'fill', String(3 << 20));
  assert.strictEqual(out.length, 3 << 20);
  assert.ok(out.every((b) => b === 0x78));
});
