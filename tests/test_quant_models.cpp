// Quantised models: every family fixture quantised on load gives the loss and greedy tokens of the
// same model with its dequantised weights stored as fp32; MLX-layout export and reload; errors for
// bad MLX-quantised checkpoints name the tensor / key before any work.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "autograd/ops.h"
#include "autograd/quant.h"
#include "models/export.h"
#include "models/generate.h"
#include "models/model.h"
#include "models/projection.h"
#include "models/safetensors.h"

using namespace ft;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const fs::path kFixtures = fs::path(FT_TEST_DATA).parent_path() / "fixtures" / "models";

double seq_loss(const Model& m, const std::vector<int32_t>& ids) {
  NoGradGuard ng;
  const int64_t T = int64_t(ids.size());
  Tensor logits = m.forward(Tensor::from_ids(ids, {1, T}));
  std::vector<int32_t> tgt(ids.begin() + 1, ids.end());
  tgt.push_back(-100);
  return cross_entropy(reshape(logits, {T, logits.size(-1)}), Tensor::from_ids(tgt, {T})).item();
}

// The same model with every quantized matrix replaced by its dequantized fp32 copy.
void dequantize_all(Model& m) {
  const bool tied = m.lm_head.impl() == m.embed.impl();
  if (is_quantized(m.embed)) m.embed = m.embed.to(DType::F32);
  if (tied) m.lm_head = m.embed;
  else if (is_quantized(m.lm_head)) m.lm_head = m.lm_head.to(DType::F32);
  for (Projection* p : m.projections())
    if (is_quantized(p->weight)) p->weight = p->weight.to(DType::F32);
}

json expected(const std::string& fam) {
  std::ifstream f(kFixtures / fam / "expected.json");
  return json::parse(f);
}

class QuantFamily : public ::testing::TestWithParam<std::string> {};

TEST_P(QuantFamily, LossAndGreedyEqualDequantisedFp32) {
  const std::string fam = GetParam();
  json e = expected(fam);
  for (int bits : {4, 8}) {
    LoadOptions lo{"float32"};
    lo.quantize = bits;
    lo.group_size = 32;
    Model q = Model::load((kFixtures / fam).string(), lo);
    Model d = Model::load((kFixtures / fam).string(), lo);
    const size_t nq = q.quantized_matrices().size();
    dequantize_all(d);
    EXPECT_TRUE(d.quantized_matrices().empty());
    EXPECT_LT(q.weight_bytes(), d.weight_bytes() + (nq ? 0 : 1));
    for (auto& ids : e["input_ids"]) {
      std::vector<int32_t> v = ids.get<std::vector<int32_t>>();
      const double lq = seq_loss(q, v), ld = seq_loss(d, v);
      EXPECT_NEAR(lq, ld, 1e-5 * std::abs(ld)) << fam << " " << bits << "-bit (" << nq << " quantized matrices)";
    }
    for (auto& g : e["greedy"]) {
      std::vector<int32_t> prompt = g["prompt_ids"].get<std::vector<int32_t>>();
      GenerateOptions o;
      o.max_tokens = 8;
      EXPECT_EQ(generate(q, prompt, o, nullptr), generate(d, prompt, o, nullptr)) << fam << " " << bits << "-bit greedy";
    }
  }
}

