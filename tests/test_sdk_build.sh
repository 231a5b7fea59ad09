#!/bin/sh
# test_sdk_build.sh - a plugin author's view of the SDK: install its headers
# and pkg-config file into a scratch root, build a plugin out of tree with
# nothing but
#     cc -shared -fPIC $(pkg-config --cflags taskhost) x.c -o x.so
# and check that the result is a plugin the host would accept: it exports
# taskhost_plugin, carries the host's ABI version and its task runs.
#
# Run by `make check`, which sets MAKE, abs_top_builddir, libdir and
# PACKAGE_VERSION. Skips (77) only when there is no cc.
set -eu

: "${abs_top_builddir:?run me from make check}"
: "${libdir:?run me from make check}"
MAKE=${MAKE:-make}

if ! command -v cc >/dev/null 2>&1; then
    echo "no cc: skipped"
    exit 77
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/th-sdk.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
root=$tmp/root

# Only the SDK is installed: the headers and taskhost.pc, all a plugin
# author builds against. Installing the libraries and programs goes through
# libtool's install mode, which may relink them (a libtool that relinks
# moves each library of the build tree aside meanwhile), under the feet of
# the tests that run the programs in parallel (`make -j8 check`).
sdk="install-includeHEADERS install-nodist_includeHEADERS install-pkgconfigDATA"
echo "+ $MAKE -C $abs_top_builddir $sdk DESTDIR=$root"
# shellcheck disable=SC2086 # $sdk is a list of targets
if ! $MAKE -C "$abs_top_builddir" $sdk \
    DESTDIR="$root" >"$tmp/install.log" 2>&1; then
    cat "$tmp/install.log"
    echo "FAIL: make install"
    exit 1
fi

PKG_CONFIG_SYSROOT_DIR=$root
PKG_CONFIG_PATH=$root$libdir/pkgconfig
PKG_CONFIG_LIBDIR=$PKG_CONFIG_PATH
export PKG_CONFIG_SYSROOT_DIR PKG_CONFIG_PATH PKG_CONFIG_LIBDIR

version=$(pkg-config --modversion taskhost)
echo "pkg-config --modversion taskhost: $version"
if [ -n "${PACKAGE_VERSION:-}" ] && [ "$version" != "$PACKAGE_VERSION" ]; then
    echo "FAIL: expected version $PACKAGE_VERSION"
    exit 1
fi
cflags=$(pkg-config --cflags taskhost)
echo "pkg-config --cflags taskhost: $cflags"

cd "$tmp"
cat >x.c <<'C'
#include <taskhost.h>

static int shout(void *state, th_task *task, const void *in, size_t len)
{
    char out[64];
    const char *s = in;
    size_t i;
    (void)state;
    if (len > sizeof out)
        return th_task_fail(task, TH_ETOOBIG, "input over %zu bytes",
                            sizeof out);
    for (i = 0; i < len; i++)
        out[i] = (s[i] >= 'a' && s[i] <= 'z') ? (char)(s[i] - 32) : s[i];
    return th_task_write(task, out, len);
}

static const th_task_def tasks[] = {{"shout", shout}, {NULL, NULL}};
TH_PLUGIN("x", "0.1", NULL, NULL, tasks);
C

echo "+ cc -shared -fPIC $cflags x.c -o x.so"
# shellcheck disable=SC2086 # $cflags is a list of words
cc -shared -fPIC $cflags x.c -o x.so

echo "+ nm -D --defined-only x.so"
nm -D --defined-only x.so
if ! nm -D --defined-only x.so | grep -qw taskhost_plugin; then
    echo "FAIL: x.so does not export taskhost_plugin"
    exit 1
fi

# The checker stands in for the host: it provides the SDK functions the
# plugin calls, loads it like the host does and runs its task.
cat >check.c <<'C'
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <taskhost.h>

static char out[128];
static size_t outlen;

int th_task_write(th_task *task, const void *data, size_t len)
{
    (void)task;
    if (outlen + len > sizeof out)
        return TH_ETOOBIG;
    memcpy(out + outlen, data, len);
    outlen += len;
    return 0;
}

int th_task_fail(th_task *task, int code, const char *fmt, ...)
{
    (void)task, (void)fmt;
    return code < 0 ? code : TH_EPLUGIN;
}

int main(int argc, char **argv)
{
    void *dl = dlopen(argv[argc - 1], RTLD_NOW | RTLD_LOCAL);
    if (dl == NULL) {
        printf("dlopen: %s\n", dlerror());
        return 1;
    }
    const th_plugin *p = dlsym(dl, TH_PLUGIN_SYMBOL);
    if (p == NULL) {
        printf("no %s\n", TH_PLUGIN_SYMBOL);
        return 1;
    }
    printf("abi %u (host %d), struct_size %u, name %s, version %s\n",
           (unsigned)p->abi_version, TH_ABI_VERSION,
           (unsigned)p->struct_size, p->name, p->version);
    if (p->abi_version != TH_ABI_VERSION ||
        p->struct_size != sizeof(th_plugin))
        return 1;
    if (p->tasks[0].run(NULL, NULL, "hello", 5) != 0)
        return 1;
    printf("task %s(\"hello\") -> \"%.*s\"\n", p->tasks[0].name,
           (int)outlen, out);
    return outlen == 5 && memcmp(out, "HELLO", 5) == 0 ? 0 : 1;
}
C
echo "+ cc $cflags -rdynamic check.c -o check -ldl"
# shellcheck disable=SC2086
cc $cflags -rdynamic check.c -o check -ldl
echo "+ ./check x.so"
if ! ./check "$tmp/x.so"; then
    echo "FAIL: x.so is not a plugin this SDK's host accepts"
    exit 1
fi
echo "ok"
