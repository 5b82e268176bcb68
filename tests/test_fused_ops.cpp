// Fused training ops against their unfused compositions: lora_linear (LoRA projection),
// linear_cross_entropy_sum (LM head + cross-entropy in row chunks), the vectorised SiLU gate, and
// the memory contract of graph edges (nodes that need only shapes keep no activations alive).
// Gradient checks: central differences in float32 (tests/gradcheck.h).
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "autograd/cpu.h"
#include "autograd/gemm.h"
#include "gradcheck.h"
#include "lora/adapter.h"
#include "models/model.h"

using namespace ft;
using namespace ft::testing;

namespace {

void expect_close(const Tensor& a, const Tensor& b, double rtol, double atol, const std::string& what) {
  ASSERT_TRUE(a.defined() && b.defined()) << what;
  ASSERT_EQ(a.shape(), b.shape()) << what;
  std::vector<float> x = a.to_vector(), y = b.to_vector();
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    double e = std::abs(double(x[i]) - double(y[i])) - (atol + rtol * std::abs(double(y[i])));
    if (e > worst) worst = e, at = i;
  }
  EXPECT_LE(worst, 0.0) << what << ": element " << at << " is " << x[at] << ", expected " << y[at];
}

Tensor leaf(const Shape& s, uint64_t seed, float std = 1.f) { return param(s, seed, std); }

// Gradients of sum(f(inputs)·R) for each input (cleared first).
std::vector<Tensor> grads_of(const std::function<Tensor()>& f, std::vector<Tensor*> inputs, uint64_t seed = 11) {
  for (Tensor* t : inputs) t->zero_grad();
  Tensor y = f();
  sum(mul(y, Tensor::randn(y.shape(), seed))).backward();
  std::vector<Tensor> g;
  for (Tensor* t : inputs) g.push_back(t->grad());
  return g;
}

}  // namespace

TEST(LoraLinear, MatchesUnfusedComposition) {
  struct Geom { Shape x; int64_t out, r; };
  // Tiny (scalar tails only), and rows split over threads with vector bodies, tails and r % 4 != 0.
  for (const Geom& ge : {Geom{{2, 5, 7}, 6, 3}, Geom{{130, 37}, 41, 5}, Geom{{3, 67, 16}, 32, 8}})
  for (bool bias : {false, true})
    for (bool bf16 : {false, true})
      for (bool separate : {false, true}) {
        SCOPED_TRACE(shape_str(ge.x) + " bias " + (bias ? "1" : "0") + " bf16 " + (bf16 ? "1" : "0") + " separate " + (separate ? "1" : "0"));
        const int64_t nin = ge.x.back(), out = ge.out, r = ge.r;
        Tensor x = leaf(ge.x, 1), A = leaf({r, nin}, 2, 0.5f), B = leaf({out, r}, 3, 0.5f);
        Tensor xa = separate ? leaf(ge.x, 4) : x;
        Tensor W = Tensor::randn({out, nin}, 5, 0.5f);
        if (bf16) W = W.to(DType::BF16);
        else W.set_requires_grad(true);  // a trainable base weight too (full fine-tuning + adapter)
        Tensor b = bias ? leaf({out}, 6) : Tensor();
        const float s = 1.75f;
        auto fused = [&] { return lora_linear(x, W, b, A, B, s, separate ? xa : Tensor()); };
        auto plain = [&] { return add(linear(x, W, b), scale(linear(linear(xa, A), B), s)); };
        // bf16 weights round x to bf16 inside the GEMM on AVX512-BF16: both sides do the same.
        expect_close(fused(), plain(), 1e-5, 1e-5, "forward");
        std::vector<Tensor*> in = {&x, &A, &B};
        if (separate) in.push_back(&xa);
        if (bias) in.push_back(&b);
        if (!bf16) in.push_back(&W);
        auto gf = grads_of(fused, in), gp = grads_of(plain, in);
        for (size_t i = 0; i < in.size(); ++i) expect_close(gf[i], gp[i], 1e-4, 1e-5, "gradient " + std::to_string(i));
      }
}

TEST(LoraLinear, GradCheck) {
  Tensor W = Tensor::randn({4, 5}, 7, 0.5f);
  check_grad([&](auto& v) { return lora_linear(v[0], W, v[3], v[1], v[2], 2.f); },
             {param({3, 5}, 1), param({2, 5}, 2), param({4, 2}, 3), param({4}, 4)});
  check_grad([&](auto& v) { return lora_linear(v[0], W, Tensor(), v[1], v[2], 0.5f, v[3]); },
             {param({3, 5}, 1), param({2, 5}, 2), param({4, 2}, 3), param({3, 5}, 5)});
}

