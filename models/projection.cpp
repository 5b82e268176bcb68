#include "models/projection.h"

#include <cmath>

#include <tbb/parallel_for.h>

#include "autograd/gemm.h"
#include "autograd/ops.h"

namespace ft {

Tensor lora_merged_weight(const Tensor& weight, const LoraAdapter& l) {
  NoGradGuard ng;
  Tensor w = weight.to(DType::F32).clone();
  const int64_t out = w.size(0), in = w.size(1);
  sgemm(false, false, out, in, l.rank(), l.scaling, l.B.data<float>(), l.rank(), l.A.data<float>(), in, 1.f,
        w.data<float>(), in);
  return w;
}

std::vector<double> row_norms(const Tensor& w) {
  const int64_t out = w.size(0), in = w.size(1);
  const float* pw = w.data<float>();
  std::vector<double> n(static_cast<size_t>(out));
  tbb::parallel_for(int64_t(0), out, [&](int64_t o) {  // each row summed in order: thread-count independent
    double s = 0;
    for (int64_t i = 0; i < in; ++i) s += double(pw[o * in + i]) * pw[o * in + i];
    n[size_t(o)] = std::sqrt(s);
  });
  return n;
}

Tensor dora_weight_norm(const Tensor& weight, const LoraAdapter& l) {
  const std::vector<double> n = row_norms(lora_merged_weight(weight, l));
  Tensor r = Tensor::empty({int64_t(n.size())});
  float* pr = r.data<float>();
  for (size_t o = 0; o < n.size(); ++o) pr[o] = float(n[o]);
  return r;
}

Tensor Projection::forward(const Tensor& x, bool training, const Tensor& residual, bool graph_only) const {
  auto plus_residual = [&](Tensor y) { return residual.defined() ? add(residual, y) : y; };
  if (!lora) return plus_residual(linear(x, weight, bias));
  const LoraAdapter& l = *lora;
  Tensor xd = dropout(x, l.dropout, training);
  // Plain LoRA: one fused op (the rank-r update accumulated into the base GEMM's output).
  if (!l.magnitude.defined()) return lora_linear(x, weight, bias, l.A, l.B, l.scaling, xd, residual, graph_only);
  return plus_residual(dora_forward(x, xd, training));
}

Tensor Projection::dora_forward(const Tensor& x, const Tensor& xd, bool training) const {
  const LoraAdapter& l = *lora;
  Tensor y = linear(x, weight, bias);
  Tensor delta = linear(linear(xd, l.A), l.B);  // [..., out]
  // DoRA (PEFT, dora.py): weight_norm = ||W + s·B·A||₂ per output row, detached (the paper's §4.3
  // trick: no gradient flows through the norm); mag = m / weight_norm;
  // out = W x + b + (mag − 1)·(W dropout(x)) + mag·s·B A dropout(x)
  Tensor wn = dora_weight_norm(weight, l);
  Tensor mag = div(l.magnitude, wn);                                   // [out]
  Tensor base_d = l.dropout > 0 && training ? linear(xd, weight) : (bias.defined() ? sub(y, bias) : y);
  Tensor out = add(y, mul(base_d, add_scalar(mag, -1.f)));
  return add(out, mul(scale(delta, l.scaling), mag));
}

}  // namespace ft
