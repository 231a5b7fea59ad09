#!/bin/sh
# test_man.sh - the man pages render without a warning: groff -ww -z (what
# man and lintian use) prints nothing, nor does mandoc -Tlint at the error
# level when mandoc is there. Skips (77) when groff is missing.
set -eu

: "${abs_top_builddir:?run me from make check}"

if ! command -v groff >/dev/null 2>&1; then
    echo "no groff: skipped"
    exit 77
fi
status=0
for page in taskhostd.8 taskhostctl.1 taskhost.conf.5 taskhost-plugin.3 \
    taskhost-host.3 taskhost-client.3; do
    f=$abs_top_builddir/docs/man/$page
    if [ ! -s "$f" ]; then
        echo "FAIL: $page was not built"
        status=1
        continue
    fi
    out=$(groff -ww -z -man "$f" 2>&1 || echo "groff failed")
    if command -v mandoc >/dev/null 2>&1; then
        out=$out$(mandoc -Tlint -Werror "$f" 2>&1 || true)
    fi
    if [ -n "$out" ]; then
        echo "FAIL: $page"
        echo "$out"
        status=1
    else
        echo "ok: $page"
    fi
done
exit $status
