#include "models/projection.h"

#include <cmath>

#include "autograd/ops.h"

namespace ft {

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
  Tensor wn;
  {
    NoGradGuard ng;
    Tensor w = add(weight.to(DType::F32), scale(matmul(l.B, l.A), l.scaling));  // [out, in]
    wn = add_scalar(sum(square(w), {1}), 0.f);
    float* p = wn.data<float>();
    for (int64_t i = 0; i < wn.numel(); ++i) p[i] = std::sqrt(p[i]);
  }
  Tensor mag = div(l.magnitude, wn);                                   // [out]
  Tensor base_d = l.dropout > 0 && training ? linear(xd, weight) : (bias.defined() ? sub(y, bias) : y);
  Tensor out = add(y, mul(base_d, add_scalar(mag, -1.f)));
  return add(out, mul(scale(delta, l.scaling), mag));
}

}  // namespace ft
