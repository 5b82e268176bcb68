// ModelConfig parsing (v4 and v5 config.json styles) and RoPE frequencies, checked against what
// transformers 5.17 derives from the same files (tests/data/models_config/hf_reference.json, made by
// gen_reference.py there) and against the formulas evaluated independently in double precision here.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <nlohmann/json.hpp>
#include <sstream>

#include "autograd/dtype.h"
#include "autograd/error.h"
#include "models/config.h"
#include "models/rope.h"
#include "models/safetensors.h"

namespace fs = std::filesystem;
using namespace ft;
using nlohmann::json;

namespace {

const json& reference() {
  static const json j = [] {
    std::ifstream in(std::string(FT_TEST_DATA) + "/models_config/hf_reference.json");
    return json::parse(in);
  }();
  return j;
}

std::string describe(const ModelConfig& c) {
  std::ostringstream s;
  s << c.model_type << " V" << c.vocab_size << " D" << c.hidden_size << " I" << c.intermediate_size << " L"
    << c.num_layers << " H" << c.num_heads << " KV" << c.num_kv_heads << " hd" << c.head_dim << " eps" << c.rms_norm_eps
    << " maxpos" << c.max_position_embeddings << " tie" << c.tie_word_embeddings << " bias" << c.qkv_bias << c.o_bias
    << c.mlp_bias << " act" << activation_name(c.act) << " scale" << c.attn_scale << " caps" << c.attn_logit_softcap
    << "/" << c.final_logit_softcap << " prefix " << c.weight_prefix << " dtype " << c.torch_dtype << " eos";
  for (auto e : c.eos_token_ids) s << " " << e;
  for (auto& l : c.layers)
    s << "\n  [" << (l.sliding ? "sliding " + std::to_string(l.window) : "full") << " " << rope_type_name(l.rope.type)
      << " theta " << l.rope.theta << " f " << l.rope.factor.value_or(-1) << " orig "
      << l.rope.original_max_position_embeddings << " prf " << l.rope.partial_rotary_factor << "]";
  return s.str();
}

std::vector<int64_t> ids(const json& v) {
  if (v.is_null()) return {};
  if (v.is_array()) return v.get<std::vector<int64_t>>();
  return {v.get<int64_t>()};
}

std::optional<int64_t> opt_id(const json& v) {
  return v.is_null() ? std::nullopt : std::optional<int64_t>(v.get<int64_t>());
}

// |a - b| <= rel * |b| (+ tiny absolute floor for values near zero)
void expect_close(const std::vector<float>& got, const std::vector<double>& want, double rel, double abs,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    double err = std::fabs(double(got[i]) - want[i]);
    worst = std::max(worst, err / (rel * std::fabs(want[i]) + abs));
    EXPECT_LE(err, rel * std::fabs(want[i]) + abs) << what << "[" << i << "]: got " << got[i] << " want " << want[i];
  }
  ::testing::Test::RecordProperty(what, std::to_string(worst));
}

void expect_error(const std::string& text, const std::vector<std::string>& parts) {
  try {
    ModelConfig c = parse_model_config(text);
    ADD_FAILURE() << "no error for: " << text << "\n" << describe(c);
  } catch (const Error& e) {
    for (auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << "'" << p << "' not in: " << e.what();
  }
}

json llama_base() {
  return json::parse(R"({"model_type": "llama", "vocab_size": 128, "hidden_size": 64, "intermediate_size": 96,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "rope_theta": 10000.0})");
}

}  // namespace

