// GGUF container and block formats: writer -> reader round trips, quantisers against their own
// definitions, bad files rejected with errors naming the key or tensor. llama.cpp itself checks the
// files ft writes in tests/test_gguf_llama.py.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "autograd/dtype.h"
#include "autograd/error.h"
#include "models/gguf.h"
#include "models/gguf_export.h"
#include "models/gguf_quant.h"

namespace ft {
namespace {

std::vector<uint8_t> bytes_of(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }

std::string sample_file() {
  GgufWriter w;
  w.set("general.architecture", GgufValue::str("llama"));
  w.set("llama.block_count", GgufValue::u32(2));
  w.set("llama.attention.layer_norm_rms_epsilon", GgufValue::f32(1e-5f));
  w.set("tokenizer.ggml.add_bos_token", GgufValue::boolean(true));
  w.set("tokenizer.ggml.tokens", GgufValue::str_array({"a", "b", "<s>"}));
  w.set("tokenizer.ggml.scores", GgufValue::f32_array({0.5, -1.0, 0.0}));
  w.set("tokenizer.ggml.token_type", GgufValue::i32_array({1, 1, 3}));
  std::vector<float> v(64);
  for (size_t i = 0; i < v.size(); ++i) v[i] = float(i) * 0.25f - 3.f;
  w.add_tensor("x.weight", {32, 2}, GgmlType::F32, v.data(), v.size() * 4);
  std::vector<uint8_t> q(2 * 34);
  for (int r = 0; r < 2; ++r) ggml_quantize_row(GgmlType::Q8_0, v.data() + r * 32, 32, q.data() + r * 34);
  w.add_tensor("y.weight", {32, 2}, GgmlType::Q8_0, q.data(), q.size());
  return w.serialize();
}

TEST(Gguf, RoundTrip) {
  auto f = GgufFile::from_bytes(bytes_of(sample_file()), "sample.gguf");
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->get_str("general.architecture"), "llama");
  EXPECT_EQ(f->get_int("llama.block_count"), 2);
  EXPECT_FLOAT_EQ(float(f->get_float("llama.attention.layer_norm_rms_epsilon")), 1e-5f);
  EXPECT_TRUE(f->get_bool("tokenizer.ggml.add_bos_token"));
  const GgufValue* toks = f->find("tokenizer.ggml.tokens");
  ASSERT_TRUE(toks);
  EXPECT_EQ(toks->strs, (std::vector<std::string>{"a", "b", "<s>"}));
  EXPECT_EQ(f->find("tokenizer.ggml.scores")->floats, (std::vector<double>{0.5, -1.0, 0.0}));
  EXPECT_EQ(f->find("tokenizer.ggml.token_type")->ints, (std::vector<int64_t>{1, 1, 3}));
  ASSERT_EQ(f->tensors().size(), 2u);
  const GgufTensorInfo* x = f->tensor("x.weight");
  ASSERT_TRUE(x);
  EXPECT_EQ(x->shape(), (std::vector<int64_t>{2, 32}));
  EXPECT_EQ(x->nbytes, 256u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(x->data) % 32, reinterpret_cast<uintptr_t>(f->tensors()[0].data) % 32);
  float first;
  std::memcpy(&first, x->data, 4);
  EXPECT_EQ(first, -3.f);
  const GgufTensorInfo* y = f->tensor("y.weight");
  ASSERT_TRUE(y);
  EXPECT_EQ(y->type, GgmlType::Q8_0);
  EXPECT_EQ(y->offset % 32, 0u);
}

TEST(Gguf, MissingAndMistypedKeysNameTheKey) {
  auto f = GgufFile::from_bytes(bytes_of(sample_file()), "sample.gguf");
  try {
    f->get_int("llama.context_length");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'llama.context_length' is missing"), std::string::npos) << e.what();
  }
  try {
    f->get_int("general.architecture");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("must be an integer, got string"), std::string::npos) << e.what();
  }
}

void expect_error(std::string bytes, const std::string& needle) {
  try {
    GgufFile::from_bytes(bytes_of(bytes), "bad.gguf");
    ADD_FAILURE() << "no error; expected one containing '" << needle << "'";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find(needle), std::string::npos) << m;
    EXPECT_NE(m.find("bad.gguf"), std::string::npos) << m;
  }
}

