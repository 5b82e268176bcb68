#!/usr/bin/env bash
# The whole test suite, building first if needed (scripts/setup.sh: installs missing packages,
# incremental build). With FT_SANITIZE=1 also the ASan+UBSan build; with FT_FUZZ=1 each libFuzzer
# target for a fixed number of inputs with a fixed seed (about a minute each; tests/fuzz/run.sh), or
# for FT_FUZZ_SECONDS each when that is set. CI (.ci/run) runs exactly this with both switches on.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ctest --test-dir build --output-on-failure -j "$(nproc)"
if [ "${FT_SANITIZE:-0}" = 1 ]; then
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan --output-on-failure -j "$(nproc)" -L unit
fi
if [ "${FT_FUZZ:-0}" = 1 ]; then
  bash tests/fuzz/run.sh "${FT_FUZZ_SECONDS:---runs}"
fi