// Every family, v4-style and v5-style config.json: same ModelConfig, equal to what transformers derives,
// and the same RoPE numbers as the model's rotary embedding module.
TEST(ModelConfig, MatchesTransformersOnEveryFamily) {
  const json& ref = reference();
  ASSERT_GE(ref["cases"].size(), 18u);
  for (auto& [name, cs] : ref["cases"].items()) {
    SCOPED_TRACE(name);
    ModelConfig a = parse_model_config(cs["config_v4"].dump(), name + "/config.json");
    ModelConfig b = parse_model_config(cs["config_v5"].get<std::string>(), name + "/v5/config.json");
    EXPECT_TRUE(a == b) << "v4: " << describe(a) << "\nv5: " << describe(b);
    const json& d = cs["derived"];
    EXPECT_EQ(a.model_type, d["model_type"].get<std::string>());
    EXPECT_EQ(a.vocab_size, d["vocab_size"].get<int64_t>());
    EXPECT_EQ(a.hidden_size, d["hidden_size"].get<int64_t>());
    EXPECT_EQ(a.intermediate_size, d["intermediate_size"].get<int64_t>());
    EXPECT_EQ(a.num_layers, d["num_hidden_layers"].get<int64_t>());
    EXPECT_EQ(a.num_heads, d["num_attention_heads"].get<int64_t>());
    EXPECT_EQ(a.num_kv_heads, d["num_key_value_heads"].get<int64_t>());
    EXPECT_EQ(a.head_dim, d["head_dim"].get<int64_t>());
    EXPECT_DOUBLE_EQ(a.rms_norm_eps, d["rms_norm_eps"].get<double>());
    EXPECT_EQ(a.max_position_embeddings, d["max_position_embeddings"].get<int64_t>());
    EXPECT_EQ(a.tie_word_embeddings, d["tie_word_embeddings"].get<bool>());
    EXPECT_EQ(activation_name(a.act), d["hidden_act"].get<std::string>());
    EXPECT_EQ(a.torch_dtype, "bfloat16");
    const bool gemma = a.model_type.rfind("gemma", 0) == 0;
    EXPECT_EQ(a.norm_plus_one, gemma);
    EXPECT_DOUBLE_EQ(a.embed_scale, gemma ? std::sqrt(double(a.hidden_size)) : 1.0);
    double qpas = d["query_pre_attn_scalar"].is_null() ? double(a.head_dim) : d["query_pre_attn_scalar"].get<double>();
    EXPECT_DOUBLE_EQ(a.attn_scale, std::pow(qpas, -0.5));
    EXPECT_DOUBLE_EQ(a.attn_logit_softcap, d["attn_logit_softcapping"].is_null() ? 0 : d["attn_logit_softcapping"].get<double>());
    EXPECT_DOUBLE_EQ(a.final_logit_softcap,
                     d["final_logit_softcapping"].is_null() ? 0 : d["final_logit_softcapping"].get<double>());
    const bool ab = d["attention_bias"].is_boolean() && d["attention_bias"].get<bool>();
    EXPECT_EQ(a.qkv_bias, a.model_type == "qwen2" || ab);
    EXPECT_EQ(a.o_bias, ab);
    EXPECT_EQ(a.mlp_bias, d["mlp_bias"].is_boolean() && d["mlp_bias"].get<bool>());
    EXPECT_EQ(a.qk_norm, a.model_type == "qwen3" || a.model_type == "gemma3_text");
    EXPECT_EQ(a.fused_qkv && a.fused_gate_up, a.model_type == "phi3");
    EXPECT_EQ(a.sandwich_norms, a.model_type == "gemma2" || a.model_type == "gemma3_text");
    EXPECT_EQ(a.bos_token_id, opt_id(d["bos_token_id"]));
    EXPECT_EQ(a.pad_token_id, opt_id(d["pad_token_id"]));
    EXPECT_EQ(a.eos_token_ids, ids(a.multimodal ? d["top_eos_token_id"] : d["eos_token_id"]));
    EXPECT_EQ(a.multimodal, name == "gemma3_mm");
    EXPECT_EQ(a.weight_prefix, a.multimodal ? "language_model.model." : "model.");

    // layer types and windows
    ASSERT_EQ(a.layers.size(), size_t(a.num_layers));
    const json& lt = d["layer_types"];
    const json& sw = d["sliding_window"];
    for (size_t i = 0; i < a.layers.size(); ++i) {
      const bool slide_type = lt.is_null() || lt[i] == "sliding_attention";
      EXPECT_EQ(a.layers[i].sliding, slide_type && !sw.is_null()) << "layer " << i;
      EXPECT_EQ(a.layers[i].window, a.layers[i].sliding ? sw.get<int64_t>() : 0) << "layer " << i;
    }

    // RoPE: parameters and numbers per layer type
    for (auto& [key, entry] : cs["rope"].items()) {
      const json& rp = key == "all" ? d["rope_parameters"] : d["rope_parameters"][key];
      const LayerSpec* layer = nullptr;
      for (size_t i = 0; i < a.layers.size() && !layer; ++i)
        if (key == "all" || lt[i] == key) layer = &a.layers[i];
      ASSERT_NE(layer, nullptr) << key;
      const RopeParams& p = layer->rope;
      EXPECT_EQ(rope_type_name(p.type), rp["rope_type"].get<std::string>()) << key;
      EXPECT_DOUBLE_EQ(p.theta, rp["rope_theta"].get<double>()) << key;
      if (rp.contains("factor")) { EXPECT_DOUBLE_EQ(p.factor.value_or(-1), rp["factor"].get<double>()) << key; }
      if (rp.contains("original_max_position_embeddings")) {
        EXPECT_EQ(p.original_max_position_embeddings, rp["original_max_position_embeddings"].get<int64_t>()) << key;
      }
      if (rp.contains("partial_rotary_factor")) {
        EXPECT_DOUBLE_EQ(p.partial_rotary_factor, rp["partial_rotary_factor"].get<double>()) << key;
      }
      for (auto& [tag, e] : entry.items()) {
        const std::string what = name + "/" + key + "/" + tag;
        const int64_t seq_len = e["seq_len"].get<int64_t>();
        RopeFreqs f = rope_inv_freq(p, int(a.head_dim), seq_len);
        EXPECT_EQ(int64_t(f.inv_freq.size()) * 2, e["rot_dim"].get<int64_t>()) << what;
        EXPECT_EQ(rope_rot_dim(p, int(a.head_dim)), e["rot_dim"].get<int>()) << what;
        expect_close(f.inv_freq, e["inv_freq"].get<std::vector<double>>(), 2.5e-7, 0, what + " inv_freq");
        EXPECT_EQ(f.attention_scaling, float(e["attention_scaling"].get<double>())) << what;
        auto pos = e["positions"].get<std::vector<int64_t>>();
        std::vector<float> cos, sin;
        rope_cos_sin(p, int(a.head_dim), pos.data(), int64_t(pos.size()), seq_len, cos, sin);
        const size_t rd = size_t(e["rot_dim"].get<int64_t>()), half = rd / 2;
        ASSERT_EQ(cos.size(), pos.size() * rd) << what;
        std::vector<float> c1, s1;
        for (size_t t = 0; t < pos.size(); ++t)
          for (size_t i = 0; i < half; ++i) {
            c1.push_back(cos[t * rd + i]);
            s1.push_back(sin[t * rd + i]);
            EXPECT_EQ(cos[t * rd + i], cos[t * rd + i + half]);
            EXPECT_EQ(sin[t * rd + i], sin[t * rd + i + half]);
          }
        // one float32 ulp of inv_freq moves angle p*inv by p*6e-8: allow that at the largest position
        const double tol = 2e-7 + 1.2e-7 * double(*std::max_element(pos.begin(), pos.end()));
        expect_close(c1, e["cos"].get<std::vector<double>>(), 0, tol, what + " cos");
        expect_close(s1, e["sin"].get<std::vector<double>>(), 0, tol, what + " sin");
      }
    }
  }
}

