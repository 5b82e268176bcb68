// PEFT round trip (tests/fixtures/roundtrip/README.md): adapters that ft trained (LoRA on recipes/tiny-base,
// DoRA on qwen3, rsLoRA on the last layer of gemma2, LoRA on phi3's fused projections) were loaded unchanged
// by HF PEFT 0.21 on transformers 5.17, and ft's merged models by transformers alone; expected.json holds
// what they computed. ft recomputes every number from the committed adapter files:
//   the rows tokenise to the same ids and prompt masks as HF's tokenizer gives;
//   base, base + adapter and merged (merge_lora in float32) per-row losses within 1e-4 relative;
//   greedy tokens identical (after a step whose HF top-2 margin is < 1e-3 the rest is not compared).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "autograd/ops.h"
#include "data/dataset.h"
#include "data/tokenizer.h"
#include "lora/adapter.h"
#include "models/generate.h"
#include "models/model.h"

using namespace ft;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

const fs::path kRepo = fs::path(FT_TEST_DATA).parent_path().parent_path();
const fs::path kDir = kRepo / "tests" / "fixtures" / "roundtrip";

json expected() {
  std::ifstream f(kDir / "expected.json");
  return json::parse(f);
}

std::string fnv1a64(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001B3ull;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)h);
  return buf;
}

// HF causal-LM loss of one row whose targets start at n_prompt.
double row_loss(const Model& m, const std::vector<int32_t>& ids, size_t n_prompt) {
  NoGradGuard ng;
  int64_t T = int64_t(ids.size());
  Tensor logits = m.forward(Tensor::from_ids(ids, {1, T}));
  std::vector<int32_t> tgt(size_t(T), -100);
  for (size_t t = 0; t + 1 < ids.size(); ++t)
    if (t + 1 >= n_prompt) tgt[t] = ids[t + 1];
  return cross_entropy(reshape(logits, {T, logits.size(-1)}), Tensor::from_ids(tgt, {T})).item();
}

void check(const Model& m, const json& c, const json& want, const std::string& what) {
  const json& enc = c["encoded"];
  double worst = 0;
  for (size_t i = 0; i < enc.size(); ++i) {
    double got = row_loss(m, enc[i]["ids"].get<std::vector<int32_t>>(), enc[i]["n_prompt"].get<size_t>());
    double w = want["losses"][i].get<double>();
    EXPECT_NEAR(got, w, 1e-4 * std::abs(w)) << what << " row " << i;
    worst = std::max(worst, std::abs(got - w) / std::abs(w));
  }
  if (std::getenv("FT_TEST_VERBOSE")) std::printf("%s: max relative loss difference %.2e\n", what.c_str(), worst);
  for (size_t p = 0; p < c["prompts"].size(); ++p) {
    auto prompt = c["prompts"][p]["ids"].get<std::vector<int32_t>>();
    auto wnew = want["greedy"][p]["new_ids"].get<std::vector<int32_t>>();
    auto margins = want["greedy"][p]["margins"].get<std::vector<double>>();
    GenerateOptions o;  // no EOS: HF's reference never stops either
    o.max_tokens = int64_t(wnew.size());
    std::vector<int32_t> got = generate(m, prompt, o, nullptr);
    ASSERT_EQ(got.size(), wnew.size()) << what;
    for (size_t t = 0; t < wnew.size(); ++t) {
      if (margins[t] < 1e-3) break;  // a near-tie may legitimately flip; the rest then differs
      ASSERT_EQ(got[t], wnew[t]) << what << " prompt " << p << " greedy step " << t << " (HF margin " << margins[t] << ")";
    }
  }
}

class RoundTrip : public ::testing::TestWithParam<std::string> {};

TEST_P(RoundTrip, FtMatchesPeftAndTransformers) {
  json all = expected();
  json c;
  for (auto& x : all["cases"])
    if (x["name"] == GetParam()) c = x;
  ASSERT_FALSE(c.is_null()) << "expected.json has no case " << GetParam();
  ASSERT_FALSE(c.contains("error")) << c["error"];
  fs::path base = kRepo / c["base_dir"].get<std::string>(), adapter = kDir / c["adapter_dir"].get<std::string>();

  // The committed adapter files are the ones PEFT loaded.
  for (auto& [f, h] : c["adapter_files"].items()) EXPECT_EQ(fnv1a64(adapter / f), h.get<std::string>()) << adapter / f;
  // Transformers loaded every base and merged tensor (nothing missing, unexpected or resized).
  EXPECT_TRUE(c["base"]["loading_info"].empty()) << c["base"]["loading_info"].dump();
  EXPECT_TRUE(c["merged"]["loading_info"].empty()) << c["merged"]["loading_info"].dump();

  // Tokenisation: ft's data pipeline gives HF's ids and prompt masks.
  Tokenizer tok = Tokenizer::from_dir(base.string());
  TokenizerEncoder enc(tok);
  RawRows raw;
  raw.path = "inputs.json:" + GetParam();
  for (size_t i = 0; i < c["rows"].size(); ++i) {
    raw.rows.push_back(nlohmann::ordered_json::parse(c["rows"][i].dump()));
    raw.where.push_back(int64_t(i + 1));
  }
  DatasetOptions dopt;
  dopt.mask_prompt = true;
  dopt.use_chat_template = false;
  Dataset ds = make_dataset(raw, enc, nullptr, dopt);
  ASSERT_EQ(ds.size(), c["encoded"].size());
  for (const Example& e : ds.examples) {
    const json& w = c["encoded"][size_t(e.row)];
    ASSERT_EQ(e.ids, w["ids"].get<std::vector<int32_t>>()) << "row " << e.row;
    size_t n_prompt = w["n_prompt"].get<size_t>();
    for (size_t t = 0; t < e.mask.size(); ++t) ASSERT_EQ(e.mask[t], t >= n_prompt ? 1 : 0) << "row " << e.row << " token " << t;
  }
  for (auto& p : c["prompts"]) EXPECT_EQ(tok.encode(p["prompt"].get<std::string>(), true), p["ids"].get<std::vector<int32_t>>());

  Model m = Model::load(base.string(), LoadOptions{"float32"});
  EXPECT_EQ(m.cfg.model_type, c["base"]["model_type"].get<std::string>());
  check(m, c, c["base"], GetParam() + " base");

  LoraConfig lc = load_adapter(adapter.string(), m, false);
  const json& pc = c["peft"]["config"];
  EXPECT_EQ(lc.rank, pc["r"].get<int64_t>());
  EXPECT_EQ(lc.rslora, pc["use_rslora"].get<bool>());
  EXPECT_EQ(lc.dora, pc["use_dora"].get<bool>());
  int64_t wrapped = 0;
  for (Projection* p : m.projections())
    if (p->lora) {
      ++wrapped;
      ASSERT_EQ(pc["scaling"].size(), 1u);
      EXPECT_NEAR(p->lora->scaling, pc["scaling"][0].get<double>(), 1e-6) << p->name;
    }
  EXPECT_EQ(wrapped, pc["wrapped_modules"].get<int64_t>());
  EXPECT_EQ(int64_t(lora_parameters(m).size()), c["peft"]["tensors_loaded_exactly"].get<int64_t>());
  check(m, c, c["peft"], GetParam() + " peft");

  merge_lora(m, DType::F32);
  check(m, c, c["merged"], GetParam() + " merged");
}

INSTANTIATE_TEST_SUITE_P(Peft, RoundTrip, ::testing::Values("tiny_lora", "qwen3_dora", "gemma2_rslora_last1", "phi3_lora_fused"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

}  // namespace
