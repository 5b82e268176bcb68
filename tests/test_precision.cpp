// The precision contract (README "Precision", autograd/ops.h AutocastBF16Guard), on every ISA path this
// CPU has (FT_ISA levels, tests/isa_levels.h: baseline, AVX2, AVX-512, AVX512-BF16, AMX):
//   - inference on a bf16 checkpoint computes in exact fp32 by default: prefill (packed GEMM) and
//     cached decode (GEMV) logits of the bf16-held model equal those of the same model held in fp32
//     within 1e-5 (a path that rounded activations to bf16 misses by ~1e-3: checked below to be
//     detectable), and greedy tokens equal transformers' fp32 greedy tokens (HF top-2 margin >= 1e-3);
//   - AutocastBF16Guard rounds the inputs of bf16-weight matmuls (forward and input gradient) to bf16;
//   - `--dtype bfloat16` training (bf16 base, autocast) means the same on every ISA path: its first
//     gradients agree across paths within 5e-4 relative L2 (measured 6e-5 on Zen 5; bf16 vs fp32:
//     9e-3), and after 20 AdamW steps the adapters' updates within 1e-2 relative L2 and within a
//     quarter of the bf16-vs-fp32 difference (measured 3-4e-3 vs 3.6e-2: a 1e-7 change of an fp32 sum
//     can move a value across a bf16 rounding boundary, and AdamW amplifies such differences where
//     gradients are small; fp32 training agrees across paths within 1e-6). The bf16 path's
//     gradients are within bf16 error of fp32's (2e-2 relative L2).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "autograd/ops.h"
#include "isa_levels.h"
#include "lora/adapter.h"
#include "models/generate.h"
#include "models/model.h"
#include "optim/optimizer.h"

using namespace ft;
using ft::testing::IsaGuard;
using ft::testing::isa_levels;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

const fs::path kFixtures = fs::path(FT_TEST_DATA).parent_path() / "fixtures" / "models";

json expected(const std::string& fam) {
  std::ifstream f(kFixtures / fam / "expected.json");
  return json::parse(f);
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  std::vector<float> x = a.to_vector(), y = b.to_vector();
  EXPECT_EQ(x.size(), y.size());
  double m = 0;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i) m = std::max(m, double(std::fabs(x[i] - y[i])));
  return m;
}

// Logits of the prompt's last position (prefill) and of each of `steps` cached decode steps fed the
// given tokens.
std::vector<Tensor> prefill_and_decode(const Model& m, const std::vector<int32_t>& prompt, const std::vector<int32_t>& feed) {
  NoGradGuard ng;
  KVCache cache = m.make_cache(1, int64_t(prompt.size() + feed.size()) + 1);
  ForwardOptions fo;
  fo.cache = &cache;
  std::vector<Tensor> out;
  out.push_back(m.forward(Tensor::from_ids(prompt, {1, int64_t(prompt.size())}), fo));
  for (int32_t id : feed) out.push_back(m.forward(Tensor::from_ids({id}, {1, 1}), fo));
  return out;
}