// Corrupted config files (random byte flips of real ones) give an ft::Error or a valid config, never
// another exception or a crash.
TEST(ModelConfig, FuzzedConfigsFailCleanly) {
  std::mt19937 rng(7);
  int ok = 0, rejected = 0;
  for (auto& [name, cs] : reference()["cases"].items()) {
    const std::string base = cs["config_v5"].get<std::string>();
    for (int it = 0; it < 150; ++it) {
      std::string t = base;
      for (int k = 0, n = 1 + int(rng() % 3); k < n; ++k) {
        size_t pos = rng() % t.size();
        const char* repl[] = {"0", "-", "\"", "null", "[", "}", "1e300", "true", "9999999999", ":", ","};
        t.replace(pos, rng() % 4, repl[rng() % 11]);
      }
      try {
        ModelConfig c = parse_model_config(t, name);
        for (auto& L : c.layers) rope_inv_freq(L.rope, int(c.head_dim), 64);
        ++ok;
      } catch (const Error&) {
        ++rejected;
      } catch (const std::exception& e) {
        ADD_FAILURE() << "non-ft exception " << e.what() << " for:\n" << t;
      }
    }
  }
  EXPECT_GT(rejected, 500);
  EXPECT_GT(ok, 100);
}

TEST(ModelConfig, GemmaEmbedScaleRoundsLikeHF) {
  json j = json::parse(R"({"model_type": "gemma", "vocab_size": 16, "hidden_size": 3072, "intermediate_size": 8,
                           "num_hidden_layers": 1, "num_attention_heads": 16})");
  ModelConfig c = parse_model_config(j.dump());
  EXPECT_FLOAT_EQ(float(c.embed_scale), 55.4256258f);
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(float(c.embed_scale))), 55.5f);  // what a bf16 model multiplies by
  EXPECT_EQ(c.head_dim, 256);
  EXPECT_EQ(c.num_kv_heads, 16);
  EXPECT_EQ(c.act, Activation::GeluTanh);  // Gemma default hidden_act
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{1});
}

