#include "models/config.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "autograd/error.h"
#include "autograd/file_io.h"
#include "autograd/json_file.h"

namespace ft {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const char* kSupported = "llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3, gemma3_text, phi3";

std::string type_of(const json& v) {
  if (v.is_number_integer()) return "integer";
  if (v.is_number_float()) return "number";
  return v.type_name();
}

// Typed access to one JSON object; errors name the file and the full key path.
struct Obj {
  const json& j;
  std::string file, prefix;

  std::string path(const std::string& k) const { return prefix + k; }
  const json* get(const std::string& k) const {
    auto it = j.find(k);
    return it == j.end() || it->is_null() ? nullptr : &*it;
  }
  bool has(const std::string& k) const { return get(k) != nullptr; }
  [[noreturn]] void bad(const std::string& k, const char* want, const json& v) const {
    throw Error(cat(file, ": key '", path(k), "' must be ", want, ", got ", type_of(v), " ", v.dump()));
  }
  static bool integral(const json& v) {
    return v.is_number_integer() || (v.is_number_float() && std::isfinite(v.get<double>()) &&
                                     v.get<double>() == std::floor(v.get<double>()) && std::fabs(v.get<double>()) < 9e15);
  }
  int64_t as_int(const std::string& k, const json& v) const {
    if (!integral(v)) bad(k, "an integer", v);
    return v.is_number_integer() ? v.get<int64_t>() : int64_t(v.get<double>());
  }
  std::optional<int64_t> oi(const std::string& k) const {
    const json* v = get(k);
    return v ? std::optional<int64_t>(as_int(k, *v)) : std::nullopt;
  }
  int64_t i(const std::string& k, int64_t def) const { return oi(k).value_or(def); }
  int64_t req_i(const std::string& k) const {
    FT_CHECK(has(k), file, ": missing key '", path(k), "' (an integer every HF config.json of this model type has)");
    return *oi(k);
  }
  int64_t pos_i(const std::string& k, std::optional<int64_t> def, int64_t max = int64_t(1) << 40) const {
    int64_t v = def ? i(k, *def) : req_i(k);
    FT_CHECK(v > 0, file, ": key '", path(k), "' must be positive, got ", v);
    FT_CHECK(v <= max, file, ": key '", path(k), "' = ", v, " is implausibly large (limit ", max, ")");
    return v;
  }
  std::optional<double> od(const std::string& k) const {
    const json* v = get(k);
    if (!v) return std::nullopt;
    if (!v->is_number()) bad(k, "a number", *v);
    return v->get<double>();
  }
  double d(const std::string& k, double def) const { return od(k).value_or(def); }
  bool b(const std::string& k, bool def) const {
    const json* v = get(k);
    if (!v) return def;
    if (!v->is_boolean()) bad(k, "true or false", *v);
    return v->get<bool>();
  }
  std::optional<std::string> os(const std::string& k) const {
    const json* v = get(k);
    if (!v) return std::nullopt;
    if (!v->is_string()) bad(k, "a string", *v);
    return v->get<std::string>();
  }
  std::vector<int64_t> ids(const std::string& k) const {  // int or list of ints
    const json* v = get(k);
    std::vector<int64_t> r;
    if (!v) return r;
    if (v->is_array()) {
      for (auto& e : *v) {
        if (!integral(e)) bad(k, "an integer or a list of integers", *v);
        r.push_back(as_int(k, e));
      }
    } else {
      r.push_back(as_int(k, *v));
    }
    return r;
  }
  std::vector<double> nums(const std::string& k) const {
    const json* v = get(k);
    std::vector<double> r;
    if (!v) return r;
    if (!v->is_array()) bad(k, "a list of numbers", *v);
    for (auto& e : *v) {
      if (!e.is_number()) bad(k, "a list of numbers", *v);
      r.push_back(e.get<double>());
    }
    return r;
  }
  Obj sub(const std::string& k) const {
    const json* v = get(k);
    if (v && !v->is_object()) bad(k, "an object", *v);
    static const json empty = json::object();
    return Obj{v ? *v : empty, file, path(k) + "."};
  }
};


Activation parse_act(const std::string& a, const Obj& o, const std::string& key) {
  if (a == "silu" || a == "swish") return Activation::SiLU;
  if (a == "gelu_pytorch_tanh" || a == "gelu_new" || a == "gelu_fast") return Activation::GeluTanh;
  if (a == "gelu") return Activation::Gelu;
  throw Error(cat(o.file, ": key '", o.path(key), "' = '", a,
                  "' is not a supported activation (silu, gelu_pytorch_tanh, gelu_new, gelu)"));
}

RopeType parse_rope_type(const std::string& t, const Obj& o) {
  if (t == "default") return RopeType::Default;
  if (t == "linear") return RopeType::Linear;
  if (t == "dynamic") return RopeType::Dynamic;
  if (t == "yarn") return RopeType::Yarn;
  if (t == "longrope") return RopeType::LongRope;
  if (t == "llama3") return RopeType::Llama3;
  throw Error(cat(o.file, ": ", o.prefix.empty() ? "rope" : o.prefix.substr(0, o.prefix.size() - 1), " rope_type '", t,
                  "' is not supported (default, linear, dynamic, yarn, longrope, llama3)"));
}

// Family-independent inputs to the RoPE resolution.
struct RopeCtx {
  std::string family;
  double default_theta;
  int64_t max_pos;
  std::optional<double> top_theta, top_partial;
  std::optional<int64_t> top_orig;  // top-level original_max_position_embeddings (HF: overrides for yarn/longrope/llama3)
};

// One HF rope-parameter dict (rope_scaling / rope_parameters[/layer type]) -> RopeParams.
RopeParams rope_from(const Obj& o, const RopeCtx& c, double theta_default, bool per_layer) {
  RopeParams p;
  std::string t = o.os("rope_type").value_or(o.os("type").value_or("default"));
  if (c.family == "phi3" && (t == "su" || t == "yarn")) t = "longrope";  // Phi3Config renames legacy names
  p.type = parse_rope_type(t, o);
  p.theta = o.has("rope_theta") ? *o.od("rope_theta") : theta_default;
  p.partial_rotary_factor = o.has("partial_rotary_factor") ? *o.od("partial_rotary_factor") : c.top_partial.value_or(1.0);
  p.factor = o.od("factor");
  p.max_position_embeddings = c.max_pos;
  p.attention_factor = o.od("attention_factor");
  p.beta_fast = o.od("beta_fast");
  p.beta_slow = o.od("beta_slow");
  p.mscale = o.od("mscale");
  p.mscale_all_dim = o.od("mscale_all_dim");
  p.truncate = o.b("truncate", true);
  p.low_freq_factor = o.d("low_freq_factor", 1.0);
  p.high_freq_factor = o.d("high_freq_factor", 4.0);
  if (p.type == RopeType::LongRope || p.type == RopeType::Yarn || p.type == RopeType::Llama3) {
    // standardize_rope_params: a top-level original_max_position_embeddings wins (single-dict configs),
    // else the dict's own value, else max_position_embeddings.
    if (c.top_orig && !per_layer) p.original_max_position_embeddings = *c.top_orig;
    else p.original_max_position_embeddings = o.i("original_max_position_embeddings", c.max_pos);
  }
  auto need = [&](bool ok, const char* key) {
    FT_CHECK(ok, o.file, ": rope_type '", t, "' needs key '", o.prefix, key, "'");
  };
  if (p.type == RopeType::Linear || p.type == RopeType::Dynamic || p.type == RopeType::Llama3 || p.type == RopeType::Yarn)
    need(p.factor.has_value(), "factor");
  if (p.type == RopeType::Llama3) {
    need(o.has("low_freq_factor"), "low_freq_factor");
    need(o.has("high_freq_factor"), "high_freq_factor");
    FT_CHECK(p.high_freq_factor > p.low_freq_factor, o.file, ": ", o.prefix, "high_freq_factor must exceed low_freq_factor");
  }
  if (p.type == RopeType::LongRope) {
    p.short_factor = o.nums("short_factor");
    p.long_factor = o.nums("long_factor");
    need(!p.short_factor.empty(), "short_factor");
    need(!p.long_factor.empty(), "long_factor");
  }
  FT_CHECK(p.theta > 0, o.file, ": ", o.prefix, "rope_theta must be positive, got ", p.theta);
  FT_CHECK(p.partial_rotary_factor > 0 && p.partial_rotary_factor <= 1, o.file, ": partial_rotary_factor must be in (0, 1], got ",
           p.partial_rotary_factor);
  return p;
}

// Resolves the RoPE parameters for the layer types "full_attention" and "sliding_attention".
std::pair<RopeParams, RopeParams> resolve_rope(const Obj& o, const RopeCtx& c) {
  const json* rp = o.get("rope_parameters");
  const json* rs = o.get("rope_scaling");
  if (rp && !rp->is_object()) o.bad("rope_parameters", "an object", *rp);
  if (rs && !rs->is_object()) o.bad("rope_scaling", "an object", *rs);
  const bool per_type = rp && (rp->contains("full_attention") || rp->contains("sliding_attention"));
  if (c.family == "gemma3_text") {
    // Gemma3TextConfig.convert_rope_params_to_dict: rope_scaling updates the full-attention dict; the
    // sliding (local) layers use rope_local_base_freq with default RoPE.
    FT_CHECK(!rp || per_type, o.file, ": ", o.path("rope_parameters"),
             " of a Gemma 3 config must be per layer type {\"full_attention\": {...}, \"sliding_attention\": {...}}");
    json full = rp && rp->contains("full_attention") && !(*rp)["full_attention"].is_null() ? (*rp)["full_attention"]
                                                                                            : json{{"rope_type", "default"}};
    json slide = rp && rp->contains("sliding_attention") && !(*rp)["sliding_attention"].is_null()
                     ? (*rp)["sliding_attention"] : json{{"rope_type", "default"}};
    if (!full.is_object()) o.bad("rope_parameters.full_attention", "an object", full);
    if (!slide.is_object()) o.bad("rope_parameters.sliding_attention", "an object", slide);
    if (rs) full.update(*rs);
    const double local = o.d("rope_local_base_freq", 10000.0);
    std::string base = rs && !rp ? "rope_scaling" : "rope_parameters.full_attention";
    RopeParams f = rope_from(Obj{full, o.file, o.prefix + base + "."}, c, c.top_theta.value_or(c.default_theta), true);
    RopeParams s = rope_from(Obj{slide, o.file, o.prefix + "rope_parameters.sliding_attention."}, c, local, true);
    return {f, s};
  }
  if (per_type) {
    auto one = [&](const char* lt) {
      const json& v = rp->contains(lt) ? (*rp)[lt] : (*rp)[rp->contains("full_attention") ? "full_attention" : "sliding_attention"];
      if (!v.is_object()) o.bad(std::string("rope_parameters.") + lt, "an object", v);
      return rope_from(Obj{v, o.file, o.prefix + "rope_parameters." + lt + "."}, c, c.top_theta.value_or(c.default_theta), true);
    };
    return {one("full_attention"), one("sliding_attention")};
  }
  // convert_rope_params_to_dict: rope_scaling (v4) wins over rope_parameters (v5); rope_theta and
  // partial_rotary_factor fill in what the dict lacks.
  const json* src = rs ? rs : rp;
  static const json empty = json::object();
  Obj d{src ? *src : empty, o.file, o.prefix + (rs ? "rope_scaling." : "rope_parameters.")};
  RopeParams p = rope_from(d, c, c.top_theta.value_or(c.default_theta), false);
  return {p, p};
}

struct Family {
  const char* name;
  int64_t vocab, hidden, inter, layers, heads;
  std::optional<int64_t> kv;        // nullopt: = heads
  std::optional<int64_t> head_dim;  // nullopt: hidden / heads
  const char* act;
  int64_t max_pos;
  double eps, theta;
  std::optional<int64_t> bos, eos, pad;
  bool tie;
};

const Family kFamilies[] = {
    {"llama", 32000, 4096, 11008, 32, 32, std::nullopt, std::nullopt, "silu", 2048, 1e-6, 1e4, 1, 2, std::nullopt, false},
    {"mistral", 32000, 4096, 14336, 32, 32, 8, std::nullopt, "silu", 131072, 1e-6, 1e4, 1, 2, std::nullopt, false},
    {"qwen2", 151936, 4096, 22016, 32, 32, 32, std::nullopt, "silu", 32768, 1e-6, 1e4, std::nullopt, std::nullopt,
     std::nullopt, false},
    {"qwen3", 151936, 4096, 22016, 32, 32, 32, 128, "silu", 32768, 1e-6, 1e4, std::nullopt, std::nullopt, std::nullopt,
     false},
    {"gemma", 256000, 3072, 24576, 28, 16, 16, 256, "gelu_pytorch_tanh", 8192, 1e-6, 1e4, 2, 1, 0, true},
    {"gemma2", 256000, 2304, 9216, 26, 8, 4, 256, "gelu_pytorch_tanh", 8192, 1e-6, 1e4, 2, 1, 0, true},
    {"gemma3_text", 262208, 2304, 9216, 26, 8, 4, 256, "gelu_pytorch_tanh", 131072, 1e-6, 1e6, 2, 1, 0, true},
    {"phi3", 32064, 3072, 8192, 32, 32, std::nullopt, std::nullopt, "silu", 4096, 1e-5, 1e4, 1, 32000, 32000, false},
};

ModelConfig parse_text_model(const Obj& o, const Family& F, bool nested) {
  const std::string fam = F.name;
  ModelConfig c;
  c.model_type = fam;
  // Flat config.json files always carry the sizes; a multimodal Gemma 3 text_config relies on defaults.
  auto size = [&](const char* k, int64_t def) { return o.pos_i(k, nested ? std::optional<int64_t>(def) : std::nullopt); };
  c.vocab_size = size("vocab_size", F.vocab);
  c.hidden_size = size("hidden_size", F.hidden);
  c.intermediate_size = size("intermediate_size", F.inter);
  c.num_layers = o.pos_i("num_hidden_layers", nested ? std::optional<int64_t>(F.layers) : std::nullopt, 100000);
  c.num_heads = size("num_attention_heads", F.heads);
  c.num_kv_heads = o.pos_i("num_key_value_heads", F.kv.value_or(c.num_heads));
  FT_CHECK(c.num_heads % c.num_kv_heads == 0, o.file, ": num_attention_heads (", c.num_heads,
           ") must be a multiple of num_key_value_heads (", c.num_kv_heads, ")");
  // head_dim: explicit key when present (HF: getattr(config, "head_dim", None) or hidden // heads)
  std::optional<int64_t> hd = o.oi("head_dim");
  if (hd && *hd == 0) hd.reset();
  c.head_dim = hd ? *hd : F.head_dim.value_or(c.hidden_size / c.num_heads);
  FT_CHECK(c.head_dim > 0 && c.head_dim % 2 == 0 && c.head_dim <= 65536, o.file, ": head_dim must be positive and even, got ", c.head_dim);
  FT_CHECK(hd || F.head_dim || c.hidden_size % c.num_heads == 0, o.file, ": hidden_size (", c.hidden_size,
           ") is not a multiple of num_attention_heads (", c.num_heads, ") and no head_dim is given");
  c.rms_norm_eps = o.d("rms_norm_eps", F.eps);
  FT_CHECK(c.rms_norm_eps >= 0, o.file, ": rms_norm_eps must be non-negative");
  c.max_position_embeddings = o.pos_i("max_position_embeddings", F.max_pos);
  c.tie_word_embeddings = o.b("tie_word_embeddings", F.tie);
  c.bos_token_id = o.has("bos_token_id") ? o.oi("bos_token_id") : (o.j.contains("bos_token_id") ? std::nullopt : F.bos);
  c.pad_token_id = o.has("pad_token_id") ? o.oi("pad_token_id") : (o.j.contains("pad_token_id") ? std::nullopt : F.pad);
  c.eos_token_ids = o.ids("eos_token_id");
  if (c.eos_token_ids.empty() && !o.j.contains("eos_token_id") && F.eos) c.eos_token_ids = {*F.eos};

  // activation: Gemma 2/3 use hidden_activation, the others hidden_act (HF v5 ACT2FN[...])
  const bool g23 = fam == "gemma2" || fam == "gemma3_text";
  std::string act_key = g23 ? "hidden_activation" : "hidden_act";
  if (fam == "gemma" && !o.has("hidden_act") && o.has("hidden_activation")) act_key = "hidden_activation";
  c.act = parse_act(o.os(act_key).value_or(F.act), o, act_key);

  const bool gemma = fam == "gemma" || g23;
  const bool attention_bias = o.b("attention_bias", false);
  if (fam == "qwen2") {
    c.qkv_bias = true;
  } else if (fam == "llama" || fam == "qwen3" || gemma) {
    c.qkv_bias = c.o_bias = attention_bias;
  }
  c.mlp_bias = fam == "llama" && o.b("mlp_bias", false);
  c.qk_norm = fam == "qwen3" || fam == "gemma3_text";
  c.fused_qkv = c.fused_gate_up = fam == "phi3";
  c.norm_plus_one = gemma;
  c.sandwich_norms = g23;
  c.embed_scale = gemma ? std::sqrt(double(c.hidden_size)) : 1.0;
  if (g23) {
    const double qpas = o.d("query_pre_attn_scalar", 256);
    FT_CHECK(qpas > 0, o.file, ": query_pre_attn_scalar must be positive");
    c.attn_scale = std::pow(qpas, -0.5);
    c.attn_logit_softcap = o.d("attn_logit_softcapping", fam == "gemma2" ? 50.0 : 0.0);
    c.final_logit_softcap = o.d("final_logit_softcapping", fam == "gemma2" ? 30.0 : 0.0);
    if (o.j.contains("attn_logit_softcapping") && !o.has("attn_logit_softcapping")) c.attn_logit_softcap = 0;
    if (o.j.contains("final_logit_softcapping") && !o.has("final_logit_softcapping")) c.final_logit_softcap = 0;
    FT_CHECK(!o.b("use_bidirectional_attention", false), o.file,
             ": use_bidirectional_attention (EmbeddingGemma) is not supported; ft trains causal decoders");
  } else {
    c.attn_scale = std::pow(double(c.head_dim), -0.5);
  }

  // sliding windows and layer types
  std::optional<int64_t> window;
  const bool has_sw = o.has("sliding_window");
  const int64_t sw_default = (fam == "mistral" || fam == "qwen2" || fam == "qwen3" || fam == "gemma2") ? 4096
                             : fam == "gemma3_text" ? 4096 : 0;
  if (has_sw) window = o.oi("sliding_window");
  else if (!o.j.contains("sliding_window") && sw_default) window = sw_default;
  if (fam == "qwen2" || fam == "qwen3") {
    if (!o.b("use_sliding_window", false)) window.reset();
  }
  if (window) FT_CHECK(*window > 0, o.file, ": sliding_window must be positive, got ", *window);
  std::vector<std::string> types(size_t(c.num_layers), "full_attention");
  const bool uses_layer_types = fam == "qwen2" || fam == "qwen3" || g23;
  if (uses_layer_types && o.has("layer_types")) {
    const json& lt = *o.get("layer_types");
    if (!lt.is_array()) o.bad("layer_types", "a list of strings", lt);
    FT_CHECK(int64_t(lt.size()) == c.num_layers, o.file, ": layer_types has ", lt.size(), " entries but num_hidden_layers is ",
             c.num_layers);
    for (size_t i = 0; i < lt.size(); ++i) {
      if (!lt[i].is_string()) o.bad("layer_types", "a list of strings", lt);
      types[i] = lt[i].get<std::string>();
      FT_CHECK(types[i] == "full_attention" || types[i] == "sliding_attention", o.file, ": layer_types[", i, "] = '",
               types[i], "' is not supported (full_attention, sliding_attention)");
    }
  } else if (fam == "qwen2" || fam == "qwen3") {
    const int64_t mwl = o.i("max_window_layers", 28);
    for (int64_t i = 0; i < c.num_layers; ++i)
      if (window && i >= mwl) types[size_t(i)] = "sliding_attention";
  } else if (fam == "gemma2") {
    for (int64_t i = 0; i < c.num_layers; ++i)
      if ((i + 1) % 2) types[size_t(i)] = "sliding_attention";
  } else if (fam == "gemma3_text") {
    const int64_t pattern = o.pos_i("sliding_window_pattern", 6);
    for (int64_t i = 0; i < c.num_layers; ++i)
      if ((i + 1) % pattern) types[size_t(i)] = "sliding_attention";
  } else if (fam == "mistral" || fam == "phi3") {  // one window for every layer when set
    for (auto& t : types)
      if (window) t = "sliding_attention";
  }

  RopeCtx rc{fam, fam == "gemma3_text" ? 1e6 : F.theta, c.max_position_embeddings, o.od("rope_theta"),
             o.od("partial_rotary_factor"), o.oi("original_max_position_embeddings")};
  if (fam == "phi3" && !rc.top_orig) rc.top_orig = 4096;  // Phi3Config field default
  if (fam == "gemma3_text") rc.top_partial.reset();      // Gemma 3 default RoPE ignores it
  auto [full, slide] = resolve_rope(o, rc);
  if (fam == "phi3")
    FT_CHECK(full.type == RopeType::Default || full.type == RopeType::LongRope, o.file,
             ": Phi-3 supports rope_type default or longrope, got '", rope_type_name(full.type), "'");
  for (int64_t i = 0; i < c.num_layers; ++i) {
    LayerSpec L;
    const bool s = types[size_t(i)] == "sliding_attention";
    L.sliding = s && window.has_value();
    L.window = L.sliding ? *window : 0;
    L.rope = s ? slide : full;
    rope_rot_dim(L.rope, int(c.head_dim));  // validates partial rotary
    if (L.rope.type == RopeType::LongRope) {
      const size_t half = size_t(rope_rot_dim(L.rope, int(c.head_dim)) / 2);
      FT_CHECK(L.rope.short_factor.size() == half && L.rope.long_factor.size() == half, o.file,
               ": longrope short_factor/long_factor must have rot_dim/2 = ", half, " entries, got ",
               L.rope.short_factor.size(), " and ", L.rope.long_factor.size());
    }
    c.layers.push_back(std::move(L));
  }
  return c;
}

}  // namespace

