// RMSNorm over the last dim, fused: one pass per row forward (fp32 statistics; only the per-row rstd
// is saved), one fused pass per row backward for dx and (when w is trainable) dw.
//
//   y = x·r·w'   with r = 1/sqrt(mean(x²) + eps), w' = w (Llama) or 1 + w (Gemma, plus_one)
//   dx = r·g·w' − x·(r³/D)·Σ g·w'·x          dw = Σ_rows g·x·r
// dw is reduced deterministically: rows are split into a fixed number of chunks (a function of the
// shape only), each chunk sums its rows into its own partial, and the partials are added in chunk order.
#include <algorithm>
#include <cmath>
#include <vector>

#include "autograd/kernels.h"
#include "autograd/ops.h"
#include "autograd/profile.h"
#include "autograd/simd.h"

namespace ft {

namespace {

// Σ a·b·c over n floats (c = nullptr: Σ a·b); two vector accumulators, lanes summed in double.
template <int N>
FT_INLINE double dot(const float* a, const float* b, const float* c, int64_t n) {
  using V = simd::Vec<N>;
  auto ld = [](const float* p, int64_t i) { return V::load(p + i); };
  typename V::F s0 = V::splat(0.f), s1 = V::splat(0.f), one = V::splat(1.f);
  int64_t i = 0;
  for (; i + 2 * N <= n; i += 2 * N) {
    s0 += ld(a, i) * ld(b, i) * (c ? ld(c, i) : one);
    s1 += ld(a, i + N) * ld(b, i + N) * (c ? ld(c, i + N) : one);
  }
  for (; i + N <= n; i += N) s0 += ld(a, i) * ld(b, i) * (c ? ld(c, i) : one);
  if (i < n)
    s1 += V::load_part(a + i, n - i, 0.f) * V::load_part(b + i, n - i, 0.f) * (c ? V::load_part(c + i, n - i, 0.f) : one);
  return V::hsum(s0 + s1);
}

// Forward for rows [b, e): y = (x·r)·w, rstd[row] = r.
template <int N>
FT_INLINE void norm_fwd(const float* x, const float* w, float* y, float* rstd, int64_t D, float eps, int64_t b,
                        int64_t e) {
  for (int64_t row = b; row < e; ++row) {
    const float* xr = x + row * D;
    float* yr = y + row * D;
    const float r = float(1.0 / std::sqrt(dot<N>(xr, xr, nullptr, D) / double(D) + double(eps)));
    rstd[row] = r;
    for (int64_t i = 0; i < D; ++i) yr[i] = (xr[i] * r) * w[i];
  }
}

// Backward for rows [b, e): dx (if non-null) and dw_acc += g·x·r (if non-null).
template <int N>
FT_INLINE void norm_bwd(const float* x, const float* w, const float* g, const float* rstd, float* dx, float* dw_acc,
                        int64_t D, int64_t b, int64_t e) {
  for (int64_t row = b; row < e; ++row) {
    const float *xr = x + row * D, *gr = g + row * D;
    const float r = rstd[row];
    if (dx) {
      const double gwx = dot<N>(gr, w, xr, D);  // Σ g·w'·x
      const float c = float(gwx * double(r) * double(r) * double(r) / double(D));
      float* d = dx + row * D;
      for (int64_t i = 0; i < D; ++i) d[i] = (gr[i] * w[i]) * r - xr[i] * c;
    }
    if (dw_acc)
      for (int64_t i = 0; i < D; ++i) dw_acc[i] += gr[i] * (xr[i] * r);
  }
}

FT_SIMD_KERNEL(rms_norm_fwd_rows, norm_fwd,
               (const float* x, const float* w, float* y, float* rstd, int64_t D, float eps, int64_t b, int64_t e),
               (x, w, y, rstd, D, eps, b, e))
FT_SIMD_KERNEL(rms_norm_bwd_rows, norm_bwd,
               (const float* x, const float* w, const float* g, const float* rstd, float* dx, float* dw, int64_t D,
                int64_t b, int64_t e),
               (x, w, g, rstd, dx, dw, D, b, e))

// w' = w or 1 + w, as float32 (w may be a frozen bf16/f16 base weight).
std::vector<float> effective_weight(const Tensor& w, bool plus_one) {
  std::vector<float> wf(size_t(w.numel()));
  Tensor wc = w.contiguous();
  convert(wc.raw(), wc.dtype(), wf.data(), DType::F32, wf.size());
  if (plus_one)
    for (float& v : wf) v += 1.f;
  return wf;
}

int64_t row_grain(int64_t D) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(D, 1)); }

