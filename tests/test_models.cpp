// Every model family against HF transformers 5.17 / PEFT 0.21 fixtures (tests/fixtures/README.md):
//   eval losses within 1e-4 relative; logits of the first positions within 1e-4 absolute (+1e-4 rel);
//   greedy tokens identical (a step whose HF top-2 margin is < 1e-3 may flip, and then the rest is
//   not compared); PEFT adapters (random A and B, DoRA for llama) give PEFT's losses and greedy
//   tokens; one plain SGD step (lr 0.5, batch 1 and 2) gives PEFT's updated A/B (relative L2 of the
//   update <= 1e-3).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "autograd/ops.h"
#include "lora/adapter.h"
#include "models/generate.h"
#include "models/model.h"
#include "models/safetensors.h"

using namespace ft;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

const fs::path kFixtures = fs::path(FT_TEST_DATA).parent_path() / "fixtures" / "models";
// HF computed the references in float32 (bf16 checkpoints upcast exactly), so load the same way.
const LoadOptions f32{"float32"};

json expected(const std::string& fam) {
  std::ifstream f(kFixtures / fam / "expected.json");
  return json::parse(f);
}

// HF causal-LM loss of one sequence: mean CE of logits[t] vs ids[t+1].
double seq_loss(const Model& m, const std::vector<int32_t>& ids) {
  NoGradGuard ng;
  int64_t T = int64_t(ids.size());
  Tensor logits = m.forward(Tensor::from_ids(ids, {1, T}));
  std::vector<int32_t> tgt(ids.begin() + 1, ids.end());
  tgt.push_back(-100);
  return cross_entropy(reshape(logits, {T, logits.size(-1)}), Tensor::from_ids(tgt, {T})).item();
}

void check_losses(const Model& m, const json& ids, const json& want, const std::string& what) {
  for (size_t i = 0; i < ids.size(); ++i) {
    double got = seq_loss(m, ids[i].get<std::vector<int32_t>>()), w = want[i].get<double>();
    EXPECT_NEAR(got, w, 1e-4 * std::abs(w)) << what << " text " << i;
  }
}

void check_greedy(const Model& m, const json& greedy, const std::string& what) {
  for (auto& g : greedy) {
    std::vector<int32_t> prompt = g["prompt_ids"].get<std::vector<int32_t>>();
    std::vector<int32_t> want = g["new_ids"].get<std::vector<int32_t>>();
    std::vector<double> margins = g["margins"].get<std::vector<double>>();
    GenerateOptions o;
    o.max_tokens = int64_t(want.size());
    std::vector<int32_t> got = generate(m, prompt, o, nullptr);
    ASSERT_EQ(got.size(), want.size()) << what;
    for (size_t t = 0; t < want.size(); ++t) {
      if (margins[t] < 1e-3) break;  // a legitimate flip point: stop comparing
      ASSERT_EQ(got[t], want[t]) << what << " greedy step " << t << " (HF margin " << margins[t] << ")";
    }
  }
}

void check_logits_head(const Model& m, const json& ids0, const json& head, const std::string& what) {
  NoGradGuard ng;
  std::vector<int32_t> ids = ids0.get<std::vector<int32_t>>();
  Tensor logits = m.forward(Tensor::from_ids(ids, {1, int64_t(ids.size())}));
  std::vector<float> v = logits.to_vector();
  int64_t V = logits.size(-1);
  for (size_t p = 0; p < head.size(); ++p)
    for (int64_t j = 0; j < V; ++j) {
      double w = head[p][size_t(j)].get<double>();
      ASSERT_NEAR(v[size_t(int64_t(p) * V + j)], w, 1e-4 + 1e-4 * std::abs(w)) << what << " position " << p << " vocab " << j;
    }
}

