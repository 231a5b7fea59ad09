'use strict';
// A real taskhostd from the build tree on a temporary config.
// TASKHOST_BUILDDIR names the build tree (tests/test_node.sh sets it).

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');
const th = require('..');

const BUILDDIR = process.env.TASKHOST_BUILDDIR || '';
const DEADLINE = 20000;

const POOLS = `pools = (
  { name = "echo"; plugin = "echo"; min_workers = 2; max_workers = 2;
    max_queue = 100000; },
  { name = "sleep"; plugin = "sleep"; min_workers = 2; max_workers = 2;
    max_queue = 100; },
  { name = "chatty"; plugin = "chatty"; min_workers = 2; max_workers = 2; }
);
`;

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitFor(pred, what) {
  const end = Date.now() + DEADLINE;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

class Daemon {
  constructor({ hostExtra = '' } = {}) {
    if (!BUILDDIR) throw new Error('TASKHOST_BUILDDIR is not set');
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'taskhost-node.'));
    this.sock = path.join(this.dir, 'taskhost.sock');
    this.conf = path.join(this.dir, 'taskhost.conf');
    this.log = path.join(this.dir, 'taskhost.log');
    this.hostExtra = hostExtra;
    this.writeConf(POOLS);
  }

  writeConf(pools) {
    const plugins = ['echo', 'sleep'].map((n) =>
      `  { name = "${n}"; path = "${BUILDDIR}/plugins/${n}.so"; }`).join(',\n') +
      `,\n  { name = "chatty"; path = "${BUILDDIR}/tests/plugins/.libs/chatty.so"; }`;
    fs.writeFileSync(this.conf,
      `host: { socket = "${this.sock}"; log = "${this.log}";\n` +
      `  log_level = "info"; shutdown_timeout = 1.0; ${this.hostExtra} };\n` +
      `plugins = (\n${plugins}\n);\n${pools}`);
  }

  async start() {
    const err = fs.openSync(this.log, 'a');
    this.proc = spawn(path.join(BUILDDIR, 'host', 'taskhostd'),
      ['-c', this.conf, '-f'], { stdio: ['ignore', 'ignore', err] });
    fs.closeSync(err);
    this.exited = new Promise((r) => this.proc.once('exit', (code, sig) => r({ code, sig })));
    await waitFor(async () => {
      if (this.proc.exitCode !== null) {
        throw new Error(`taskhostd exited:\n${fs.readFileSync(this.log, 'utf8')}`);
      }
      try {
        const c = await th.connect(this.sock);
        await c.ping();
        c.close();
        return true;
      } catch (e) {
        return false;
      }
    }, 'taskhostd to start');
    return this;
  }

  async stop() {
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill('SIGTERM');
      await this.exited;
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

module.exports = { Daemon, waitFor, sleep };
