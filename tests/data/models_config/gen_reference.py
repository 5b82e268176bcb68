#!/usr/bin/env python3
"""Reference data for tests/test_config.cpp and tests/test_safetensors.cpp.

Run where transformers (v5) + safetensors + torch are installed (no downloads needed):
    python3 gen_reference.py OUT_DIR
Writes:
  OUT_DIR/hf_reference.json       per case: the v4-style config.json we wrote, the config.json that
                                  transformers' save_pretrained writes back (v5 style), the values
                                  transformers derives (layer types, windows, head_dim, rope parameters)
                                  and the rotary embedding module's inv_freq / attention scaling / cos / sin.
  OUT_DIR/reference.safetensors   written by safetensors.torch.save_file (byte-exact layout reference)
  OUT_DIR/reference_nometa.safetensors
"""
import json
import os
import sys
import tempfile

import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoConfig

out = sys.argv[1]
os.makedirs(out, exist_ok=True)


# ------------------------------------------------------------------ safetensors reference files
def seq(shape, dtype):
    n = 1
    for d in shape:
        n *= d
    return (torch.arange(n, dtype=torch.float64) * 0.5 - 3.0).reshape(shape).to(dtype)


tensors = {
    "model.embed_tokens.weight": seq((4, 3), torch.bfloat16),
    "model.norm.weight": seq((3,), torch.float32),
    "lm_head.weight": seq((2, 3), torch.float16),
    "ids": torch.arange(5, dtype=torch.int64),
    "a.mask": torch.tensor([True, False, True]),
    "b.u8": torch.arange(7, dtype=torch.uint8),
    "c.i32": torch.arange(4, dtype=torch.int32).reshape(2, 2) - 2,
    "d.f64": seq((2,), torch.float64),
    "e.scalar": torch.tensor(1.5, dtype=torch.float32),
    "f.empty": torch.zeros((0, 4), dtype=torch.float32),
}
save_file(tensors, os.path.join(out, "reference.safetensors"), metadata={"format": "pt"})
save_file({"x": seq((3, 5), torch.bfloat16), "y": seq((5,), torch.float32)},
          os.path.join(out, "reference_nometa.safetensors"))

# ------------------------------------------------------------------ config + rope cases
base = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, rms_norm_eps=1e-5, max_position_embeddings=256, tie_word_embeddings=False,
            torch_dtype="bfloat16")


def mk(mt, arch, **kw):
    d = dict(base)
    d.update(model_type=mt, architectures=[arch])
    d.update(kw)
    return {k: v for k, v in d.items() if v != "__drop__"}


