#!/usr/bin/env python3
"""llama.cpp is the referee for ft's GGUF files (issue 13).

For every family fixture (tests/fixtures/models/*) and every float type, `ft save --format gguf`
writes the model; llama.cpp (node-llama-cpp 3.21.1, installed by scripts/setup.sh into
tests/llama/node_modules) loads it and
  - tokenises the tokenizer test texts: must equal the HF tokenizer's ids (tests/fixtures/tokenizer),
  - decodes greedily from the fixtures' prompts: must equal transformers' greedy tokens (which ft
    reproduces, tests/test_models.cpp), except after a step whose top-2 margin is below 1e-3.
Where llama.cpp cannot represent a fixture's configuration the comparison is limited to what it
can (e.g. mistral: the steps before the sliding window fills) and the limit is printed.

usage: test_gguf_llama.py FT_BINARY REPO_ROOT [family ... | roundtrip]
Exit 77 (ctest: skipped) when node-llama-cpp is not installed — loudly.
"""
import json
import os
import subprocess
import sys
import tempfile

FT, ROOT = sys.argv[1], sys.argv[2]
ONLY = sys.argv[3:]
LLAMA = os.path.join(ROOT, "tests", "llama")
FIX = os.path.join(ROOT, "tests", "fixtures")
FAMILIES = ["llama", "llama_yarn", "llama_linear", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3"]
MARGIN = 1e-3
# bf16 files: llama.cpp's CPU bf16 dot product (ggml_vec_dot_bf16, vec_dot_type BF16) rounds the
# activations to bf16 (8 significant bits), as its quantised dot products round them to 8-bit
# integers: the rule for that case applies (steps after a top-2 margin below 0.05 may differ).
MARGIN_8BIT = 0.05


def referee_installed():
    return os.path.isdir(os.path.join(LLAMA, "node_modules", "node-llama-cpp"))


def referee(req, tmp):
    path = os.path.join(tmp, "request.json")
    with open(path, "w") as f:
        json.dump(req, f)
    r = subprocess.run(["node", os.path.join(LLAMA, "referee.mjs"), path], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"referee failed ({r.returncode}): {r.stderr[-3000:]}")
    return json.loads(r.stdout)


def run_ft(*args):
    r = subprocess.run([FT, *args], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"ft {' '.join(args)} failed: {r.stderr}")
    return r.stderr


def run_ft_out(*args):
    r = subprocess.run([FT, *args], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"ft {' '.join(args)} failed: {r.stderr}")
    return r.stdout


def compare_greedy(got, want, margins, limit=None, margin=MARGIN):
    """Number of steps compared; raises when a step before the first low-margin step differs."""
    n = len(want) if limit is None else min(limit, len(want))
    for k in range(n):
        if margins is not None and margins[k] < margin:
            return k  # this step and later ones may legitimately differ
        if got[k] != want[k]:
            raise AssertionError(f"step {k}: llama.cpp {got[k]} != reference {want[k]} (got {got}, want {want})")
    return n


def main():
    if not referee_installed():
        print("=" * 78 + "\nSKIPPED: llama.cpp referee not installed (tests/llama/node_modules missing).\n"
              "Run `bash scripts/setup.sh` (it runs `npm ci` in tests/llama) to check ft's GGUF files\n"
              "against llama.cpp.\n" + "=" * 78, flush=True)
        return 77
    tok_expected = json.load(open(os.path.join(FIX, "tokenizer", "expected.json")))
    texts = [c["text"] for c in tok_expected["encodings"]]
    failures = []
    checked = 0
    with tempfile.TemporaryDirectory() as tmp:
        for fam in [f for f in ONLY or FAMILIES if f != "roundtrip"]:
            d = os.path.join(FIX, "models", fam)
            peft = os.path.join(d, "peft")
            exp = json.load(open(os.path.join(d, "expected.json")))
            cfg = json.load(open(os.path.join(d, "config.json")))
            # (label, outtype, adapter): the model in each float type; ft's GGUF adapter (from the
            # fixture's PEFT adapter) on ft's f32 GGUF base; the merged model (ft merge --format gguf).
            for label, outtype, adapter in [("f32", "f32", False), ("f16", "f16", False), ("bf16", "bf16", False),
                                            ("adapter", "f32", True), ("merged", "f32", True)]:
                gguf = os.path.join(tmp, f"{fam}-{outtype}.gguf")
                lora = None
                if label == "merged":
                    gguf = os.path.join(tmp, f"{fam}-merged.gguf")
                    notes = run_ft("merge", "--model", d, "--adapter", peft, "--format", "gguf", "--outtype", outtype, "--out", gguf)
                else:
                    notes = run_ft("save", "--model", d, "--format", "gguf", "--outtype", outtype, "--out", gguf)
                if label == "adapter":
                    lora = os.path.join(tmp, f"{fam}-adapter.gguf")
                    run_ft("save", "--model", d, "--adapter", peft, "--format", "gguf", "--base-gguf", gguf, "--out", lora)
                    modelfile = open(lora[:-5] + ".Modelfile").read()
                    assert f"FROM {gguf}\n" in modelfile and f"ADAPTER {lora}\n" in modelfile, modelfile
                ref = exp["peft"] if adapter else exp
                ctx = 64
                limit_for = lambda n_prompt: None
                if fam == "mistral":
                    # llama.cpp runs Mistral as `llama`, without a sliding window: compare the steps
                    # whose attention span fits in the window.
                    assert "sliding-window attention" in notes, notes
                    limit_for = lambda n_prompt: cfg["sliding_window"] - n_prompt + 1
                greedy = ref["greedy"]
                if fam == "phi3":
                    # llama.cpp picks phi3's long/short rope factors by its context size, which it pads to
                    # 256 tokens (> original_max_position_embeddings 32): it always uses the long factors,
                    # transformers only once the sequence is longer than 32 tokens. Compare on a prompt of
                    # 58 tokens (text 2), where both use the long factors, against ft generate (which
                    # matches transformers, tests/test_models.cpp); no margins are known for it, so
                    # every step must agree.
                    assert "longrope" in notes, notes
                    args = ["generate", "--model", d, "--prompt", exp["texts"][2], "--max-tokens", "16", "--json"]
                    if adapter:
                        args += ["--adapter", peft]
                    g = json.loads(run_ft_out(*args))
                    assert g["prompt_tokens"] == exp["input_ids"][2], g["prompt_tokens"]
                    greedy = [{"prompt_ids": exp["input_ids"][2], "new_ids": g["tokens"], "margins": None}]
                    ctx = 128
                req = {"model": gguf, "context_size": ctx, "threads": 1,
                       "tokenize": [t for t in exp["texts"]] + texts, "parse_special": True,
                       "generate": [{"prompt_ids": g["prompt_ids"], "max_tokens": len(g["new_ids"])} for g in greedy]}
                if lora:
                    req["lora"] = lora
                out = referee(req, tmp)
                try:
                    assert out["add_bos"] is True and out["bos"] == 1 and out["eos"] == 2, out
                    for text, ids, got in zip(exp["texts"], exp["input_ids"], out["tokens"]):
                        assert got == ids[1:], f"tokenisation of {text!r}: llama.cpp {got} != HF {ids[1:]}"
                    for case, got in zip(tok_expected["encodings"], out["tokens"][len(exp["texts"]):]):
                        want = case["ids_no_specials"]
                        assert got == want, f"tokenisation of {case['text']!r}: llama.cpp {got} != HF {want}"
                    steps = []
                    for g, got in zip(greedy, out["generated"]):
                        steps.append(compare_greedy(got, g["new_ids"], g["margins"], limit_for(len(g["prompt_ids"])),
                                                    MARGIN_8BIT if outtype == "bf16" else MARGIN))
                    checked += 1
                    what = {"adapter": "f32 base + GGUF adapter vs PEFT", "merged": "merged f32 vs PEFT"}.get(label, label)
                    print(f"{fam} {what}: llama.cpp greedy == reference ({'+'.join(map(str, steps))} steps), "
                          f"tokenisation equal", flush=True)
                    if fam == "phi3":
                        print("  LIMIT: llama.cpp uses phi3's long rope factors at every length (its context is padded "
                              "to 256 > 32); compared on a 58-token prompt, where transformers uses them too")
                    if fam == "mistral":
                        print(f"  LIMIT: llama.cpp has no sliding window for llama/mistral; compared the first "
                              f"{'+'.join(map(str, steps))} steps (before the window of {cfg['sliding_window']} fills)")
                except AssertionError as e:
                    failures.append(f"{fam} {label}: {e}")
                    print(f"FAIL {fam} {label}: {e}", flush=True)
        # ft's own trained adapters (tests/fixtures/roundtrip): rsLoRA on the last layer only (its
        # alpha·sqrt(r) scaling must reach llama.cpp's alpha / r), a LoRA on the bf16 tiny Llama, and
        # DoRA, which has no llama.cpp form: refused with the advice to merge, and merged instead.
        rt = json.load(open(os.path.join(FIX, "roundtrip", "expected.json")))
        for case in rt["cases"] if not ONLY or "roundtrip" in ONLY else []:
            if case["name"] not in ("gemma2_rslora_last1", "tiny_lora", "qwen3_dora"):
                continue
            base_dir = os.path.join(ROOT, case["base_dir"])
            adir = os.path.join(FIX, "roundtrip", case["adapter_dir"])
            gguf = os.path.join(tmp, case["name"] + "-base.gguf")
            lora = os.path.join(tmp, case["name"] + ".gguf")
            if case["name"] == "qwen3_dora":
                r = subprocess.run([FT, "save", "--model", base_dir, "--adapter", adir, "--format", "gguf", "--out", lora],
                                   capture_output=True, text=True)
                assert r.returncode != 0 and "DoRA" in r.stderr and "ft merge" in r.stderr, r.stderr
                run_ft("merge", "--model", base_dir, "--adapter", adir, "--format", "gguf", "--outtype", "f32", "--out", gguf)
                lora = None
            else:
                run_ft("save", "--model", base_dir, "--format", "gguf", "--outtype", "f32", "--out", gguf)
                run_ft("save", "--model", base_dir, "--adapter", adir, "--format", "gguf", "--out", lora)
            req = {"model": gguf, "context_size": 64, "threads": 1, "tokenize": [],
                   "generate": [{"prompt_ids": p["ids"], "max_tokens": case["max_new_tokens"]} for p in case["prompts"]]}
            if lora:
                req["lora"] = lora
            out = referee(req, tmp)
            try:
                steps = [compare_greedy(got, g["new_ids"], g["margins"]) for g, got in zip(case["peft"]["greedy"], out["generated"])]
                checked += 1
                what = "merged DoRA (GGUF adapter refused)" if lora is None else "GGUF adapter on f32 GGUF base"
                print(f"roundtrip {case['name']} {what}: llama.cpp greedy == PEFT ({'+'.join(map(str, steps))} steps)", flush=True)
            except AssertionError as e:
                failures.append(f"roundtrip {case['name']}: {e}")
                print(f"FAIL roundtrip {case['name']}: {e}", flush=True)
    if failures:
        print(f"{len(failures)} failures", flush=True)
        return 1
    print(f"OK: {checked} GGUF files agree with llama.cpp")
    return 0


if __name__ == "__main__":
    sys.exit(main())
