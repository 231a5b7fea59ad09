'use strict';
// taskhost: a client of taskhostd in plain JavaScript on node:net.
//
// It speaks the wire protocol of docs/protocol.md. Requests made within one
// turn of the event loop are written together (one write per turn);
// answers are decoded from each chunk as it arrives. Node's net module
// cannot pass descriptors, so payloads always travel inline in the frames
// (up to the daemon's max_payload, 64 MiB by default), never in memfds.

const net = require('node:net');
const { EventEmitter } = require('node:events');

const VERSION = 1;
const T = {
  SUBMIT: 0x01, CANCEL: 0x02, STATS: 0x03, RESTART: 0x04, RELOAD: 0x05,
  SHUTDOWN: 0x06, PING: 0x07,
  RESULT: 0x81, ACCEPTED: 0x82, REPLY: 0x83, PROGRESS: 0x84, ERROR: 0xff,
};
const F_ACK = 0x1;
const F_PROGRESS = 0x8;
const F_FORCE = 0x1;
const STATES = ['queued', 'running', 'ok', 'error', 'timeout', 'cancelled',
  'rejected', 'crashed', 'memory'];
const FORMATS = { text: 0, json: 1, prometheus: 2 };
const EIO = -4;

/** A task that did not end `ok`: state, code (a TH_E* code or the
 * plugin's own), message, taskId (0 when the daemon never took it). */
class TaskError extends Error {
  constructor(state, code, message, taskId = 0) {
    super(`task ${state}: ${message} (${code})`);
    this.name = 'TaskError';
    this.state = state;
    this.code = code;
    this.taskId = taskId;
    this.reason = message;
  }
}

/** The connection was lost before the answer came; every task still
 * waiting fails with this, once. */
class ConnectionLost extends TaskError {
  constructor(message) {
    super('cancelled', EIO, message);
    this.name = 'ConnectionLost';
    this.message = message;
  }
}

/** A refused control request (stats, restart, reload, shutdown). */
class ControlError extends Error {
  constructor(code, message) {
    super(message ? `${message} (${code})` : `error ${code}`);
    this.name = 'ControlError';
    this.code = code;
    this.reason = message;
  }
}

function defaultSocket() {
  return process.env.TASKHOST_SOCKET || 'taskhost.sock';
}

function ms(seconds) {
  if (!(seconds > 0)) return 0;
  return Math.min(Math.max(Math.round(seconds * 1000), 1), 0xffffffff);
}

function toBuffer(input) {
  if (input === undefined || input === null) return Buffer.alloc(0);
  if (Buffer.isBuffer(input)) return input;
  if (typeof input === 'string') return Buffer.from(input);
  if (ArrayBuffer.isView(input)) {
    return Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  }
  if (input instanceof ArrayBuffer) return Buffer.from(input);
  throw new TypeError('input must be a Buffer, a typed array or a string');
}

function nameBytes(name, what) {
  const b = Buffer.from(String(name));
  if (b.length < 1 || b.length > 255 || b.includes(0)) {
    throw new RangeError(`${what} name must be 1 to 255 bytes without NUL`);
  }
  return b;
}

function header(buf, len, type, flags, tag) {
  buf.writeUInt32LE(len, 0);
  buf[4] = VERSION;
  buf[5] = type;
  buf.writeUInt16LE(flags, 6);
  buf.writeUInt32LE(tag % 0x100000000, 8);
  buf.writeUInt32LE(Math.floor(tag / 0x100000000), 12);
}

function abortReason(signal) {
  if (signal.reason !== undefined) return signal.reason;
  const e = new Error('This operation was aborted');
  e.name = 'AbortError';
  return e;
}

class Client extends EventEmitter {
  constructor(socket) {
    super();
    this._sock = socket;
    this._pending = new Map();
    this._nextTag = 1;
    this._out = [];
    this._outBytes = 0;
    this._flushQueued = false;
    this._in = null; // the chunks of a frame not yet whole
    this._inBytes = 0;
    this._inNeed = 0;
    this._lost = null;
    this._lastError = '';
    this._names = new Map();
    this._flush = this._flush.bind(this);
    socket.on('data', (chunk) => this._onData(chunk));
    socket.on('error', (e) => this._onLost(e.message));
    socket.on('close', () => this._onLost('closed by the daemon'));
  }

