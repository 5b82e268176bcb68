// Rotate-half RoPE on x [B, T, H, D] with cos/sin [T, rot] (shared positions) or [B, T, rot] (per-sample
// positions: packed sequences, batched decode). For i < h = rot/2:
//   out[i]     = x[i]·cos[i]     − x[i+h]·sin[i]
//   out[i + h] = x[i+h]·cos[i+h] + x[i]·sin[i+h]
// dims >= rot pass through (partial rotary). The backward is the transposed (inverse) rotation:
//   dx[i] = g[i]·cos[i] + g[i+h]·sin[i+h],   dx[i+h] = g[i+h]·cos[i+h] − g[i]·sin[i]
// exact for any cos/sin (not only cat(c, c)); cos/sin are constants (no gradient). Parallel over (b, t);
// loops are contiguous and branch-free.
#include <cstring>

#include "autograd/kernels.h"
#include "autograd/ops.h"
#include "autograd/profile.h"
#include "autograd/simd.h"

namespace ft {

namespace {

struct RopeGeom {
  int64_t B, T, H, D, rot;
  bool per_sample;  // cos/sin [B, T, rot]
};

// Rows p in [b, e) of the B·T positions; each has H heads of D. Inverse: the backward rotation.
template <int N>
FT_INLINE void rope_rows(const float* x, float* o, const float* cs, const float* sn, RopeGeom g, bool inverse,
                         int64_t b, int64_t e) {
  const int64_t h = g.rot / 2, rest = g.D - g.rot;
  for (int64_t p = b; p < e; ++p) {
    const int64_t pos = g.per_sample ? p : p % g.T;
    const float *c = cs + pos * g.rot, *s = sn + pos * g.rot;
    for (int64_t head = 0; head < g.H; ++head) {
      const float* xr = x + (p * g.H + head) * g.D;
      float* orow = o + (p * g.H + head) * g.D;
      if (!inverse) {
        for (int64_t i = 0; i < h; ++i) orow[i] = xr[i] * c[i] - xr[i + h] * s[i];
        for (int64_t i = 0; i < h; ++i) orow[i + h] = xr[i + h] * c[i + h] + xr[i] * s[i + h];
      } else {
        for (int64_t i = 0; i < h; ++i) orow[i] = xr[i] * c[i] + xr[i + h] * s[i + h];
        for (int64_t i = 0; i < h; ++i) orow[i + h] = xr[i + h] * c[i + h] - xr[i] * s[i];
      }
      if (rest) std::memcpy(orow + g.rot, xr + g.rot, size_t(rest) * sizeof(float));
    }
  }
}

FT_SIMD_KERNEL(rope_kernel, rope_rows,
               (const float* x, float* o, const float* c, const float* s, RopeGeom g, bool inv, int64_t b, int64_t e),
               (x, o, c, s, g, inv, b, e))

Tensor apply(const Tensor& x_in, const Tensor& cs, const Tensor& sn, const RopeGeom& g, bool inverse) {
  Tensor x = f32c(x_in);
  Tensor out = Tensor::empty(x.shape());
  const float* px = x.data<float>();
  float* po = out.data<float>();
  const float *pc = cs.data<float>(), *ps = sn.data<float>();
  parallel_range(g.B * g.T, std::max<int64_t>(1, 16384 / std::max<int64_t>(g.H * g.D, 1)),
                 [&](int64_t b, int64_t e) { rope_kernel(px, po, pc, ps, g, inverse, b, e); });
  return out;
}

struct RopeNode : Node {
  RopeGeom geom{};
  const char* name() const override { return "rope"; }
  std::vector<Tensor> backward(const Tensor& g) override { return {apply(g, saved[0], saved[1], geom, true)}; }
};

}  // namespace

Tensor rope(const Tensor& x, const Tensor& cos_in, const Tensor& sin_in) {
  FT_PROFILE_SCOPE("rope");
  FT_CHECK(x.defined() && cos_in.defined() && sin_in.defined(), "rope: x, cos and sin must be defined");
  FT_CHECK(x.dim() == 4 && is_float(x.dtype()), "rope: x must be a float tensor [B, T, H, D], got ", x.shape_str(), " ",
           dtype_name(x.dtype()));
  FT_CHECK(cos_in.shape() == sin_in.shape(), "rope: cos ", cos_in.shape_str(), " and sin ", sin_in.shape_str(),
           " differ in shape");
  FT_CHECK(is_float(cos_in.dtype()) && is_float(sin_in.dtype()), "rope: cos/sin must be float tensors");
  RopeGeom g{x.size(0), x.size(1), x.size(2), x.size(3), cos_in.size(-1), cos_in.dim() == 3};
  const bool shape_ok = (cos_in.dim() == 2 && cos_in.size(0) == g.T) ||
                        (cos_in.dim() == 3 && cos_in.size(0) == g.B && cos_in.size(1) == g.T);
  FT_CHECK(shape_ok, "rope: cos/sin ", cos_in.shape_str(), " do not match x ", x.shape_str(), " (need [T, rot] = [", g.T,
           ", rot] or [B, T, rot] = [", g.B, ", ", g.T, ", rot])");
  FT_CHECK(g.rot % 2 == 0 && g.rot <= g.D, "rope: rotary dim ", g.rot, " (cos/sin last dim) must be even and <= head dim ",
           g.D);
  Tensor cs = f32c(cos_in.detach()), sn = f32c(sin_in.detach());
  Tensor out = apply(x, cs, sn, g, false);
  if (should_record({&x})) {
    auto node = std::make_shared<RopeNode>();
    node->geom = g;
    node->inputs = {graph_edge(x)};  // the vjp is the inverse rotation of g: x itself is not needed
    node->saved = {cs, sn};
    return record(out, node);
  }
  return out;
}

}  // namespace ft
