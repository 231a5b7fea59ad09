'use strict';
// The Piscina side of bench/peers: the same two tasks, run in worker threads.
const { createHash } = require('node:crypto');

function sha(rounds) {
  let h = createHash('sha256').update('taskhost').digest();
  for (let i = 1; i < rounds; i++) h = createHash('sha256').update(h).digest();
  return h.toString('hex');
}

module.exports = {
  noop: (x) => x,
  sha: (rounds) => sha(rounds),
};
