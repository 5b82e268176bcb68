#!/usr/bin/env bash
# Run the test suite (after scripts/setup.sh). With FT_SANITIZE=1 also the sanitizer build.
set -euo pipefail
cd "$(dirname "$0")/.."
ctest --test-dir build --output-on-failure -j "$(nproc)"
if [ "${FT_SANITIZE:-0}" = 1 ]; then
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan --output-on-failure -j "$(nproc)" -L unit
fi
