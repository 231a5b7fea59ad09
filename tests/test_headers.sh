#!/bin/sh
# test_headers.sh - interface checks of the public headers and the plugins.
#
# 1. include/taskhost.h, taskhost_host.h and taskhost_client.h each compile alone, as
#    strict C99 and as C++, and a plugin written in C++ compiles too.
# 2. Each example plugin exports exactly one dynamic symbol, taskhost_plugin
#    (they are built with -fvisibility=hidden; a leak would let plugins
#    collide in the host's symbol namespace).
#
# Run by `make check`, which sets abs_top_srcdir and abs_top_builddir.
set -eu

: "${abs_top_srcdir:?run me from make check}"
: "${abs_top_builddir:?run me from make check}"
CC=${CC:-cc}
CXX=${CXX:-c++}
INC="-I$abs_top_srcdir/include -I$abs_top_builddir/include"
fails=0

tmp=$(mktemp -d "${TMPDIR:-/tmp}/th-headers.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }

# check_compile LABEL COMMAND...: runs the compiler, reports.
check_compile() {
    label=$1
    shift
    if "$@" >"$tmp/out" 2>&1; then
        ok "$label"
    else
        bad "$label"
        sed 's/^/     /' "$tmp/out"
    fi
}

for h in taskhost.h taskhost_host.h taskhost_client.h; do
    printf '#include <%s>\n' "$h" >"$tmp/alone.c"
    check_compile "$h alone, C99" $CC -std=c99 -pedantic -Wall -Wextra \
        -Werror -fsyntax-only $INC "$tmp/alone.c"
    if command -v "$CXX" >/dev/null 2>&1; then
        check_compile "$h alone, C++" $CXX -x c++ -pedantic -Wall -Wextra \
            -Werror -fsyntax-only $INC "$tmp/alone.c"
    else
        echo "skip $h alone, C++: no $CXX"
    fi
done

# A plugin in C++: TH_PLUGIN() must give the symbol C linkage.
cat >"$tmp/plugin.cc" <<'CC'
#include <taskhost.h>
static int run(void *, th_task *task, const void *in, size_t len)
{
    return th_task_write(task, in, len);
}
static const th_task_def tasks[] = {{"echo", run}, {NULL, NULL}};
TH_PLUGIN("cxx", "1.0", NULL, NULL, tasks);
CC
if command -v "$CXX" >/dev/null 2>&1; then
    check_compile "TH_PLUGIN() in C++" $CXX -x c++ -pedantic -Wall -Wextra \
        -Werror -fPIC -c -o "$tmp/plugin.o" $INC "$tmp/plugin.cc"
    # const objects have internal linkage in C++ unless declared extern.
    if nm "$tmp/plugin.o" 2>/dev/null | grep -Eq '^[0-9a-f]* [RDB] taskhost_plugin$'; then
        ok "TH_PLUGIN() in C++ gives a global taskhost_plugin"
    else
        bad "TH_PLUGIN() in C++ gives no global taskhost_plugin"
    fi
fi

# A plugin declared by field names, with a growable task table, in C99.
cat >"$tmp/desc.c" <<'C'
#include <taskhost.h>
static int run(void *state, th_task *task, const void *in, size_t len)
{
    (void)state;
    return th_task_write(task, in, len);
}
static const th_task_info tasks[] = {TH_TASK("echo", run), TH_TASK_END};
TH_PLUGIN_DESC(.name = "desc", .version = "1.0", .task_info = tasks);
C
check_compile "TH_PLUGIN_DESC() and TH_TASK() in C99" $CC -std=c99 -pedantic \
    -Wall -Wextra -Werror -fPIC -c -o "$tmp/desc.o" $INC "$tmp/desc.c"

# The linker may add its own section markers to the dynamic symbol table,
# and AddressSanitizer an ODR indicator per exported variable; they are not
# the plugin's doing.
for p in echo hash sleep crash leak; do
    so=$abs_top_builddir/plugins/.libs/$p.so
    if [ ! -f "$so" ]; then
        bad "$p.so: not built"
        continue
    fi
    syms=$(nm -D --defined-only "$so" | awk '{ print $NF }' |
        grep -Ev '^(_edata|_end|__bss_start|_init|_fini|__odr_asan\..*)$' | tr '\n' ' ')
    if [ "$syms" = "taskhost_plugin " ]; then
        ok "$p.so exports only taskhost_plugin"
    else
        bad "$p.so exports: $syms"
    fi
done

[ "$fails" -eq 0 ]