TEST(ModelConfig, RopeKeyPrecedenceAndLegacyNames) {
  // v4 rope_scaling wins over v5 rope_parameters; the dict's own rope_theta wins over the top-level key.
  json j = llama_base();
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 5.0}};
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}, {"rope_theta", 7.0}};
  ModelConfig c = parse_model_config(j.dump());
  EXPECT_EQ(c.layers[0].rope.type, RopeType::Linear);
  EXPECT_EQ(c.layers[0].rope.theta, 7.0);
  j.erase("rope_scaling");
  EXPECT_EQ(parse_model_config(j.dump()).layers[1].rope.theta, 5.0);

  // Phi-3's legacy "su" (and "yarn") names mean longrope
  json phi = json::parse(R"({"model_type": "phi3", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 8,
     "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 131072,
     "original_max_position_embeddings": 4096, "rope_scaling": {"type": "su",
     "short_factor": [1,1,1,1,1,1,1,1], "long_factor": [2,2,2,2,2,2,2,2]}})");
  ModelConfig su = parse_model_config(phi.dump());
  phi["rope_scaling"]["type"] = "longrope";
  EXPECT_EQ(su, parse_model_config(phi.dump()));
  EXPECT_EQ(su.layers[0].rope.type, RopeType::LongRope);
  EXPECT_NEAR(rope_inv_freq(su.layers[0].rope, 16).attention_scaling, 1.19023807, 1e-7);
  EXPECT_EQ(su.layers[0].rope.original_max_position_embeddings, 4096);

  // Gemma 3 v4: rope_scaling applies to global layers only, local layers use rope_local_base_freq
  json g = json::parse(R"({"model_type": "gemma3_text", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 8,
     "num_hidden_layers": 4, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
     "sliding_window_pattern": 2, "sliding_window": 8, "rope_theta": 1e6, "rope_local_base_freq": 1e4,
     "rope_scaling": {"rope_type": "linear", "factor": 8.0}})");
  ModelConfig gc = parse_model_config(g.dump());
  EXPECT_TRUE(gc.layers[0].sliding && !gc.layers[1].sliding);
  EXPECT_EQ(gc.layers[0].rope.type, RopeType::Default);
  EXPECT_EQ(gc.layers[0].rope.theta, 1e4);
  EXPECT_EQ(gc.layers[1].rope.type, RopeType::Linear);
  EXPECT_EQ(gc.layers[1].rope.theta, 1e6);
  EXPECT_EQ(gc.layers[3].rope, gc.layers[1].rope);

  // Qwen2: layer_types says sliding but use_sliding_window is off -> no window (HF sets sliding_window None)
  json q = llama_base();
  q["model_type"] = "qwen2";
  q["layer_types"] = {"full_attention", "sliding_attention"};
  q["sliding_window"] = 8;
  EXPECT_FALSE(parse_model_config(q.dump()).layers[1].sliding);
  q["use_sliding_window"] = true;
  EXPECT_EQ(parse_model_config(q.dump()).layers[1].window, 8);
  EXPECT_FALSE(parse_model_config(q.dump()).layers[0].sliding);
}

