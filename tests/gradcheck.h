#pragma once
// Finite-difference gradient checks for ops.
// check_grad(f, inputs): f maps the inputs to a tensor; the scalar probed is sum(f(x) * R) for a fixed
// random R, so every output element contributes. Analytic gradients from backward() are compared
// with central differences (step h) in float32; the tolerance is stated by each test.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "autograd/ops.h"
#include "autograd/random.h"

namespace ft::testing {

struct GradCheckResult { double max_abs_err = 0, max_rel_err = 0; };

inline double probe(const Tensor& y, const std::vector<float>& r) {
  std::vector<float> v = y.to_vector();
  double s = 0;
  for (size_t i = 0; i < v.size(); ++i) s += double(v[i]) * r[i];
  return s;
}

// Checks d/dx of sum(f(xs)·R) for every input with requires_grad. Returns the worst errors; fails the
// test when |analytic - numeric| > atol + rtol·|numeric| anywhere.
inline GradCheckResult check_grad(const std::function<Tensor(const std::vector<Tensor>&)>& f, std::vector<Tensor> xs,
                                  double atol = 2e-3, double rtol = 2e-2, float h = 1e-2f, uint64_t seed = 7) {
  GradCheckResult res;
  for (auto& x : xs) if (x.requires_grad()) x.zero_grad();
  Tensor y = f(xs);
  Tensor R = Tensor::randn(y.shape(), seed);
  std::vector<float> r = R.to_vector();
  Tensor loss = sum(mul(y, R));
  loss.backward();
  for (size_t k = 0; k < xs.size(); ++k) {
    Tensor& x = xs[k];
    if (!x.requires_grad()) continue;
    Tensor g = x.grad();
    EXPECT_TRUE(g.defined()) << "input " << k << " got no gradient";
    if (!g.defined()) continue;
    std::vector<float> ga = g.to_vector();
    float* px = x.data<float>();
    for (int64_t i = 0; i < x.numel(); ++i) {
      float old = px[i];
      double fp, fm;
      {
        NoGradGuard ng;
        px[i] = old + h; fp = probe(f(xs), r);
        px[i] = old - h; fm = probe(f(xs), r);
      }
      px[i] = old;
      double num = (fp - fm) / (2.0 * h), ana = ga[size_t(i)];
      double err = std::abs(num - ana);
      res.max_abs_err = std::max(res.max_abs_err, err);
      res.max_rel_err = std::max(res.max_rel_err, err / (std::abs(num) + 1e-6));
      if (err > atol + rtol * std::abs(num)) {
        ADD_FAILURE() << "input " << k << " element " << i << ": analytic " << ana << " numeric " << num;
        return res;
      }
    }
  }
  return res;
}

inline Tensor param(const Shape& s, uint64_t seed, float std = 1.f) {
  Tensor t = Tensor::randn(s, seed, std);
  t.set_requires_grad(true);
  return t;
}

}  // namespace ft::testing