// DoRA's weight norm on a quantised base is computed row by row from the packed codes: the same
// numbers as on the dequantised fp32 copy (bit for bit: the same row values), and within 1e-6 of a
// double reference of ‖W + s·B·A‖ per row; bf16 weights likewise.
TEST(QuantDora, RowNormsFromPackedCodes) {
  Tensor q = quantize_affine(Tensor::randn({37, 128}, 21, 0.1f), 4, 32, DType::BF16);
  Tensor wf = dequantize(q);
  Tensor A = Tensor::randn({4, 128}, 22, 0.3f), B = Tensor::randn({37, 4}, 23, 0.3f);
  const float s = 0.5f;
  LoraAdapter l;
  l.A = A;
  l.B = B;
  l.scaling = s;
  const std::vector<float> nq = dora_weight_norm(q, l).to_vector(), nf = dora_weight_norm(wf, l).to_vector();
  EXPECT_EQ(nq, nf);
  const std::vector<float> w = wf.to_vector(), a = A.to_vector(), b = B.to_vector();
  for (int64_t o = 0; o < 37; ++o) {
    double sum = 0;
    for (int64_t i = 0; i < 128; ++i) {
      double ba = 0;
      for (int64_t k = 0; k < 4; ++k) ba += double(b[size_t(o * 4 + k)]) * a[size_t(k * 128 + i)];
      const double v = w[size_t(o * 128 + i)] + s * ba;
      sum += v * v;
    }
    EXPECT_NEAR(nq[size_t(o)], std::sqrt(sum), 1e-6 * std::sqrt(sum)) << "row " << o;
  }
  Tensor wb = wf.to(DType::BF16);
  const std::vector<float> nb = dora_weight_norm(wb, l).to_vector(), nbf = dora_weight_norm(wb.to(DType::F32), l).to_vector();
  EXPECT_EQ(nb, nbf);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, QuantFamily,
                         ::testing::Values("llama", "llama_linear", "llama_yarn", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text",
                                           "phi3"));

// qwen3 fixture: hidden 32, tied embeddings, so every matrix (embedding + tied head too) quantizes.
struct MlxDir {
  fs::path dir;
  MlxDir(const std::string& name, int bits, int group) : dir(fs::temp_directory_path() / ("ft_quant_" + name)) {
    fs::remove_all(dir);
    LoadOptions lo;
    lo.quantize = bits;
    lo.group_size = group;
    Model m = Model::load((kFixtures / "qwen3").string(), lo);
    export_model(m, dir.string(), ExportOptions{});
  }
  ~MlxDir() { fs::remove_all(dir); }
  json config() const {
    std::ifstream f(dir / "config.json");
    return json::parse(f);
  }
  void write_config(const json& j) const { std::ofstream(dir / "config.json") << j.dump(2); }
  // Rewrites model.safetensors with `edit` applied to the records.
  void edit_tensors(const std::function<void(std::vector<TensorRecord>&, std::vector<std::vector<uint8_t>>&)>& edit) const {
    auto f = SafetensorsFile::open((dir / "model.safetensors").string());
    std::vector<TensorRecord> recs = f->tensors();
    std::vector<std::vector<uint8_t>> keep;
    edit(recs, keep);
    write_safetensors((dir / "model.safetensors.new").string(), recs);
    f.reset();
    fs::rename(dir / "model.safetensors.new", dir / "model.safetensors");
  }
};

