#!/bin/bash
# QLoRA training speed on the accelerator host (bench/RESULTS.md "QLoRA training speed"): the random
# SmolLM2-135M-shaped bf16 model, LoRA r8 all-linear, batch 4 x 256, --dtype bfloat16, 10 steps, mean
# tok/s of steps 3-10 — bf16 base against the same base quantised on load to 4 bits (group 64),
# interleaved, three rounds, for each binary in BINS (default "ft-old ft": an A/B of two builds).
# Pack the binaries first (here): bash bench/mpi_carry.sh build/ft, then add the other build as
# build-dist-mpi/bin/ft-old with a wrapper like wrap/ft, and re-tar build-carry/ompi.tar.xz.
# On the host:  [T=threads] [BINS="ft"] [TESTS=1] bash bench/qlora_ab.sh
set -u
mkdir -p /tmp/o && tar -C /tmp/o -xJf build-carry/ompi.tar.xz && source /tmp/o/build-dist-mpi/env.sh
[ -n "${TESTS:-}" ] && { echo "== tests"; ft_tests --gtest_filter="Quant.*:Gemm.*" 2>&1 | tail -3; }
python3 bench/make_bench_model.py --out /tmp/m --dtype bfloat16 --tokenizer /tmp/o/build-dist-mpi/tok >/dev/null 2>&1 || echo MODEL FAILED
run() { # bin flags threads
  D=/tmp/r-$RANDOM; FT_NUM_THREADS=$3 $1 train --model /tmp/m --data /tmp/m/train.jsonl --adapter-path $D --iters 10 --batch-size 4 --max-seq-length 256 --lora-rank 8 --steps-per-eval 0 --steps-per-report 1 --save-every 1000 --progress false --metrics-file $D.jsonl $2 >/dev/null 2>$D.err || tail -3 $D.err
  python3 - $D.jsonl "$1 $2 t$3" <<'P'
import json,sys
rows=[json.loads(l) for l in open(sys.argv[1]) if '"tokens_per_second"' in l]
rows=[r for r in rows if r.get('step',0)>=3]
print("%-40s tok/s %.1f peak MiB %.0f" % (sys.argv[2], sum(r['tokens_per_second'] for r in rows)/len(rows), rows[-1]['peak_memory_mb']))
P
  rm -rf $D $D.jsonl $D.err
}
T=${T:-16}; BINS=${BINS:-ft-old ft}; for i in 1 2 3; do for b in $BINS; do for f in "--dtype bfloat16" "--dtype bfloat16 --quantize 4"; do run $b "$f" $T; done; done; done
