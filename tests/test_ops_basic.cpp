// Gradient checks (central differences in float32; tolerance: |err| <= 2e-3 + 2e-2·|numeric|, h = 1e-2)
// for the elementwise, reduction, shape, matmul, linear and embedding ops, on odd shapes.
#include <cmath>

#include "gradcheck.h"

using namespace ft;
using namespace ft::testing;

TEST(GradBasic, BroadcastBinary) {
  for (auto [sa, sb] : std::vector<std::pair<Shape, Shape>>{
           {{3, 5}, {3, 5}}, {{2, 3, 5}, {5}}, {{2, 1, 5}, {3, 1}}, {{1}, {4, 3}}, {{7}, {1}}}) {
    check_grad([](auto& v) { return add(v[0], v[1]); }, {param(sa, 1), param(sb, 2)});
    check_grad([](auto& v) { return sub(v[0], v[1]); }, {param(sa, 1), param(sb, 2)});
    check_grad([](auto& v) { return mul(v[0], v[1]); }, {param(sa, 1), param(sb, 2)});
    Tensor d = param(sb, 3);
    { float* p = d.data<float>(); for (int64_t i = 0; i < d.numel(); ++i) p[i] = 1.5f + std::abs(p[i]); }
    check_grad([](auto& v) { return div(v[0], v[1]); }, {param(sa, 1), d});
  }
}

TEST(GradBasic, Unary) {
  Shape s{3, 17};
  check_grad([](auto& v) { return silu(v[0]); }, {param(s, 1)});
  check_grad([](auto& v) { return gelu(v[0]); }, {param(s, 2)});
  check_grad([](auto& v) { return gelu_tanh(v[0]); }, {param(s, 3)});
  check_grad([](auto& v) { return tanh(v[0]); }, {param(s, 4)});
  check_grad([](auto& v) { return exp(v[0]); }, {param(s, 5, 0.5f)});
  check_grad([](auto& v) { return square(v[0]); }, {param(s, 6)});
  check_grad([](auto& v) { return scale(add_scalar(neg(v[0]), 2.f), 0.3f); }, {param(s, 7)});
  check_grad([](auto& v) { return softcap(v[0], 2.f); }, {param(s, 8, 3.f)});
  for (Activation act : {Activation::SiLU, Activation::GeluTanh, Activation::Gelu})
    check_grad([act](auto& v) { return gated_act(v[0], v[1], act); }, {param(s, 9), param(s, 10)});
}

TEST(GradBasic, Reductions) {
  check_grad([](auto& v) { return sum(v[0]); }, {param({3, 4, 5}, 1)});
  check_grad([](auto& v) { return sum(v[0], {1}); }, {param({3, 4, 5}, 1)});
  check_grad([](auto& v) { return mean(v[0], {0, 2}, true); }, {param({3, 4, 5}, 1)});
  check_grad([](auto& v) { return mean(v[0], {-1}); }, {param({1, 4, 1}, 1)});
  check_grad([](auto& v) { return softmax(v[0]); }, {param({3, 7}, 2)});
  check_grad([](auto& v) { return log_softmax(v[0]); }, {param({2, 3, 9}, 3)});
  Tensor big = Tensor::from_vector({1000.f, 0.f, -1000.f, -INFINITY, -INFINITY, -INFINITY}, {2, 3});
  std::vector<float> sm = softmax(big).to_vector();
  EXPECT_FLOAT_EQ(sm[0], 1.f);
  for (int i = 3; i < 6; ++i) EXPECT_EQ(sm[size_t(i)], 0.f);  // fully masked row: zeros, no NaN
}

TEST(GradBasic, ShapeOps) {
  check_grad([](auto& v) { return reshape(v[0], {5, -1}); }, {param({3, 5, 2}, 1)});
  check_grad([](auto& v) { return transpose(v[0], 0, 2); }, {param({3, 1, 4}, 1)});
  check_grad([](auto& v) { return permute(v[0], {1, 2, 0}); }, {param({2, 3, 4}, 1)});
  check_grad([](auto& v) { return slice(v[0], 1, 1, 4); }, {param({2, 5, 3}, 1)});
  check_grad([](auto& v) { return concat({v[0], v[1]}, 1); }, {param({2, 3, 2}, 1), param({2, 1, 2}, 2)});
  check_grad([](auto& v) { auto p = split(v[0], {2, 3}, -1); return mul(p[0], slice(p[1], 1, 0, 2)); }, {param({4, 5}, 3)});
  Tensor x = param({3, 4}, 1);
  EXPECT_THROW(split(x, {1, 2}, 1), Error);
}