std::string load_error(const fs::path& dir) {
  try {
    Model::load(dir.string());
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(QuantMlx, ExportWritesMlxLayoutAndReloadsIdentically) {
  MlxDir d("export", 4, 32);
  json c = d.config();
  ASSERT_TRUE(c.contains("quantization"));
  EXPECT_EQ(c["quantization"], (json{{"group_size", 32}, {"bits", 4}, {"mode", "affine"}}));
  EXPECT_EQ(c["quantization_config"], c["quantization"]);
  auto f = SafetensorsFile::open((d.dir / "model.safetensors").string());
  const TensorRecord* w = f->find("model.layers.0.self_attn.q_proj.weight");
  ASSERT_TRUE(w);
  EXPECT_EQ(w->st_dtype, StDtype::U32);
  EXPECT_EQ(w->shape, (std::vector<int64_t>{64, 32 * 4 / 32}));
  ASSERT_TRUE(f->find("model.layers.0.self_attn.q_proj.scales"));
  ASSERT_TRUE(f->find("model.embed_tokens.biases"));  // quantized embedding (tied head)
  EXPECT_FALSE(f->find("lm_head.weight"));
  f.reset();

  LoadOptions lo;
  lo.quantize = 4;
  lo.group_size = 32;
  Model a = Model::load((kFixtures / "qwen3").string(), lo);
  Model b = Model::load(d.dir.string());
  ASSERT_EQ(a.quantized_matrices().size(), b.quantized_matrices().size());
  for (size_t i = 0; i < a.quantized_matrices().size(); ++i) {
    const QuantParams &qa = quant_params(*a.quantized_matrices()[i].second), &qb = quant_params(*b.quantized_matrices()[i].second);
    ASSERT_EQ(qa.packed.to_ids(), qb.packed.to_ids()) << a.quantized_matrices()[i].first;
    ASSERT_EQ(qa.scales.to_vector(), qb.scales.to_vector());
    ASSERT_EQ(qa.biases.to_vector(), qb.biases.to_vector());
  }
  EXPECT_EQ(b.lm_head.impl(), b.embed.impl());
  std::vector<int32_t> ids = {1, 5, 9, 33, 200, 7};
  EXPECT_EQ(seq_loss(a, ids), seq_loss(b, ids));
}

TEST(QuantMlx, BadCheckpointsAreClearErrors) {
  const std::string q = "model.layers.0.self_attn.q_proj";
  {  // contradicting quantization blocks
    MlxDir d("contra", 4, 32);
    json c = d.config();
    c["quantization_config"]["bits"] = 8;
    d.write_config(c);
    EXPECT_NE(load_error(d.dir).find("contradict"), std::string::npos) << load_error(d.dir);
  }
  {  // bits that do not match the packed shapes
    MlxDir d("bits", 4, 32);
    json c = d.config();
    c["quantization"]["bits"] = 8;
    c["quantization_config"]["bits"] = 8;
    d.write_config(c);
    std::string err = load_error(d.dir);
    EXPECT_NE(err.find(".weight' has shape"), std::string::npos) << err;
    EXPECT_NE(err.find("bits 8"), std::string::npos) << err;
  }
  {  // unsupported mode and bit width
    MlxDir d("mode", 4, 32);
    json c = d.config();
    c["quantization"]["mode"] = "mxfp4";
    c.erase("quantization_config");
    d.write_config(c);
    EXPECT_NE(load_error(d.dir).find("mxfp4"), std::string::npos) << load_error(d.dir);
    c["quantization"]["mode"] = "affine";
    c["quantization"]["bits"] = 7;
    d.write_config(c);
    EXPECT_NE(load_error(d.dir).find("7-bit"), std::string::npos) << load_error(d.dir);
    c["quantization"]["bits"] = 4;
    c["quantization"][q] = false;  // exempts a module whose scales exist
    d.write_config(c);
    EXPECT_NE(load_error(d.dir).find(q), std::string::npos) << load_error(d.dir);
  }
  {  // truncated packed weights
    MlxDir d("trunc", 4, 32);
    d.edit_tensors([&](std::vector<TensorRecord>& r, std::vector<std::vector<uint8_t>>&) {
      for (auto& t : r)
        if (t.name == q + ".weight") {
          t.shape = {63, 4};
          t.nbytes = 63 * 4 * 4;
        }
    });
    std::string err = load_error(d.dir);
    EXPECT_NE(err.find(q + ".weight"), std::string::npos) << err;
  }
  {  // scales of the wrong shape
    MlxDir d("scales", 4, 32);
    d.edit_tensors([&](std::vector<TensorRecord>& r, std::vector<std::vector<uint8_t>>&) {
      for (auto& t : r)
        if (t.name == q + ".scales") {
          t.shape = {32, 2};
        }
    });
    std::string err = load_error(d.dir);
    EXPECT_NE(err.find(q + ".scales"), std::string::npos) << err;
  }
  {  // --quantize on an already quantized model
    MlxDir d("twice", 4, 32);
    LoadOptions lo;
    lo.quantize = 8;
    EXPECT_THROW(Model::load(d.dir.string(), lo), Error);
  }
}

}  // namespace
