#include <gtest/gtest.h>

#include "autograd/random.h"
#include "gradcheck.h"

using namespace ft;
using namespace ft::testing;

TEST(Autograd, AccumulatesAndRespectsNoGrad) {
  Tensor x = param({3}, 1);
  Tensor y = add(mul(x, x), x);  // x used three times
  sum(y).backward();
  std::vector<float> xv = x.to_vector(), g = x.grad().to_vector();
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(g[size_t(i)], 2 * xv[size_t(i)] + 1, 1e-6);
  sum(y.detach()).impl();  // detach has no history
  EXPECT_FALSE(y.detach().requires_grad());
  {
    NoGradGuard ng;
    EXPECT_FALSE(mul(x, x).requires_grad());
  }
  // Gradients accumulate across backward calls (gradient accumulation).
  Tensor y2 = sum(x);
  y2.backward();
  g = x.grad().to_vector();
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(g[size_t(i)], 2 * xv[size_t(i)] + 2, 1e-6);
}

TEST(Autograd, FrozenWeightGetsNoGradient) {
  Tensor x = param({4, 5}, 1);
  Tensor w = Tensor::randn({3, 5}, 2);  // frozen
  Tensor y = linear(x, w);
  sum(y).backward();
  EXPECT_TRUE(x.grad().defined());
  EXPECT_FALSE(w.grad().defined());
}

TEST(Autograd, CheckpointMatchesPlainBackwardWithDropout) {
  global_rng() = {42, 0};
  Tensor w1 = param({8, 6}, 3, 0.5f), w2 = param({6, 8}, 4, 0.5f);
  auto seg = [&](const std::vector<Tensor>& in) { return linear(dropout(silu(linear(in[0], w1)), 0.3f), w2); };
  Tensor x0 = Tensor::randn({2, 5, 6}, 5);
  Tensor xa = x0.clone().set_requires_grad(true);
  sum(square(seg({xa}))).backward();
  std::vector<float> g1 = w1.grad().to_vector(), g2 = w2.grad().to_vector(), gx = xa.grad().to_vector();
  w1.zero_grad(); w2.zero_grad();
  global_rng() = {42, 0};
  Tensor xb = x0.clone().set_requires_grad(true);
  Tensor out = checkpoint(seg, {xb});
  sum(square(out)).backward();
  auto close = [](const std::vector<float>& a, const std::vector<float>& b) {
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-6 * (1 + std::abs(a[i])));
  };
  close(g1, w1.grad().to_vector());
  close(g2, w2.grad().to_vector());
  close(gx, xb.grad().to_vector());
}

TEST(Autograd, GraphIsFreedAfterBackward) {
  int64_t before = memory_stats().current;
  {
    Tensor x = param({64, 64}, 1);
    Tensor y = x;
    for (int i = 0; i < 20; ++i) y = silu(y);
    sum(y).backward();
  }
  EXPECT_EQ(memory_stats().current, before);
}