TEST(GradBasic, MatmulAllTransposes) {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      Shape sa = ta ? Shape{2, 5, 3} : Shape{2, 3, 5}, sb = tb ? Shape{2, 7, 5} : Shape{2, 5, 7};
      check_grad([=](auto& v) { return matmul(v[0], v[1], ta, tb); }, {param(sa, 1), param(sb, 2)});
      Shape sb2 = tb ? Shape{7, 5} : Shape{5, 7};  // shared 2-D b
      check_grad([=](auto& v) { return matmul(v[0], v[1], ta, tb); }, {param(sa, 3), param(sb2, 4)});
    }
  // Against a naive product.
  Tensor a = Tensor::randn({17, 33}, 1), b = Tensor::randn({33, 9}, 2);
  std::vector<float> c = matmul(a, b).to_vector(), av = a.to_vector(), bv = b.to_vector();
  for (int i = 0; i < 17; ++i)
    for (int j = 0; j < 9; ++j) {
      double s = 0;
      for (int k = 0; k < 33; ++k) s += double(av[size_t(i * 33 + k)]) * bv[size_t(k * 9 + j)];
      EXPECT_NEAR(c[size_t(i * 9 + j)], s, 1e-4);
    }
}

TEST(GradBasic, LinearWithBiasAndBf16FrozenWeight) {
  check_grad([](auto& v) { return linear(v[0], v[1], v[2]); }, {param({2, 3, 7}, 1), param({5, 7}, 2), param({5}, 3)});
  check_grad([](auto& v) { return linear(v[0], v[1]); }, {param({1, 1}, 1), param({1, 1}, 2)});
  // bf16 frozen weight: on AVX512-BF16 CPUs the activations are rounded to bf16 (gemm.h), so the
  // op is piecewise constant at finite-difference scale. Compare output and input gradient with the
  // float32 op on the same (bf16-representable) weight values: relative error <= 2^-8 per product.
  Tensor w = Tensor::randn({5, 7}, 4).to(DType::BF16), w32 = w.to(DType::F32);
  Tensor x1 = param({3, 7}, 5), x2 = x1.detach().clone().set_requires_grad(true);
  Tensor y1 = linear(x1, w), y2 = linear(x2, w32);
  sum(square(y1)).backward();
  sum(square(y2)).backward();
  std::vector<float> a = y1.to_vector(), b = y2.to_vector(), ga = x1.grad().to_vector(), gb = x2.grad().to_vector();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 0.03 * (1 + std::abs(b[i])));
  for (size_t i = 0; i < ga.size(); ++i) EXPECT_NEAR(ga[i], gb[i], 0.05 * (1 + std::abs(gb[i])));
}

TEST(GradBasic, Embedding) {
  Tensor ids = Tensor::from_ids({3, 0, 3, 5, 1, 3}, {2, 3});
  check_grad([ids](auto& v) { return embedding(v[0], ids); }, {param({6, 5}, 1)});
  Tensor w16 = Tensor::randn({6, 4}, 2).to(DType::BF16);
  EXPECT_EQ(embedding(w16, ids).to_vector().size(), 24u);
  EXPECT_THROW(embedding(w16, Tensor::from_ids({6}, {1})), Error);
  EXPECT_THROW(embedding(w16, Tensor::from_ids({-1}, {1})), Error);
}

TEST(GradBasic, DropoutIsSeededAndScaled) {
  global_rng() = {1, 0};
  Tensor x = Tensor::full({1000}, 1.f);
  std::vector<float> a = dropout(x, 0.25f).to_vector();
  global_rng() = {1, 0};
  std::vector<float> b = dropout(x, 0.25f).to_vector();
  EXPECT_EQ(a, b);
  int zeros = 0;
  for (float v : a) { zeros += v == 0.f; if (v != 0.f) { EXPECT_FLOAT_EQ(v, 1.f / 0.75f); } }
  EXPECT_GT(zeros, 180);
  EXPECT_LT(zeros, 320);
  check_grad([](auto& v) { global_rng() = {3, 0}; return dropout(v[0], 0.5f); }, {param({4, 6}, 1)});
}
