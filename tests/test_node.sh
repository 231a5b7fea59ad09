#!/bin/sh
# test_node.sh - the Node.js package's tests (bindings/node/test, node's own
# test runner) against the daemon and plugins of this build tree.
#
# Uses $NODE (found by configure), else node. Without it the test is
# skipped, except under CI=true, where it fails: CI installs nodejs
# (.ci/deps).
set -eu

: "${abs_top_srcdir:?run me from make check}"
: "${abs_top_builddir:?run me from make check}"

node=${NODE:-}
if [ -z "$node" ] && command -v node >/dev/null 2>&1; then
    node=node
fi
if [ -z "$node" ] || ! "$node" -e 'require("node:test")' >/dev/null 2>&1; then
    echo "no node with node:test (Debian: nodejs)"
    if [ "${CI:-}" = true ]; then
        exit 1
    fi
    exit 77
fi
TASKHOST_BUILDDIR=$abs_top_builddir exec "$node" --test \
    "$abs_top_srcdir"/bindings/node/test/*.test.js
