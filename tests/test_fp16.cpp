// float16 training pieces: the fp16-weight GEMM (gemm_f16w), fp16 autocast rounding in the projection
// ops (AutocastF16Guard), and dynamic loss scaling (GradScaler, torch.amp.GradScaler semantics).
// The end-to-end `ft train --dtype float16` runs are in tests/test_generate_train.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include "autograd/cpu.h"
#include "isa_levels.h"
#include "autograd/dtype.h"
#include "autograd/gemm.h"
#include "autograd/ops.h"
#include "optim/grad_scaler.h"
#include "optim/state.h"
#include "optim/trainer.h"

using namespace ft;

namespace {

using ft::testing::isa_levels;
using ft::testing::IsaGuard;

float rt16(float x) { return f16_to_f32(f32_to_f16(x)); }
bool same_bits(float a, float b) { return std::memcmp(&a, &b, 4) == 0 || (std::isnan(a) && std::isnan(b)); }

// Weights spread over fp16's range: mostly O(1), some large (up to 6e4), some subnormal.
std::vector<uint16_t> f16_weights(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<uint16_t> h(n);
  for (size_t i = 0; i < n; ++i) {
    float v = u(rng);
    if (i % 97 == 3) v *= 6e4f;
    if (i % 89 == 5) v *= 3e-6f;
    h[i] = f32_to_f16(v);
  }
  return h;
}

}  // namespace

// gemm_f16w widens B while packing: bit-identical to sgemm on the widened B, for every ISA path, all
// transposes, odd shapes (tails in every dimension, M <= 4 through ft::gemv, two depth blocks at
// K = 1600), padded leading dimensions, alpha/beta.
TEST(Fp16Gemm, EqualsSgemmOnWidenedWeights) {
  IsaGuard guard;
  struct S { int64_t M, N, K; };
  const S shapes[] = {{1, 7, 5}, {3, 33, 17}, {4, 100, 70}, {13, 47, 29}, {37, 65, 300}, {70, 129, 1600}};
  for (const std::string& isa : isa_levels()) {
    set_isa(isa);
    uint32_t seed = 1;
    for (const S& s : shapes)
      for (int t = 0; t < 4; ++t) {
        const bool ta = t & 1, tb = t & 2;
        const int64_t pad = 3, lda = (ta ? s.M : s.K) + pad, ldb = (tb ? s.K : s.N) + pad, ldc = s.N + pad;
        std::mt19937 rng(++seed);
        std::uniform_real_distribution<float> u(-1.f, 1.f);
        std::vector<float> A(size_t((ta ? s.K : s.M) * lda)), C0(size_t(s.M * ldc));
        for (float& x : A) x = u(rng);
        for (float& x : C0) x = u(rng);
        std::vector<uint16_t> Bh = f16_weights(size_t((tb ? s.N : s.K) * ldb), seed);
        std::vector<float> Bf(Bh.size());
        for (size_t i = 0; i < Bh.size(); ++i) Bf[i] = f16_to_f32(Bh[i]);
        for (float beta : {0.f, 0.5f}) {
          std::vector<float> c16 = C0, c32 = C0;
          gemm_f16w(ta, tb, s.M, s.N, s.K, 1.25f, A.data(), lda, Bh.data(), ldb, beta, c16.data(), ldc);
          sgemm(ta, tb, s.M, s.N, s.K, 1.25f, A.data(), lda, Bf.data(), ldb, beta, c32.data(), ldc);
          ASSERT_EQ(std::memcmp(c16.data(), c32.data(), c16.size() * 4), 0)
              << isa << " M=" << s.M << " N=" << s.N << " K=" << s.K << " ta=" << ta << " tb=" << tb << " beta=" << beta;
        }
      }
  }
}

TEST(Fp16Gemm, BadArgumentsAreErrors) {
  std::vector<float> A(16), C(16);
  std::vector<uint16_t> B(16);
  EXPECT_THROW(gemm_f16w(false, true, 4, 4, 4, 1.f, A.data(), 4, B.data(), 2, 0.f, C.data(), 4), Error);
}

