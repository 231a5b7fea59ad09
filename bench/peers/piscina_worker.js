'use strict';
// The Piscina side of bench/peers: the same two tasks, run in worker threads.
const { createHash } = require('node:crypto');

// SHA-256 over `size` bytes of 't' held by the worker, then the input:
// what bench/peers/shabuf.c does in a taskhost worker.
let buf = Buffer.alloc(0);
function sha(size) {
  if (buf.length !== size) buf = Buffer.alloc(size, 't');
  return createHash('sha256').update(buf).update('taskhost').digest('hex');
}

module.exports = {
  noop: (x) => x,
  sha,
};
