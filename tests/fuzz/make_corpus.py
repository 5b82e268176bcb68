#!/usr/bin/env python3
"""Regenerates the seed corpus tests/fuzz/corpus/<target>/ from tests/data and tests/fixtures:
valid inputs (shrunk where the originals are large) plus a few malformed ones. Run from the repo root."""
import json, os, struct

R = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(R, "tests/fuzz/corpus")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def read(p):
    with open(os.path.join(R, p), "rb") as f:
        return f.read()


# ---- safetensors
def st(tensors, meta=None, pad=True, extra=b""):
    """tensors: [(name, dtype, shape, bytes)] in data order."""
    h, off, buf = {}, 0, b""
    if meta is not None:
        h["__metadata__"] = meta
    for name, dt, shape, data in tensors:
        h[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
        buf += data
    hj = json.dumps(h, separators=(",", ":")).encode()
    if pad:
        hj += b" " * (-len(hj) % 8)
    return struct.pack("<Q", len(hj)) + hj + buf + extra


put("safetensors", "reference", read("tests/data/safetensors/reference.safetensors"))
put("safetensors", "reference_nometa", read("tests/data/safetensors/reference_nometa.safetensors"))
f32 = struct.pack("<4f", 1, 2, 3, 4)
put("safetensors", "f32_bf16_meta", st([("w", "F32", [2, 2], f32), ("b", "BF16", [2], b"\x80\x3f\x00\x40")], {"format": "pt"}))
put("safetensors", "all_dtypes", st([("bool", "BOOL", [2], b"\x00\x01"), ("f4", "F4", [2], b"\x12"), ("f6", "F6_E2M3", [4], b"\x01\x02\x03"),
                                     ("u8", "U8", [1], b"\x07"), ("f8", "F8_E4M3", [2], b"\x38\x40"), ("i16", "I16", [1], b"\x01\x00"),
                                     ("f16", "F16", [1], b"\x00\x3c"), ("i32", "I32", [1], b"\x01\x00\x00\x00"),
                                     ("c64", "C64", [1], b"\x00" * 8), ("i64", "I64", [1], b"\x02" + b"\x00" * 7),
                                     ("u64", "U64", [1], b"\x03" + b"\x00" * 7), ("f64", "F64", [1], b"\x00" * 8)]))
put("safetensors", "scalar_and_empty", st([("s", "F32", [], b"\x00\x00\x80\x3f"), ("e", "F32", [0, 3], b""), ("z", "I8", [0], b"")]))
put("safetensors", "empty_header", st([]))
put("safetensors", "unpadded", st([("w", "F32", [1], b"\x00\x00\x80\x3f")], pad=False))
put("safetensors", "bad_truncated", st([("w", "F32", [2, 2], f32)])[:-3])
put("safetensors", "bad_trailing", st([("w", "F32", [1], f32[:4])], extra=b"junk"))
put("safetensors", "bad_overlap", struct.pack("<Q", 96) + json.dumps({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
    "b": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]}}).encode().ljust(96) + b"\x00" * 6)
put("safetensors", "bad_header_len", struct.pack("<Q", 1 << 40) + b"{}")
put("safetensors", "bad_json", struct.pack("<Q", 8) + b'{"a":{"d')

# ---- config
for fam in sorted(os.listdir(os.path.join(R, "tests/fixtures/models"))):
    for f in ("config.json", "config_v5.json", "generation_config.json"):
        p = os.path.join("tests/fixtures/models", fam, f)
        if os.path.exists(os.path.join(R, p)):
            put("config", f"{fam}_{f.replace('.json', '')}", read(p))
ref = json.loads(read("tests/data/models_config/hf_reference.json"))
for name, case in sorted(ref["cases"].items()):
    put("config", f"ref_{name}_v4", json.dumps(case["config_v4"], indent=1))
put("config", "bad_types", '{"model_type": "llama", "vocab_size": "x", "hidden_size": 64}')
put("config", "bad_heads", '{"model_type": "mistral", "vocab_size": 8, "hidden_size": 64, "intermediate_size": 8, '
    '"num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 3}')
put("config", "generation_full", '{"do_sample": true, "temperature": 0.6, "top_k": 20, "top_p": 0.95, "min_p": 0.0, '
    '"repetition_penalty": 1.1, "eos_token_id": [1, 2], "max_new_tokens": 64, "max_length": 128}')


# ---- tokenizer_load: shrunk real tokenizer.json files (+ NUL + tokenizer_config.json)
def shrink(path, n, config=None):
    j = json.loads(read(path))
    m = j["model"]
    vocab = {t: i for t, i in m["vocab"].items() if i < n}
    merges = []
    for mg in m["merges"]:
        a, b = mg.split(" ", 1) if isinstance(mg, str) else mg
        if a in vocab and b in vocab and a + b in vocab:
            merges.append(mg)
    m["vocab"], m["merges"] = vocab, merges
    nid = max(vocab.values()) + 1
    remap = {}
    for t in j["added_tokens"]:
        if t["id"] >= n:
            remap[t["id"]] = nid
            t["id"] = nid
            nid += 1
    pp = j.get("post_processor") or {}
    for v in (pp.get("special_tokens") or {}).values():
        v["ids"] = [remap.get(i, i) for i in v["ids"]]
    out = json.dumps(j, ensure_ascii=False, indent=1).encode()
    if config is not None:
        out += b"\0" + read(config)
    return out


