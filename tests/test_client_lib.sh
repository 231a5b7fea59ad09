#!/bin/sh
# test_client_lib.sh - the client library stands alone: it needs nothing of
# the engine (no undefined th_ symbol, no libtaskhost among its NEEDED,
# taskhost-client.pc requires nothing), and the only functions both
# libraries export are th_strerror and th_state_name, the same text in
# each, so that a program linking both gets one or the other harmlessly.
# Skips (77) without nm or objdump.
set -eu

: "${abs_top_builddir:?run me from make check}"
lib=$abs_top_builddir/.libs
for tool in nm objdump; do
    if ! command -v $tool >/dev/null 2>&1; then
        echo "no $tool: skipped"
        exit 77
    fi
done
status=0
undef=$(nm -D --undefined-only "$lib/libtaskhost-client.so" | awk '$2 ~ /^th_/ {print $2}')
if [ -n "$undef" ]; then
    echo "FAIL: libtaskhost-client needs engine symbols: $undef"
    status=1
fi
if objdump -p "$lib/libtaskhost-client.so" | grep -q 'NEEDED.*libtaskhost\.so'; then
    echo "FAIL: libtaskhost-client links libtaskhost"
    status=1
fi
if grep -q '^Requires' "$abs_top_builddir/taskhost-client.pc"; then
    echo "FAIL: taskhost-client.pc requires: $(grep '^Requires' "$abs_top_builddir/taskhost-client.pc")"
    status=1
fi
exports() { nm -D --defined-only "$1" | awk '$2 == "T" {print $3}' | sort; }
exports "$lib/libtaskhost-client.so" >"${TMPDIR:-/tmp}/th-c.$$"
both=$(exports "$lib/libtaskhost.so" | comm -12 - "${TMPDIR:-/tmp}/th-c.$$" | tr '\n' ' ')
rm -f "${TMPDIR:-/tmp}/th-c.$$"
if [ "$both" != "th_state_name th_strerror " ]; then
    echo "FAIL: exported by both libraries: $both"
    status=1
fi
[ $status -ne 0 ] || echo "ok: the client library stands alone; shared: $both"
exit $status
