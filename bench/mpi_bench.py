#!/usr/bin/env python3
"""Data-parallel training (issue 14): R ranks x T threads against 1 rank x R·T threads, interleaved.

The training benchmark's workload (bench/train_bench.py: SmolLM2-135M shape, batch 4 x 256 tokens,
LoRA r8 on every projection, AdamW, random weights from bench/make_bench_model.py). Each round runs
`ft train` once as one process with --threads R·T and once as `mpirun -np R ... --threads T` (ranks
bound to cores), one after the other (A B A B ...), so that a shared machine's load falls on both
alike. tokens/s are ft's own (metrics file: tokens of the global batch over the step's wall time),
after one warm-up step. With FT_PROFILE=1 the runs' stderr holds the per-phase profile, including the
gradient all-reduce ("allreduce").

  python3 bench/mpi_bench.py --ft build/ft --ranks 2 --threads 1 --rounds 3
  python3 bench/mpi_bench.py --ft build/ft --ranks 4 --threads 4 --rounds 2   # a 16-core host
"""
import argparse, json, os, shutil, statistics, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
p = argparse.ArgumentParser()
p.add_argument("--ft", default=os.path.join(HERE, "..", "build", "ft"))
p.add_argument("--python", default="/usr/bin/python3", help="python for make_bench_model.py (numpy makes it fast)")
p.add_argument("--work", default="/tmp/ftbench-mpi")
p.add_argument("--tokenizer", default=None, help="GPT-2 tokenizer dir (default: make_bench_model.py's, ../shared/data/tokenizers/gpt2)")
p.add_argument("--ranks", type=int, default=2)
p.add_argument("--threads", type=int, default=1, help="threads per rank")
p.add_argument("--rounds", type=int, default=3)
p.add_argument("--iters", type=int, default=4, help="timed steps (after one warm-up step)")
p.add_argument("--seq", type=int, default=256)
p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
p.add_argument("--mpirun-args", default="--bind-to core --map-by slot:PE={threads}", help="placement of the ranks")
a = p.parse_args()

model = os.path.join(a.work, f"model-{a.dtype}")
if not os.path.exists(os.path.join(model, "model.safetensors")):
    subprocess.run([a.python, os.path.join(HERE, "make_bench_model.py"), "--out", model, "--dtype", a.dtype]
                   + (["--tokenizer", a.tokenizer] if a.tokenizer else []), check=True)
env = dict(os.environ)
env.setdefault("OMPI_MCA_btl", "self,vader")
if os.geteuid() == 0:
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def run(ranks, threads, tag):
    out = os.path.join(a.work, "runs", tag)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    metrics = os.path.join(out, "metrics.jsonl")
    train = ["--threads", str(threads), "train", "--model", model, "--data", os.path.join(model, "train.jsonl"),
             "--iters", str(a.iters + 1), "--batch-size", "4", "--max-seq-length", str(a.seq), "--group-by-length", "false",
             "--lora-rank", "8", "--lora-alpha", "16", "--learning-rate", "1e-4", "--max-grad-norm", "0", "--steps-per-eval", "0",
             "--steps-per-report", "1", "--save-every", "0", "--progress", "false", "--dtype", a.dtype,
             "--adapter-path", os.path.join(out, "adapter"), "--metrics-file", metrics]
    cmd = [a.ft] + train if ranks == 1 else \
        ["mpirun", "-np", str(ranks)] + a.mpirun_args.format(threads=threads).split() + [a.ft] + train
    with open(os.path.join(out, "stderr.txt"), "w") as err:
        subprocess.run(cmd, check=True, env=env, stderr=err)
    rows = [json.loads(l) for l in open(metrics) if l.strip() and "tokens_per_second" in l]
    timed = rows[1:]  # step 1: warm-up
    tokens = 4 * a.seq * len(timed)
    return tokens / sum(4 * a.seq / r["tokens_per_second"] for r in timed), " ".join(cmd)


one, many = [], []
for k in range(a.rounds):
    load = os.getloadavg()[0]
    t1, c1 = run(1, a.ranks * a.threads, f"r{k}-1x{a.ranks * a.threads}")
    tn, cn = run(a.ranks, a.threads, f"r{k}-{a.ranks}x{a.threads}")
    one.append(t1)
    many.append(tn)
    print(json.dumps({"round": k, "load_avg": round(load, 1), f"1x{a.ranks * a.threads}": round(t1, 1),
                      f"{a.ranks}x{a.threads}": round(tn, 1), "ratio": round(tn / t1, 3)}), flush=True)
    if k == 0:
        print("#", c1, "\n#", cn, flush=True)
ratios = [m / o for m, o in zip(many, one)]
print(f"\n1 rank x {a.ranks * a.threads} threads: {statistics.mean(one):.1f} tok/s (runs {', '.join(f'{x:.1f}' for x in one)})")
print(f"{a.ranks} ranks x {a.threads} threads: {statistics.mean(many):.1f} tok/s (runs {', '.join(f'{x:.1f}' for x in many)})")
print(f"ratio {a.ranks}x{a.threads} / 1x{a.ranks * a.threads}: mean of rounds {statistics.mean(ratios):.3f} "
      f"(min {min(ratios):.3f}, max {max(ratios):.3f}); of means {statistics.mean(many) / statistics.mean(one):.3f}")
