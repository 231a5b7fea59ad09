#!/bin/sh
# test_config_doc.sh - docs/config.md is what the key lists say: the
# committed reference matches host/engine/config/gen_doc's output. After
# changing a key list, run `make config-doc` and commit docs/config.md.
set -u
gen="$abs_top_builddir/host/engine/config/gen_doc"
doc="$abs_top_srcdir/docs/config.md"
out=$(mktemp "${TMPDIR:-/tmp}/config_doc.XXXXXX") || exit 99
trap 'rm -f "$out"' EXIT
"$gen" > "$out" || { echo "gen_doc failed"; exit 1; }
if ! diff -u "$doc" "$out"; then
    echo "docs/config.md is stale: run 'make config-doc' and commit it"
    exit 1
fi
# The roff form renders (when a formatter is installed).
"$gen" -m > "$out" || { echo "gen_doc -m failed"; exit 1; }
if command -v groff >/dev/null 2>&1; then
    warn=$( (printf '.TH T 5\n.SH KEYS\n'; cat "$out") |
        groff -man -ww -z 2>&1)
    if [ -n "$warn" ]; then
        echo "gen_doc -m: groff warns:"
        echo "$warn"
        exit 1
    fi
fi
echo "docs/config.md matches the key lists"