  /** Runs task `task` of pool `pool` on `input` and resolves with its
   * output (a Buffer). Options: signal (an AbortSignal: cancels the task,
   * rejecting with the signal's reason), timeout and queueTimeout
   * (seconds: only lower the pool's limits), priority (-128..127),
   * onProgress(done, total, message). A task that does not end ok rejects
   * with a TaskError. */
  run(pool, task, input, opts = {}) {
    if (this._lost) return Promise.reject(this._lost);
    const { signal, onProgress } = opts;
    if (signal && signal.aborted) return Promise.reject(abortReason(signal));
    let names;
    let data;
    try {
      names = this._nameBlock(pool, task);
      data = toBuffer(input);
      if (opts.priority !== undefined &&
          !(opts.priority >= -128 && opts.priority <= 127)) {
        throw new RangeError('priority must be -128..127');
      }
    } catch (e) {
      return Promise.reject(e);
    }
    const tag = this._nextTag++;
    const head = Buffer.allocUnsafe(25 + names.length);
    header(head, 9 + names.length + data.length, T.SUBMIT,
      onProgress ? F_PROGRESS : 0, tag);
    head.writeUInt32LE(ms(opts.timeout), 16);
    head.writeUInt32LE(ms(opts.queueTimeout), 20);
    head.writeInt8(opts.priority | 0, 24);
    names.copy(head, 25);
    return new Promise((resolve, reject) => {
      const entry = { resolve, reject, onProgress, signal, onAbort: null };
      if (signal) {
        entry.onAbort = () => this._abort(tag, entry);
        signal.addEventListener('abort', entry.onAbort, { once: true });
      }
      this._pending.set(tag, entry);
      this._queue(head);
      if (data.length) this._queue(data);
    });
  }

  /** Runs a task and yields {done, total, message} as it reports progress
   * (coalesced: only the latest waits while the consumer is slow), then
   * {output} last. */
  async *runWithProgress(pool, task, input, opts = {}) {
    let latest = null;
    let wake = null;
    let finished = false;
    const ping = () => { if (wake) { const w = wake; wake = null; w(); } };
    const p = this.run(pool, task, input, {
      ...opts,
      onProgress: (done, total, message) => {
        latest = { done, total, message };
        ping();
      },
    });
    p.then(ping, ping).finally(() => { finished = true; ping(); });
    for (;;) {
      if (latest) {
        const l = latest;
        latest = null;
        yield l;
        continue;
      }
      if (finished) break;
      await new Promise((r) => { wake = r; });
    }
    yield { output: await p };
  }

  _nameBlock(pool, task) {
    const key = `${pool}\0${task}`;
    let b = this._names.get(key);
    if (b === undefined) {
      const p = nameBytes(pool, 'pool');
      const t = nameBytes(task, 'task');
      // priority's neighbours: pool_len, task_len, reserved, then names
      b = Buffer.concat([Buffer.from([p.length, t.length, 0]), p,
        Buffer.from([0]), t, Buffer.from([0])]);
      if (this._names.size < 1024) this._names.set(key, b);
    }
    return b;
  }

  _abort(tag, entry) {
    if (this._pending.get(tag) !== entry) return;
    this._pending.delete(tag);
    this._control(T.CANCEL, 0, u64(tag)).catch(() => {});
    entry.reject(abortReason(entry.signal));
  }

  /** Stats of `pool` (undefined: every pool): an object for 'json', a
   * string for 'text' and 'prometheus' (docs/stats.md). */
  async stats(pool, format = 'json') {
    if (!(format in FORMATS)) {
      throw new RangeError("format must be 'text', 'json' or 'prometheus'");
    }
    const { text } = await this._control(T.STATS, 0,
      controlBody(FORMATS[format], pool));
    return format === 'json' ? JSON.parse(text) : text;
  }

  /** Restarts `pool` (undefined: every pool); admins only. */
  async restart(pool, { force = false } = {}) {
    await this._control(T.RESTART, force ? F_FORCE : 0, controlBody(0, pool));
  }

  /** Makes the daemon reload its config; admins only. A refused reload
   * rejects with a ControlError whose reason says why. */
  async reload() {
    await this._control(T.RELOAD, 0, Buffer.alloc(0));
  }

  /** Makes the daemon shut down; admins only. */
  async shutdown({ force = false } = {}) {
    await this._control(T.SHUTDOWN, force ? F_FORCE : 0, Buffer.alloc(0));
  }

  /** The daemon's version string ("taskhostd 0.1.0"). */
  async ping() {
    return (await this._control(T.PING, 0, Buffer.alloc(0))).text;
  }

  /** Requests not answered yet. */
  get pending() {
    return this._pending.size;
  }

  /** Closes the connection; tasks still waiting reject with
   * ConnectionLost. */
  close() {
    this._onLost('client closed');
    this._sock.destroy();
  }

  _control(type, flags, body, ok = [0]) {
    if (this._lost) return Promise.reject(this._lost);
    const tag = this._nextTag++;
    const head = Buffer.allocUnsafe(16);
    header(head, body.length, type, flags, tag);
    return new Promise((resolve, reject) => {
      this._pending.set(tag, {
        control: true,
        resolve: (code, text) => {
          if (ok.includes(code)) resolve({ code, text });
          else if (code === EIO && this._lost) reject(this._lost);
          else reject(new ControlError(code, text));
        },
        reject,
      });
      this._queue(head);
      if (body.length) this._queue(body);
    });
  }

  _queue(buf) {
    this._out.push(buf);
    this._outBytes += buf.length;
    if (!this._flushQueued) {
      this._flushQueued = true;
      process.nextTick(this._flush);
    }
  }