TEST(Precision, Bf16CheckpointInferenceIsExactFp32OnEveryIsa) {
  IsaGuard guard;
  for (const char* fam : {"qwen2", "gemma3_text"}) {
    SCOPED_TRACE(fam);
    const json e = expected(fam);
    Model mb = Model::load((kFixtures / fam).string(), LoadOptions{});  // as stored: bf16
    Model mf = Model::load((kFixtures / fam).string(), LoadOptions{"float32"});
    ASSERT_EQ(e["meta"]["dtype_on_disk"], "bfloat16");
    const json& g0 = e["greedy"][0];
    const std::vector<int32_t> prompt = g0["prompt_ids"].get<std::vector<int32_t>>();
    const std::vector<int32_t> feed = g0["new_ids"].get<std::vector<int32_t>>();
    for (const std::string& isa : isa_levels()) {
      set_isa(isa);
      SCOPED_TRACE("isa " + isa);
      const std::vector<Tensor> lb = prefill_and_decode(mb, prompt, feed), lf = prefill_and_decode(mf, prompt, feed);
      for (size_t s = 0; s < lb.size(); ++s) EXPECT_LE(max_abs_diff(lb[s], lf[s]), 1e-5) << (s ? "decode step " : "prefill ") << s;
      {  // the same with bf16 compute: rounding shows (so the check above would catch it)
        AutocastBF16Guard bf;
        const std::vector<Tensor> lr = prefill_and_decode(mb, prompt, feed);
        double worst = 0;
        for (size_t s = 0; s < lr.size(); ++s) worst = std::max(worst, max_abs_diff(lr[s], lf[s]));
        EXPECT_GT(worst, 1e-4);
        EXPECT_LT(worst, 0.2);
      }
      for (const json& g : e["greedy"]) {  // default GenerateOptions: transformers' fp32 greedy tokens
        const std::vector<int32_t> want = g["new_ids"].get<std::vector<int32_t>>();
        const std::vector<double> margins = g["margins"].get<std::vector<double>>();
        GenerateOptions o;
        o.max_tokens = int64_t(want.size());
        const std::vector<int32_t> got = generate(mb, g["prompt_ids"].get<std::vector<int32_t>>(), o, nullptr);
        ASSERT_EQ(got.size(), want.size());
        for (size_t t = 0; t < want.size() && margins[t] >= 1e-3; ++t)
          ASSERT_EQ(got[t], want[t]) << "greedy step " << t << " (HF margin " << margins[t] << ")";
      }
    }
  }
}

// bf16 compute rounds x (forward) and dY (the input gradient's GEMM) to bf16; exact otherwise.
TEST(Precision, Bf16ComputeRoundsMatmulInputsOnEveryIsa) {
  IsaGuard guard;
  const int64_t rows = 37, in = 70, out = 45;
  Tensor w32 = Tensor::randn({out, in}, 3, 0.5f);
  Tensor wb = w32.to(DType::BF16);
  w32 = wb.to(DType::F32);  // the bf16 values, held in fp32
  Tensor x0 = Tensor::randn({rows, in}, 4, 1.f), g0 = Tensor::randn({rows, out}, 5, 1.f);
  auto rounded = [](const Tensor& t) { return t.to(DType::BF16).to(DType::F32); };
  for (const std::string& isa : isa_levels()) {
    set_isa(isa);
    SCOPED_TRACE("isa " + isa);
    for (bool bf : {false, true}) {
      Tensor x = x0.clone().set_requires_grad(true);
      Tensor y;
      {
        AutocastBF16Guard ab(bf);
        y = linear(x, wb);
      }
      y.backward(g0);  // after the scope: the node recorded the mode
      NoGradGuard ng;
      Tensor want_y = linear(bf ? rounded(x0) : x0, w32), want_gx = matmul(bf ? rounded(g0) : g0, w32);
      EXPECT_LE(max_abs_diff(y, want_y), 1e-5) << "bf16 " << bf;
      EXPECT_LE(max_abs_diff(x.grad(), want_gx), 1e-5) << "bf16 " << bf;
      if (bf) { EXPECT_GT(max_abs_diff(y, linear(x0, w32)), 1e-4); }  // the rounding is real
    }
  }
}

// Loss of the fixture's five texts (plain LM loss, token-weighted).
Tensor batch_loss(const Model& m, const json& ids_list) {
  Tensor total;
  int64_t n = 0;
  for (const json& j : ids_list) {
    const std::vector<int32_t> ids = j.get<std::vector<int32_t>>();
    const int64_t T = int64_t(ids.size());
    std::vector<int32_t> tgt(ids.begin() + 1, ids.end());
    tgt.push_back(-100);
    Tensor h = m.hidden(Tensor::from_ids(ids, {1, T}), ForwardOptions{});
    Tensor l = m.loss_sum(h, Tensor::from_ids(tgt, {1, T}));
    total = total.defined() ? add(total, l) : l;
    n += T - 1;
  }
  return scale(total, 1.f / float(n));
}

