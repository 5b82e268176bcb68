// GGUF -> Model (see gguf_load.h). The inverse of models/gguf_export.cpp; llama.cpp's loaders
// (src/models/*.cpp, src/llama-vocab.cpp) define what each key means.
#include "models/gguf_load.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <algorithm>
#include <map>
#include <string_view>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "data/tokenizer_unicode.h"
#include "models/gguf_export.h"
#include "models/gguf_packed.h"
#include "models/gguf_quant.h"

namespace ft {

using ojson = nlohmann::ordered_json;

bool is_gguf_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  char magic[4] = {};
  return f && f.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0;
}

namespace {

const char* kLlama3 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* kQwen2 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

std::vector<float> read_f32(const GgufTensorInfo& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  const int64_t row = t.ne[0];
  const size_t rb = ggml_row_bytes(t.type, row);
  for (int64_t r = 0; r < t.numel() / row; ++r) ggml_dequantize_row(t.type, t.data + size_t(r) * rb, row, v.data() + r * row);
  return v;
}

ojson byte_level(bool use_regex) {
  return ojson{{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
}

// Merges equivalent to llama.cpp's score-ordered SentencePiece merging: every split of a token into
// two tokens of the vocabulary, the splits of higher-scoring tokens first (ties: lower token id).
// Tokens longer than kMaxSpmToken bytes are not split (real vocabularies' are far shorter; the bound
// keeps a hostile file from costing time quadratic in a token's length).
constexpr size_t kMaxSpmToken = 512;
std::vector<std::string> spm_merges(const GgufValue& toks, const GgufValue& scores, const GgufValue* types) {
  std::map<std::string, size_t, std::less<>> index;
  for (size_t i = 0; i < toks.strs.size(); ++i) index.emplace(toks.strs[i], i);
  struct M { double score; size_t id; std::string text; };
  std::vector<M> ms;
  for (size_t i = 0; i < toks.strs.size(); ++i) {
    if (types && types->ints[i] != 1) continue;  // normal tokens only
    const std::string& s = toks.strs[i];
    if (s.size() > kMaxSpmToken) continue;
    const std::string_view sv(s);
    for (size_t k = 1; k < s.size(); ++k) {
      if ((static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) continue;  // inside a UTF-8 character
      if (index.find(sv.substr(0, k)) != index.end() && index.find(sv.substr(k)) != index.end())
        ms.push_back({scores.floats[i], i, s.substr(0, k) + " " + s.substr(k)});
    }
  }
  std::stable_sort(ms.begin(), ms.end(), [](const M& x, const M& y) { return x.score != y.score ? x.score > y.score : x.id < y.id; });
  std::vector<std::string> r;
  r.reserve(ms.size());
  for (auto& m : ms) r.push_back(std::move(m.text));
  return r;
}

}  // namespace

GgufHfTexts gguf_hf_texts(const GgufFile& f) {
  const std::string& F = f.path();
  const std::string arch = f.get_str("general.architecture");
  static const std::map<std::string, std::string> types = {{"llama", "llama"}, {"qwen2", "qwen2"}, {"qwen3", "qwen3"},
                                                           {"gemma", "gemma"}, {"gemma2", "gemma2"}, {"gemma3", "gemma3_text"},
                                                           {"phi3", "phi3"}};
  auto it = types.find(arch);
  FT_CHECK(it != types.end(), F, ": general.architecture '", arch,
           "' is not one ft runs (llama, qwen2, qwen3, gemma, gemma2, gemma3, phi3)");
  if (auto t = f.opt_str("general.type")) FT_CHECK(*t == "model", F, ": general.type is '", *t, "': a ", *t, ", not a model");
  const std::string A = arch + ".";
  const GgufTensorInfo* embd = f.tensor("token_embd.weight");
  FT_CHECK(embd && embd->ne.size() == 2, F, ": tensor 'token_embd.weight' is missing or not a matrix");
  ojson c;
  c["architectures"] = ojson::array();
  c["model_type"] = it->second;
  const int64_t hidden = f.get_int(A + "embedding_length"), heads = f.get_int(A + "attention.head_count");
  FT_CHECK(heads > 0 && hidden > 0, F, ": ", A, "attention.head_count and ", A, "embedding_length must be positive");
  FT_CHECK(embd->ne[0] == hidden, F, ": tensor 'token_embd.weight' has rows of ", embd->ne[0], " but ", A, "embedding_length is ", hidden);
  const int64_t head_dim = f.opt_int(A + "attention.key_length").value_or(hidden / heads);
  c["vocab_size"] = embd->ne[1];
  c["hidden_size"] = hidden;
  c["intermediate_size"] = f.get_int(A + "feed_forward_length");
  const int64_t n_layers = f.get_int(A + "block_count");
  FT_CHECK(n_layers >= 1 && n_layers <= int64_t(f.tensors().size()), F, ": ", A, "block_count is ", n_layers, " but the file has ",
           f.tensors().size(), " tensors (each layer has several)");
  c["num_hidden_layers"] = n_layers;
  c["num_attention_heads"] = heads;
  c["num_key_value_heads"] = f.opt_int(A + "attention.head_count_kv").value_or(heads);
  c["head_dim"] = head_dim;
  c["rms_norm_eps"] = f.get_float(A + "attention.layer_norm_rms_epsilon");
  c["max_position_embeddings"] = f.opt_int(A + "context_length").value_or(4096);
  c["rope_theta"] = f.opt_float(A + "rope.freq_base").value_or(10000.0);
  c["tie_word_embeddings"] = f.tensor("output.weight") == nullptr;
  c["torch_dtype"] = "float32";
  const int64_t rot = f.opt_int(A + "rope.dimension_count").value_or(head_dim);
  if (rot != head_dim) {
    FT_CHECK(arch == "phi3", F, ": ", A, "rope.dimension_count ", rot, " differs from the head size ", head_dim,
             " (partial rotary is read for phi3 only)");
    c["partial_rotary_factor"] = double(rot) / double(head_dim);
  }
  // rope scaling
  const std::string stype = f.opt_str(A + "rope.scaling.type").value_or("");
  const double sfactor = f.opt_float(A + "rope.scaling.factor").value_or(0.0);
  const int64_t ctx = c["max_position_embeddings"];
  if (const GgufTensorInfo* rf = f.tensor("rope_freqs.weight")) {
    // llama.cpp divides each frequency by its factor: transformers' longrope with one set of
    // factors for every length and no attention scaling is the same computation.
    FT_CHECK(rf->type == GgmlType::F32 && rf->numel() == rot / 2, F, ": tensor 'rope_freqs.weight' must be F32 with ", rot / 2, " values");
    std::vector<float> v = read_f32(*rf);
    c["rope_scaling"] = {{"rope_type", "longrope"}, {"short_factor", v}, {"long_factor", v},
                         {"original_max_position_embeddings", ctx}, {"attention_factor", 1.0}};
  } else if (f.tensor("rope_factors_long.weight") || f.tensor("rope_factors_short.weight")) {
    const GgufTensorInfo *lf = f.tensor("rope_factors_long.weight"), *sf = f.tensor("rope_factors_short.weight");
    FT_CHECK(lf && sf && lf->numel() == rot / 2 && sf->numel() == rot / 2, F,
             ": rope_factors_long/short.weight must both exist with ", rot / 2, " values");
    const int64_t orig = f.opt_int(A + "rope.scaling.original_context_length").value_or(ctx);
    c["original_max_position_embeddings"] = orig;
    c["rope_scaling"] = {{"type", "longrope"}, {"short_factor", read_f32(*sf)}, {"long_factor", read_f32(*lf)}};
    if (auto af = f.opt_float(A + "rope.scaling.attn_factor")) c["rope_scaling"]["attention_factor"] = *af;
  } else if (stype == "linear" && sfactor > 0 && sfactor != 1.0) {
    c["rope_scaling"] = {{"rope_type", "linear"}, {"factor", sfactor}};
  } else if (stype == "yarn" && sfactor > 0) {
    c["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", sfactor},
                         {"original_max_position_embeddings", f.opt_int(A + "rope.scaling.original_context_length").value_or(ctx)},
                         {"beta_fast", f.opt_float(A + "rope.scaling.yarn_beta_fast").value_or(32.0)},
                         {"beta_slow", f.opt_float(A + "rope.scaling.yarn_beta_slow").value_or(1.0)}};
    if (auto af = f.opt_float(A + "rope.scaling.yarn_attn_factor")) c["rope_scaling"]["attention_factor"] = *af;
  } else {
    FT_CHECK(stype.empty() || stype == "none" || stype == "linear", F, ": ", A, "rope.scaling.type '", stype, "' is not read by ft");
  }
  if (arch == "llama") {
    c["attention_bias"] = f.tensor("blk.0.attn_q.bias") != nullptr;
    c["mlp_bias"] = f.tensor("blk.0.ffn_gate.bias") != nullptr;
  }
  if (arch == "qwen2") c["use_sliding_window"] = false;
  if (arch == "llama") {
    // ft writes Mistral's window here (llama.cpp ignores it and runs without one)
    if (auto w = f.opt_int(A + "attention.sliding_window"); w && *w > 0) c["model_type"] = "mistral", c["sliding_window"] = *w;
  }
  if (arch == "gemma" || arch == "gemma2" || arch == "gemma3") {
    c[arch == "gemma" ? "hidden_act" : "hidden_activation"] = "gelu_pytorch_tanh";
    c["query_pre_attn_scalar"] = head_dim;  // llama.cpp scales by head_dim^-0.5 (ft folds others into q)
  }
  if (arch == "gemma2" || arch == "gemma3") {
    auto window = f.opt_int(A + "attention.sliding_window");
    int64_t period = f.opt_int(A + "attention.sliding_window_pattern").value_or(arch == "gemma2" ? 2 : 6);
    FT_CHECK(period >= 0, F, ": ", A, "attention.sliding_window_pattern must not be negative");
    const int64_t n = c["num_hidden_layers"];
    ojson lt = ojson::array();
    bool any = arch == "gemma2" || (window && *window > 0);
    for (int64_t i = 0; i < n; ++i)
      lt.push_back(any && (period == 0 || i % period < period - 1) ? "sliding_attention" : "full_attention");
    c["layer_types"] = lt;
    c["sliding_window"] = window.value_or(4096);
    if (arch == "gemma2") {
      c["attn_logit_softcapping"] = f.opt_float(A + "attn_logit_softcapping").value_or(0.0) > 0
                                        ? ojson(f.get_float(A + "attn_logit_softcapping")) : ojson(nullptr);
    }
    c["final_logit_softcapping"] = f.opt_float(A + "final_logit_softcapping").value_or(0.0) > 0
                                       ? ojson(f.get_float(A + "final_logit_softcapping")) : ojson(nullptr);
    if (arch == "gemma3") c["rope_local_base_freq"] = f.opt_float(A + "rope.freq_base_swa").value_or(10000.0);
  }
  if (arch == "phi3") {
    if (auto w = f.opt_int(A + "attention.sliding_window"); w && *w > 0) c["sliding_window"] = *w;
    else c["sliding_window"] = nullptr;
  }

  // ---- tokenizer
  const std::string model = f.get_str("tokenizer.ggml.model");
  FT_CHECK(model == "gpt2" || model == "llama", F, ": tokenizer.ggml.model '", model,
           "' is not read yet (ft reads byte-level BPE 'gpt2' and SentencePiece-style 'llama')");
  const bool spm = model == "llama";
  const GgufValue* toks = f.find("tokenizer.ggml.tokens");
  FT_CHECK(toks && toks->type == GgufType::ARRAY && toks->elem == GgufType::STRING && !toks->strs.empty(), F,
           ": tokenizer.ggml.tokens is missing or not a list of strings");
  const GgufValue* merges = f.find("tokenizer.ggml.merges");
  FT_CHECK(spm || (merges && merges->type == GgufType::ARRAY && merges->elem == GgufType::STRING), F,
           ": tokenizer.ggml.merges is missing (a gpt2 tokenizer needs its merges)");
  const GgufValue* scores = f.find("tokenizer.ggml.scores");
  FT_CHECK(!spm || (scores && scores->type == GgufType::ARRAY && scores->floats.size() == toks->strs.size()), F,
           ": tokenizer.ggml.scores must list one float per token (a llama/SentencePiece tokenizer merges by score)");
  const GgufValue* ttypes = f.find("tokenizer.ggml.token_type");
  FT_CHECK(!ttypes || (ttypes->type == GgufType::ARRAY && ttypes->elem != GgufType::STRING && ttypes->elem != GgufType::F32 &&
                       ttypes->ints.size() == toks->strs.size()),
           F, ": tokenizer.ggml.token_type must list one integer per token");
  FT_CHECK(int64_t(toks->strs.size()) <= embd->ne[1], F, ": ", toks->strs.size(), " tokens but token_embd.weight has ", embd->ne[1], " rows");
  const std::string pre = f.opt_str("tokenizer.ggml.pre").value_or("default");
  ojson pt;
  if (spm) pt = nullptr;
  else if (pre == "gpt-2" || pre == "default") pt = byte_level(true);
  else if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3" || pre == "qwen2") {
    pt = {{"type", "Sequence"},
          {"pretokenizers", {{{"type", "Split"}, {"pattern", {{"Regex", pre == "qwen2" ? kQwen2 : kLlama3}}}, {"behavior", "Isolated"},
                              {"invert", false}},
                             byte_level(false)}}};
  } else if (pre == "smollm") {
    pt = {{"type", "Sequence"}, {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", true}}, byte_level(true)}}};
  } else {
    throw Error(cat(F, ": tokenizer.ggml.pre '", pre, "' is not read yet (ft reads gpt-2, llama-bpe, qwen2, smollm)"));
  }
  // tokenizer.json is UTF-8 text: a token, merge or template that is not valid UTF-8 cannot go there.
  auto utf8 = [&](const std::string& s, const std::string& what) {
    const size_t bad = uni::find_invalid(s);
    FT_CHECK(bad == std::string::npos, F, ": ", what, " is not valid UTF-8 (byte ", bad, " of ", s.size(),
             "); GGUF strings must be UTF-8: re-convert the model with llama.cpp's convert_hf_to_gguf.py");
  };
  for (size_t i = 0; i < toks->strs.size(); ++i) utf8(toks->strs[i], cat("tokenizer.ggml.tokens[", i, "]"));
  if (merges && merges->type == GgufType::ARRAY && merges->elem == GgufType::STRING)
    for (size_t i = 0; i < merges->strs.size(); ++i) utf8(merges->strs[i], cat("tokenizer.ggml.merges[", i, "]"));
  if (auto tmpl = f.opt_str("tokenizer.chat_template")) utf8(*tmpl, "tokenizer.chat_template");
  ojson vocab = ojson::object(), added = ojson::array();
  auto& vocab_obj = static_cast<std::vector<std::pair<const std::string, ojson>>&>(vocab.get_ref<ojson::object_t&>());
  std::unordered_set<std::string_view> seen;
  for (size_t i = 0; i < toks->strs.size(); ++i) {
    int64_t ty = ttypes ? ttypes->ints[i] : 1;
    const std::string& s = toks->strs[i];
    if (ty == 3 || ty == 4) {
      added.push_back({{"id", i}, {"content", s}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                       {"normalized", false}, {"special", ty == 3}});
    }
    // ordered_json looks keys up linearly: a set keeps this linear in the vocabulary (50k+ tokens)
    if (seen.insert(s).second) vocab_obj.emplace_back(s, ojson(i));
  }
  auto tok_of = [&](const char* key) -> std::optional<std::pair<int64_t, std::string>> {
    auto id = f.opt_int(key);
    if (!id) return std::nullopt;
    FT_CHECK(*id >= 0 && *id < int64_t(toks->strs.size()), F, ": ", key, " = ", *id, " is outside the vocabulary of ", toks->strs.size());
    return std::pair{*id, toks->strs[size_t(*id)]};
  };
  auto bos = tok_of("tokenizer.ggml.bos_token_id"), eos = tok_of("tokenizer.ggml.eos_token_id"),
       pad = tok_of("tokenizer.ggml.padding_token_id"), unk = tok_of("tokenizer.ggml.unknown_token_id");
  const bool add_bos = f.opt_bool("tokenizer.ggml.add_bos_token").value_or(false) && bos;
  const bool add_eos = f.opt_bool("tokenizer.ggml.add_eos_token").value_or(false) && eos;
  ojson post = nullptr;
  if (add_bos || add_eos) {
    ojson single = ojson::array(), specials = ojson::object();
    if (add_bos) {
      single.push_back({{"SpecialToken", {{"id", bos->second}, {"type_id", 0}}}});
      specials[bos->second] = {{"id", bos->second}, {"ids", {bos->first}}, {"tokens", {bos->second}}};
    }
    single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
    if (add_eos) {
      single.push_back({{"SpecialToken", {{"id", eos->second}, {"type_id", 0}}}});
      specials[eos->second] = {{"id", eos->second}, {"ids", {eos->first}}, {"tokens", {eos->second}}};
    }
    post = {{"type", "TemplateProcessing"}, {"single", single}, {"pair", single}, {"special_tokens", specials}};
  }
  ojson normalizer = nullptr, decoder = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  std::vector<std::string> merge_list = spm ? spm_merges(*toks, *scores, ttypes) : merges->strs;
  if (spm) {
    // llama.cpp's SentencePiece tokenizer: spaces as U+2581 (one prepended unless add_space_prefix is
    // false), the adjacent pair whose joined token scores highest merged first, unknown characters as
    // <0xXX> byte tokens.
    const bool prefix = f.opt_bool("tokenizer.ggml.add_space_prefix").value_or(true);
    ojson rep = {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}};
    normalizer = prefix ? ojson{{"type", "Sequence"}, {"normalizers", {{{"type", "Prepend"}, {"prepend", "\u2581"}}, rep}}} : rep;
    ojson decs = {{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}}, {{"type", "ByteFallback"}}, {{"type", "Fuse"}}};
    if (prefix) decs.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
    decoder = {{"type", "Sequence"}, {"decoders", decs}};
  }
  ojson t = {{"version", "1.0"}, {"truncation", nullptr}, {"padding", nullptr}, {"added_tokens", added}, {"normalizer", normalizer},
             {"pre_tokenizer", pt}, {"post_processor", post}, {"decoder", decoder},
             {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", unk ? ojson(unk->second) : ojson(nullptr)},
                        {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr}, {"fuse_unk", spm},
                        {"byte_fallback", spm}, {"ignore_merges", pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3"},
                        {"vocab", vocab}, {"merges", merge_list}}}};
  ojson tc = {{"tokenizer_class", "PreTrainedTokenizerFast"}, {"clean_up_tokenization_spaces", false},
              {"add_bos_token", add_bos}, {"add_eos_token", add_eos}};
  tc["bos_token"] = bos ? ojson(bos->second) : ojson(nullptr);
  tc["eos_token"] = eos ? ojson(eos->second) : ojson(nullptr);
  tc["pad_token"] = pad ? ojson(pad->second) : ojson(nullptr);
  tc["unk_token"] = unk ? ojson(unk->second) : ojson(nullptr);
  if (bos) c["bos_token_id"] = bos->first;
  if (eos) c["eos_token_id"] = eos->first;
  if (pad) c["pad_token_id"] = pad->first;
  if (auto tmpl = f.opt_str("tokenizer.chat_template")) tc["chat_template"] = *tmpl;
  try {
    return {c.dump(2), t.dump(), tc.dump(2)};
  } catch (const nlohmann::json::exception& e) {  // any other string the checks above did not name
    throw Error(cat(F, ": the metadata cannot become config.json/tokenizer.json (", e.what(), ")"));
  }
}

Tokenizer load_model_tokenizer(const std::string& path) {
  if (!is_gguf_file(path)) return Tokenizer::from_dir(path);
  auto f = GgufFile::open(path);
  GgufHfTexts t = gguf_hf_texts(*f);
  return Tokenizer::from_json_text(t.tokenizer_json, t.tokenizer_config_json, path + " (tokenizer metadata)");
}

Model load_gguf_model(const std::string& path, const LoadOptions& opt) {
  if (opt.quantize) {
    FT_CHECK(quant_bits_supported(opt.quantize), "--quantize ", opt.quantize, ": unsupported bit width (4 or 8; 2, 3, 5, 6 also work)");
    FT_CHECK(quant_group_supported(opt.group_size), "--group-size ", opt.group_size, ": unsupported (32, 64 or 128)");
  }
  auto f = GgufFile::open(path);
  const std::string& F = path;
  GgufHfTexts texts = gguf_hf_texts(*f);
  Model m;
  m.dir = path;
  m.cfg = parse_model_config(texts.config_json, path + " (GGUF metadata)");
  const ModelConfig& c = m.cfg;
  const bool permute = gguf_permutes_qk(c);
  // Storage: quantised matrices stay packed (gguf_packed.h); float ones in --dtype, else as the file's
  // float matrices are stored (BF16, F16 or F32; the numbers are fp32's either way).
  std::map<std::string, int64_t> bytes;
  for (const auto& t : f->tensors()) bytes[ggml_type_name(t.type)] += int64_t(t.nbytes), m.checkpoint_parameters += t.numel();
  int64_t best = -1;
  for (auto& [k, v] : bytes)
    if (v > best) best = v, m.checkpoint_dtype = k;
  DType mat_dt = opt.dtype == "bfloat16" ? DType::BF16 : opt.dtype == "float16" ? DType::F16
                 : opt.dtype.empty() && m.checkpoint_dtype == "BF16" ? DType::BF16
                 : opt.dtype.empty() && m.checkpoint_dtype == "F16"  ? DType::F16 : DType::F32;

  auto get = [&](const std::string& hf, const std::vector<int64_t>& shape, bool matrix) {
    std::string g;
    std::string stem = hf, suffix;
    for (const char* s : {".weight", ".bias"})
      if (hf.size() > std::strlen(s) && hf.compare(hf.size() - std::strlen(s), std::strlen(s), s) == 0)
        stem = hf.substr(0, hf.size() - std::strlen(s)), suffix = s;
    if (hf == c.weight("embed_tokens.weight")) g = "token_embd.weight";
    else if (hf == c.weight("norm.weight")) g = "output_norm.weight";
    else if (hf == c.lm_head_name) g = "output.weight";
    else g = gguf_tensor_base(c, stem) + suffix;
    const GgufTensorInfo* t = f->tensor(g);
    FT_CHECK(t, F, ": tensor '", g, "' is missing (", c.model_type, " with ", c.num_layers, " layers per the metadata)");
    FT_CHECK(t->shape() == shape, F, ": tensor '", g, "' has shape ", shape_str(t->shape()), " but the architecture keys imply ",
             shape_str(shape));
    const bool is_q = stem.size() > 7 && stem.compare(stem.size() - 7, 7, ".q_proj") == 0;
    const bool is_k = stem.size() > 7 && stem.compare(stem.size() - 7, 7, ".k_proj") == 0;
    if (matrix && shape.size() == 2 && gguf_affine_of(t->type).bits) {
      // Kept packed: the blocks re-expressed as affine groups (exact, gguf_packed.h), rows in HF order.
      FT_CHECK(!opt.quantize, F, ": tensor '", g, "' is already quantised (", ggml_type_name(t->type), "); drop --quantize");
      std::vector<int64_t> order;
      if (permute && (is_q || is_k)) order = gguf_unpermute_order(shape[0], is_q ? c.num_heads : c.num_kv_heads);
      Tensor q = gguf_repack(t->type, t->data, shape[0], shape[1], order.empty() ? nullptr : &order, hf);
      f->release(*t);  // the file's pages of this tensor are no longer needed in memory
      return q;
    }
    std::vector<float> v = read_f32(*t);
    f->release(*t);  // copied: the file's pages of this tensor are no longer needed in memory
    if (permute && (is_q || is_k)) {
      int64_t cols = shape.size() == 2 ? shape[1] : 1;
      v = gguf_permute_rows(v, shape[0], cols, is_q ? c.num_heads : c.num_kv_heads, true);
    }
    if (c.norm_plus_one && !matrix && stem.find("norm") != std::string::npos)
      for (float& x : v) x -= 1.f;
    Tensor out = Tensor::from_vector(v, shape);
    if (matrix && opt.quantize > 0 && shape.size() == 2 && shape[1] % opt.group_size == 0)  // --quantize on a float file
      return quantize_affine(out, opt.quantize, opt.group_size, mat_dt, hf);
    return matrix ? out.to(mat_dt) : out;
  };
  const int64_t H = c.hidden_size, D = c.head_dim, I = c.intermediate_size;
  m.embed = get(c.weight("embed_tokens.weight"), {c.vocab_size, H}, true);
  m.final_norm = get(c.weight("norm.weight"), {H}, false);
  m.lm_head = c.tie_word_embeddings ? m.embed : get(c.lm_head_name, {c.vocab_size, H}, true);
  m.layers.resize(size_t(c.num_layers));
  for (int64_t i = 0; i < c.num_layers; ++i) {
    DecoderLayer& l = m.layers[size_t(i)];
    auto w = [&](const std::string& s) { return c.layer_weight(i, s); };
    auto proj = [&](const std::string& mod, int64_t out, int64_t in, bool bias) {
      Projection p;
      p.name = w(mod);
      p.weight = get(p.name + ".weight", {out, in}, true);
      if (bias) p.bias = get(p.name + ".bias", {out}, false);
      return p;
    };
    l.input_norm = get(w("input_layernorm.weight"), {H}, false);
    l.post_attn_norm = get(w("post_attention_layernorm.weight"), {H}, false);
    if (c.sandwich_norms) {
      l.pre_ff_norm = get(w("pre_feedforward_layernorm.weight"), {H}, false);
      l.post_ff_norm = get(w("post_feedforward_layernorm.weight"), {H}, false);
    }
    if (c.qk_norm) {
      l.q_norm = get(w("self_attn.q_norm.weight"), {D}, false);
      l.k_norm = get(w("self_attn.k_norm.weight"), {D}, false);
    }
    if (c.fused_qkv) {
      l.qkv = proj("self_attn.qkv_proj", c.q_dim() + 2 * c.kv_dim(), H, c.qkv_bias);
    } else {
      l.q = proj("self_attn.q_proj", c.q_dim(), H, c.qkv_bias);
      l.k = proj("self_attn.k_proj", c.kv_dim(), H, c.qkv_bias);
      l.v = proj("self_attn.v_proj", c.kv_dim(), H, c.qkv_bias);
    }
    l.o = proj("self_attn.o_proj", H, c.q_dim(), c.o_bias);
    if (c.fused_gate_up) {
      l.gate_up = proj("mlp.gate_up_proj", 2 * I, H, c.mlp_bias);
    } else {
      l.gate = proj("mlp.gate_proj", I, H, c.mlp_bias);
      l.up = proj("mlp.up_proj", I, H, c.mlp_bias);
    }
    l.down = proj("mlp.down_proj", H, I, c.mlp_bias);
  }
  return m;
}

}  // namespace ft
