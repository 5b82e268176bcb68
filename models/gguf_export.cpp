// Model -> GGUF (see gguf_export.h). The conventions follow llama.cpp's convert_hf_to_gguf.py and
// its model loaders (src/models/*.cpp); tests/test_gguf_llama.py checks every family against
// llama.cpp itself.
#include "models/gguf_export.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <nlohmann/json.hpp>
#include <tbb/parallel_for.h>

#include "data/tokenizer.h"
#include "models/gguf_load.h"
#include "models/gguf_quant.h"
#include "models/rope.h"

namespace ft {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string gguf_arch(const ModelConfig& c) {
  const std::string& t = c.model_type;
  if (t == "llama" || t == "mistral") return "llama";
  if (t == "qwen2" || t == "qwen3" || t == "gemma" || t == "gemma2" || t == "phi3") return t;
  if (t == "gemma3_text" || t == "gemma3") return "gemma3";
  throw Error(cat("GGUF: model_type '", t, "' has no llama.cpp architecture that ft maps to"));
}

bool gguf_permutes_qk(const ModelConfig& c) { return gguf_arch(c) == "llama"; }

double gguf_query_fold(const ModelConfig& c) {
  double want = c.attn_scale > 0 ? c.attn_scale : 1.0 / std::sqrt(double(c.head_dim));
  return want * std::sqrt(double(c.head_dim));
}

std::string gguf_tensor_base(const ModelConfig& c, const std::string& hf) {
  std::string pre = c.weight_prefix + "layers.";
  if (hf.rfind(pre, 0) != 0) return "";
  size_t dot = hf.find('.', pre.size());
  if (dot == std::string::npos) return "";
  std::string layer = hf.substr(pre.size(), dot - pre.size()), rest = hf.substr(dot + 1);
  static const std::map<std::string, std::string> names = {
      {"self_attn.q_proj", "attn_q"},       {"self_attn.k_proj", "attn_k"},     {"self_attn.v_proj", "attn_v"},
      {"self_attn.o_proj", "attn_output"},  {"self_attn.qkv_proj", "attn_qkv"}, {"mlp.gate_proj", "ffn_gate"},
      {"mlp.up_proj", "ffn_up"},            {"mlp.gate_up_proj", "ffn_up"},     {"mlp.down_proj", "ffn_down"},
      {"self_attn.q_norm", "attn_q_norm"},  {"self_attn.k_norm", "attn_k_norm"}, {"input_layernorm", "attn_norm"},
      {"pre_feedforward_layernorm", "ffn_norm"}, {"post_feedforward_layernorm", "post_ffw_norm"}};
  if (rest == "post_attention_layernorm") return "blk." + layer + (c.sandwich_norms ? ".post_attention_norm" : ".ffn_norm");
  auto it = names.find(rest);
  return it == names.end() ? "" : "blk." + layer + "." + it->second;
}

std::vector<float> gguf_permute_rows(const std::vector<float>& w, int64_t rows, int64_t cols, int64_t n_head, bool inverse) {
  FT_CHECK(n_head > 0 && rows % (2 * n_head) == 0, "GGUF q/k permutation: ", rows, " rows do not split into ", n_head,
           " heads of rotary pairs");
  const int64_t hd = rows / n_head, half = hd / 2;
  std::vector<float> o(w.size());
  for (int64_t h = 0; h < n_head; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t j = 0; j < 2; ++j) {
        int64_t inter = h * hd + 2 * i + j, rot = h * hd + j * half + i;  // llama.cpp row, HF row
        int64_t dst = inverse ? rot : inter, src = inverse ? inter : rot;
        std::copy(w.begin() + src * cols, w.begin() + (src + 1) * cols, o.begin() + dst * cols);
      }
  return o;
}

std::vector<int64_t> gguf_unpermute_order(int64_t rows, int64_t n_head) {
  FT_CHECK(n_head > 0 && rows % (2 * n_head) == 0, "GGUF q/k permutation: ", rows, " rows do not split into ", n_head,
           " heads of rotary pairs");
  const int64_t hd = rows / n_head, half = hd / 2;
  std::vector<int64_t> o(static_cast<size_t>(rows));
  for (int64_t h = 0; h < n_head; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t j = 0; j < 2; ++j) o[size_t(h * hd + j * half + i)] = h * hd + 2 * i + j;  // HF row <- llama.cpp row
  return o;
}

namespace {

std::vector<float> floats(const Tensor& t) { return t.detach().contiguous().to(DType::F32).to_vector(); }

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

json read_json(const fs::path& p) {
  json j = json::parse(read_text(p), nullptr, false);
  FT_CHECK(!j.is_discarded(), p.string(), ": not valid JSON");
  return j;
}

// llama.cpp's tokenizer.ggml.pre name for a byte-level BPE pre-tokenizer (tokenizer.json), or "".
std::string pre_name(const json& pre) {
  static const std::string llama3 =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  static const std::string qwen2 =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  if (!pre.is_object()) return "";
  std::string type = pre.value("type", "");
  auto bytelevel_regex = [](const json& p) { return p.value("type", "") == "ByteLevel" && p.value("use_regex", true); };
  if (bytelevel_regex(pre)) return "gpt-2";
  if (type != "Sequence" || !pre.contains("pretokenizers") || !pre["pretokenizers"].is_array()) return "";
  const json& seq = pre["pretokenizers"];
  if (seq.size() == 2 && seq[0].value("type", "") == "Digits" && seq[0].value("individual_digits", false) && bytelevel_regex(seq[1]))
    return "smollm";
  if (seq.size() == 2 && seq[0].value("type", "") == "Split" && seq[1].value("type", "") == "ByteLevel" &&
      !seq[1].value("use_regex", true) && seq[0].contains("pattern") && seq[0]["pattern"].contains("Regex")) {
    std::string re = seq[0]["pattern"]["Regex"].get<std::string>();
    if (re == llama3) return "llama-bpe";
    if (re == qwen2) return "qwen2";
  }
  return "";
}

bool contains_type(const json& j, const std::string& type) {
  if (j.is_object()) {
    if (j.value("type", "") == type) return true;
    for (auto& [k, v] : j.items())
      if (contains_type(v, type)) return true;
  } else if (j.is_array()) {
    for (auto& v : j)
      if (contains_type(v, type)) return true;
  }
  return false;
}

}  // namespace

void gguf_add_tokenizer(GgufWriter& w, const std::string& dir, int64_t n_vocab, std::vector<std::string>& notes) {
  fs::path tj = fs::path(dir) / "tokenizer.json";
  FT_CHECK(fs::exists(tj), dir, ": GGUF export needs tokenizer.json (tiktoken tokenizer.model files are not converted yet)");
  json t = read_json(tj);
  FT_CHECK(t.contains("model") && t["model"].is_object(), tj.string(), ": no 'model' object");
  const json& model = t["model"];
  FT_CHECK(model.value("type", "BPE") == "BPE", tj.string(), ": tokenizer model type '", model.value("type", ""),
           "' cannot be written to GGUF by ft (it writes BPE tokenizers: byte-level as gpt2, SentencePiece-style as llama)");
  Tokenizer tok = Tokenizer::from_dir(dir);
  FT_CHECK(int64_t(tok.vocab_size()) <= n_vocab, tj.string(), ": tokenizer has ", tok.vocab_size(), " tokens, more than the model's ", n_vocab);

  const bool spm = model.value("byte_fallback", false) || contains_type(t.value("pre_tokenizer", json()), "Metaspace") ||
                   contains_type(t.value("normalizer", json()), "Prepend");
  std::vector<std::string> tokens(static_cast<size_t>(n_vocab));
  std::vector<int64_t> types(size_t(n_vocab), 5);  // unused
  std::vector<bool> have(size_t(n_vocab), false);
  for (auto& [s, id] : model.at("vocab").items()) {
    int64_t i = id.get<int64_t>();
    if (i < 0 || i >= n_vocab) continue;
    tokens[size_t(i)] = s;
    have[size_t(i)] = true;
    types[size_t(i)] = 1;
    if (spm && s.size() == 6 && s.rfind("<0x", 0) == 0 && s.back() == '>') types[size_t(i)] = 6;  // byte token
  }
  if (auto unk = tok.unk_id(); unk && *unk < n_vocab) types[size_t(*unk)] = 2;
  if (t.contains("added_tokens") && t["added_tokens"].is_array())
    for (const json& a : t["added_tokens"]) {
      int64_t i = a.value("id", int64_t(-1));
      if (i < 0 || i >= n_vocab) continue;
      tokens[size_t(i)] = a.value("content", "");
      have[size_t(i)] = true;
      types[size_t(i)] = a.value("special", false) ? 3 : 4;
    }
  for (int64_t i = 0; i < n_vocab; ++i)
    if (!have[size_t(i)]) tokens[size_t(i)] = "[PAD" + std::to_string(i) + "]";

  // merges in rank order, as "left right"
  std::vector<std::string> merges;
  if (model.contains("merges"))
    for (const json& m : model["merges"]) {
      if (m.is_string()) merges.push_back(m.get<std::string>());
      else if (m.is_array() && m.size() == 2) merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
    }

  if (spm) {
    // llama.cpp's SentencePiece tokenizer merges the adjacent pair whose joined token scores
    // highest: a token made by merge rank r scores -r, so it merges in HF's rank order.
    std::vector<double> scores(size_t(n_vocab), -1e9);
    auto vocab = model.at("vocab");
    for (size_t r = 0; r < merges.size(); ++r) {
      size_t sp = merges[r].find(' ');
      std::string joined = merges[r].substr(0, sp) + merges[r].substr(sp + 1);
      if (vocab.contains(joined)) {
        int64_t id = vocab[joined].get<int64_t>();
        if (id >= 0 && id < n_vocab && scores[size_t(id)] == -1e9) scores[size_t(id)] = -double(r);
      }
    }
    for (int64_t i = 0; i < n_vocab; ++i)
      if (types[size_t(i)] != 1) scores[size_t(i)] = 0;
    w.set("tokenizer.ggml.model", GgufValue::str("llama"));
    w.set("tokenizer.ggml.pre", GgufValue::str("default"));
    w.set("tokenizer.ggml.tokens", GgufValue::str_array(tokens));
    w.set("tokenizer.ggml.scores", GgufValue::f32_array(scores));
    w.set("tokenizer.ggml.token_type", GgufValue::i32_array(types));
    bool prefix = contains_type(t.value("normalizer", json()), "Prepend");
    if (const json& p = t.value("pre_tokenizer", json()); p.is_object() && p.value("type", "") == "Metaspace")
      prefix = p.value("prepend_scheme", std::string("always")) != "never";
    w.set("tokenizer.ggml.add_space_prefix", GgufValue::boolean(prefix));
  } else {
    std::string pre = pre_name(t.value("pre_tokenizer", json()));
    FT_CHECK(!pre.empty(), tj.string(), ": its pre-tokenizer matches none llama.cpp names (ft maps GPT-2 ByteLevel, SmolLM, ",
             "Llama 3 and Qwen2 patterns); llama.cpp would tokenize this text differently");
    w.set("tokenizer.ggml.model", GgufValue::str("gpt2"));
    w.set("tokenizer.ggml.pre", GgufValue::str(pre));
    w.set("tokenizer.ggml.tokens", GgufValue::str_array(tokens));
    w.set("tokenizer.ggml.token_type", GgufValue::i32_array(types));
    w.set("tokenizer.ggml.merges", GgufValue::str_array(merges));
  }
  auto u32 = [&](const char* k, std::optional<int32_t> v) {
    if (v) w.set(k, GgufValue::u32(uint32_t(*v)));
  };
  u32("tokenizer.ggml.bos_token_id", tok.bos_id());
  u32("tokenizer.ggml.eos_token_id", tok.eos_id());
  u32("tokenizer.ggml.unknown_token_id", tok.unk_id());
  u32("tokenizer.ggml.padding_token_id", tok.pad_id());
  // What the post-processor adds around one sequence decides the add-BOS/EOS flags.
  std::vector<int32_t> with = tok.encode("a", true), without = tok.encode("a", false);
  bool add_bos = with.size() > without.size() && tok.bos_id() && with.front() == *tok.bos_id();
  bool add_eos = with.size() > without.size() && tok.eos_id() && with.back() == *tok.eos_id();
  w.set("tokenizer.ggml.add_bos_token", GgufValue::boolean(add_bos));
  w.set("tokenizer.ggml.add_eos_token", GgufValue::boolean(add_eos));
  if (!tok.chat_template().empty()) w.set("tokenizer.chat_template", GgufValue::str(tok.chat_template()));
  if (with.size() > without.size() + (add_bos ? 1 : 0) + (add_eos ? 1 : 0))
    notes.push_back("the tokenizer's post-processor adds tokens other than BOS/EOS; llama.cpp adds only BOS/EOS");
}

namespace {

struct Out {
  GgufWriter w;
  GgmlType mat = GgmlType::F32;  // type of the big matrices
  int fallbacks = 0;