// One plain SGD step on the LoRA tensors, as the fixture did, compared with PEFT's result.
void check_sgd(const std::string& fam, const std::string& adapter_dir, const json& spec) {
  Model m = Model::load((kFixtures / fam).string(), f32);
  load_adapter((kFixtures / fam / adapter_dir).string(), m, true);
  auto params = lora_parameters(m);
  std::map<std::string, std::vector<float>> before;
  for (auto& p : params) before[p.name] = p.value.to_vector();
  auto ids = spec["input_ids"].get<std::vector<std::vector<int32_t>>>();
  auto labels = spec["labels"].get<std::vector<std::vector<int32_t>>>();
  int64_t B = int64_t(ids.size()), T = int64_t(ids[0].size());
  std::vector<int32_t> flat, tgt;
  for (int64_t b = 0; b < B; ++b) {
    flat.insert(flat.end(), ids[size_t(b)].begin(), ids[size_t(b)].end());
    for (int64_t t = 0; t < T; ++t) tgt.push_back(t + 1 < T ? labels[size_t(b)][size_t(t + 1)] : -100);
  }
  Tensor logits = m.forward(Tensor::from_ids(flat, {B, T}));
  Tensor loss = cross_entropy(reshape(logits, {B * T, logits.size(-1)}), Tensor::from_ids(tgt, {B * T}));
  EXPECT_NEAR(loss.item(), spec["loss"].get<double>(), 1e-4 * spec["loss"].get<double>()) << fam << " " << adapter_dir;
  loss.backward();
  double lr = spec["lr"].get<double>();
  auto want = SafetensorsFile::open((kFixtures / fam / spec["file"].get<std::string>()).string());
  for (auto& p : params) {
    const TensorRecord* r = want->find(p.name);
    ASSERT_TRUE(r) << "fixture lacks " << p.name;
    ASSERT_TRUE(p.value.grad().defined()) << p.name;
    std::vector<float> g = p.value.grad().to_vector(), b = before[p.name];
    std::vector<float> w = Tensor::from_external(r->data, r->shape, r->weight_dtype(), nullptr).to_vector();
    double num = 0, den = 0;
    for (size_t i = 0; i < g.size(); ++i) {
      double ours = -lr * g[i], theirs = double(w[i]) - double(b[i]);
      num += (ours - theirs) * (ours - theirs);
      den += theirs * theirs;
    }
    EXPECT_LE(std::sqrt(num / std::max(den, 1e-30)), 1e-3) << fam << " " << adapter_dir << " " << p.name;
  }
}

class Family : public ::testing::TestWithParam<std::string> {};

TEST_P(Family, MatchesTransformers) {
  const std::string fam = GetParam();
  json e = expected(fam);
  Model m = Model::load((kFixtures / fam).string(), f32);
  EXPECT_EQ(m.checkpoint_parameters, e["meta"]["params"].get<int64_t>());
  check_losses(m, e["input_ids"], e["losses"], fam);
  check_losses(m, e["eval_eos"]["input_ids"], e["eval_eos"]["losses"], fam + " eval_eos");
  check_logits_head(m, e["input_ids"][0], e["logits_head"], fam);
  check_greedy(m, e["greedy"], fam);
}

TEST_P(Family, MatchesPeft) {
  const std::string fam = GetParam();
  json e = expected(fam);
  Model m = Model::load((kFixtures / fam).string(), f32);
  LoraConfig c = load_adapter((kFixtures / fam / "peft").string(), m, false);
  EXPECT_EQ(c.rank, 4);
  check_losses(m, e["input_ids"], e["peft"]["losses"], fam + " peft");
  check_logits_head(m, e["input_ids"][0], e["peft"]["logits_head"], fam + " peft");
  check_greedy(m, e["peft"]["greedy"], fam + " peft");
}

TEST_P(Family, SgdStepMatchesPeft) {
  const std::string fam = GetParam();
  json e = expected(fam);
  check_sgd(fam, "peft", e["peft"]["sgd_b1"]);
  check_sgd(fam, "peft", e["peft"]["sgd_b2"]);
}

INSTANTIATE_TEST_SUITE_P(HF, Family,
                         ::testing::Values("llama", "llama_yarn", "llama_linear", "mistral", "qwen2", "qwen3", "gemma3_text", "gemma2", "phi3"));

TEST(Dora, MatchesPeft) {
  json e = expected("llama");
  Model m = Model::load((kFixtures / "llama").string(), f32);
  LoraConfig c = load_adapter((kFixtures / "llama" / "dora").string(), m, false);
  EXPECT_TRUE(c.dora);
  check_losses(m, e["input_ids"], e["dora"]["losses"], "llama dora");
  check_greedy(m, e["dora"]["greedy"], "llama dora");
  check_sgd("llama", "dora", e["dora"]["sgd_b1"]);
}

}  // namespace