ModelConfig parse_model_config(const std::string& json_text, const std::string& source) {
  json j = parse_json(json_text, source);
  FT_CHECK(j.is_object(), source, ": must be a JSON object");
  Obj top{j, source, ""};
  FT_CHECK(top.has("model_type"), source, ": missing key 'model_type' (supported: ", kSupported, ")");
  std::string mt = *top.os("model_type");
  ModelConfig c;
  std::string arch;
  if (const json* a = top.get("architectures"); a && a->is_array() && !a->empty() && (*a)[0].is_string())
    arch = (*a)[0].get<std::string>();
  if (mt == "gemma3") {
    Obj tc = top.sub("text_config");
    const Family& F = kFamilies[6];
    c = parse_text_model(tc, F, true);
    c.multimodal = true;
    c.weight_prefix = "language_model.model.";
    c.lm_head_name = "language_model.lm_head.weight";
    // Gemma3Config carries the ids (and tie flag) at the top level when set there.
    if (top.has("eos_token_id")) c.eos_token_ids = top.ids("eos_token_id");
    if (top.has("bos_token_id")) c.bos_token_id = top.oi("bos_token_id");
    if (top.has("pad_token_id")) c.pad_token_id = top.oi("pad_token_id");
    if (top.has("tie_word_embeddings")) c.tie_word_embeddings = top.b("tie_word_embeddings", true);
  } else {
    const Family* F = nullptr;
    for (auto& f : kFamilies)
      if (mt == f.name) F = &f;
    FT_CHECK(F, source, ": model_type '", mt, "' is not supported (supported: ", kSupported, ")");
    c = parse_text_model(top, *F, false);
  }
  c.architecture = arch;
  c.torch_dtype = top.os("torch_dtype").value_or(top.os("dtype").value_or(""));
  return c;
}