  void add(const std::string& name, const std::vector<float>& v, std::vector<int64_t> shape, bool matrix) {
    std::vector<int64_t> ne(shape.rbegin(), shape.rend());
    GgmlType t = GgmlType::F32;
    if (matrix && shape.size() == 2) {
      t = mat;
      if (ne[0] % ggml_block_size(t) != 0) {
        ++fallbacks;
        t = ne[0] % 32 == 0 && ggml_is_quantized(t) ? GgmlType::Q8_0 : GgmlType::F16;
        if (mat == GgmlType::F32 || mat == GgmlType::BF16) t = mat;
      }
    }
    if (t == GgmlType::F32) {
      w.add_tensor(name, ne, t, v.data(), v.size() * 4);
    } else if (t == GgmlType::F16 || t == GgmlType::BF16) {
      std::vector<uint16_t> h(v.size());
      convert(v.data(), DType::F32, h.data(), t == GgmlType::F16 ? DType::F16 : DType::BF16, v.size());
      w.add_tensor(name, ne, t, h.data(), h.size() * 2);
    } else {
      const int64_t rows = int64_t(v.size()) / ne[0];
      const size_t rb = ggml_row_bytes(t, ne[0]);
      std::vector<uint8_t> q(size_t(rows) * rb);
      tbb::parallel_for(tbb::blocked_range<int64_t>(0, rows, 16), [&](const tbb::blocked_range<int64_t>& rr) {  // rows are independent
        for (int64_t r = rr.begin(); r < rr.end(); ++r) ggml_quantize_row(t, v.data() + r * ne[0], ne[0], q.data() + size_t(r) * rb);
      });
      w.add_tensor(name, ne, t, q.data(), q.size());
    }
  }
};

uint32_t file_type(GgmlType t) {
  switch (t) {
    case GgmlType::F32: return 0;
    case GgmlType::F16: return 1;
    case GgmlType::Q4_0: return 2;
    case GgmlType::Q8_0: return 7;
    case GgmlType::Q4_K: return 15;  // MOSTLY_Q4_K_M
    case GgmlType::Q6_K: return 18;
    case GgmlType::BF16: return 32;
    default: return 0;
  }
}

}  // namespace

std::vector<std::string> export_gguf(const Model& m, const std::string& path, const GgufExportOptions& opt) {
  const ModelConfig& c = m.cfg;
  const std::string arch = gguf_arch(c);
  std::vector<std::string> notes;
  Out o;
  std::string ot = opt.outtype;
  if (ot.empty()) ot = m.embed.dtype() == DType::BF16 ? "bf16" : m.embed.dtype() == DType::F16 ? "f16" : "f32";
  if (opt.outtype.empty() && m.quantized()) {  // a quantised GGUF source: its own type when ft writes it
    const std::string src = m.checkpoint_dtype;
    for (const char* q : {"Q8_0", "Q4_0", "Q4_K", "Q6_K"})
      if (src == q) ot = src;
  }
  auto gt = ggml_type_from_name(ot);
  FT_CHECK(gt && (*gt == GgmlType::F32 || *gt == GgmlType::F16 || *gt == GgmlType::BF16 || *gt == GgmlType::Q8_0 ||
                  *gt == GgmlType::Q4_0 || *gt == GgmlType::Q4_K || *gt == GgmlType::Q6_K),
           "--outtype '", ot, "' is not one ft writes (f32, f16, bf16, q8_0, q4_0, q4_k, q6_k)");
  o.mat = *gt;
  GgufWriter& w = o.w;
  const std::string A = arch + ".";
  std::string name = opt.name.empty() ? (is_gguf_file(m.dir) ? fs::path(m.dir).stem() : fs::path(m.dir).filename()).string() : opt.name;
  if (name.empty()) name = fs::path(m.dir).parent_path().filename().string();

  {
    // llama.cpp sets attributes of </s>, <unk>, <s> and <|endoftext|> by name for models whose
    // general.name contains "phi3" / "phi-3", and fails to load when one is missing.
    std::string lower;
    for (char ch : name) lower += char(std::tolower(static_cast<unsigned char>(ch)));
    if (lower.find("phi3") != std::string::npos || lower.find("phi-3") != std::string::npos) {
      Tokenizer tk = load_model_tokenizer(m.dir);
      std::string missing;
      for (const char* s : {"</s>", "<unk>", "<s>", "<|endoftext|>"})
        if (tk.token_to_id(s) < 0) missing += std::string(missing.empty() ? "" : ", ") + s;
      if (!missing.empty()) {
        notes.push_back(cat("general.name '", name, "' renamed to 'model': llama.cpp looks up ", missing,
                            " by name for Phi-3 models and this tokenizer lacks them"));
        name = "model";
      }
    }
  }
  w.set("general.architecture", GgufValue::str(arch));
  w.set("general.type", GgufValue::str("model"));
  w.set("general.name", GgufValue::str(name));
  w.set(A + "context_length", GgufValue::u32(uint32_t(c.max_position_embeddings)));
  w.set(A + "embedding_length", GgufValue::u32(uint32_t(c.hidden_size)));
  w.set(A + "block_count", GgufValue::u32(uint32_t(c.num_layers)));
  w.set(A + "feed_forward_length", GgufValue::u32(uint32_t(c.intermediate_size)));
  w.set(A + "attention.head_count", GgufValue::u32(uint32_t(c.num_heads)));
  w.set(A + "attention.head_count_kv", GgufValue::u32(uint32_t(c.num_kv_heads)));
  w.set(A + "attention.key_length", GgufValue::u32(uint32_t(c.head_dim)));
  w.set(A + "attention.value_length", GgufValue::u32(uint32_t(c.head_dim)));
  w.set(A + "attention.layer_norm_rms_epsilon", GgufValue::f32(float(c.rms_norm_eps)));
  if (arch == "llama") w.set(A + "vocab_size", GgufValue::u32(uint32_t(c.vocab_size)));

  // RoPE of the full-attention layers (Gemma 3: the sliding layers' base separately).
  const LayerSpec* full = &c.layers[0];
  const LayerSpec* swa = nullptr;
  for (const auto& l : c.layers) {
    if (!l.sliding && full->sliding) full = &l;
    if (l.sliding && !swa) swa = &l;
  }
  for (const auto& l : c.layers)
    if (!l.sliding) { full = &l; break; }
  const RopeParams& rp = full->rope;
  const int rot = rope_rot_dim(rp, int(c.head_dim));
  w.set(A + "rope.freq_base", GgufValue::f32(float(rp.theta)));
  w.set(A + "rope.dimension_count", GgufValue::u32(uint32_t(rot)));
  std::vector<float> rope_freqs, rope_long, rope_short;
  switch (rp.type) {
    case RopeType::Default: break;
    case RopeType::Linear:
      w.set(A + "rope.scaling.type", GgufValue::str("linear"));
      w.set(A + "rope.scaling.factor", GgufValue::f32(float(rp.factor.value_or(1.0))));
      break;
    case RopeType::Yarn:
      w.set(A + "rope.scaling.type", GgufValue::str("yarn"));
      w.set(A + "rope.scaling.factor", GgufValue::f32(float(rp.factor.value_or(1.0))));
      w.set(A + "rope.scaling.original_context_length", GgufValue::u32(uint32_t(rp.original_max_position_embeddings)));
      if (rp.attention_factor) w.set(A + "rope.scaling.yarn_attn_factor", GgufValue::f32(float(*rp.attention_factor)));
      w.set(A + "rope.scaling.yarn_beta_fast", GgufValue::f32(float(rp.beta_fast.value_or(32.0))));
      w.set(A + "rope.scaling.yarn_beta_slow", GgufValue::f32(float(rp.beta_slow.value_or(1.0))));
      if (rp.mscale || rp.mscale_all_dim) notes.push_back("yarn mscale/mscale_all_dim are not written; llama.cpp assumes 1");
      break;
    case RopeType::Llama3: {
      RopeParams plain = rp;
      plain.type = RopeType::Default;
      RopeFreqs a = rope_inv_freq(plain, int(c.head_dim)), b = rope_inv_freq(rp, int(c.head_dim));
      for (size_t i = 0; i < a.inv_freq.size(); ++i) rope_freqs.push_back(a.inv_freq[i] / b.inv_freq[i]);
      break;
    }
    case RopeType::LongRope: {
      if (arch != "phi3" && rp.long_factor == rp.short_factor && rope_inv_freq(rp, int(c.head_dim), 0).attention_scaling == 1.0) {
        // one set of per-frequency divisors and no attention scaling (how a GGUF's rope_freqs is read
        // back, models/gguf_load.cpp): rope_freqs again
        rope_freqs.assign(rp.long_factor.begin(), rp.long_factor.end());
        break;
      }
      FT_CHECK(arch == "phi3", "GGUF: longrope is written for phi3 only (other architectures: one set of factors, no attention scaling)");
      rope_long.assign(rp.long_factor.begin(), rp.long_factor.end());
      rope_short.assign(rp.short_factor.begin(), rp.short_factor.end());
      w.set(A + "rope.scaling.original_context_length", GgufValue::u32(uint32_t(rp.original_max_position_embeddings)));
      w.set(A + "rope.scaling.attn_factor", GgufValue::f32(rope_inv_freq(rp, int(c.head_dim), 0).attention_scaling));
      notes.push_back(cat("phi3 longrope: llama.cpp uses the long factors when its context size exceeds ",
                          rp.original_max_position_embeddings,
                          " tokens, transformers when the sequence does; results agree while both use the same set"));
      break;
    }
    case RopeType::Dynamic:
      notes.push_back("dynamic NTK rope scaling has no llama.cpp equivalent; written without scaling");
      break;
  }
  if (arch == "llama" || arch == "qwen2" || arch == "qwen3") {
    for (const auto& l : c.layers)
      if (l.sliding && l.window < c.max_position_embeddings) {
        notes.push_back(cat("sliding-window attention (", l.window, " tokens) is not applied by llama.cpp's ", arch,
                            " architecture: outputs differ once a sequence exceeds the window (ft reads it back from ",
                            arch, ".attention.sliding_window)"));
        if (arch == "llama") w.set(A + "attention.sliding_window", GgufValue::u32(uint32_t(l.window)));
        break;
      }
  }
  if (arch == "phi3") w.set(A + "attention.sliding_window", GgufValue::u32(uint32_t(c.layers[0].sliding ? c.layers[0].window : 0)));
  if (arch == "gemma2" || arch == "gemma3") {
    // llama.cpp: layer il is sliding when il % period < period - 1.
    int64_t period = 0;
    for (int64_t p = 1; p <= c.num_layers + 1 && !period; ++p) {
      bool ok = true;
      for (int64_t i = 0; i < c.num_layers; ++i) ok = ok && (c.layers[size_t(i)].sliding == (i % p < p - 1));
      if (ok) period = p;
    }
    if (swa) {
      w.set(A + "attention.sliding_window", GgufValue::u32(uint32_t(swa->window)));
      if (period) w.set(A + "attention.sliding_window_pattern", GgufValue::u32(uint32_t(period)));
      else notes.push_back("the layer pattern of sliding/full attention is not periodic as llama.cpp requires");
      if (arch == "gemma3") w.set(A + "rope.freq_base_swa", GgufValue::f32(float(swa->rope.theta)));
      if (swa->rope.type != RopeType::Default) notes.push_back("rope scaling on sliding layers is not written (llama.cpp: none)");
    }
    if (c.attn_logit_softcap > 0) w.set(A + "attn_logit_softcapping", GgufValue::f32(float(c.attn_logit_softcap)));
    if (c.final_logit_softcap > 0) w.set(A + "final_logit_softcapping", GgufValue::f32(float(c.final_logit_softcap)));
  } else if (c.attn_logit_softcap > 0 || c.final_logit_softcap > 0) {
    notes.push_back("logit softcapping is only applied by llama.cpp's gemma2/gemma3 architectures");
  }
  w.set("general.file_type", GgufValue::u32(file_type(o.mat)));
  if (ggml_is_quantized(o.mat)) w.set("general.quantization_version", GgufValue::u32(2));
  if (is_gguf_file(m.dir)) {  // a GGUF source: its tokenizer keys as they are
    auto src = GgufFile::open(m.dir);
    for (const auto& [k, v] : src->metadata())
      if (k.rfind("tokenizer.", 0) == 0) w.set(k, v);
  } else {
    gguf_add_tokenizer(w, m.dir, c.vocab_size, notes);
  }

  // tensors
  const bool gemma = c.norm_plus_one;
  const double qfold = gguf_query_fold(c);
  auto norm = [&](const std::string& n, const Tensor& t, double mul = 1.0) {
    std::vector<float> v = floats(t);
    for (float& x : v) x = float(((gemma ? 1.0 : 0.0) + double(x)) * mul);
    o.add(n + ".weight", v, {int64_t(v.size())}, false);
  };
  o.add("token_embd.weight", floats(m.embed), m.embed.shape(), true);
  if (!rope_freqs.empty()) o.add("rope_freqs.weight", rope_freqs, {int64_t(rope_freqs.size())}, false);
  if (!rope_long.empty()) {
    o.add("rope_factors_long.weight", rope_long, {int64_t(rope_long.size())}, false);
    o.add("rope_factors_short.weight", rope_short, {int64_t(rope_short.size())}, false);
  }
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const DecoderLayer& l = m.layers[size_t(i)];
    const std::string b = "blk." + std::to_string(i) + ".";
    norm(b + "attn_norm", l.input_norm);
    if (c.sandwich_norms) {
      norm(b + "post_attention_norm", l.post_attn_norm);
      norm(b + "ffn_norm", l.pre_ff_norm);
      norm(b + "post_ffw_norm", l.post_ff_norm);
    } else {
      norm(b + "ffn_norm", l.post_attn_norm);
    }
    if (c.qk_norm) {
      norm(b + "attn_q_norm", l.q_norm, qfold);  // with q/k norms the fold goes after the norm
      norm(b + "attn_k_norm", l.k_norm);
    }
    for (const Projection* p : {&l.q, &l.k, &l.v, &l.qkv, &l.o, &l.gate, &l.up, &l.gate_up, &l.down}) {
      if (!p->weight.defined()) continue;
      FT_CHECK(!p->lora, "export_gguf: '", p->name, "' still has an adapter; merge it first");
      std::string base = gguf_tensor_base(c, p->name);
      FT_CHECK(!base.empty(), "export_gguf: no GGUF name for '", p->name, "'");
      std::vector<float> wv = floats(p->weight), bv;
      if (p->bias.defined()) bv = floats(p->bias);
      const int64_t rows = p->weight.size(0), cols = p->weight.size(1);
      const bool isq = p == &l.q, isk = p == &l.k;
      if (isq && !c.qk_norm && qfold != 1.0) {
        for (float& x : wv) x = float(double(x) * qfold);
        for (float& x : bv) x = float(double(x) * qfold);
      }
      if (p == &l.qkv && qfold != 1.0)
        for (int64_t r = 0; r < c.q_dim(); ++r) {
          for (int64_t k = 0; k < cols; ++k) wv[size_t(r * cols + k)] = float(double(wv[size_t(r * cols + k)]) * qfold);
          if (!bv.empty()) bv[size_t(r)] = float(double(bv[size_t(r)]) * qfold);
        }
      if ((isq || isk) && gguf_permutes_qk(c)) {
        int64_t nh = isq ? c.num_heads : c.num_kv_heads;
        wv = gguf_permute_rows(wv, rows, cols, nh);
        if (!bv.empty()) bv = gguf_permute_rows(bv, rows, 1, nh);
      }
      o.add(base + ".weight", wv, {rows, cols}, true);
      if (!bv.empty()) o.add(base + ".bias", bv, {rows}, false);
    }
  }
  norm("output_norm", m.final_norm);
  if (m.lm_head.impl() != m.embed.impl()) o.add("output.weight", floats(m.lm_head), m.lm_head.shape(), true);
  if (o.fallbacks)
    notes.push_back(cat(o.fallbacks, " matrices have rows that are not a multiple of the ", ggml_type_name(o.mat),
                        " block size and were written as ", ggml_block_size(o.mat) == 256 ? "Q8_0 or F16" : "F16"));
  w.write(path);
  return notes;
}

}  // namespace ft