// The rounding kernel (F16C on AVX2/AVX-512, scalar on the baseline) equals the exact scalar conversion
// of autograd/dtype.h, including overflow to inf, subnormals, underflow to zero and NaN.
TEST(Autocast, RoundingMatchesExactConversion) {
  IsaGuard guard;
  std::vector<float> v = {65504.f, 65519.99f, 65520.f, 1e5f, -1e5f, 70000.f, 6.1035156e-05f /* 2^-14 */,
                          5.9604645e-08f /* 2^-24 */, 2.9802322e-08f /* 2^-25: tie -> 0 */, 4.4703484e-08f, 1e-8f, 3e-5f,
                          -3e-5f, 1.0f + 1.0f / 4096, std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(), 0.f, -0.f,
                          1e-40f /* fp32 subnormal */};
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> mant(1.f, 2.f);
  std::uniform_int_distribution<int> ex(-30, 18);
  for (int i = 0; i < 100003; ++i) v.push_back((i & 1 ? -1.f : 1.f) * std::ldexp(mant(rng), ex(rng)));
  // The facts the autocast semantics rely on.
  EXPECT_EQ(rt16(65504.f), 65504.f);
  EXPECT_TRUE(std::isinf(rt16(65520.f)) && std::isinf(rt16(1e5f)));
  EXPECT_EQ(rt16(1e-8f), 0.f);
  EXPECT_EQ(rt16(3e-5f), std::ldexp(std::nearbyint(std::ldexp(3e-5f, 24)), -24));  // a subnormal multiple of 2^-24
  for (const std::string& isa : isa_levels()) {
    set_isa(isa);
    std::vector<float> r = v;
    round_to_f16(r.data(), int64_t(r.size()));
    for (size_t i = 0; i < v.size(); ++i) ASSERT_TRUE(same_bits(r[i], rt16(v[i]))) << isa << " x=" << v[i] << " got " << r[i];
  }
}

namespace {
// Inputs that exercise both ends of fp16: one row of x is huge (its outputs overflow), the incoming
// gradient is tiny (fp16 flushes most of the gradients to zero or subnormals).
struct LoraCase {
  Tensor x, w, bias, a, b;
  LoraCase() {
    x = Tensor::randn({2, 3, 24}, 1);
    float* px = x.data<float>();
    for (int i = 0; i < 24; ++i) px[i] *= 3e4f;
    w = Tensor::randn({20, 24}, 2, 0.5f).to(DType::F16);
    bias = Tensor::randn({20}, 3).set_requires_grad();
    a = Tensor::randn({4, 24}, 4, 0.2f).set_requires_grad();
    b = Tensor::randn({20, 4}, 5, 0.2f).set_requires_grad();
    x.set_requires_grad();
  }
  // Output and the gradients of x, bias, A, B for an incoming gradient g.
  std::vector<Tensor> run(bool lora, const Tensor& g, bool autocast) {
    for (Tensor* t : {&x, &bias, &a, &b}) t->zero_grad();
    Tensor y;
    {
      AutocastF16Guard ac(autocast);
      y = lora ? lora_linear(x, w, bias, a, b, 2.f) : linear(x, w, bias);
    }
    y.backward(g);  // outside the scope: the nodes remember the mode of their forward
    std::vector<Tensor> r = {y, x.grad(), bias.grad()};
    if (lora) r.push_back(a.grad()), r.push_back(b.grad());
    return r;
  }
};
}  // namespace

// Under autocast, linear / lora_linear outputs and every returned gradient are the fp32 ones rounded to fp16.
TEST(Autocast, ProjectionsRoundOutputsAndGradients) {
  for (bool lora : {false, true}) {
    LoraCase c;
    Tensor g = Tensor::randn({2, 3, 20}, 9, 1e-6f);
    std::vector<Tensor> f32 = c.run(lora, g, false), f16 = c.run(lora, g, true);
    int inf = 0, zero = 0, changed = 0;
    for (size_t k = 0; k < f32.size(); ++k) {
      std::vector<float> p = f32[k].to_vector(), q = f16[k].to_vector();
      ASSERT_EQ(p.size(), q.size());
      for (size_t i = 0; i < p.size(); ++i) {
        ASSERT_TRUE(same_bits(q[i], rt16(p[i]))) << "lora=" << lora << " tensor " << k << " [" << i << "] " << p[i] << " -> " << q[i];
        inf += std::isinf(q[i]) && std::isfinite(p[i]);
        zero += q[i] == 0.f && p[i] != 0.f;
        changed += q[i] != p[i];
      }
    }
    EXPECT_GT(inf, 0) << "the huge row must overflow fp16";
    EXPECT_GT(zero, 0) << "tiny gradients must underflow";
    EXPECT_GT(changed, 100);
  }
}

