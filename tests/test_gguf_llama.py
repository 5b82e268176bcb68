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

usage: test_gguf_llama.py FT_BINARY REPO_ROOT [family ... | roundtrip | quant]
Exit 77 (ctest: skipped) when node-llama-cpp is not installed — loudly.
"""
import json
import os
import random
import shutil
import struct
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


def write_quant_model(d):
    """A seeded random Llama whose matrices fill 256-element quantisation blocks (K-quants need rows
    of 256): hidden 256, 4 heads of 64 (2 KV heads), MLP 512, 2 layers, the fixture tokenizer."""
    os.makedirs(d, exist_ok=True)
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(os.path.join(FIX, "tokenizer", f), d)
    H, I, V, L = 256, 512, 512, 2
    json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": V, "hidden_size": H,
               "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": 4, "num_key_value_heads": 2,
               "head_dim": 64, "rms_norm_eps": 1e-5, "max_position_embeddings": 256, "rope_theta": 10000.0,
               "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"},
              open(os.path.join(d, "config.json"), "w"))
    rng = random.Random(13)
    shapes = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,)}
    for l in range(L):
        p = f"model.layers.{l}."
        shapes.update({p + "input_layernorm.weight": (H,), p + "post_attention_layernorm.weight": (H,),
                       p + "self_attn.q_proj.weight": (256, H), p + "self_attn.k_proj.weight": (128, H),
                       p + "self_attn.v_proj.weight": (128, H), p + "self_attn.o_proj.weight": (H, 256),
                       p + "mlp.gate_proj.weight": (I, H), p + "mlp.up_proj.weight": (I, H), p + "mlp.down_proj.weight": (H, I)})
    header, blobs, off = {}, [], 0
    for name, shape in shapes.items():
        n = shape[0] * (shape[1] if len(shape) > 1 else 1)
        if len(shape) == 1:
            vals = [1.0 + rng.gauss(0, 0.1) for _ in range(n)]
        else:
            std = 1.0 if "embed" in name else 1.5 / shape[1] ** 0.5
            vals = [rng.gauss(0, std) for _ in range(n)]
        b = struct.pack(f"<{n}f", *vals)
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


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
        for fam in [f for f in ONLY or FAMILIES if f not in ("roundtrip", "quant")]:
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
        # Quantised files: llama.cpp and ft each read the same file (ft dequantises exactly, llama.cpp
        # rounds activations to 8 bits inside its dot products): the same greedy tokens except after a
        # step whose top-2 margin, as ft computes it, is below 0.05.
        qdir = os.path.join(tmp, "quant-model")
        if not ONLY or "quant" in ONLY:
            write_quant_model(qdir)
        for model_dir, qtypes in ([(qdir, ["q8_0", "q4_0", "q4_k", "q6_k"]), (os.path.join(FIX, "models", "qwen3"), ["q8_0", "q4_0"])]
                                  if not ONLY or "quant" in ONLY else []):
            for qt in qtypes:
                gguf = os.path.join(tmp, f"{os.path.basename(model_dir)}-{qt}.gguf")
                notes = run_ft("save", "--model", model_dir, "--format", "gguf", "--outtype", qt, "--out", gguf)
                assert "not a multiple" not in notes, notes  # every matrix really is in this type
                refs = [json.loads(run_ft_out("generate", "--model", gguf, "--prompt", p, "--max-tokens", "16", "--json"))
                        for p in ["ROMEO:", "The king said"]]
                out = referee({"model": gguf, "context_size": 64, "threads": 1, "tokenize": [],
                               "generate": [{"prompt_ids": g["prompt_tokens"], "max_tokens": 16} for g in refs]}, tmp)
                try:
                    steps = [compare_greedy(got, g["tokens"], g["margins"], None, MARGIN_8BIT) for g, got in zip(refs, out["generated"])]
                    checked += 1
                    print(f"quantised {os.path.basename(model_dir)} {qt}: llama.cpp greedy == ft reading the same file "
                          f"({'+'.join(map(str, steps))} steps before a margin < {MARGIN_8BIT})", flush=True)
                except AssertionError as e:
                    failures.append(f"quantised {qt}: {e}")
                    print(f"FAIL quantised {os.path.basename(model_dir)} {qt}: {e}", flush=True)

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
            spm_texts = []
            if case["name"] == "tiny_lora":
                # tiny-base has a SentencePiece-style tokenizer (tokenizer.ggml.model = llama): llama.cpp's
                # tokenisation of ft's file equals ft's, from the HF directory and from the GGUF file.
                spm_texts = ["ROMEO:", "Hello  world\n\nnew line", " leading space", "h\u00e9llo \U0001F600 emoji",
                             "SELECT MIN 1-1001112-11", "  two", "\ttab", "1234567 numbers"]
                req["tokenize"] = spm_texts
                req["parse_special"] = True
            out = referee(req, tmp)
            try:
                for text, got in zip(spm_texts, out["tokens"]):
                    for model in (base_dir, gguf):
                        g = json.loads(run_ft_out("generate", "--model", model, "--prompt", text, "--max-tokens", "0", "--json"))
                        assert got == g["prompt_tokens"][1:], f"tokenisation of {text!r}: llama.cpp {got} != ft ({model}) {g['prompt_tokens'][1:]}"
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
