#include "models/projection.h"

#include <cmath>

#include <tbb/parallel_for.h>

#include <algorithm>
#include <vector>

#include "autograd/error.h"
#include "autograd/gemm.h"
#include "autograd/ops.h"
#include "autograd/quant.h"

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
  NoGradGuard ng;
  FT_CHECK(weight.dim() == 2, "dora_weight_norm: weight must be a matrix, got ", weight.shape_str());
  const int64_t out = weight.size(0), in = weight.size(1);
  const Tensor A = l.A.to(DType::F32).contiguous(), B = l.B.to(DType::F32).contiguous();
  const int64_t r = A.size(0);
  FT_CHECK(A.dim() == 2 && A.size(1) == in && B.dim() == 2 && B.size(0) == out && B.size(1) == r, "dora_weight_norm: A ", A.shape_str(),
           " and B ", B.shape_str(), " do not fit a weight ", weight.shape_str());
  const bool q = is_quantized(weight);
  const Tensor w = q ? weight : weight.contiguous();
  FT_CHECK(q || is_float(w.dtype()), "dora_weight_norm: weight dtype ", dtype_name(w.dtype()), " is not a float type");
  const float* pa = A.data<float>();
  const float* pb = B.data<float>();
  const float s = l.scaling;
  Tensor n = Tensor::empty({out});
  float* pn = n.data<float>();
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, out, 16), [&](const tbb::blocked_range<int64_t>& rr) {
    std::vector<float> row(static_cast<size_t>(in)), ba(static_cast<size_t>(in));
    for (int64_t o = rr.begin(); o < rr.end(); ++o) {
      if (q)
        dequantize_block(quant_params(w), o, o + 1, 0, in, row.data(), in);
      else
        convert(static_cast<const char*>(w.raw()) + size_t(o * in) * dtype_size(w.dtype()), w.dtype(), row.data(), DType::F32,
                size_t(in));
      std::fill(ba.begin(), ba.end(), 0.0f);
      for (int64_t k = 0; k < r; ++k) {
        const float b = pb[o * r + k];
        const float* a = pa + k * in;
        for (int64_t i = 0; i < in; ++i) ba[size_t(i)] += b * a[i];
      }
      double sum = 0;
      for (int64_t i = 0; i < in; ++i) {
        const float v = row[size_t(i)] + s * ba[size_t(i)];
        sum += double(v) * v;
      }
      pn[o] = float(std::sqrt(sum));
    }
  });
  return n;
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