// The fused LM head + loss under autocast: the loss of the fp16-rounded logits (softmax in fp32), and
// gradients that are fp16 values.
TEST(Autocast, LinearCrossEntropyUsesRoundedLogits) {
  Tensor h = Tensor::randn({6, 16}, 11).set_requires_grad();
  Tensor w = Tensor::randn({40, 16}, 12, 0.7f).to(DType::F16);
  Tensor t = Tensor::from_ids({1, 5, -100, 39, 0, 7}, {6});
  Tensor ref;
  {
    NoGradGuard ng;
    Tensor logits = linear(h, w);
    round_to_f16(logits);
    ref = cross_entropy_sum(logits, t);
  }
  Tensor loss;
  {
    AutocastF16Guard ac;
    loss = linear_cross_entropy_sum(h, w, t);
  }
  EXPECT_NEAR(loss.item(), ref.item(), 1e-5 * std::abs(ref.item()));
  scale(loss, 1e-3f).backward();
  int nonzero = 0;
  for (float v : h.grad().to_vector()) {
    ASSERT_TRUE(same_bits(v, rt16(v))) << v;
    nonzero += v != 0.f;
  }
  EXPECT_GT(nonzero, 0);
}

// checkpoint() recomputes in the autocast mode of its forward even when backward runs outside it.
TEST(Autocast, CheckpointRecomputesInTheForwardMode) {
  Tensor w = Tensor::randn({12, 10}, 21).to(DType::F16);
  Tensor a = Tensor::randn({2, 10}, 22, 0.3f).set_requires_grad();
  Tensor b = Tensor::randn({12, 2}, 23, 0.3f).set_requires_grad();
  Tensor x = Tensor::randn({5, 10}, 24);
  auto fn = [&](const std::vector<Tensor>& in) { return silu(lora_linear(in[0], w, Tensor(), a, b, 1.f)); };
  std::vector<float> grads[2];
  for (int ck = 0; ck < 2; ++ck) {
    a.zero_grad();
    Tensor y;
    {
      AutocastF16Guard ac;
      y = ck ? checkpoint(fn, {x}) : fn({x});
    }
    sum(y).backward();
    grads[ck] = a.grad().to_vector();
  }
  for (float v : grads[0]) EXPECT_TRUE(same_bits(v, rt16(v)));
  EXPECT_EQ(grads[0], grads[1]);
}

// ---- GradScaler -------------------------------------------------------------------------------

namespace {
NamedParam param_with_grad(const std::string& name, std::vector<float> g) {
  NamedParam p{name, Tensor::zeros({int64_t(g.size())}).set_requires_grad()};
  p.value.set_grad(Tensor::from_vector(g, {int64_t(g.size())}));
  return p;
}
}  // namespace

TEST(GradScaler, UnscaleFindsInfAndNaN) {
  GradScaler s;  // torch defaults
  EXPECT_EQ(s.scale(), 65536.f);
  std::vector<NamedParam> ps = {param_with_grad("a", {65536.f, -32768.f, 3.f}), param_with_grad("b", {0.f, 1e9f})};
  EXPECT_FALSE(s.unscale(ps));
  EXPECT_EQ(ps[0].value.grad().to_vector(), (std::vector<float>{1.f, -0.5f, 3.f / 65536.f}));
  EXPECT_EQ(ps[1].value.grad().to_vector(), (std::vector<float>{0.f, 1e9f / 65536.f}));
  std::vector<NamedParam> bad = {param_with_grad("a", {1.f, 2.f}), param_with_grad("b", std::vector<float>(40000, 1.f))};
  bad[1].value.grad().data<float>()[39999] = std::numeric_limits<float>::infinity();
  EXPECT_TRUE(s.unscale(bad));
  std::vector<NamedParam> nan = {param_with_grad("a", {std::nanf("")})};
  EXPECT_TRUE(s.unscale(nan));
}