ModelConfig load_model_config(const std::string& path) {
  std::string p = fs::is_directory(path) ? (fs::path(path) / "config.json").string() : path;
  return parse_model_config(read_file_bytes(p), p);
}

void resolve_weight_names(ModelConfig& c, const std::function<bool(const std::string&)>& has_tensor) {
  for (const char* pre : {"model.", "language_model.model.", "model.language_model."}) {
    if (has_tensor(std::string(pre) + "embed_tokens.weight")) {
      c.weight_prefix = pre;
      break;
    }
  }
  for (const char* head : {"lm_head.weight", "language_model.lm_head.weight"}) {
    if (has_tensor(head)) {
      c.lm_head_name = head;
      break;
    }
  }
}


GenerationDefaults parse_generation_config(const std::string& json_text, const std::string& source) {
  json j = parse_json(json_text, source);
  FT_CHECK(j.is_object(), source, ": must be a JSON object");
  Obj o{j, source, ""};
  GenerationDefaults g;
  g.bos_token_id = o.oi("bos_token_id");
  g.pad_token_id = o.oi("pad_token_id");
  g.eos_token_ids = o.ids("eos_token_id");
  g.do_sample = o.b("do_sample", false);
  g.temperature = o.d("temperature", 1.0);
  g.top_k = o.i("top_k", 50);
  g.top_p = o.d("top_p", 1.0);
  g.min_p = o.od("min_p");
  g.repetition_penalty = o.d("repetition_penalty", 1.0);
  g.max_new_tokens = o.oi("max_new_tokens");
  g.max_length = o.oi("max_length");
  FT_CHECK(g.temperature >= 0, source, ": temperature must be non-negative, got ", g.temperature);
  FT_CHECK(g.top_k >= 0, source, ": top_k must be non-negative, got ", g.top_k);
  FT_CHECK(g.top_p > 0 && g.top_p <= 1, source, ": top_p must be in (0, 1], got ", g.top_p);
  FT_CHECK(!g.min_p || (*g.min_p >= 0 && *g.min_p <= 1), source, ": min_p must be in [0, 1], got ", g.min_p.value_or(0));
  FT_CHECK(g.repetition_penalty > 0, source, ": repetition_penalty must be positive, got ", g.repetition_penalty);
  return g;
}

GenerationDefaults load_generation_config(const std::string& dir, const ModelConfig* model) {
  fs::path p = fs::path(dir) / "generation_config.json";
  GenerationDefaults g;
  if (fs::exists(p)) {
    g = parse_generation_config(read_file_bytes(p.string()), p.string());
  }
  if (model) {
    if (!g.bos_token_id) g.bos_token_id = model->bos_token_id;
    if (!g.pad_token_id) g.pad_token_id = model->pad_token_id;
    if (g.eos_token_ids.empty()) g.eos_token_ids = model->eos_token_ids;
  }
  return g;
}

}  // namespace ft
