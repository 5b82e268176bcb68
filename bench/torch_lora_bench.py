#!/usr/bin/env python3
# Copied from ../shared/bench/torch_lora_bench.py (the performance anchor, docs/reference-fixtures.md) so
# that bench/train_bench.py runs it on any machine; keep it identical to the shared copy.
"""Reference LoRA training step in plain PyTorch (CPU): a Llama-architecture
decoder with LoRA on every linear projection, base weights frozen.
Prints tokens/s of forward+backward+AdamW over the measured steps, and peak RSS.
Used as the side-by-side performance anchor for `ft train`.
"""
import argparse, json, math, resource, time
import torch, torch.nn as nn, torch.nn.functional as F, torch.utils.checkpoint

p = argparse.ArgumentParser()
p.add_argument("--config", default=None, help="HF config.json (Llama-like); default SmolLM2-135M shape")
p.add_argument("--batch", type=int, default=4)
p.add_argument("--seq", type=int, default=256)
p.add_argument("--rank", type=int, default=8)
p.add_argument("--steps", type=int, default=5)
p.add_argument("--warmup", type=int, default=1)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
p.add_argument("--checkpoint", action="store_true")
p.add_argument("--layers", type=int, default=None)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
cfg = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
           num_key_value_heads=3, vocab_size=49152, rms_norm_eps=1e-5, rope_theta=100000.0,
           tie_word_embeddings=True)
if a.config:
    cfg.update(json.load(open(a.config)))
if a.layers:
    cfg["num_hidden_layers"] = a.layers
H, I, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
nh, nkv, V = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["vocab_size"]
hd = cfg.get("head_dim") or H // nh

class LoRALinear(nn.Module):
    def __init__(s, i, o, r):
        super().__init__()
        s.w = nn.Parameter(torch.randn(o, i) * 0.02, requires_grad=False)
        s.A = nn.Parameter(torch.randn(r, i) / math.sqrt(i)); s.B = nn.Parameter(torch.zeros(o, r))
        s.scale = 2.0
    def forward(s, x):
        return F.linear(x, s.w) + F.linear(F.linear(x, s.A), s.B) * s.scale

class RMS(nn.Module):
    def __init__(s, d):
        super().__init__(); s.w = nn.Parameter(torch.ones(d), requires_grad=False)
    def forward(s, x):
        xf = x.float(); return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + cfg["rms_norm_eps"])).to(x.dtype) * s.w

def rope(x, cos, sin):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return x * cos + torch.cat((-x2, x1), -1) * sin

class Block(nn.Module):
    def __init__(s):
        super().__init__()
        r = a.rank
        s.n1, s.n2 = RMS(H), RMS(H)
        s.q, s.k, s.v, s.o = LoRALinear(H, nh*hd, r), LoRALinear(H, nkv*hd, r), LoRALinear(H, nkv*hd, r), LoRALinear(nh*hd, H, r)
        s.g, s.u, s.d = LoRALinear(H, I, r), LoRALinear(H, I, r), LoRALinear(I, H, r)
    def forward(s, x, cos, sin):
        B, T, _ = x.shape
        h = s.n1(x)
        q = s.q(h).view(B, T, nh, hd).transpose(1, 2); k = s.k(h).view(B, T, nkv, hd).transpose(1, 2)
        v = s.v(h).view(B, T, nkv, hd).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        k = k.repeat_interleave(nh // nkv, 1); v = v.repeat_interleave(nh // nkv, 1)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True) if hasattr(F, "scaled_dot_product_attention") else \
            (torch.softmax((q @ k.transpose(-1, -2)) / math.sqrt(hd) + torch.full((T, T), float("-inf")).triu(1), -1) @ v)
        x = x + s.o(att.transpose(1, 2).reshape(B, T, nh*hd))
        h = s.n2(x)
        return x + s.d(F.silu(s.g(h)) * s.u(h))

class Model(nn.Module):
    def __init__(s):
        super().__init__()
        s.emb = nn.Parameter(torch.randn(V, H) * 0.02, requires_grad=False)
        s.blocks = nn.ModuleList(Block() for _ in range(L)); s.norm = RMS(H)
    def forward(s, ids):
        T = ids.shape[1]
        inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd))
        f = torch.outer(torch.arange(T).float(), inv); f = torch.cat((f, f), -1)
        cos, sin = f.cos(), f.sin()
        x = s.emb[ids]
        for b in s.blocks:
            x = torch.utils.checkpoint.checkpoint(b, x, cos, sin, use_reentrant=False) if a.checkpoint else b(x, cos, sin)
        return F.linear(s.norm(x), s.emb)

m = Model()
params = [p_ for p_ in m.parameters() if p_.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-4)
ids = torch.randint(0, V, (a.batch, a.seq + 1))
def step():
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.dtype == "bf16"):
        logits = m(ids[:, :-1])
    loss = F.cross_entropy(logits.float().reshape(-1, V), ids[:, 1:].reshape(-1))
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    return loss.item()
for _ in range(a.warmup): step()
t = time.perf_counter()
for _ in range(a.steps): step()
dt = time.perf_counter() - t
tok = a.batch * a.seq * a.steps
nparam = sum(p_.numel() for p_ in m.parameters())
print(json.dumps(dict(engine=f"torch-{torch.__version__}", dtype=a.dtype, checkpoint=a.checkpoint, layers=L,
                      params=nparam, lora_params=sum(p_.numel() for p_ in params), batch=a.batch, seq=a.seq,
                      tokens_per_s=round(tok / dt, 1), step_s=round(dt / a.steps, 3),
                      peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))))