long_f = [1.0 + 0.25 * i for i in range(12)]
short_f = [1.0 + 0.01 * i for i in range(12)]
cases = {
    "llama_default": mk("llama", "LlamaForCausalLM", rope_theta=10000.0, bos_token_id=1, eos_token_id=2),
    "llama31_llama3": mk("llama", "LlamaForCausalLM", hidden_size=256, num_attention_heads=2, num_key_value_heads=1,
                         head_dim=128, rope_theta=500000.0, max_position_embeddings=131072,
                         rope_scaling={"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 8192, "rope_type": "llama3"},
                         attention_bias=True, mlp_bias=True, bos_token_id=128000,
                         eos_token_id=[128001, 128008, 128009], tie_word_embeddings=True),
    "llama_linear": mk("llama", "LlamaForCausalLM", rope_theta=10000.0, rope_scaling={"type": "linear", "factor": 4.0}),
    "llama_dynamic": mk("llama", "LlamaForCausalLM", rope_theta=10000.0, max_position_embeddings=64,
                        rope_scaling={"type": "dynamic", "factor": 2.0}),
    "llama_yarn_full": mk("llama", "LlamaForCausalLM", rope_theta=10000.0,
                          rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
                                        "attention_factor": 1.25, "beta_fast": 8, "beta_slow": 2, "truncate": False}),
    "qwen2_yarn": mk("qwen2", "Qwen2ForCausalLM", hidden_size=256, num_attention_heads=2, num_key_value_heads=1,
                     rope_theta=1000000.0, max_position_embeddings=131072, use_sliding_window=False,
                     sliding_window=4096, max_window_layers=28, tie_word_embeddings=True,
                     rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},
                     bos_token_id=151643, eos_token_id=151645),
    "qwen2_sliding": mk("qwen2", "Qwen2ForCausalLM", num_hidden_layers=3, rope_theta=1000000.0,
                        use_sliding_window=True, sliding_window=8, max_window_layers=1),
    "qwen3_yarn_mscale": mk("qwen3", "Qwen3ForCausalLM", head_dim=32, rope_theta=1000000.0, attention_bias=True,
                            max_position_embeddings=1024,
                            rope_scaling={"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 128,
                                          "mscale": 1.0, "mscale_all_dim": 0.5}),
    "qwen3_layer_types": mk("qwen3", "Qwen3ForCausalLM", num_hidden_layers=4, head_dim=32, rope_theta=1000000.0,
                            use_sliding_window=True, sliding_window=12, max_window_layers=2,
                            layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"]),
    "mistral_sw": mk("mistral", "MistralForCausalLM", head_dim=32, rope_theta=1000000.0, sliding_window=16),
    "mistral_nosw": mk("mistral", "MistralForCausalLM", rope_theta=1000000.0, sliding_window=None),
    "gemma": mk("gemma", "GemmaForCausalLM", head_dim=32, num_key_value_heads=1, hidden_act="gelu",
                rope_theta=10000.0, tie_word_embeddings=True, pad_token_id=0, eos_token_id=1, bos_token_id=2,
                rms_norm_eps=1e-6),
    "gemma2": mk("gemma2", "Gemma2ForCausalLM", num_hidden_layers=3, head_dim=32, hidden_act="gelu_pytorch_tanh",
                 hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=24, sliding_window=16,
                 final_logit_softcapping=30.0, attn_logit_softcapping=50.0, rope_theta=10000.0,
                 tie_word_embeddings=True, rms_norm_eps=1e-6),
    "gemma3_text": mk("gemma3_text", "Gemma3ForCausalLM", num_hidden_layers=6, head_dim=32, query_pre_attn_scalar=32,
                      rope_theta=1000000.0, rope_local_base_freq=10000.0, rope_scaling=None, sliding_window=16,
                      sliding_window_pattern=3, tie_word_embeddings=True, rms_norm_eps=1e-6),
    # the real gemma-3-4b text_config (sparse: everything else takes Gemma3TextConfig defaults)
    "gemma3_mm": {"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"],
                  "boi_token_index": 255999, "eoi_token_index": 256000, "eos_token_id": [1, 106],
                  "image_token_index": 262144, "mm_tokens_per_image": 256, "torch_dtype": "bfloat16",
                  "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
                                  "num_hidden_layers": 34, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                                  "sliding_window": 1024},
                  "vision_config": {"hidden_size": 1152, "image_size": 896, "intermediate_size": 4304,
                                    "model_type": "siglip_vision_model", "num_attention_heads": 16,
                                    "num_hidden_layers": 27, "patch_size": 14, "vision_use_head": False}},
    "phi3_4k": mk("phi3", "Phi3ForCausalLM", hidden_size=96, num_key_value_heads=4, vocab_size=32064,
                  max_position_embeddings=4096, original_max_position_embeddings=4096, sliding_window=2047,
                  rope_theta=10000.0, rope_scaling=None, bos_token_id=1, eos_token_id=32000, pad_token_id=32000),
    "phi35_longrope": mk("phi3", "Phi3ForCausalLM", hidden_size=96, num_key_value_heads=4, vocab_size=32064,
                         max_position_embeddings=131072, original_max_position_embeddings=4096,
                         sliding_window=262144, rope_theta=10000.0,
                         rope_scaling={"type": "longrope", "short_factor": short_f, "long_factor": long_f}),
    "phi4mini_partial": mk("phi3", "Phi3ForCausalLM", hidden_size=128, num_key_value_heads=2, vocab_size=200064,
                           max_position_embeddings=131072, original_max_position_embeddings=4096,
                           partial_rotary_factor=0.75, tie_word_embeddings=True, rope_theta=10000.0,
                           sliding_window=None,
                           rope_scaling={"rope_type": "longrope", "short_factor": short_f, "long_factor": long_f}),
}
# Note: transformers 5.17 rejects the legacy Phi-3 name "su" (standardize_rope_params runs before the rename
# to longrope, so original_max_position_embeddings is never filled in); ft accepts it.

ROTARY = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3", "gemma": "Gemma",
          "gemma2": "Gemma2", "gemma3_text": "Gemma3", "phi3": "Phi3"}


def f32list(t):
    return [float(x) for x in t.detach().to(torch.float32).flatten().tolist()]