TEST(Gguf, BadFilesGiveClearErrors) {
  std::string good = sample_file();
  expect_error("", "not a GGUF file");
  expect_error("GGUX" + good.substr(4), "not a GGUF file");
  std::string v9 = good;
  v9[4] = 9;
  expect_error(v9, "GGUF version 9 is not supported");
  // every truncation is an error, never a crash
  for (size_t n : {size_t(4), size_t(10), size_t(30), size_t(100), good.size() / 2, good.size() - 30})
    EXPECT_THROW(GgufFile::from_bytes(bytes_of(good.substr(0, n)), "bad.gguf"), Error) << n;
  std::string huge = good;
  uint64_t big = uint64_t(1) << 50;
  std::memcpy(&huge[8], &big, 8);  // tensor count
  expect_error(huge, "tensor count");
  std::string huge_kv = good;
  std::memcpy(&huge_kv[16], &big, 8);
  expect_error(huge_kv, "metadata count");
  // an unknown tensor type: patch y.weight's type field (after its name and dims)
  std::string unk = good;
  size_t at = unk.find("y.weight");
  ASSERT_NE(at, std::string::npos);
  size_t type_at = at + 8 + 4 + 16;
  uint32_t iq2 = 16;
  std::memcpy(&unk[type_at], &iq2, 4);
  expect_error(unk, "tensor 'y.weight' has ggml type 16 (IQ2_XXS)");
  // an offset past the end
  std::string off = good;
  uint64_t far = uint64_t(1) << 20;
  std::memcpy(&off[type_at + 4], &far, 8);
  expect_error(off, "tensor 'y.weight'");
}

TEST(GgufQuant, Q8_0AndQ4_0MatchTheReferenceFormulas) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(64);
  for (float& v : x) v = nd(rng);
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q4_0}) {
    std::vector<uint8_t> q(ggml_row_bytes(t, 64));
    ggml_quantize_row(t, x.data(), 64, q.data());
    std::vector<float> y(64);
    ggml_dequantize_row(t, q.data(), 64, y.data());
    for (int b = 0; b < 2; ++b) {
      float amax = 0, mx = 0;
      for (int j = 0; j < 32; ++j)
        if (std::fabs(x[size_t(b * 32 + j)]) > amax) amax = std::fabs(x[size_t(b * 32 + j)]), mx = x[size_t(b * 32 + j)];
      float d = t == GgmlType::Q8_0 ? amax / 127.f : mx / -8.f;
      float dh = f16_to_f32(f32_to_f16(d));
      for (int j = 0; j < 32; ++j) {
        float xv = x[size_t(b * 32 + j)];
        float q_exp = t == GgmlType::Q8_0 ? std::round(xv / d) : float(std::min(15, int(xv / d + 8.5f)) - 8);
        EXPECT_EQ(y[size_t(b * 32 + j)], q_exp * dh) << ggml_type_name(t) << " " << b << " " << j;
      }
    }
  }
}

// The K-quant writers search each sub-block's scale (weighted least squares, as ggml's reference
// quantisers): every element still within about one step of its sub-block's range (a search may
// clip an end value by up to a step where that lowers the squared error of the rest), and the
// squared error well below that of the plain range scale (the previous writer's scheme, recomputed
// here with the same 6/8-bit scale coding), on Gaussian rows with outliers.
namespace {
// Plain range scales with the Q4_K / Q6_K codings (sub-block scales coded against d = max/63 or /127).
std::vector<float> range_scale_kquant(GgmlType t, const std::vector<float>& x) {
  const int sub = t == GgmlType::Q4_K ? 32 : 16, nsub = 256 / sub;
  std::vector<float> y(x.size());
  for (size_t b0 = 0; b0 < x.size(); b0 += 256) {
    float sc[16], mn[16], msc = 0, mmn = 0;
    for (int s = 0; s < nsub; ++s) {
      float lo = 0, hi = 0, amax = 0;
      for (int j = 0; j < sub; ++j) {
        const float v = x[b0 + size_t(s * sub + j)];
        lo = std::min(lo, v), hi = std::max(hi, v), amax = std::max(amax, std::fabs(v));
      }
      sc[s] = t == GgmlType::Q4_K ? (hi - lo) / 15.f : amax / 31.f;
      mn[s] = -lo;
      msc = std::max(msc, sc[s]), mmn = std::max(mmn, mn[s]);
    }
    const float d = f16_to_f32(f32_to_f16(msc / (t == GgmlType::Q4_K ? 63.f : 127.f)));
    const float dm = f16_to_f32(f32_to_f16(mmn / 63.f));
    for (int s = 0; s < nsub; ++s) {
      const int top = t == GgmlType::Q4_K ? 63 : 127;
      const float ds = d * float(d > 0 ? std::clamp(int(std::lround(sc[s] / d)), 0, top) : 0);
      const float ms = t == GgmlType::Q4_K ? dm * float(dm > 0 ? std::clamp(int(std::lround(mn[s] / dm)), 0, 63) : 0) : 0.f;
      for (int j = 0; j < sub; ++j) {
        const size_t i = b0 + size_t(s * sub + j);
        const int q = ds > 0 ? int(std::lround((x[i] + ms) / ds)) : 0;
        y[i] = t == GgmlType::Q4_K ? ds * float(std::clamp(q, 0, 15)) - ms : ds * float(std::clamp(q, -32, 31));
      }
    }
  }
  return y;
}
}  // namespace