struct RmsNormNode : Node {
  bool plus_one = false;
  const char* name() const override { return "rms_norm"; }
  std::vector<Tensor> backward(const Tensor& g_in) override {
    Tensor x = f32c(inputs[0]), g = f32c(g_in);
    const Tensor& rs = saved[0];
    const int64_t D = x.size(-1), R = x.numel() / std::max<int64_t>(D, 1);
    std::vector<float> wf = effective_weight(inputs[1], plus_one);
    Tensor dx, dw;
    float* pdx = nullptr;
    if (needs(0)) {
      dx = Tensor::empty(x.shape());
      pdx = dx.data<float>();
    }
    const float *px = x.data<float>(), *pg = g.data<float>(), *pr = rs.data<float>(), *pw = wf.data();
    if (!needs(1)) {
      parallel_range(R, row_grain(D), [&](int64_t b, int64_t e) { rms_norm_bwd_rows(px, pw, pg, pr, pdx, nullptr, D, b, e); });
      return {dx, dw};
    }
    // Fixed chunking (shape only) -> the same dw bits for any thread count.
    const int64_t chunk = (R + 63) / 64, nch = chunk ? (R + chunk - 1) / chunk : 0;
    std::vector<float> part(size_t(nch * D), 0.f);
    parallel_range(nch, 1, [&](int64_t b, int64_t e) {
      for (int64_t c = b; c < e; ++c)
        rms_norm_bwd_rows(px, pw, pg, pr, pdx, part.data() + c * D, D, c * chunk, std::min(R, (c + 1) * chunk));
    });
    dw = Tensor::empty(inputs[1].shape());
    float* pdw = dw.data<float>();
    for (int64_t i = 0; i < D; ++i) {
      double s = 0;
      for (int64_t c = 0; c < nch; ++c) s += part[size_t(c * D + i)];
      pdw[i] = float(s);
    }
    return {dx, dw};
  }
};

}  // namespace

Tensor rms_norm(const Tensor& x_in, const Tensor& w, float eps, bool plus_one) {
  FT_PROFILE_SCOPE("rms_norm");
  FT_CHECK(x_in.defined() && w.defined(), "rms_norm: x and w must be defined");
  FT_CHECK(x_in.dim() >= 1 && is_float(x_in.dtype()), "rms_norm: x must be a float tensor [..., D], got ",
           x_in.shape_str(), " ", dtype_name(x_in.dtype()));
  const int64_t D = x_in.size(-1);
  FT_CHECK(w.dim() == 1 && w.size(0) == D && is_float(w.dtype()), "rms_norm: weight ", w.shape_str(), " ",
           dtype_name(w.dtype()), " does not match x ", x_in.shape_str(), " (need a float weight [", D, "])");
  FT_CHECK(eps >= 0 && std::isfinite(eps), "rms_norm: eps must be finite and >= 0, got ", eps);
  Tensor x = f32c(x_in);
  const int64_t R = D ? x.numel() / D : 0;
  std::vector<float> wf = effective_weight(w, plus_one);
  Tensor y = Tensor::empty(x.shape()), rstd = Tensor::empty({R});
  const float* px = x.data<float>();
  float *py = y.data<float>(), *pr = rstd.data<float>();
  parallel_range(R, row_grain(D), [&](int64_t b, int64_t e) { rms_norm_fwd_rows(px, wf.data(), py, pr, D, eps, b, e); });
  if (should_record({&x_in, &w})) {
    auto node = std::make_shared<RmsNormNode>();
    node->plus_one = plus_one;
    node->inputs = {x_in, w};
    node->saved = {rstd};
    return record(y, node);
  }
  return y;
}

}  // namespace ft
