#!/usr/bin/env python3
"""ft train vs the PyTorch anchor (bench/torch_lora_bench.py), side by side on this machine.

Workload: SmolLM2-135M shape (hidden 576, 30 layers, 9/3 heads, intermediate 1536, tied
embeddings), GPT-2 tokenizer with vocab padded to 50304, batch 4 x 256 tokens (--seq), LoRA rank 8
(alpha 16, scale 2) on every linear projection, AdamW lr 1e-4. For each configuration it runs
`ft train` and the anchor one after the other and prints the ratio ft / PyTorch of
  - wall tokens/s (the target metric; meaningful on a quiet machine), and
  - tokens per CPU-second (user + system time of all threads; robust on a shared, loaded machine),
and the peak RSS of both. Not part of CI (needs python3-torch and libopenblas0-pthread; minutes).

  python3 bench/train_bench.py --ft build/ft                       # fp32, bf16 and their -ckpt variants
  python3 bench/train_bench.py --ft build/ft --configs fp32 --threads 1
  python3 bench/train_bench.py --ft build/ft --configs fp16         # ft --dtype float16 (fp16 weights,
                                                                    # autocast, loss scaling) vs the fp32 anchor
  FT_PROFILE=1 ... per-op profile of ft (stderr of the ft run, saved next to the metrics)

Model directories (random weights, float32 and bfloat16 checkpoints of the same values) are made
once under --work with bench/make_bench_model.py; fp16 loads the float32 one (ft converts to fp16).
The anchor has no fp16 mode (it must stay identical to the shared copy), so fp16 rows compare ft's
float16 run with the anchor's fp32 one.
"""
import argparse, json, os, resource, shutil, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
p = argparse.ArgumentParser()
p.add_argument("--ft", default=os.path.join(HERE, "..", "build", "ft"))
p.add_argument("--python", default="/usr/bin/python3", help="python with torch (Debian's)")
p.add_argument("--work", default="/tmp/ftbench")
p.add_argument("--tokenizer", default=None, help="GPT-2 tokenizer dir (default: ../shared/data/tokenizers/gpt2)")
p.add_argument("--configs", default="fp32,bf16,fp32-ckpt,bf16-ckpt")
p.add_argument("--threads", type=int, default=os.cpu_count())
p.add_argument("--iters", type=int, default=4, help="ft steps measured (after one warm-up step)")
p.add_argument("--torch-steps", type=int, default=3)
p.add_argument("--layers", type=int, default=None, help="default: the shape's (30 / 16)")
p.add_argument("--shape", default="smollm2-135m", choices=["smollm2-135m", "1b"], help="model shape (bench/make_bench_model.py)")
p.add_argument("--seq", type=int, default=256, help="tokens per row (the memory target uses 1024)")
p.add_argument("--skip-torch", action="store_true")
p.add_argument("--skip-ft", action="store_true")
p.add_argument("--out", default=None, help="append JSON results here")
a = p.parse_args()
if a.layers is None: a.layers = 16 if a.shape == "1b" else 30

CONFIGS = {"fp32": ("float32", False), "bf16": ("bfloat16", False),
           "fp32-ckpt": ("float32", "selective"), "bf16-ckpt": ("bfloat16", "selective"), "fp16": ("float16", False),
           # checkpoint_policy full (only block inputs kept); PyTorch's side is the same torch.utils.checkpoint run
           "fp32-ckpt-full": ("float32", "full"), "bf16-ckpt-full": ("bfloat16", "full")}


def model_dir(dtype):
    dtype = "float32" if dtype == "float16" else dtype  # ft stores the fp32 checkpoint's weights as fp16
    d = os.path.join(a.work, f"model-{a.shape}-{'f32' if dtype == 'float32' else 'bf16'}-L{a.layers}")
    if not os.path.exists(os.path.join(d, "model.safetensors")):
        cmd = [a.python, os.path.join(HERE, "make_bench_model.py"), "--out", d, "--dtype", dtype, "--layers", str(a.layers),
               "--shape", a.shape]
        if a.tokenizer: cmd += ["--tokenizer", a.tokenizer]
        subprocess.run(cmd, check=True)
    return d


def env(threads):
    e = dict(os.environ)
    e["FT_NUM_THREADS"] = e["OMP_NUM_THREADS"] = e["OPENBLAS_NUM_THREADS"] = str(threads)
    return e