TEST(LoraLinear, FusedResidualAndGraphOnly) {
  Tensor x = leaf({2, 9, 20}, 1), A = leaf({5, 20}, 2, 0.5f), B = leaf({17, 5}, 3, 0.5f), res = leaf({2, 9, 17}, 4);
  Tensor W = Tensor::randn({17, 20}, 5, 0.5f), bias = leaf({17}, 6);
  auto fused = [&] { return lora_linear(x, W, bias, A, B, 1.5f, Tensor(), res); };
  auto plain = [&] { return add(res, lora_linear(x, W, bias, A, B, 1.5f)); };
  expect_close(fused(), plain(), 1e-6, 1e-6, "forward");
  std::vector<Tensor*> in = {&x, &A, &B, &res, &bias};
  auto gf = grads_of(fused, in), gp = grads_of(plain, in);
  for (size_t i = 0; i < in.size(); ++i) expect_close(gf[i], gp[i], 1e-5, 1e-6, "gradient " + std::to_string(i));
  // graph_only: no output values, the same gradients.
  Tensor g = Tensor::randn({2, 9, 17}, 7);
  for (Tensor* t : in) t->zero_grad();
  Tensor y = lora_linear(x, W, bias, A, B, 1.5f, Tensor(), res, /*graph_only=*/true);
  EXPECT_EQ(y.shape(), (Shape{2, 9, 17}));
  EXPECT_THROW(y.data<float>(), Error);
  y.backward(g);
  std::vector<Tensor> go;
  for (Tensor* t : in) go.push_back(t->grad());
  for (Tensor* t : in) t->zero_grad();
  fused().backward(g);
  for (size_t i = 0; i < in.size(); ++i) expect_close(go[i], in[i]->grad(), 0, 0, "graph_only gradient " + std::to_string(i));
}

TEST(LoraLinear, KeepsOnlyTheBottleneckForBackward) {
  Tensor W = Tensor::randn({512, 256}, 1, 0.05f);
  Tensor A = leaf({4, 256}, 2, 0.05f), B = leaf({512, 4}, 3, 0.05f);
  Tensor x = leaf({64, 256}, 4);
  int64_t before = memory_stats().current;
  Tensor y = lora_linear(x, W, Tensor(), A, B, 2.f);
  // The output itself plus u = x·Aᵀ [64, 4]: no [64, 512] partial results stay alive.
  EXPECT_EQ(memory_stats().current - before, int64_t(y.nbytes()) + 64 * 4 * 4);
  sum(y).backward();
  EXPECT_TRUE(A.grad().defined() && B.grad().defined() && x.grad().defined());
  EXPECT_THROW(lora_linear(x, W, Tensor(), B, A, 2.f), Error);  // adapter shapes swapped
}

TEST(LinearCrossEntropy, MatchesUnfusedInEveryChunking) {
  const int64_t N = 37, H = 9, V = 23;
  std::vector<int32_t> t(N);
  for (int64_t i = 0; i < N; ++i) t[size_t(i)] = i % 7 == 3 ? -100 : int32_t((i * 5 + 2) % V);
  Tensor targets = Tensor::from_ids(t, {N});
  for (bool bf16 : {false, true})
    for (float cap : {0.f, 3.f})
      for (int64_t chunk : {0, 1, 5, 16, 64}) {
        SCOPED_TRACE(std::string("bf16 ") + (bf16 ? "1" : "0") + " softcap " + std::to_string(cap) + " chunk " + std::to_string(chunk));
        Tensor h = leaf({N, H}, 1), W = Tensor::randn({V, H}, 2, 0.7f);
        if (bf16) W = W.to(DType::BF16);
        else W.set_requires_grad(true);
        auto fused = [&] { return linear_cross_entropy_sum(h, W, targets, -100, cap, chunk); };
        auto plain = [&] {
          Tensor z = linear(h, W);
          return cross_entropy_sum(cap > 0 ? softcap(z, cap) : z, targets);
        };
        expect_close(fused(), plain(), 1e-5, 1e-5, "loss");
        std::vector<Tensor*> in = {&h};
        if (!bf16) in.push_back(&W);
        for (Tensor* p : in) p->zero_grad();
        scale(fused(), 0.37f).backward();
        std::vector<Tensor> gf;
        for (Tensor* p : in) gf.push_back(p->grad());
        for (Tensor* p : in) p->zero_grad();
        scale(plain(), 0.37f).backward();
        // bf16 W outside AutocastBF16Guard: exact fp32 on every ISA path, so the fp32 tolerance holds.
        for (size_t i = 0; i < in.size(); ++i) expect_close(gf[i], in[i]->grad(), 1e-4, 1e-6, "gradient " + std::to_string(i));
      }
}