// The formulas of modeling_rope_utils.py evaluated in double precision, independently of rope.cpp.
TEST(Rope, InvFreqMatchesFormulas) {
  auto base_inv = [](double theta, int d) {
    std::vector<double> v;
    for (int i = 0; i < d / 2; ++i) v.push_back(std::pow(theta, -2.0 * i / d));
    return v;
  };
  RopeParams p;
  p.theta = 10000;
  expect_close(rope_inv_freq(p, 64).inv_freq, base_inv(1e4, 64), 3e-7, 0, "default");
  p.partial_rotary_factor = 0.75;  // rotary dim 48 of head_dim 64
  expect_close(rope_inv_freq(p, 64).inv_freq, base_inv(1e4, 48), 3e-7, 0, "partial");
  p.partial_rotary_factor = 1;

  p.type = RopeType::Linear;
  p.factor = 8;
  auto lin = base_inv(1e4, 64);
  for (double& v : lin) v /= 8;
  expect_close(rope_inv_freq(p, 64).inv_freq, lin, 3e-7, 0, "linear");

  p.type = RopeType::Dynamic;
  p.factor = 2;
  p.max_position_embeddings = 512;
  expect_close(rope_inv_freq(p, 64, 100).inv_freq, base_inv(1e4, 64), 3e-7, 0, "dynamic short");
  const double L = 2000, b = 1e4 * std::pow(2 * L / 512 - 1, 64.0 / 62.0);
  expect_close(rope_inv_freq(p, 64, 2000).inv_freq, base_inv(b, 64), 2e-6, 0, "dynamic long");

  p = RopeParams{};
  p.type = RopeType::Llama3;
  p.theta = 500000;
  p.factor = 8;
  p.low_freq_factor = 1;
  p.high_freq_factor = 4;
  p.original_max_position_embeddings = 8192;
  auto l3 = base_inv(5e5, 128);
  int bands[3] = {0, 0, 0};
  for (double& v : l3) {
    double wl = 2 * M_PI / v;
    if (wl < 8192.0 / 4) { ++bands[0]; continue; }
    if (wl > 8192.0) { v /= 8; ++bands[2]; continue; }
    double s = (8192.0 / wl - 1) / (4 - 1);
    v = (1 - s) * v / 8 + s * v;
    ++bands[1];
  }
  EXPECT_TRUE(bands[0] > 0 && bands[1] > 0 && bands[2] > 0);  // all three regimes exercised
  expect_close(rope_inv_freq(p, 128).inv_freq, l3, 1e-6, 0, "llama3");

  for (bool truncate : {true, false}) {
    p = RopeParams{};
    p.type = RopeType::Yarn;
    p.theta = 1e6;
    p.factor = 4;
    p.original_max_position_embeddings = 32768;
    p.truncate = truncate;
    const int d = 128;
    auto corr = [&](double r) { return d * std::log(32768 / (r * 2 * M_PI)) / (2 * std::log(1e6)); };
    double lo = corr(32), hi = corr(1);
    if (truncate) { lo = std::floor(lo); hi = std::ceil(hi); }
    lo = std::max(lo, 0.0);
    hi = std::min(hi, d - 1.0);
    std::vector<double> want;
    for (int i = 0; i < d / 2; ++i) {
      double pf = std::pow(1e6, 2.0 * i / d);
      double ramp = std::clamp((i - lo) / (hi - lo), 0.0, 1.0), ext = 1 - ramp;
      want.push_back(1 / (4 * pf) * (1 - ext) + 1 / pf * ext);
    }
    RopeFreqs f = rope_inv_freq(p, d);
    expect_close(f.inv_freq, want, 1e-6, 0, truncate ? "yarn" : "yarn no truncate");
    EXPECT_FLOAT_EQ(f.attention_scaling, float(0.1 * std::log(4.0) + 1));
  }
  p.mscale = 1.0;
  p.mscale_all_dim = 0.5;
  EXPECT_FLOAT_EQ(rope_inv_freq(p, 128).attention_scaling,
                  float((0.1 * std::log(4.0) + 1) / (0.05 * std::log(4.0) + 1)));
  p.attention_factor = 1.5;
  EXPECT_EQ(rope_inv_freq(p, 128).attention_scaling, 1.5f);

  p = RopeParams{};
  p.type = RopeType::LongRope;
  p.max_position_embeddings = 131072;
  p.original_max_position_embeddings = 4096;
  for (int i = 0; i < 16; ++i) {
    p.short_factor.push_back(1 + 0.1 * i);
    p.long_factor.push_back(2 + 0.5 * i);
  }
  auto lr = [&](const std::vector<double>& ext) {
    std::vector<double> v;
    for (int i = 0; i < 16; ++i) v.push_back(1 / (ext[size_t(i)] * std::pow(1e4, 2.0 * i / 32)));
    return v;
  };
  expect_close(rope_inv_freq(p, 32, 4096).inv_freq, lr(p.short_factor), 3e-7, 0, "longrope short");
  expect_close(rope_inv_freq(p, 32, 4097).inv_freq, lr(p.long_factor), 3e-7, 0, "longrope long");
  EXPECT_FLOAT_EQ(rope_inv_freq(p, 32).attention_scaling, float(std::sqrt(1 + std::log(32.0) / std::log(4096.0))));
  p.factor = 1.0;  // explicit factor <= 1: no scaling
  EXPECT_EQ(rope_inv_freq(p, 32).attention_scaling, 1.0f);
  p.short_factor.pop_back();
  EXPECT_THROW(rope_inv_freq(p, 32), Error);
}

