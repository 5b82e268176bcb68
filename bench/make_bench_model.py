#!/usr/bin/env python3
"""Random SmolLM2-135M-shaped (or, with --shape 1b, Llama-1B-shaped; --shape 8b, Llama-3.1-8B-shaped) Llama model directory for the training benchmark (bench/train_bench.py).

Writes DIR/config.json, DIR/model.safetensors (HF layout, random N(0, 0.02) weights, unit norms,
tied embeddings) and the GPT-2 tokenizer files, plus DIR/train.jsonl: text rows long enough that
every row is truncated to --max-seq-length tokens (so every batch is exactly batch x seq tokens).
Only numpy is needed (without it, a slower pure-Python fallback tiles one random 1 MiB block of
N(0, 0.02) values over the matrices: same shapes and bytes per token, for speed benchmarks). The values are rounded to bfloat16 first, so the float32 and bfloat16
checkpoints (--dtype) hold the same numbers.

  python3 bench/make_bench_model.py --out /tmp/ftbench/model-f32 --dtype float32
"""
import argparse, json, math, os, random, shutil, struct
try:
    import numpy as np
except ImportError:  # pure-Python fallback (see the top)
    np = None

p = argparse.ArgumentParser()
p.add_argument("--out", required=True)
p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
p.add_argument("--tokenizer", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "tokenizers", "gpt2"))
p.add_argument("--vocab", type=int, default=None, help="default: 50304 (GPT-2's 50257 ids padded to a multiple of 64); 128256 for 8b")
p.add_argument("--layers", type=int, default=None, help="default: 30 (smollm2-135m), 16 (1b), 32 (8b)")
p.add_argument("--shape", default="smollm2-135m", choices=["smollm2-135m", "1b", "8b"],
               help="smollm2-135m: hidden 576, MLP 1536, 9/3 heads; 1b: Llama-3.2-1B-like, hidden 2048, MLP 8192, 32/8 heads; "
                    "8b: Llama-3.1-8B-like, hidden 4096, MLP 14336, 32/8 heads, vocabulary 128256, untied LM head (16 GB in bf16)")
p.add_argument("--rows", type=int, default=64, help="training rows in train.jsonl")
p.add_argument("--seed", type=int, default=0)
a = p.parse_args()

if a.shape == "8b":
    H, I, L, NH, NKV, V = 4096, 14336, a.layers or 32, 32, 8, a.vocab or 128256
elif a.shape == "1b":
    H, I, L, NH, NKV, V = 2048, 8192, a.layers or 16, 32, 8, a.vocab or 50304
else:
    H, I, L, NH, NKV, V = 576, 1536, a.layers or 30, 9, 3, a.vocab or 50304
TIED = a.shape != "8b"
D = H // NH
cfg = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H, "intermediate_size": I,
    "num_hidden_layers": L, "num_attention_heads": NH, "num_key_value_heads": NKV, "head_dim": D,
    "vocab_size": V, "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "tie_word_embeddings": TIED,
    "hidden_act": "silu", "max_position_embeddings": 8192, "attention_bias": False, "mlp_bias": False,
    "bos_token_id": 50256, "eos_token_id": 50256, "torch_dtype": a.dtype,
}
os.makedirs(a.out, exist_ok=True)
with open(os.path.join(a.out, "config.json"), "w") as f:
    json.dump(cfg, f, indent=1)
for n in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copyfile(os.path.join(a.tokenizer, n), os.path.join(a.out, n))

rng = np.random.default_rng(a.seed) if np else random.Random(a.seed)
tensors = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,)}
if not TIED:
    tensors["lm_head.weight"] = (V, H)
for i in range(L):
    pre = f"model.layers.{i}."
    tensors.update({pre + "input_layernorm.weight": (H,), pre + "post_attention_layernorm.weight": (H,),
                    pre + "self_attn.q_proj.weight": (NH * D, H), pre + "self_attn.k_proj.weight": (NKV * D, H),
                    pre + "self_attn.v_proj.weight": (NKV * D, H), pre + "self_attn.o_proj.weight": (H, NH * D),
                    pre + "mlp.gate_proj.weight": (I, H), pre + "mlp.up_proj.weight": (I, H),
                    pre + "mlp.down_proj.weight": (H, I)})

def bf16_bits(x):  # round-to-nearest-even float32 -> bfloat16 bits
    u = x.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)

# safetensors: header JSON, tensors in name order, 8-byte aligned header.
names = sorted(tensors)
esz = 4 if a.dtype == "float32" else 2
header, off = {}, 0
for n in names:
    nb = math.prod(tensors[n]) * esz
    header[n] = {"dtype": "F32" if esz == 4 else "BF16", "shape": list(tensors[n]), "data_offsets": [off, off + nb]}
    off += nb
hj = json.dumps(header, separators=(",", ":")).encode()
hj += b" " * ((8 - len(hj) % 8) % 8)
with open(os.path.join(a.out, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(hj)) + hj)
    if np is None:  # one random block of bf16 values (as bits), tiled with a rotating offset
        blk = [struct.unpack("<I", struct.pack("<f", rng.gauss(0.0, 0.02)))[0] >> 16 for _ in range(1 << 19)]
        blk = struct.pack(f"<{len(blk)}" + ("H" if esz == 2 else "I"), *(b if esz == 2 else b << 16 for b in blk))
        one = struct.pack("<H", 0x3F80) if esz == 2 else struct.pack("<f", 1.0)
    for k, n in enumerate(names):
        shape = tensors[n]
        if np is None:
            nb = math.prod(shape) * esz
            if len(shape) == 1:
                f.write(one * math.prod(shape))
                continue
            rot = (k * 4096 * esz) % len(blk)
            src = blk[rot:] + blk[:rot]
            f.write((src * (nb // len(src) + 1))[:nb])
            continue
        x = np.ones(shape, np.float32) if len(shape) == 1 else rng.standard_normal(shape, np.float32) * np.float32(0.02)
        b = bf16_bits(x)
        f.write(b.tobytes() if esz == 2 else (b.astype(np.uint32) << 16).tobytes())

# Data: rows of random dictionary words, longer than 1024 tokens.
words = ("the of and to in is was for that with as on by at from his her an which or are this be had "
         "not have were but their one all its also they after has first new two been who more other "
         "time into during over when only year between some these most would there then city under "
         "world three later while about both where state since school through music part such many "
         "game well series film years season members known team national against people called").split()
with open(os.path.join(a.out, "train.jsonl"), "w") as f:
    for r in range(a.rows):
        f.write(json.dumps({"text": " ".join(rng.choice(words, 1400) if np else [rng.choice(words) for _ in range(1400)])}) + "\n")
print(json.dumps({"out": a.out, "dtype": a.dtype, "params": int(sum(math.prod(s) for s in tensors.values()))}))