result = {"transformers": transformers.__version__, "torch": torch.__version__, "cases": {}}
for name, v4 in cases.items():
    with tempfile.TemporaryDirectory() as d1, tempfile.TemporaryDirectory() as d2:
        with open(os.path.join(d1, "config.json"), "w") as f:
            json.dump(v4, f, indent=2)
        cfg = AutoConfig.from_pretrained(d1)
        cfg.save_pretrained(d2)
        with open(os.path.join(d2, "config.json")) as f:
            v5_text = f.read()
    tc = cfg.text_config if hasattr(cfg, "text_config") else cfg
    mt = tc.model_type
    derived = {
        "model_type": mt,
        "vocab_size": tc.vocab_size, "hidden_size": tc.hidden_size, "intermediate_size": tc.intermediate_size,
        "num_hidden_layers": tc.num_hidden_layers, "num_attention_heads": tc.num_attention_heads,
        "num_key_value_heads": tc.num_key_value_heads,
        "head_dim": getattr(tc, "head_dim", None) or tc.hidden_size // tc.num_attention_heads,
        "rms_norm_eps": tc.rms_norm_eps, "max_position_embeddings": tc.max_position_embeddings,
        "tie_word_embeddings": bool(getattr(cfg, "tie_word_embeddings", getattr(tc, "tie_word_embeddings", False))),
        "layer_types": getattr(tc, "layer_types", None),
        "sliding_window": getattr(tc, "sliding_window", None),
        "hidden_act": getattr(tc, "hidden_activation", None) if mt in ("gemma2", "gemma3_text") else tc.hidden_act,
        "query_pre_attn_scalar": getattr(tc, "query_pre_attn_scalar", None),
        "attn_logit_softcapping": getattr(tc, "attn_logit_softcapping", None),
        "final_logit_softcapping": getattr(tc, "final_logit_softcapping", None),
        "attention_bias": getattr(tc, "attention_bias", None), "mlp_bias": getattr(tc, "mlp_bias", None),
        "bos_token_id": getattr(tc, "bos_token_id", None), "eos_token_id": getattr(tc, "eos_token_id", None),
        "pad_token_id": getattr(tc, "pad_token_id", None),
        "top_eos_token_id": getattr(cfg, "eos_token_id", None),
        "rope_parameters": tc.rope_parameters,
    }
    mod = getattr(transformers.models, {"gemma3_text": "gemma3"}.get(mt, mt))
    modeling = getattr(mod, "modeling_" + {"gemma3_text": "gemma3"}.get(mt, mt))
    Rot = getattr(modeling, ROTARY[mt] + "RotaryEmbedding")
    ltypes = sorted(set(tc.layer_types)) if mt == "gemma3_text" else [None]
    rope = {}
    for lt in ltypes:
        key = lt or "all"
        rp = tc.rope_parameters[lt] if lt else tc.rope_parameters
        rtype = rp["rope_type"]
        sets = [("short", [0, 1, 2, 3, 7, 31])]
        if rtype == "dynamic":
            sets.append(("long", [0, 1, 5, 63, 64, 99]))
        if rtype == "longrope":
            sets.append(("long", [0, 1, 5, 100, 4095, 5000]))
        entry = {}
        for tag, pos in sets:
            rot = Rot(tc)  # fresh module: dynamic/longrope state starts at the original frequencies
            x = torch.zeros(1, dtype=torch.float32)
            pid = torch.tensor([pos], dtype=torch.long)
            with torch.no_grad():
                cos, sin = rot(x, pid, lt) if lt else rot(x, pid)
            invname = f"{lt}_inv_freq" if lt else "inv_freq"
            scname = f"{lt}_attention_scaling" if lt else "attention_scaling"
            half = cos.shape[-1] // 2
            entry[tag] = {"positions": pos, "seq_len": max(pos) + 1, "inv_freq": f32list(getattr(rot, invname)),
                          "attention_scaling": float(getattr(rot, scname)), "rot_dim": int(cos.shape[-1]),
                          "cos": f32list(cos[0, :, :half]), "sin": f32list(sin[0, :, :half]),
                          "cos_second_half_equal": bool(torch.equal(cos[..., :half], cos[..., half:]))}
        rope[key] = entry
    result["cases"][name] = {"config_v4": v4, "config_v5": v5_text, "derived": derived, "rope": rope}

with open(os.path.join(out, "hf_reference.json"), "w") as f:
    json.dump(result, f, indent=1, default=str)
print("ok", len(result["cases"]), "cases")