TEST(Rope, CosSinLayout) {
  RopeParams p;
  p.type = RopeType::Yarn;
  p.theta = 1e4;
  p.factor = 2;
  p.original_max_position_embeddings = 64;
  p.partial_rotary_factor = 0.5;
  std::vector<float> cos, sin;
  rope_cos_sin(p, 32, 5, cos, sin);  // rot_dim 16
  RopeFreqs f = rope_inv_freq(p, 32, 5);
  ASSERT_EQ(f.inv_freq.size(), 8u);
  ASSERT_EQ(cos.size(), 5u * 16);
  for (int t = 0; t < 5; ++t)
    for (int i = 0; i < 8; ++i) {
      float a = float(t) * f.inv_freq[size_t(i)];
      EXPECT_FLOAT_EQ(cos[size_t(t * 16 + i)], float(std::cos(double(a))) * f.attention_scaling);
      EXPECT_EQ(cos[size_t(t * 16 + i + 8)], cos[size_t(t * 16 + i)]);
      EXPECT_FLOAT_EQ(sin[size_t(t * 16 + i)], float(std::sin(double(a))) * f.attention_scaling);
    }
  EXPECT_GT(f.attention_scaling, 1.0f);
  p.partial_rotary_factor = 0.3;  // 9.6 -> 9: odd rotary dim
  EXPECT_THROW(rope_inv_freq(p, 32), Error);
}

TEST(ModelConfig, ErrorsNameFileAndKey) {
  json j = llama_base();
  expect_error(R"({"model_type": "gpt2", "n_embd": 8})",
               {"config.json", "model_type 'gpt2' is not supported", "llama, mistral, qwen2, qwen3, gemma", "phi3"});
  expect_error(R"({"hidden_size": 8})", {"config.json", "missing key 'model_type'"});
  expect_error("{\"model_type\": ", {"config.json", "invalid JSON"});
  expect_error("[1]", {"config.json", "JSON object"});
  json t = j;
  t["hidden_size"] = "64";
  expect_error(t.dump(), {"config.json: key 'hidden_size' must be an integer, got string"});
  t = j;
  t.erase("hidden_size");
  expect_error(t.dump(), {"config.json: missing key 'hidden_size'"});
  t = j;
  t["num_attention_heads"] = 0;
  expect_error(t.dump(), {"'num_attention_heads' must be positive"});
  t = j;
  t["num_key_value_heads"] = 3;
  expect_error(t.dump(), {"multiple of num_key_value_heads"});
  t = j;
  t["tie_word_embeddings"] = 1;
  expect_error(t.dump(), {"key 'tie_word_embeddings' must be true or false"});
  t = j;
  t["rms_norm_eps"] = "1e-5";
  expect_error(t.dump(), {"key 'rms_norm_eps' must be a number, got string"});
  t = j;
  t["hidden_act"] = "relu2";
  expect_error(t.dump(), {"'hidden_act' = 'relu2' is not a supported activation"});
  t = j;
  t["eos_token_id"] = {1, "2"};
  expect_error(t.dump(), {"key 'eos_token_id' must be an integer or a list of integers"});
  t = j;
  t["rope_scaling"] = {{"rope_type", "ntk-by-parts"}, {"factor", 2.0}};
  expect_error(t.dump(), {"rope_type 'ntk-by-parts' is not supported", "llama3"});
  t = j;
  t["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"high_freq_factor", 4.0}};
  expect_error(t.dump(), {"needs key 'rope_scaling.low_freq_factor'"});
  t = j;
  t["rope_scaling"] = {{"rope_type", "linear"}};
  expect_error(t.dump(), {"needs key 'rope_scaling.factor'"});
  t = j;
  t["rope_scaling"] = {{"rope_type", "linear"}, {"factor", "2"}};
  expect_error(t.dump(), {"key 'rope_scaling.factor' must be a number"});
  t = j;
  t["rope_scaling"] = "linear";
  expect_error(t.dump(), {"key 'rope_scaling' must be an object"});
  t = j;
  t["model_type"] = "phi3";
  t["rope_scaling"] = {{"type", "longrope"}, {"short_factor", {1, 1}}, {"long_factor", {1, 1}}};
  expect_error(t.dump(), {"short_factor/long_factor must have rot_dim/2 = 8 entries, got 2 and 2"});
  t["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  expect_error(t.dump(), {"Phi-3 supports rope_type default or longrope"});
  t = j;
  t["model_type"] = "qwen3";
  t["layer_types"] = {"full_attention"};
  expect_error(t.dump(), {"layer_types has 1 entries but num_hidden_layers is 2"});
  t["layer_types"] = {"full_attention", "chunked_attention"};
  expect_error(t.dump(), {"layer_types[1] = 'chunked_attention' is not supported"});
  expect_error(R"({"model_type": "gemma3", "text_config": {"hidden_size": "big"}})",
               {"key 'text_config.hidden_size' must be an integer, got string"});
  expect_error(R"({"model_type": "gemma3", "text_config": [1]})", {"key 'text_config' must be an object"});
  expect_error(R"({"model_type": "gemma3_text", "vocab_size": 8, "hidden_size": 8, "intermediate_size": 8,
                   "num_hidden_layers": 1, "num_attention_heads": 1, "num_key_value_heads": 1,
                   "use_bidirectional_attention": true})",
               {"use_bidirectional_attention"});
  EXPECT_THROW(load_model_config("/nonexistent/dir"), Error);
}