TEST(GgufQuant, KQuantsSearchTheirScales) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.f, 0.1f);
  const int64_t n = 256 * 64;
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) v = nd(rng);
  for (size_t i = 5; i < x.size(); i += 997) x[i] *= 9.f;  // outliers in some sub-blocks
  for (auto [t, levels] : {std::pair{GgmlType::Q4_K, 15.0}, std::pair{GgmlType::Q6_K, 63.0}}) {
    std::vector<uint8_t> q(ggml_row_bytes(t, n));
    ggml_quantize_row(t, x.data(), n, q.data());
    std::vector<float> y(static_cast<size_t>(n));
    ggml_dequantize_row(t, q.data(), n, y.data());
    const std::vector<float> yr = range_scale_kquant(t, x);
    const int sub = t == GgmlType::Q4_K ? 32 : 16;
    double e = 0, er = 0;
    for (int64_t s = 0; s < n / sub; ++s) {
      float lo = 0, hi = 0;
      for (int j = 0; j < sub; ++j) lo = std::min(lo, x[size_t(s * sub + j)]), hi = std::max(hi, x[size_t(s * sub + j)]);
      // one quantisation step of this sub-block, plus the 6/8-bit rounding of its scale
      double step = (t == GgmlType::Q4_K ? (hi - lo) : 2 * std::max(-lo, hi)) / levels;
      for (int j = 0; j < sub; ++j) {
        const size_t i = size_t(s * sub + j);
        EXPECT_LE(std::fabs(y[i] - x[i]), 1.1 * step + 0.02 * std::fabs(hi - lo) + 1e-6) << ggml_type_name(t) << " sub-block " << s;
        e += double(y[i] - x[i]) * (y[i] - x[i]), er += double(yr[i] - x[i]) * (yr[i] - x[i]);
      }
    }
    std::printf("%s: squared error %.4g, range scales %.4g (%.3f)\n", ggml_type_name(t), e, er, e / er);
    EXPECT_LT(e, 0.9 * er) << ggml_type_name(t);  // measured: Q4_K 0.843, Q6_K 0.838
  }
}

TEST(GgufQuant, ReadsEveryBlockTypeAsGgmlDefinesIt) {
  // Hand-built blocks with known values (ggml-common.h layouts).
  std::vector<uint8_t> b(24, 0);
  auto put16 = [&](size_t at, float v) { uint16_t h = f32_to_f16(v); std::memcpy(&b[at], &h, 2); };
  // Q4_1: d = 0.5, m = -1; element j (< 16) low nibble = j, element j + 16 high nibble = 15 - j
  put16(0, 0.5f), put16(2, -1.f);
  for (int j = 0; j < 16; ++j) b[size_t(4 + j)] = uint8_t(j | ((15 - j) << 4));
  std::vector<float> y(32);
  ggml_dequantize_row(GgmlType::Q4_1, b.data(), 32, y.data());
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[size_t(j)], 0.5f * float(j) - 1.f);
    EXPECT_EQ(y[size_t(j + 16)], 0.5f * float(15 - j) - 1.f);
  }
  // Q5_0: d = 0.25; fifth bits set for elements 3 and 20; nibbles 1
  std::fill(b.begin(), b.end(), 0);
  put16(0, 0.25f);
  uint32_t qh = (1u << 3) | (1u << 20);
  std::memcpy(&b[2], &qh, 4);
  for (int j = 0; j < 16; ++j) b[size_t(6 + j)] = 0x11;
  ggml_dequantize_row(GgmlType::Q5_0, b.data(), 32, y.data());
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[size_t(j)], 0.25f * float((1 | ((j == 3 || j == 20) ? 16 : 0)) - 16)) << j;
}