def run_ft(name, dtype, ckpt):
    d = model_dir(dtype)
    run = os.path.join(a.work, "runs", f"{name}-t{a.threads}-s{a.seq}")
    shutil.rmtree(run, ignore_errors=True)  # a fresh run each time (ft refuses to train over another run)
    os.makedirs(run)
    metrics = os.path.join(run, "metrics.jsonl")
    cmd = [a.ft, "train", "--model", d, "--data", os.path.join(d, "train.jsonl"), "--iters", str(a.iters + 1),
           "--batch-size", "4", "--max-seq-length", str(a.seq), "--group-by-length", "false", "--lora-rank", "8",
           "--lora-alpha", "16", "--learning-rate", "1e-4", "--max-grad-norm", "0", "--steps-per-eval", "0",
           "--steps-per-report", "1", "--save-every", "0", "--progress", "false", "--dtype", dtype,
           "--adapter-path", os.path.join(run, "adapter"), "--metrics-file", metrics]
    if ckpt: cmd += ["--grad-checkpoint", "true", "--checkpoint-policy", ckpt]
    with open(os.path.join(run, "stderr.txt"), "w") as err:
        subprocess.run(cmd, check=True, env=env(a.threads), stderr=err)
    rows = [json.loads(l) for l in open(metrics) if l.strip()]
    rows = [r for r in rows if "tokens_per_second" in r]
    timed = rows[1:]  # step 1 is the warm-up
    tokens = 4 * a.seq * len(timed)
    wall = sum(4 * a.seq / r["tokens_per_second"] for r in timed)
    cpu = timed[-1]["cpu_seconds"] - rows[0]["cpu_seconds"]
    return dict(engine="ft", config=name, tokens_per_s=tokens / wall, tokens_per_cpu_s=tokens / cpu,
                step_s=wall / len(timed), peak_rss_mb=rows[-1]["peak_memory_mb"], cmd=" ".join(cmd))


def run_torch(name, dtype, ckpt):
    d = model_dir(dtype)
    bench = os.path.join(HERE, "torch_lora_bench.py")
    args = ["--config", os.path.join(d, "config.json"), "--batch", "4", "--seq", str(a.seq), "--rank", "8",
            "--dtype", "bf16" if dtype == "bfloat16" else "fp32", "--threads", str(a.threads),
            "--steps", str(a.torch_steps), "--warmup", "1"] + (["--checkpoint"] if ckpt else [])
    # One run: perf_counter also records the process CPU time at the anchor's two timing points.
    code = ("import sys, time, json\n_pc, _cpu = time.perf_counter, []\n"
            "def _t():\n    _cpu.append(time.process_time())\n    return _pc()\n"
            f"time.perf_counter = _t\nsys.argv = {[bench] + args!r}\n"
            f"exec(compile(open({bench!r}).read(), {bench!r}, 'exec'))\n"
            "print(json.dumps({'cpu_s': _cpu[-1] - _cpu[-2]}))\n")
    out = subprocess.run([a.python, "-c", code], check=True, env=env(a.threads), capture_output=True, text=True).stdout
    lines = out.strip().splitlines()
    r, cpu = json.loads(lines[-2]), json.loads(lines[-1])["cpu_s"]
    res = dict(tokens_per_s=r["tokens_per_s"], tokens_per_cpu_s=4 * a.seq * a.torch_steps / cpu, step_s=r["step_s"],
               peak_rss_mb=r["peak_rss_mb"])
    res.update(engine=r["engine"], config=name, cmd=f"{a.python} {bench} " + " ".join(args))
    return res


results = []
for name in a.configs.split(","):
    dtype, ckpt = CONFIGS[name]
    load0 = os.getloadavg()[0]
    f = None if a.skip_ft else run_ft(name, dtype, ckpt)
    t = None if a.skip_torch else run_torch(name, dtype, ckpt)
    row = dict(config=name, shape=a.shape, threads=a.threads, layers=a.layers, seq=a.seq, load_avg=round(load0, 1), ft=f, torch=t)
    if f and t:
        row["ratio_wall"] = f["tokens_per_s"] / t["tokens_per_s"]
        row["ratio_cpu"] = f["tokens_per_cpu_s"] / t["tokens_per_cpu_s"]
        row["memory_ratio"] = f["peak_rss_mb"] / t["peak_rss_mb"]
    results.append(row)
    print(json.dumps(row), flush=True)
    if a.out:
        with open(a.out, "a") as o: o.write(json.dumps(row) + "\n")

by = {r["config"]: r for r in results}
print(f"\n{'config':14} {'ft tok/s':>9} {'torch tok/s':>11} {'ratio':>6} | {'ft tok/cpu-s':>12} {'torch':>8} {'ratio':>6} | {'ft MB':>7} {'torch MB':>8}")
for r in results:
    f, t = r["ft"] or {}, r["torch"] or {}
    g = lambda d, k, fmt: format(d[k], fmt) if k in d else "-"
    print(f"{r['config']:14} {g(f, 'tokens_per_s', '9.1f')} {g(t, 'tokens_per_s', '11.1f')} {g(r, 'ratio_wall', '6.2f')} | "
          f"{g(f, 'tokens_per_cpu_s', '12.1f')} {g(t, 'tokens_per_cpu_s', '8.1f')} {g(r, 'ratio_cpu', '6.2f')} | "
          f"{g(f, 'peak_rss_mb', '7.0f')} {g(t, 'peak_rss_mb', '8.0f')}")
for base, variant in (("fp32", "-ckpt"), ("bf16", "-ckpt"), ("fp32", "-ckpt-full"), ("bf16", "-ckpt-full")):
    if base in by and base + variant in by and by[base]["ft"] and by[base + variant]["ft"]:
        x, y = by[base]["ft"], by[base + variant]["ft"]
        print(f"ft checkpointing overhead ({base}{variant}): wall {x['tokens_per_s'] / y['tokens_per_s'] - 1:+.1%}, "
              f"cpu {x['tokens_per_cpu_s'] / y['tokens_per_cpu_s'] - 1:+.1%}")
