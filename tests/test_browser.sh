#!/bin/sh
# test_browser.sh - the status page in a real browser: headless Chromium
# opens it from a live daemon while tasks run, and the DOM it rendered must
# show the pool rows, a non-zero throughput and worker events (a start and
# a crash by signal). Saves a screenshot as tests/status-page.png in the
# build tree (and a phone-width one, tests/status-page-phone.png).
#
# SHOT_SECONDS=N first runs N seconds of an uneven load (bursts, a queue
# that builds up, recycles, crashes) so that the charts have a history:
# that is how docs/status-page.png is made.
#
# Without chromium the test is skipped, except under CI=true, where it
# fails: CI installs it (.ci/deps).
set -eu

: "${abs_top_builddir:?run me from make check}"

browser=
for b in chromium chromium-browser google-chrome; do
    if command -v "$b" >/dev/null 2>&1; then
        browser=$b
        break
    fi
done
if [ -z "$browser" ]; then
    echo "no chromium (Debian: chromium)"
    if [ "${CI:-}" = true ]; then
        exit 1
    fi
    exit 77
fi

b=$abs_top_builddir
dir=$(mktemp -d /tmp/test_browser.XXXXXX)
pid=
load=
cleanup() {
    status=$?
    set +e
    if [ -n "$load" ]; then
        kill "$load" 2>/dev/null
        wait "$load" 2>/dev/null
    fi
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
    exit $status
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() {
    echo "FAIL: $*"
    echo "---- daemon log"
    cat "$dir/log" 2>/dev/null || true
    exit 1
}

cat > "$dir/taskhost.conf" <<EOF
host: { socket = "$dir/sock"; log = "$dir/log"; shutdown_timeout = 5.0; };
http: { listen = "127.0.0.1:0"; };
plugins: ( { name = "echo"; path = "$b/plugins/echo.so"; },
           { name = "crash"; path = "$b/plugins/crash.so"; },
           { name = "sleep"; path = "$b/plugins/sleep.so"; } );
pools: ( { name = "web"; plugin = "echo"; min_workers = 2; max_workers = 2;
           max_tasks_per_worker = 500000; },
         { name = "jobs"; plugin = "crash"; min_workers = 1; max_workers = 1; },
         { name = "slow"; plugin = "sleep"; min_workers = 1; max_workers = 2;
           idle_timeout = 5.0; } );
EOF

"$b/host/taskhostd" -c "$dir/taskhost.conf" -f 2>>"$dir/log" &
pid=$!

# The address the kernel gave: from the log.
url=
i=0
while [ -z "$url" ]; do
    url=$(sed -n 's/.*http: listening on \(http:[^ ]*\).*/\1/p' "$dir/log" 2>/dev/null | head -n 1)
    i=$((i + 1))
    [ $i -gt 400 ] && fail "the daemon did not log its HTTP address"
    kill -0 "$pid" 2>/dev/null || fail "the daemon exited"
    [ -z "$url" ] && sleep 0.05
done

ctl() {
    "$b/host/taskhostctl" -s "$dir/sock" "$@" </dev/null >/dev/null 2>&1 || true
}

shot_load() {
    end=$(($(date +%s) + $1))
    n=0
    while [ "$(date +%s)" -lt "$end" ]; do
        n=$((n + 1))
        "$b/bench/bench_client" -s "$dir/sock" -p web -t echo \
            -n $((1 + n % 7 * 4)) -d $((1 + n % 3)) >/dev/null 2>&1
        for i in $(seq $((n % 5 * 6))); do
            printf 200 | "$b/host/taskhostctl" -s "$dir/sock" submit slow sleep \
                >/dev/null 2>&1 &
        done
        [ $((n % 4)) -eq 0 ] && ctl submit jobs segv
        [ $((n % 6)) -eq 0 ] && ctl submit jobs abort
        sleep $((n % 2))
    done
}
if [ -n "${SHOT_SECONDS:-}" ]; then
    shot_load "$SHOT_SECONDS"
fi

# Tasks run while the browser looks: a steady load, and a crash.
"$b/bench/bench_client" -s "$dir/sock" -p web -t echo -n 8 -d 60 >/dev/null 2>&1 &
load=$!
"$b/host/taskhostctl" -s "$dir/sock" submit jobs segv </dev/null >/dev/null 2>&1 || true
i=0
until grep -q "killed by signal 11" "$dir/log"; do
    i=$((i + 1))
    [ $i -gt 400 ] && fail "the crash pool's worker did not crash"
    sleep 0.05
done
sleep 1.5 # a second or more of throughput in the window

run_browser() {
    profile=$(mktemp -d "$dir/profile.XXXXXX")
    timeout 120 "$browser" --headless --no-sandbox --disable-gpu \
        --disable-quic --no-first-run --disable-background-networking \
        --disable-component-update --disable-sync --disable-extensions \
        --user-data-dir="$profile" --virtual-time-budget=4000 "$@" \
        2>>"$dir/browser.log"
}

run_browser --dump-dom "$url" > "$dir/dom.html" ||
    fail "$browser --dump-dom failed: $(tail -n 5 "$dir/browser.log")"

grep -q 'data-pool="web"' "$dir/dom.html" || fail "no row of pool web"
grep -q 'data-pool="jobs"' "$dir/dom.html" || fail "no row of pool jobs"
grep -q 'class="worker"' "$dir/dom.html" || fail "no worker rows"
# The throughput figure of pool web (the first pool) is not zero.
tput=$(grep -o 'class="v tput" data-value="[0-9.]*"' "$dir/dom.html" |
    head -n 1 | sed 's/.*data-value="\([0-9.]*\)"/\1/')
[ -n "$tput" ] || fail "no throughput figure"
awk -v t="$tput" 'BEGIN { exit !(t > 0) }' || fail "throughput is $tput"
grep -q 'class="event ev-started"' "$dir/dom.html" || fail "no 'started' event"
grep -q 'class="event ev-crashed"' "$dir/dom.html" || fail "no 'crashed' event"
grep -q 'killed by signal 11 (SIGSEGV)' "$dir/dom.html" ||
    fail "the crash does not name its signal"
grep -q '<path\|<polyline' "$dir/dom.html" || fail "no chart"

run_browser --window-size=1280,2100 --screenshot="$b/tests/status-page.png" \
    "$url" >/dev/null || fail "no screenshot"
run_browser --window-size=390,1400 \
    --screenshot="$b/tests/status-page-phone.png" "$url" >/dev/null ||
    fail "no phone-width screenshot"
[ -s "$b/tests/status-page.png" ] || fail "empty screenshot"

echo "ok: pools, throughput $tput tasks/s, worker events; screenshots in $b/tests/"
