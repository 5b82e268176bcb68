#!/usr/bin/env bash
# Soak test of crash-safe training (not part of CI: it runs for tens of minutes). README "Reliability".
#
# Trains the tiny base model (recipes/tiny-base) on WikiSQL for STEPS steps, saving every SAVE_EVERY
# steps, twice: once uninterrupted, and once SIGKILLed at a random moment every KILL_MIN..KILL_MAX
# seconds and resumed (--resume) each time, until it finishes. Passes when
#   - the two final adapters are bitwise identical (adapter_model.safetensors, adapter_config.json),
#   - no temporary file (*.tmp) and no lock file is left in the killed run's folder,
#   - the killed run's folder never held more than MAX_STATES training states (disk use is bounded).
# Prints the number of kills, the steps they interrupted, and the largest folder size seen.
#
#   bash scripts/soak_resume.sh                        # 2000 steps, save every 10, a kill every 5-20 s
#   STEPS=200 KILL_MIN=2 KILL_MAX=6 bash scripts/soak_resume.sh   # a quick version
set -euo pipefail
cd "$(dirname "$0")/.."
FT=${FT:-build/ft}
STEPS=${STEPS:-2000}
SAVE_EVERY=${SAVE_EVERY:-10}
KILL_MIN=${KILL_MIN:-5}
KILL_MAX=${KILL_MAX:-20}
MAX_STATES=${MAX_STATES:-3}  # the two kept + one being written when a kill hits between save and rotation
OUT=${OUT:-runs/soak}
RANDOM=${SOAK_SEED:-1}       # the kill moments are reproducible

args=(--model recipes/tiny-base --data recipes/data/wikisql --iters "$STEPS" --save-every "$SAVE_EVERY"
      --batch-size 4 --max-seq-length 128 --mask-prompt --learning-rate 1e-3 --lora-rank 8 --lora-dropout 0.1
      --lr-schedule cosine --warmup-steps 20 --steps-per-eval 0 --steps-per-report 50 --progress false)

rm -rf "$OUT"
mkdir -p "$OUT"
echo "soak: $STEPS steps, save every $SAVE_EVERY, SIGKILL every $KILL_MIN-$KILL_MAX s; logs in $OUT"
t0=$(date +%s)
"$FT" train "${args[@]}" --adapter-path "$OUT/ref" > "$OUT/ref.log" 2>&1
echo "soak: uninterrupted run done in $(( $(date +%s) - t0 )) s"

kills=0 max_kb=0 max_states=0 rc=1
interrupted=()
t1=$(date +%s)
while :; do
  "$FT" train "${args[@]}" --adapter-path "$OUT/killed" --resume >> "$OUT/killed.log" 2>&1 &
  pid=$!
  delay=$(( KILL_MIN * 10 + RANDOM % ((KILL_MAX - KILL_MIN) * 10 + 1) ))  # tenths of a second
  for ((i = 0; i < delay; i++)); do
    kill -0 "$pid" 2> /dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2> /dev/null; then
    kill -KILL "$pid"
    { wait "$pid"; } 2> /dev/null || true
    kills=$((kills + 1))
    last=$(ls "$OUT/killed" 2> /dev/null | sed -n 's/^state-0*\([0-9][0-9]*\)\.h5$/\1/p' | sort -n | tail -1)
    interrupted+=("${last:-0}")
  else
    wait "$pid" && rc=0 || rc=$?
    break
  fi
  kb=$(du -sk "$OUT/killed" | cut -f1)
  (( kb > max_kb )) && max_kb=$kb
  n=$(ls "$OUT/killed" | grep -c '^state-[0-9]*\.h5$' || true)
  (( n > max_states )) && max_states=$n
done
echo "soak: killed run finished (exit $rc) after $kills SIGKILLs in $(( $(date +%s) - t1 )) s"
echo "soak: newest saved step at each kill: ${interrupted[*]:-none}"
echo "soak: largest folder seen: ${max_kb} KiB, at most $max_states training states (final: $(du -sk "$OUT/killed" | cut -f1) KiB)"

fail=0
[ "$rc" = 0 ] || { echo "FAIL: the last resumed run exited with $rc (see $OUT/killed.log)"; fail=1; }
for f in adapter_model.safetensors adapter_config.json; do
  if cmp -s "$OUT/ref/$f" "$OUT/killed/$f"; then echo "soak: $f bitwise identical to the uninterrupted run's"
  else echo "FAIL: $f differs from the uninterrupted run's"; fail=1; fi
done
left=$(find "$OUT/killed" -name '*.tmp' -o -name '.ft-train.lock' | tr '\n' ' ')
[ -z "$left" ] && echo "soak: no temporary or lock file left" || { echo "FAIL: left behind: $left"; fail=1; }
(( max_states <= MAX_STATES )) || { echo "FAIL: $max_states training states at once (bound $MAX_STATES)"; fail=1; }
grep -q "Done after $STEPS steps" "$OUT/killed.log" || { echo "FAIL: no 'Done after $STEPS steps' line"; fail=1; }
[ "$fail" = 0 ] && echo "soak: PASS" || echo "soak: FAIL"
exit "$fail"