// Step by step: overflow halves the scale and resets the tracker; growth_interval good steps in a
// row double it; growth never reaches fp32 infinity.
TEST(GradScaler, BackoffAndGrowthStepByStep) {
  GradScaler s(GradScalerConfig{1024.0, 2.0, 0.5, 3});
  struct Expect { bool inf; float scale; int64_t tracker, skipped; };
  const Expect seq[] = {{false, 1024, 1, 0}, {false, 1024, 2, 0}, {false, 2048, 0, 0}, {false, 2048, 1, 0},
                        {true, 1024, 0, 1},  {true, 512, 0, 2},   {false, 512, 1, 2},  {false, 512, 2, 2},
                        {true, 256, 0, 3},   {false, 256, 1, 3},  {false, 256, 2, 3},  {false, 512, 0, 3}};
  int i = 0;
  for (const Expect& e : seq) {
    s.update(e.inf);
    EXPECT_EQ(s.scale(), e.scale) << "update " << i;
    EXPECT_EQ(s.growth_tracker(), e.tracker) << "update " << i;
    EXPECT_EQ(s.skipped_steps(), e.skipped) << "update " << i;
    ++i;
  }
  GradScaler top(GradScalerConfig{std::ldexp(1.0, 127), 2.0, 0.5, 1});
  top.update(false);
  EXPECT_EQ(top.scale(), std::ldexp(1.f, 127));
  EXPECT_EQ(top.growth_tracker(), 0);
  EXPECT_THROW(GradScaler(GradScalerConfig{0.0, 2.0, 0.5, 10}), Error);
  EXPECT_THROW(GradScaler(GradScalerConfig{1e39, 2.0, 0.5, 10}), Error);
  EXPECT_THROW(GradScaler(GradScalerConfig{1.0, 2.0, 0.5, 0}), Error);
}

// The scaler's state survives the HDF5 training state exactly (a non-power-of-two scale too).
TEST(GradScaler, StateRoundTripThroughTrainingState) {
  GradScaler s(GradScalerConfig{3.0e7, 2.0, 0.5, 5});
  for (bool inf : {true, false, false, true, false, false, false}) s.update(inf);
  TrainingState st;
  st.extra["grad_scaler"] = s.state();
  const std::string path = (std::filesystem::temp_directory_path() / ("ft_scaler_" + std::to_string(getpid()) + ".h5")).string();
  save_training_state(path, st);
  TrainingState back = load_training_state(path);
  std::filesystem::remove(path);
  GradScaler r;
  r.load_state(back.extra.at("grad_scaler"));
  EXPECT_TRUE(same_bits(r.scale(), s.scale()));
  EXPECT_EQ(r.growth_tracker(), 3);
  EXPECT_EQ(r.skipped_steps(), 2);
  EXPECT_THROW(r.load_state(nlohmann::json{{"scale", 1.0}}), Error);
}

TEST(GradScaler, TrainConfigKeys) {
  TrainConfig c;
  c.model = "m";
  c.data = "d";
  c.iters = 1;
  c.set("dtype", "float16");
  c.set("loss-scale-init", "1024");
  c.set("loss_scale_growth_interval", "50");
  EXPECT_NO_THROW(c.validate());
  EXPECT_EQ(c.loss_scale_init, 1024);
  EXPECT_EQ(c.loss_scale_growth_interval, 50);
  c.set("loss_scale_init", "0");
  EXPECT_THROW(c.validate(), Error);
  c.set("loss_scale_init", "1024");
  c.set("loss_scale_growth_interval", "0");
  EXPECT_THROW(c.validate(), Error);
  c.set("dtype", "float8");
  EXPECT_THROW(c.validate(), Error);
}
