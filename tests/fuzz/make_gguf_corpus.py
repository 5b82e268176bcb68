import json, struct, os, shutil, numpy as np, subprocess, sys
ft = sys.argv[1]; fix = sys.argv[2]; out = sys.argv[3]
os.makedirs(out, exist_ok=True)
def st(path, tensors):
    hdr = {}; off = 0; blobs = []
    for n, a in tensors.items():
        a = np.ascontiguousarray(a, dtype=np.float32); b = a.tobytes()
        hdr[n] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}; off += len(b); blobs.append(b)
    h = json.dumps(hdr).encode(); h += b' ' * ((8 - len(h) % 8) % 8)
    open(path, 'wb').write(struct.pack('<Q', len(h)) + h + b''.join(blobs))
rng = np.random.default_rng(0)
def model(name, cfg, extra):
    d = f"/tmp/fz/{name}"; os.makedirs(d, exist_ok=True)
    for f in ["tokenizer.json", "tokenizer_config.json"]: shutil.copy(f"{fix}/{f}", d)
    base = {"vocab_size": 512, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
            "num_key_value_heads": 1, "head_dim": 4, "rms_norm_eps": 1e-5, "max_position_embeddings": 64, "rope_theta": 10000.0,
            "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"}
    base.update(cfg); json.dump(base, open(f"{d}/config.json", "w"))
    t = {"model.embed_tokens.weight": rng.normal(0, .2, (512, 8)), "model.norm.weight": np.ones(8)}
    t.update(extra); st(f"{d}/model.safetensors", t); return d
L = "model.layers.0."
std = {L+"input_layernorm.weight": np.ones(8), L+"post_attention_layernorm.weight": np.ones(8),
       L+"self_attn.q_proj.weight": rng.normal(0,.1,(8,8)), L+"self_attn.k_proj.weight": rng.normal(0,.1,(4,8)),
       L+"self_attn.v_proj.weight": rng.normal(0,.1,(4,8)), L+"self_attn.o_proj.weight": rng.normal(0,.1,(8,8)),
       L+"mlp.gate_proj.weight": rng.normal(0,.1,(16,8)), L+"mlp.up_proj.weight": rng.normal(0,.1,(16,8)),
       L+"mlp.down_proj.weight": rng.normal(0,.1,(8,16))}
d1 = model("llama", {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, std)
g2 = dict(std); g2[L+"pre_feedforward_layernorm.weight"] = np.zeros(8); g2[L+"post_feedforward_layernorm.weight"] = np.zeros(8)
d2 = model("gemma2", {"model_type": "gemma2", "hidden_activation": "gelu_pytorch_tanh", "sliding_window": 4, "query_pre_attn_scalar": 4,
                      "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0}, g2)
q3 = dict(std); q3[L+"self_attn.q_norm.weight"] = np.ones(4); q3[L+"self_attn.k_norm.weight"] = np.ones(4)
d3 = model("qwen3", {"model_type": "qwen3"}, q3)
for d, n, t in [(d1, "tiny_llama_f16", "f16"), (d1, "tiny_llama_f32", "f32"), (d2, "tiny_gemma2_bf16", "bf16"), (d3, "tiny_qwen3_f16", "f16")]:
    subprocess.run([ft, "save", "--model", d, "--format", "gguf", "--outtype", t, "--out", f"{out}/{n}"], check=True)
# metadata only, and a quantised-tensor container
def kv_str(k, v): kb = k.encode(); vb = v.encode(); return struct.pack('<Q', len(kb)) + kb + struct.pack('<IQ', 8, len(vb)) + vb
hdr = b'GGUF' + struct.pack('<IQQ', 3, 0, 1) + kv_str("general.architecture", "llama")
open(f"{out}/metadata_only", "wb").write(hdr)
