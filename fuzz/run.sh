#!/usr/bin/env bash
# fuzz/run.sh SECONDS [TARGET...] - runs each libFuzzer target of a build
# configured with --enable-fuzzing for SECONDS, from its seed corpus. Run
# from the build directory (`make fuzz FUZZ_SECONDS=N` does). New inputs go
# to fuzz/corpus-new/TARGET in the build directory, never into the source
# tree; a crash leaves its input as fuzz/crash-TARGET-* there and fails.
# Keep a crashing input in $srcdir/fuzz/regress/TARGET/ once it is fixed.
set -euo pipefail

seconds=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
srcdir=${srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
targets=("$@")
if ((${#targets[@]} == 0)); then
    targets=(fuzz_protocol fuzz_config fuzz_size)
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$srcdir/fuzz/lsan.supp:print_suppressions=0}

status=0
for t in "${targets[@]}"; do
    bin=fuzz/$t
    if [ ! -x "$bin" ]; then
        echo "fuzz/run.sh: no $bin here: configure with --enable-fuzzing" >&2
        exit 2
    fi
    name=${t#fuzz_}
    new=fuzz/corpus-new/$name
    mkdir -p "$new"
    echo "== $t: ${seconds}s"
    seeds=("$srcdir/fuzz/corpus/$name")
    if [ -d "$srcdir/fuzz/regress/$name" ]; then
        seeds+=("$srcdir/fuzz/regress/$name")
    fi
    flags=()
    if [ "$name" = config ]; then
        # libconfig leaks on most parse errors (fuzz/lsan.supp), which
        # makes libFuzzer run LeakSanitizer after almost every input, 50
        # times slower. Leaks are then found once, at exit, instead.
        flags+=(-detect_leaks=0)
    fi
    if ! "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="fuzz/crash-$name-" \
        "${flags[@]}" "$new" "${seeds[@]}" >"fuzz/$name.log" 2>&1; then
        tail -n 60 "fuzz/$name.log"
        echo "== $t: FAILED (input kept as fuzz/crash-$name-*)"
        status=1
        continue
    fi
    grep -E '^stat::number_of_executed_units|^Done' "fuzz/$name.log" || true
    echo "== $t: ok"
done
exit $status
