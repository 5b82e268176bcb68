#!/usr/bin/env bash
# Run the test suite (after scripts/setup.sh). With FT_SANITIZE=1 also the sanitizer build; with
# FT_FUZZ=1 each libFuzzer target for FT_FUZZ_SECONDS (default 60), as many at once as there are cores.
set -euo pipefail
cd "$(dirname "$0")/.."
ctest --test-dir build --output-on-failure -j "$(nproc)"
if [ "${FT_SANITIZE:-0}" = 1 ]; then
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan --output-on-failure -j "$(nproc)" -L unit
fi
if [ "${FT_FUZZ:-0}" = 1 ]; then
  bash tests/fuzz/run.sh "${FT_FUZZ_SECONDS:-60}"
fi