struct TrainRun {
  std::map<std::string, std::vector<float>> start, grad0, end;
};

// One gradient, then 20 AdamW steps of the llama fixture's PEFT adapter on a base held in `dtype`
// (bf16: with AutocastBF16Guard, as `ft train --dtype bfloat16`).
TrainRun train20(const std::string& dtype) {
  const json e = expected("llama");
  Model m = Model::load((kFixtures / "llama").string(), LoadOptions{dtype});
  load_adapter((kFixtures / "llama" / "peft").string(), m, true);
  std::vector<NamedParam> params = lora_parameters(m);
  AutocastBF16Guard ab(dtype == "bfloat16");
  Optimizer opt(params, OptimizerConfig{});
  TrainRun r;
  for (auto& p : params) r.start[p.name] = p.value.to_vector();
  for (int step = 0; step < 20; ++step) {
    opt.zero_grad();
    batch_loss(m, e["input_ids"]).backward();
    if (step == 0)
      for (auto& p : params) r.grad0[p.name] = p.value.grad().to_vector();
    opt.step(2e-3f);
  }
  for (auto& p : params) r.end[p.name] = p.value.to_vector();
  return r;
}

// sqrt(Σ (a − b)²) / sqrt(Σ b²) over all tensors; with `base`, of the differences from base.
double rel_l2(const std::map<std::string, std::vector<float>>& a, const std::map<std::string, std::vector<float>>& b,
              const std::map<std::string, std::vector<float>>* base = nullptr) {
  double num = 0, den = 0;
  for (auto& [k, va] : a) {
    const std::vector<float>& vb = b.at(k);
    for (size_t i = 0; i < va.size(); ++i) {
      const double o = base ? double(base->at(k)[i]) : 0.0;
      const double x = double(va[i]) - o, y = double(vb[i]) - o;
      num += (x - y) * (x - y);
      den += y * y;
    }
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

TEST(Precision, Bf16TrainingAgreesAcrossIsas) {
  IsaGuard guard;
  std::vector<TrainRun> runs, f32s;
  std::vector<std::string> isas = isa_levels();
  for (const std::string& isa : isas) {
    set_isa(isa);
    runs.push_back(train20("bfloat16"));
    f32s.push_back(train20("float32"));
  }
  const TrainRun& f32 = f32s.back();
  const TrainRun& ref = runs.back();  // the most capable path
  const double vs_f32 = rel_l2(ref.end, f32.end, &f32.start);
  for (size_t i = 0; i < runs.size(); ++i) {
    SCOPED_TRACE("isa " + isas[i]);
    const double g = rel_l2(runs[i].grad0, f32.grad0);
    const double d = rel_l2(runs[i].end, ref.end, &ref.start);
    const double d32 = rel_l2(f32s[i].end, f32.end, &f32.start);
    const double gi = rel_l2(runs[i].grad0, ref.grad0);
    EXPECT_LE(g, 2e-2) << "first gradient, bf16 autocast vs fp32";
    EXPECT_GT(g, 1e-3) << "bf16 autocast should round (else this equals fp32)";
    EXPECT_LE(gi, 5e-4) << "first gradient vs isa " << isas.back();
    EXPECT_LE(d, 1e-2) << "adapter update after 20 steps vs isa " << isas.back();
    EXPECT_LE(d, vs_f32 / 4) << "adapter update after 20 steps vs isa " << isas.back() << " (bf16 vs fp32: " << vs_f32 << ")";
    EXPECT_LE(d32, 1e-4) << "fp32 training vs isa " << isas.back();
    std::cout << "[ isa " << isas[i] << " ] bf16 grad vs fp32 " << g << ", vs " << isas.back() << "'s " << gi << ", 20-step update vs " << isas.back() << " " << d
              << " (bf16 vs fp32 " << vs_f32 << "; fp32 training vs " << isas.back() << " " << d32 << ")\n";
  }
}

}  // namespace
