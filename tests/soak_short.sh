#!/bin/sh
# soak_short.sh - the soak at the size a CI run affords: 64 clients,
# 32,000 tasks, a rolling restart every second. `make soak` runs the
# full size.
exec "${abs_top_builddir:-.}/tests/soak" -c 64 -n 32000 -r 1