TEST(LinearCrossEntropy, LargeVocabularyInBlocks) {  // dh = G·W goes through vocabulary blocks of 2048
  const int64_t N = 9, H = 5, V = 4500;
  std::vector<int32_t> t(N);
  for (int64_t i = 0; i < N; ++i) t[size_t(i)] = int32_t((i * 977 + 5) % V);
  Tensor targets = Tensor::from_ids(t, {N});
  Tensor h = leaf({N, H}, 1), W = Tensor::randn({V, H}, 2, 0.7f).set_requires_grad(true);
  expect_close(linear_cross_entropy_sum(h, W, targets, -100, 0.f, 4), cross_entropy_sum(linear(h, W), targets), 1e-5, 1e-5, "loss");
  linear_cross_entropy_sum(h, W, targets, -100, 0.f, 4).backward();
  Tensor gh = h.grad(), gw = W.grad();
  h.zero_grad(), W.zero_grad();
  cross_entropy_sum(linear(h, W), targets).backward();
  expect_close(gh, h.grad(), 1e-4, 1e-6, "dh");
  expect_close(gw, W.grad(), 1e-4, 1e-6, "dW");
}

TEST(LinearCrossEntropy, GradCheckAndErrors) {
  Tensor targets = Tensor::from_ids({1, -100, 4, 0, 2}, {5});
  check_grad([&](auto& v) { return linear_cross_entropy_sum(v[0], v[1], targets, -100, 0.f, 2); }, {param({5, 3}, 1), param({6, 3}, 2)});
  check_grad([&](auto& v) { return linear_cross_entropy_sum(v[0], v[1], targets, -100, 2.f, 3); }, {param({5, 3}, 3), param({6, 3}, 4)});
  Tensor h = param({5, 3}, 1), W = param({6, 3}, 2);
  EXPECT_THROW(linear_cross_entropy_sum(h, W, Tensor::from_ids({1, 2, 3, 4, 6}, {5})), Error);  // id 6 >= V
  EXPECT_THROW(linear_cross_entropy_sum(h, W, Tensor::from_ids({1, 2}, {2})), Error);           // count
  EXPECT_THROW(linear_cross_entropy_sum(h, param({6, 4}, 3), targets), Error);                  // H mismatch
  NoGradGuard ng;  // no gradient work and no graph without grad mode
  Tensor l = linear_cross_entropy_sum(h, W, targets);
  EXPECT_FALSE(l.requires_grad());
}

TEST(GraphEdge, AddAndScaleKeepNoActivations) {
  Tensor p = leaf({128, 128}, 1);
  const int64_t before = memory_stats().current;
  Tensor y;
  {
    Tensor a = scale(p, 2.f), b = scale(p, 3.f);
    y = add(a, b);  // a and b are freed here: the add's vjp needs their shapes only
  }
  EXPECT_EQ(memory_stats().current - before, int64_t(y.nbytes()));
  sum(y).backward();
  std::vector<float> g = p.grad().to_vector();
  for (float v : g) ASSERT_EQ(v, 5.f);
  // An edge has no data: reading it is an error, not a crash.
  Tensor e = graph_edge(scale(p, 1.f));
  EXPECT_EQ(e.shape(), p.shape());
  EXPECT_THROW(e.data<float>(), Error);
}