  _flush() {
    this._flushQueued = false;
    if (this._lost || this._out.length === 0) return;
    const out = this._out;
    this._out = [];
    if (out.length === 1) {
      this._sock.write(out[0]);
    } else if (this._outBytes <= (1 << 20)) {
      this._sock.write(Buffer.concat(out, this._outBytes));
    } else {
      this._sock.cork();
      for (const b of out) this._sock.write(b);
      this._sock.uncork();
    }
    this._outBytes = 0;
  }

  _onData(chunk) {
    // A frame that spans chunks is gathered whole before it is parsed, so
    // a large output costs one copy, not one per chunk.
    if (this._in) {
      this._in.push(chunk);
      this._inBytes += chunk.length;
      if (this._inBytes < this._inNeed) return;
      chunk = Buffer.concat(this._in, this._inBytes);
      this._in = null;
    }
    const buf = chunk;
    let pos = 0;
    const n = buf.length;
    while (n - pos >= 16) {
      const len = buf.readUInt32LE(pos);
      const end = pos + 16 + len;
      if (buf[pos + 4] !== VERSION) {
        this._broken(`answer of protocol version ${buf[pos + 4]}`);
        return;
      }
      if (end > n) break;
      const type = buf[pos + 5];
      const tag = buf.readUInt32LE(pos + 8) +
        buf.readUInt32LE(pos + 12) * 0x100000000;
      if (type === T.RESULT) {
        if (len < 32) { this._broken('short result frame'); return; }
        this._onResult(buf, pos, end, tag);
      } else if (type === T.PROGRESS) {
        const e = this._pending.get(tag);
        if (e && e.onProgress && len >= 16) {
          e.onProgress(u64read(buf, pos + 16), u64read(buf, pos + 24),
            buf.toString('utf8', pos + 32, end));
        }
      } else if (type === T.REPLY || type === T.ERROR) {
        this._onReply(buf, pos, end, type, tag);
      }
      pos = end;
    }
    if (pos < n) {
      const rest = buf.subarray(pos);
      this._in = [rest];
      this._inBytes = rest.length;
      this._inNeed = rest.length >= 16 ? 16 + rest.readUInt32LE(0) : 16;
    }
  }

  _onResult(buf, pos, end, tag) {
    const e = this._pending.get(tag);
    if (e === undefined || e.control) return;
    this._pending.delete(tag);
    if (e.signal) e.signal.removeEventListener('abort', e.onAbort);
    const state = buf[pos + 24];
    if (state === 2) {
      e.resolve(buf.subarray(pos + 48, end));
      return;
    }
    const code = buf.readInt32LE(pos + 28);
    e.reject(new TaskError(STATES[state] || String(state), code,
      buf.toString('utf8', pos + 48, end), u64read(buf, pos + 16)));
  }

  _onReply(buf, pos, end, type, tag) {
    const code = end - pos >= 20 ? buf.readInt32LE(pos + 16) : -15;
    const text = buf.toString('utf8', pos + 20, end);
    if (type === T.ERROR || code < 0) this._lastError = text;
    const e = this._pending.get(tag);
    if (e === undefined) return;
    this._pending.delete(tag);
    if (e.control) {
      e.resolve(code, text);
    } else if (type === T.ERROR) { // the daemon refused this very task
      if (e.signal) e.signal.removeEventListener('abort', e.onAbort);
      e.reject(new TaskError('rejected', code, text));
    }
  }

  _broken(why) {
    this._onLost(why);
    this._sock.destroy();
  }

  _onLost(why) {
    if (this._lost) return;
    if (this._lastError && !why.includes(this._lastError)) {
      why = `${why}: ${this._lastError}`;
    }
    this._lost = new ConnectionLost(`connection to taskhostd lost: ${why}`);
    const pending = this._pending;
    this._pending = new Map();
    this._out = [];
    for (const e of pending.values()) {
      if (e.control) {
        e.resolve(EIO, this._lost.message);
        continue;
      }
      if (e.signal) e.signal.removeEventListener('abort', e.onAbort);
      e.reject(this._lost);
    }
    this.emit('lost', this._lost);
  }
}

function u64(v) {
  const b = Buffer.allocUnsafe(8);
  b.writeUInt32LE(v % 0x100000000, 0);
  b.writeUInt32LE(Math.floor(v / 0x100000000), 4);
  return b;
}

function u64read(buf, at) {
  return buf.readUInt32LE(at) + buf.readUInt32LE(at + 4) * 0x100000000;
}

function controlBody(format, pool) {
  const p = pool ? nameBytes(pool, 'pool') : Buffer.alloc(0);
  const b = Buffer.alloc(4 + p.length + 1);
  b[0] = format;
  b[1] = p.length;
  p.copy(b, 4);
  return b;
}

/** Connects to the daemon listening at `path` (default: $TASKHOST_SOCKET,
 * else "taskhost.sock"). */
function connect(path = defaultSocket()) {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection({ path });
    const fail = (e) => reject(e);
    sock.once('error', fail);
    sock.once('connect', () => {
      sock.removeListener('error', fail);
      sock.setNoDelay?.(true);
      resolve(new Client(sock));
    });
  });
}

module.exports = {
  connect, Client, TaskError, ConnectionLost, ControlError, defaultSocket,
};
