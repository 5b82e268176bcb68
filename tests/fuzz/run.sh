#!/usr/bin/env bash
# Runs every libFuzzer target of build-fuzz from its seed corpus with a fixed seed, nproc at a time.
# New coverage goes to a scratch corpus (the committed one stays as is). A crash, leak, timeout or
# sanitizer report fails the run and prints the input as hex; add it to tests/data/fuzz/<target>/ so
# ft_tests replays it (tests/test_fuzz_regressions.cpp).
#   bash tests/fuzz/run.sh --runs [TARGET...]     fixed number of inputs per target from seed 1 (RUNS
#                                                 below, about a minute each here): what CI runs
#   bash tests/fuzz/run.sh SECONDS [TARGET...]    explore for SECONDS per target (finds new inputs)
set -euo pipefail
cd "$(dirname "$0")/../.."
# Inputs per target in --runs mode (each about 45-60 s on a 2-core CI machine).
declare -A RUNS=([chat_template]=150000 [config]=500000 [jsonl]=20000 [safetensors]=800000
                 [tokenizer_load]=60000 [tokenizer_encode]=30000 [gguf]=20000)
limit=${1:-60}; shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
  for d in tests/fuzz/corpus/*/; do targets+=("$(basename "$d")"); done
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/ft_fuzz_run.XXXXXX")
trap 'rm -rf "$work"' EXIT
run_one() {
  local t=$1 limit=$2 work=$3 runs=$4 dict=() bound
  if [ "$limit" = --runs ]; then bound=(-runs="$runs"); else bound=(-max_total_time="$limit"); fi
  [ -f "tests/fuzz/$t.dict" ] && dict=(-dict="tests/fuzz/$t.dict")
  mkdir -p "$work/$t/corpus" "$work/$t/art"
  # The seed corpus as a sorted file list, not a directory: libFuzzer keeps the order it reads files
  # in among inputs of equal size, and a directory's order differs between file systems. Runs still
  # differ a little (coverage depends on ASLR and scratch-directory names), so CI explores close to,
  # not exactly, what a run here did.
  find "tests/fuzz/corpus/$t" -type f | LC_ALL=C sort | paste -sd, > "$work/$t/seeds"
  if build-fuzz/tests/fuzz/"fuzz_$t" -seed=1 "${bound[@]}" -timeout=25 -rss_limit_mb=2048 -reload=0 \
       -print_final_stats=1 "${dict[@]}" -artifact_prefix="$work/$t/art/" \
       -seed_inputs=@"$work/$t/seeds" "$work/$t/corpus" > "$work/$t/log" 2>&1; then
    echo "fuzz_$t: ok, $(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/$t/log" | grep -o '[0-9]*$') runs"
  else
    echo "fuzz_$t: FAILED"; tail -n 60 "$work/$t/log"
    { grep -m1 -o 'what(): .*\|SUMMARY: .*\|ERROR: .*' "$work/$t/log" || tail -n 1 "$work/$t/log"; } |
      head -c 300 > "$work/$t/verdict"
    mkdir -p build-fuzz/artifacts/$t
    for f in "$work/$t/art/"*; do
      [ -f "$f" ] || continue
      cp "$f" build-fuzz/artifacts/$t/
      echo "input build-fuzz/artifacts/$t/$(basename "$f") ($(stat -c %s "$f") bytes), base64:"
      base64 -w 0 "$f" | head -c 60000; echo
    done
    return 1
  fi
}
export -f run_one
export FT_FUZZ_LIMIT=$limit FT_FUZZ_WORK=$work
status=0
for t in "${targets[@]}"; do echo "$t ${RUNS[$t]:-20000}"; done |
  xargs -P "$(nproc)" -L 1 bash -c 'run_one "$1" "$FT_FUZZ_LIMIT" "$FT_FUZZ_WORK" "$2"' _ || status=$?
# The verdict last, a line per failed target (a CI log is often read from its tail).
if [ "$status" != 0 ]; then
  for t in "${targets[@]}"; do
    [ -f "$work/$t/verdict" ] || continue
    echo "fuzz_$t FAILED: $(cat "$work/$t/verdict")"
    for f in "$work/$t/art/"*; do [ -f "$f" ] && echo "  input: build-fuzz/artifacts/$t/$(basename "$f") (base64 above)"; done
  done
  echo "fuzz: FAILED (add each failing input under tests/data/fuzz/<target>/ once fixed: ft_tests replays them)"
  exit 1
fi
echo "fuzz: all ${#targets[@]} targets ok"