TEST(ModelConfig, WeightNamesAndMultimodalPrefix) {
  const json& cs = reference()["cases"]["gemma3_mm"];
  ModelConfig c = parse_model_config(cs["config_v4"].dump());
  EXPECT_TRUE(c.multimodal);
  EXPECT_EQ(c.layer_weight(3, "self_attn.q_norm.weight"), "language_model.model.layers.3.self_attn.q_norm.weight");
  // transformers >= 4.52 saves the text tower as model.language_model.*
  resolve_weight_names(c, [](const std::string& n) {
    return n == "model.language_model.embed_tokens.weight" || n == "lm_head.weight";
  });
  EXPECT_EQ(c.weight("norm.weight"), "model.language_model.norm.weight");
  EXPECT_EQ(c.lm_head_name, "lm_head.weight");
  ModelConfig l = parse_model_config(llama_base().dump());
  resolve_weight_names(l, [](const std::string& n) { return n == "model.embed_tokens.weight"; });
  EXPECT_EQ(l.layer_weight(0, "mlp.up_proj.weight"), "model.layers.0.mlp.up_proj.weight");
  EXPECT_EQ(l.q_dim(), 64);
  EXPECT_EQ(l.kv_dim(), 32);
}

TEST(GenerationConfig, ParsesHFFiles) {
  // Llama-3.1-Instruct style: top_k not set -> HF's default 50 applies when sampling
  GenerationDefaults g = parse_generation_config(R"({"bos_token_id": 128000, "do_sample": true,
      "eos_token_id": [128001, 128008, 128009], "temperature": 0.6, "top_p": 0.9, "transformers_version": "4.42.3"})");
  EXPECT_TRUE(g.do_sample);
  EXPECT_EQ(g.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_EQ(g.bos_token_id, 128000);
  EXPECT_DOUBLE_EQ(g.temperature, 0.6);
  EXPECT_DOUBLE_EQ(g.top_p, 0.9);
  EXPECT_EQ(g.top_k, 50);
  EXPECT_FALSE(g.min_p.has_value());
  EXPECT_DOUBLE_EQ(g.repetition_penalty, 1.0);
  // Qwen2.5-Instruct style
  g = parse_generation_config(R"({"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": true,
      "eos_token_id": [151645, 151643], "repetition_penalty": 1.05, "temperature": 0.7, "top_p": 0.8, "top_k": 20,
      "min_p": null, "max_new_tokens": 2048})");
  EXPECT_EQ(g.top_k, 20);
  EXPECT_DOUBLE_EQ(g.repetition_penalty, 1.05);
  EXPECT_EQ(g.max_new_tokens, 2048);
  EXPECT_EQ(g.pad_token_id, 151643);
  g = parse_generation_config(R"({"eos_token_id": 1, "min_p": 0.05})");
  EXPECT_EQ(g.eos_token_ids, std::vector<int64_t>{1});
  EXPECT_DOUBLE_EQ(g.min_p.value_or(0), 0.05);
  EXPECT_FALSE(g.do_sample);
  EXPECT_EQ(parse_generation_config("{}"), GenerationDefaults{});
  try {
    parse_generation_config(R"({"top_p": "0.9"})");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("generation_config.json: key 'top_p' must be a number, got string"),
              std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_generation_config(R"({"top_p": 0})"), Error);
  EXPECT_THROW(parse_generation_config(R"({"do_sample": "yes"})"), Error);
  // no generation_config.json: the model's ids
  ModelConfig m = parse_model_config(reference()["cases"]["llama31_llama3"]["config_v4"].dump());
  GenerationDefaults d = load_generation_config("/nonexistent", &m);
  EXPECT_EQ(d.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_EQ(d.bos_token_id, 128000);
}