TEST(GgufExport, PermutationRoundTripsAndInterleavesPairs) {
  // 2 heads of head_dim 4: HF rows (h0: a0 a1 b0 b1) -> llama.cpp (a0 b0 a1 b1)
  std::vector<float> w = {0, 1, 2, 3, 4, 5, 6, 7};
  auto p = gguf_permute_rows(w, 8, 1, 2);
  EXPECT_EQ(p, (std::vector<float>{0, 2, 1, 3, 4, 6, 5, 7}));
  EXPECT_EQ(gguf_permute_rows(p, 8, 1, 2, true), w);
}

}  // namespace
}  // namespace ft

// ---------------------------------------------------------------------------------------- reading

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include <nlohmann/json.hpp>

#include "autograd/autograd.h"
#include "autograd/ops.h"
#include "data/tokenizer.h"
#include "models/gguf_load.h"

namespace ft {
namespace {

namespace fs = std::filesystem;
const fs::path kModels = fs::path(FT_TEST_DATA).parent_path() / "fixtures" / "models";

double seq_loss(const Model& m, const std::vector<int32_t>& ids) {
  NoGradGuard ng;
  int64_t T = int64_t(ids.size());
  Tensor logits = m.forward(Tensor::from_ids(ids, {1, T}));
  std::vector<int32_t> tgt(ids.begin() + 1, ids.end());
  tgt.push_back(-100);
  return cross_entropy(reshape(logits, {T, logits.size(-1)}), Tensor::from_ids(tgt, {T})).item();
}

fs::path tmp_path(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("ft_gguf_test_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d / name;
}

class GgufFamily : public ::testing::TestWithParam<std::string> {};

// ft reading its own f32 GGUF: the HF directory's losses within 1e-5, the same tokenizer.
TEST_P(GgufFamily, OwnF32FileGivesTheHfDirectorysLossAndTokens) {
  const std::string fam = GetParam();
  nlohmann::json exp = nlohmann::json::parse(std::ifstream(kModels / fam / "expected.json"));
  Model hf = Model::load((kModels / fam).string(), LoadOptions{"float32"});
  fs::path g = tmp_path(fam + ".gguf");
  export_gguf(hf, g.string(), GgufExportOptions{"f32", ""});
  ASSERT_TRUE(is_gguf_file(g.string()));
  Model m = Model::load(g.string());
  EXPECT_EQ(m.cfg.vocab_size, hf.cfg.vocab_size);
  EXPECT_EQ(m.cfg.num_layers, hf.cfg.num_layers);
  for (size_t i = 0; i < exp["input_ids"].size(); ++i) {
    auto ids = exp["input_ids"][i].get<std::vector<int32_t>>();
    double a = seq_loss(hf, ids), b = seq_loss(m, ids);
    EXPECT_NEAR(b, a, 1e-5) << fam << " text " << i;
  }
  Tokenizer th = Tokenizer::from_dir((kModels / fam).string()), tg = load_model_tokenizer(g.string());
  EXPECT_EQ(tg.bos_id(), th.bos_id());
  EXPECT_EQ(tg.eos_id(), th.eos_id());
  EXPECT_EQ(tg.chat_template(), th.chat_template());
  for (const auto& t : exp["texts"]) {
    std::string s = t.get<std::string>();
    EXPECT_EQ(tg.encode(s, true), th.encode(s, true)) << s;
    EXPECT_EQ(tg.decode(tg.encode(s, false)), s);
  }
  for (std::string s : {std::string("  two  spaces\n\nand <s> a </s> token 123456"), std::string("h\xc3\xa9llo \xf0\x9f\x98\x80")})
    EXPECT_EQ(tg.encode(s, true), th.encode(s, true)) << s;
  fs::remove(g);
}

INSTANTIATE_TEST_SUITE_P(Families, GgufFamily,
                         ::testing::Values("llama", "llama_yarn", "llama_linear", "mistral", "qwen2", "qwen3", "gemma2",
                                           "gemma3_text", "phi3"));

// Quantised files are read too (dequantised): q8_0 stays close to the float model.
TEST(GgufRead, Q8_0FileIsCloseToTheFloatModel) {
  nlohmann::json exp = nlohmann::json::parse(std::ifstream(kModels / "qwen3" / "expected.json"));
  Model hf = Model::load((kModels / "qwen3").string(), LoadOptions{"float32"});
  fs::path g = tmp_path("qwen3-q8_0.gguf");
  export_gguf(hf, g.string(), GgufExportOptions{"q8_0", ""});
  Model m = Model::load(g.string());
  auto ids = exp["input_ids"][0].get<std::vector<int32_t>>();
  double a = seq_loss(hf, ids), b = seq_loss(m, ids);
  EXPECT_NEAR(b, a, 0.02 * a);
  EXPECT_NE(b, a);  // really quantised
  fs::remove(g);
}

std::string rewrite(const GgufFile& f, const std::function<void(GgufWriter&, const GgufTensorInfo*)>& edit_tensor,
                    const std::function<void(GgufWriter&)>& edit_kv) {
  GgufWriter w;
  for (const auto& [k, v] : f.metadata()) w.set(k, v);
  edit_kv(w);
  for (const auto& t : f.tensors()) edit_tensor(w, &t);
  return w.serialize();
}

void expect_load_error(const std::string& bytes, const std::string& needle) {
  fs::path p = tmp_path("bad.gguf");
  std::ofstream(p, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
  try {
    Model::load(p.string());
    ADD_FAILURE() << "no error; expected '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
  try {
    load_model_tokenizer(p.string());
  } catch (const Error&) {
  }
  fs::remove(p);
}

TEST(GgufRead, InconsistentFilesNameTheKeyOrTensor) {
  Model hf = Model::load((kModels / "llama").string(), LoadOptions{"float32"});
  fs::path g = tmp_path("llama-src.gguf");
  export_gguf(hf, g.string(), GgufExportOptions{"f32", ""});
  auto f = GgufFile::open(g.string());
  auto copy = [](GgufWriter& w, const GgufTensorInfo* t) { w.add_tensor(t->name, t->ne, t->type, t->data, t->nbytes); };
  auto none = [](GgufWriter&) {};
  // a tensor shape that disagrees with the architecture keys
  expect_load_error(rewrite(*f, copy, [](GgufWriter& w) { w.set("llama.feed_forward_length", GgufValue::u32(95)); }),
                    "tensor 'blk.0.ffn_gate.weight' has shape");
  // a missing tensor
  expect_load_error(rewrite(*f, [&](GgufWriter& w, const GgufTensorInfo* t) { if (t->name != "blk.1.attn_v.weight") copy(w, t); }, none),
                    "tensor 'blk.1.attn_v.weight' is missing");
  // a tokenizer without merges
  GgufWriter w0;
  for (const auto& [k, v] : f->metadata())
    if (k != "tokenizer.ggml.merges") w0.set(k, v);
  for (const auto& t : f->tensors()) copy(w0, &t);
  expect_load_error(w0.serialize(), "tokenizer.ggml.merges is missing");
  // an unknown architecture, a missing key
  expect_load_error(rewrite(*f, copy, [](GgufWriter& w) { w.set("general.architecture", GgufValue::str("mamba")); }),
                    "general.architecture 'mamba' is not one ft runs");
  GgufWriter w1;
  for (const auto& [k, v] : f->metadata())
    if (k != "llama.block_count") w1.set(k, v);
  for (const auto& t : f->tensors()) copy(w1, &t);
  expect_load_error(w1.serialize(), "'llama.block_count' is missing");
  // strings that cannot go into tokenizer.json (a fuzzer's find: json threw instead of ft::Error)
  auto edited = [&](const std::string& key, const std::function<void(GgufValue&)>& edit) {
    GgufValue v = *f->find(key);
    edit(v);
    return rewrite(*f, copy, [&](GgufWriter& w) { w.set(key, v); });
  };
  expect_load_error(edited("tokenizer.ggml.tokens", [](GgufValue& v) { v.strs[7] = "ab\xda"; }),
                    "tokenizer.ggml.tokens[7] is not valid UTF-8 (byte 2 of 3)");
  expect_load_error(edited("tokenizer.ggml.merges", [](GgufValue& v) { v.strs[0] = "\xff \xfe"; }),
                    "tokenizer.ggml.merges[0] is not valid UTF-8");
  expect_load_error(rewrite(*f, copy, [](GgufWriter& w) { w.set("tokenizer.chat_template", GgufValue::str("{{ x }}\xc3")); }),
                    "tokenizer.chat_template is not valid UTF-8");
  fs::remove(g);
}

}  // namespace
}  // namespace ft