TEST(GatedAct, VectorisedSiluMatchesDoubleOnEveryIsa) {
  const int64_t n = 1000;
  std::vector<float> g(n), u(n), go(n);
  for (int64_t i = 0; i < n; ++i) {
    g[size_t(i)] = float(i - 500) * 0.037f;  // [-18.5, 18.5]
    u[size_t(i)] = std::sin(float(i));
    go[size_t(i)] = std::cos(float(i) * 0.3f);
  }
  g[0] = -100.f, g[1] = 100.f, g[2] = 0.f;
  std::string prev = isa_name();
  for (const char* lvl : {"baseline", "avx2", "avx512"}) {
    set_isa(lvl);
    SCOPED_TRACE(std::string("isa ") + isa_name());
    Tensor G = Tensor::from_vector(g, {n}).set_requires_grad(true), U = Tensor::from_vector(u, {n}).set_requires_grad(true);
    Tensor y = gated_act(G, U, Activation::SiLU);
    y.backward(Tensor::from_vector(go, {n}));
    std::vector<float> yv = y.to_vector(), gg = G.grad().to_vector(), gu = U.grad().to_vector();
    for (int64_t i = 0; i < n; ++i) {
      double x = g[size_t(i)], sg = 1.0 / (1.0 + std::exp(-x));
      double ry = x * sg * u[size_t(i)], rgg = go[size_t(i)] * u[size_t(i)] * sg * (1 + x * (1 - sg)), rgu = go[size_t(i)] * x * sg;
      ASSERT_NEAR(yv[size_t(i)], ry, 1e-6 + 1e-5 * std::abs(ry)) << i;
      ASSERT_NEAR(gg[size_t(i)], rgg, 1e-6 + 1e-5 * std::abs(rgg)) << i;
      ASSERT_NEAR(gu[size_t(i)], rgu, 1e-6 + 1e-5 * std::abs(rgu)) << i;
    }
  }
  set_isa(prev);
}

// The training path (fused LM head + loss, fused LoRA projections, checkpointed layers whose last
// GEMM is skipped in recomputation) against the plain one (logits, cross_entropy_sum, no
// checkpointing) on the HF fixture models with their PEFT adapters: same loss, same LoRA gradients.
TEST(FusedTraining, LossAndGradientsMatchPlainPathForEveryFamily) {
  const std::filesystem::path fixtures = std::filesystem::path(FT_TEST_DATA).parent_path() / "fixtures" / "models";
  for (const char* fam : {"llama", "qwen3", "gemma2", "phi3", "mistral"}) {
    SCOPED_TRACE(fam);
    Model m = Model::load((fixtures / fam).string(), LoadOptions{"float32"});
    load_adapter((fixtures / fam / "peft").string(), m, /*trainable=*/true);
    std::vector<NamedParam> params = lora_parameters(m);
    std::ifstream f(fixtures / fam / "expected.json");
    std::vector<int32_t> ids = nlohmann::json::parse(f)["input_ids"][0].get<std::vector<int32_t>>();
    const int64_t T = int64_t(ids.size());
    std::vector<int32_t> tgt(ids.begin() + 1, ids.end());
    tgt.push_back(-100);
    Tensor tids = Tensor::from_ids(ids, {1, T}), targets = Tensor::from_ids(tgt, {T});
    auto run = [&](bool fused, int64_t ckpt, std::vector<Tensor>& grads, bool keep_qkv = true) {
      for (auto& p : params) p.value.zero_grad();
      ForwardOptions fo;
      fo.checkpoint_every = ckpt;
      fo.checkpoint_keep_qkv = keep_qkv;
      Tensor loss = fused ? m.loss_sum(m.hidden(tids, fo), targets)
                          : cross_entropy_sum(reshape(m.forward(tids, fo), {T, m.cfg.vocab_size}), targets);
      loss.backward();
      grads.clear();
      for (auto& p : params) grads.push_back(p.value.grad());
      return double(loss.item());
    };
    std::vector<Tensor> ref, got, unckpt;
    const double want = run(false, 0, ref);
    const double loss0 = run(true, 0, unckpt);
    for (int64_t ckpt : {0, 1, 2, -1}) {  // -1: every block, full policy (only block inputs kept)
      SCOPED_TRACE("checkpoint_every " + std::to_string(ckpt));
      const double loss = ckpt < 0 ? run(true, 1, got, false) : run(true, ckpt, got);
      EXPECT_NEAR(loss, want, 1e-5 * std::abs(want));
      for (size_t i = 0; i < params.size(); ++i) expect_close(got[i], ref[i], 1e-3, 1e-6, params[i].name);
      // Checkpointing itself (selective or full) against the same path
      // without it: the 1e-6 relative.
      EXPECT_NEAR(loss, loss0, 1e-6 * std::abs(loss0));
      for (size_t i = 0; i < params.size(); ++i) expect_close(got[i], unckpt[i], 1e-6, 0, params[i].name);
    }
  }
}