put("tokenizer_load", "fixture_bytelevel", read("tests/fixtures/tokenizer/tokenizer.json") + b"\0" + read("tests/fixtures/tokenizer/tokenizer_config.json"))
put("tokenizer_load", "gpt2_small", shrink("tests/data/tokenizers/gpt2/tokenizer.json", 700, "tests/data/tokenizers/gpt2/tokenizer_config.json"))
put("tokenizer_load", "gpt2_hf5_small", shrink("tests/data/tokenizers/gpt2/tokenizer.hf5.json", 500))
put("tokenizer_load", "llama2_small", shrink("tests/data/tokenizers/llama2/tokenizer.json", 700, "tests/data/tokenizers/llama2/tokenizer_config.json"))
put("tokenizer_load", "qwen2_small", shrink("tests/data/tokenizers/qwen2/tokenizer.json", 700, "tests/data/tokenizers/qwen2/tokenizer_config.json"))
put("tokenizer_load", "tiktoken_small", b"\n".join(read("tests/data/tokenizers/llama3/tokenizer.model").split(b"\n")[:400]) + b"\n")
tiny = '{"added_tokens": [], "normalizer": null, "pre_tokenizer": %s, "post_processor": null, "decoder": null, "model": %s}'
model = '{"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}'
put("tokenizer_load", "tiny", tiny % ("null", model))
put("tokenizer_load", "tiny_pairs", tiny % ("null", model.replace('["a b"]', '[["a", "b"]]')))
put("tokenizer_load", "tiny_split", tiny % ('{"type": "Split", "pattern": {"Regex": "\\\\s+"}, "behavior": "Isolated", "invert": false}', model))
put("tokenizer_load", "tiny_digits_metaspace", tiny % ('{"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, '
    '{"type": "Metaspace", "replacement": "\\u2581", "prepend_scheme": "first", "split": false}]}', model))
put("tokenizer_load", "bad_merge", tiny % ("null", '{"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a c"]}'))
put("tokenizer_load", "bad_config", tiny % ("null", model) + '\0{"bos_token": 5, "chat_template": [{"name": "x"}]}')

# ---- tokenizer_encode: texts
inputs = json.loads(read("tests/data/tokenizers/refs/multilingual_inputs.json"))
for e in inputs[::4]:
    put("tokenizer_encode", e["id"], e["text"])
put("tokenizer_encode", "specials", "<s>Hello</s><pad> <unk>\n\n  \t x")
put("tokenizer_encode", "invalid_utf8", b"ok \xc3 \xed\xa0\x80 \xff")
put("tokenizer_encode", "bytes", bytes(range(1, 256)).decode("latin-1").encode("utf-8"))
put("tokenizer_encode", "shakespeare", read("tests/data/tokenizers/tinyshakespeare.txt")[:2000])

# ---- chat_template
d = "tests/data/chat_templates"
for f in sorted(os.listdir(os.path.join(R, d))) + ["features/" + g for g in sorted(os.listdir(os.path.join(R, d, "features")))]:
    if f.endswith(".jinja"):
        put("chat_template", f.replace("/", "_").replace(".jinja", ""), read(os.path.join(d, f)))
seen = set()
for c in json.loads(read(os.path.join(d, "expected.json")))["cases"]:
    if "source" in c and c["source"] not in seen:
        seen.add(c["source"])
        put("chat_template", "case_" + c["name"].replace("/", "_"), c["source"])
put("chat_template", "bad_unclosed", "{% for m in messages %}{{ m.content }")

# ---- jsonl: dataset rows (first rows of every format) and malformed files
def lines(p, n):
    return b"".join(read(p).splitlines(keepends=True)[:n])
put("jsonl", "text", lines("tests/data/datasets/wikisql/train.jsonl", 3))
put("jsonl", "prompt_completion", lines("tests/data/datasets/wwdc25/train.jsonl", 2))
put("jsonl", "messages_parts", lines("tests/data/datasets/llamafactory/v1_sft_demo.jsonl", 3))
put("jsonl", "alpaca_array", json.dumps(json.loads(read("tests/data/datasets/llamafactory/alpaca_en_demo.json"))[:3], indent=1))
put("jsonl", "sharegpt_tools", json.dumps(json.loads(read("tests/data/datasets/llamafactory/glaive_toolcall_en_demo.json"))[:2], indent=1))
put("jsonl", "messages_tools", json.dumps({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
    {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]},
    {"role": "tool", "content": "1"}, {"role": "assistant", "content": "done", "loss_weight": 0}],
    "tools": [{"type": "function", "function": {"name": "f"}}]}) + "\r\n\n" + json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}))
put("jsonl", "bom_crlf", b"\xef\xbb\xbf" + b'{"text": "a"}\r\n{"text": "b"}\r\n')
put("jsonl", "bad_mixed", '{"text": "a"}\n{"prompt": "p", "completion": "c"}\n')
put("jsonl", "bad_json", '{"text": "a"\n')
