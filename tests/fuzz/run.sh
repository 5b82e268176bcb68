#!/usr/bin/env bash
# Runs every libFuzzer target of build-fuzz for SECONDS (default 60) from its seed corpus, nproc at a
# time, with a fixed seed. New coverage goes to a scratch corpus (the committed one stays as is).
# A crash, leak, timeout or sanitizer report fails the run and prints the input as hex; add it to
# tests/data/fuzz/<target>/ so ft_tests replays it (tests/test_fuzz_regressions.cpp).
#   bash tests/fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-60}; shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
  for d in tests/fuzz/corpus/*/; do targets+=("$(basename "$d")"); done
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/ft_fuzz_run.XXXXXX")
trap 'rm -rf "$work"' EXIT
run_one() {
  local t=$1 secs=$2 work=$3 dict=()
  [ -f "tests/fuzz/$t.dict" ] && dict=(-dict="tests/fuzz/$t.dict")
  mkdir -p "$work/$t/corpus" "$work/$t/art"
  if build-fuzz/tests/fuzz/"fuzz_$t" -seed=1 -max_total_time="$secs" -timeout=25 -rss_limit_mb=2048 \
       -print_final_stats=1 "${dict[@]}" -artifact_prefix="$work/$t/art/" \
       "$work/$t/corpus" "tests/fuzz/corpus/$t" > "$work/$t/log" 2>&1; then
    echo "fuzz_$t: ok, $(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/$t/log" | grep -o '[0-9]*$') runs in ${secs}s"
  else
    echo "fuzz_$t: FAILED"; tail -n 60 "$work/$t/log"
    for f in "$work/$t/art/"*; do [ -f "$f" ] && { echo "input $(basename "$f"):"; od -An -tx1 -v "$f" | head -c 8000; }; done
    return 1
  fi
}
export -f run_one
printf '%s\n' "${targets[@]}" | xargs -P "$(nproc)" -I{} bash -c 'run_one "$@"' _ {} "$secs" "$work"