// The fixture models generated from transformers 5.17 (tests/fixtures/models/<family>): config.json and
// config_v5.json give the same ModelConfig, the layer types / windows / RoPE buffers transformers used
// (expected.json meta) are reproduced, and the checkpoint holds exactly the tensors the config implies.
TEST(ModelConfig, ParsesAllFixtureModels) {
  fs::path root = fs::path(FT_TEST_DATA).parent_path() / "fixtures" / "models";
  int n = 0;
  std::error_code ec;
  if (fs::is_directory(root, ec))
    for (auto& e : fs::directory_iterator(root)) {
      fs::path dir = e.path();
      if (!fs::exists(dir / "config.json")) continue;
      SCOPED_TRACE(dir.string());
      ++n;
      ModelConfig c = load_model_config(dir.string());
      if (fs::exists(dir / "config_v5.json")) {
        ModelConfig c5 = load_model_config((dir / "config_v5.json").string());
        EXPECT_TRUE(c == c5) << "v4: " << describe(c) << "\nv5: " << describe(c5);
      }
      GenerationDefaults g = load_generation_config(dir.string(), &c);
      EXPECT_FALSE(g.eos_token_ids.empty());

      auto ckpt = CheckpointReader::open(dir.string());
      resolve_weight_names(c, [&](const std::string& name) { return ckpt.find(name) != nullptr; });
      std::vector<WeightSpec> want = expected_weights(c), have;
      for (const std::string& name : ckpt.names()) have.push_back({name, ckpt.get(name).shape});
      std::sort(want.begin(), want.end(), [](auto& a, auto& b) { return a.name < b.name; });
      EXPECT_EQ(want.size(), have.size());
      for (size_t i = 0; i < std::min(want.size(), have.size()); ++i) {
        EXPECT_EQ(want[i].name, have[i].name);
        EXPECT_EQ(want[i].shape, have[i].shape) << want[i].name;
        EXPECT_NO_THROW(ckpt.get(have[i].name).weight_dtype());
      }

      if (!fs::exists(dir / "expected.json")) continue;
      json ex = json::parse(std::ifstream(dir / "expected.json"));
      const json& hf = ex["meta"]["hf_config"];
      if (hf.contains("sliding_window"))
        for (size_t i = 0; i < c.layers.size(); ++i) {
          bool st = !hf.contains("layer_types") || hf["layer_types"][i] == "sliding_attention";
          bool sl = st && !hf["sliding_window"].is_null();
          EXPECT_EQ(c.layers[i].sliding, sl) << "layer " << i;
          if (sl) { EXPECT_EQ(c.layers[i].window, hf["sliding_window"].get<int64_t>()); }
        }
      // the inv_freq buffers transformers used for each text (longrope switches on the text length)
      const json& states = ex["meta"]["rope_state_per_text"];
      for (size_t t = 0; t < states.size(); ++t) {
        const int64_t seq_len = int64_t(ex["input_ids"][t].size());
        for (auto& [key, v] : states[t].items()) {
          const std::string tail = "inv_freq";
          if (key.size() < tail.size() || key.compare(key.size() - tail.size(), tail.size(), tail) != 0) continue;
          const std::string prefix = key.substr(0, key.size() - tail.size());  // "model.rotary_emb.[<type>_]"
          std::string lt = prefix.substr(prefix.rfind('.') + 1);
          if (!lt.empty()) lt.pop_back();  // "full_attention_" -> "full_attention"
          const LayerSpec* layer = &c.layers[0];
          if (lt == "full_attention" || lt == "sliding_attention")
            for (auto& L : c.layers)
              if (L.sliding == (lt == "sliding_attention")) layer = &L;
          RopeFreqs f = rope_inv_freq(layer->rope, int(c.head_dim), seq_len);
          expect_close(f.inv_freq, v.get<std::vector<double>>(), 2.5e-7, 0, dir.filename().string() + " " + key);
          std::string sk = prefix + "attention_scaling";
          if (states[t].contains(sk)) { EXPECT_EQ(f.attention_scaling, float(states[t][sk].get<double>())) << sk; }
        }
      }
    }
  if (n == 0) GTEST_SKIP() << "no fixture models under " << root;
}
