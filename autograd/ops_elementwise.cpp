// Elementwise ops with broadcasting, activations, dropout.
#include <algorithm>
#include <cmath>

#include "autograd/kernels.h"
#include "autograd/ops.h"
#include "autograd/profile.h"
#include "autograd/random.h"
#include "autograd/simd.h"

namespace ft {

Shape broadcast_shape(const Shape& a, const Shape& b, const char* op) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    FT_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", shape_str(a), " and ", shape_str(b), " do not broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Shape broadcast_strides(const Shape& s, const Shape& out) {
  Shape st = contiguous_strides(s), r(out.size(), 0);
  size_t off = out.size() - s.size();
  for (size_t i = 0; i < s.size(); ++i) r[i + off] = (s[i] == 1 && out[i + off] != 1) ? 0 : st[i];
  return r;
}

namespace {

// out[i] = f(a[ia], b[ib]) over the broadcast shape. Inner dimension is a tight loop.
template <class F>
Tensor binary_kernel(const Tensor& a_in, const Tensor& b_in, const char* op, F f) {
  Tensor a = f32c(a_in), b = f32c(b_in);
  Shape os = broadcast_shape(a.shape(), b.shape(), op);
  Tensor out = Tensor::empty(os);
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  float* po = out.data<float>();
  int64_t n = out.numel();
  if (n == 0) return out;
  if (a.shape() == b.shape()) {
    parallel_range(n, 1 << 15, [&](int64_t s, int64_t e) { for (int64_t i = s; i < e; ++i) po[i] = f(pa[i], pb[i]); });
    return out;
  }
  if (b.numel() == 1 && a.shape() == os) {
    float bv = pb[0];
    parallel_range(n, 1 << 15, [&](int64_t s, int64_t e) { for (int64_t i = s; i < e; ++i) po[i] = f(pa[i], bv); });
    return out;
  }
  Shape sa = broadcast_strides(a.shape(), os), sb = broadcast_strides(b.shape(), os);
  int64_t nd = int64_t(os.size()), inner = os.back(), ia = sa.back(), ib = sb.back();
  int64_t rows = n / inner;
  parallel_range(rows, std::max<int64_t>(1, (1 << 14) / inner), [&](int64_t s, int64_t e) {
    for (int64_t r = s; r < e; ++r) {
      int64_t rem = r, oa = 0, ob = 0;
      for (int64_t d = nd - 2; d >= 0; --d) {
        int64_t idx = rem % os[size_t(d)];
        rem /= os[size_t(d)];
        oa += idx * sa[size_t(d)];
        ob += idx * sb[size_t(d)];
      }
      float* o = po + r * inner;
      const float* xa = pa + oa;
      const float* xb = pb + ob;
      for (int64_t i = 0; i < inner; ++i) o[i] = f(xa[i * ia], xb[i * ib]);
    }
  });
  return out;
}

template <class F>
Tensor unary_kernel(const Tensor& x_in, F f) {
  Tensor x = f32c(x_in);
  Tensor out = Tensor::empty(x.shape());
  const float* px = x.data<float>();
  float* po = out.data<float>();
  parallel_range(x.numel(), 1 << 14, [&](int64_t s, int64_t e) { for (int64_t i = s; i < e; ++i) po[i] = f(px[i]); });
  return out;
}

// Unary op with derivative dfdx(x, y).
template <class F, class D>
struct UnaryNode : Node {
  const char* nm;
  F f;
  D d;
  UnaryNode(const char* n, F ff, D dd) : nm(n), f(ff), d(dd) {}
  const char* name() const override { return nm; }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor x = f32c(inputs[0]);
    Tensor gc = f32c(g);
    Tensor gx = Tensor::empty(x.shape());
    const float *px = x.data<float>(), *pg = gc.data<float>();
    float* po = gx.data<float>();
    parallel_range(x.numel(), 1 << 14, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) po[i] = pg[i] * d(px[i], f(px[i]));
    });
    return {gx};
  }
};

// y = c·x + const: the vjp is g·c and needs nothing of x (kept only as a graph edge).
struct AffineNode : Node {
  const char* nm;
  float c;
  AffineNode(const char* n, float cc) : nm(n), c(cc) {}
  const char* name() const override { return nm; }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor gc = f32c(g);
    Tensor gx = Tensor::empty(gc.shape());
    const float* pg = gc.data<float>();
    float* po = gx.data<float>();
    const float cc = c;
    parallel_range(gc.numel(), 1 << 15, [&](int64_t s, int64_t e) { for (int64_t i = s; i < e; ++i) po[i] = pg[i] * cc; });
    return {gx};
  }
};

Tensor affine(const char* name, const Tensor& x, float mul_by, float add_to) {
  FT_PROFILE_SCOPE(name);
  Tensor out = unary_kernel(x, [mul_by, add_to](float v) { return v * mul_by + add_to; });
  if (should_record({&x})) {
    auto node = std::make_shared<AffineNode>(name, mul_by);
    node->inputs = {graph_edge(x)};
    return record(out, node);
  }
  return out;
}

template <class F, class D>
Tensor unary(const char* name, const Tensor& x, F f, D d) {
  FT_PROFILE_SCOPE(name);
  Tensor out = unary_kernel(x, f);
  if (should_record({&x})) {
    auto node = std::make_shared<UnaryNode<F, D>>(name, f, d);
    node->inputs = {x};
    return record(out, node);
  }
  return out;
}

struct BinaryNode : Node {
  enum Kind { Add, Sub, Mul, Div } kind;
  explicit BinaryNode(Kind k) : kind(k) {}
  const char* name() const override { return kind == Add ? "add" : kind == Sub ? "sub" : kind == Mul ? "mul" : "div"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    const Tensor &a = inputs[0], &b = inputs[1];
    Tensor ga, gb;
    switch (kind) {
      case Add:
        if (needs(0)) ga = sum_to(g, a.shape());
        if (needs(1)) gb = sum_to(g, b.shape());
        break;
      case Sub:
        if (needs(0)) ga = sum_to(g, a.shape());
        if (needs(1)) gb = sum_to(neg(g), b.shape());
        break;
      case Mul:
        if (needs(0)) ga = sum_to(mul(g, b), a.shape());
        if (needs(1)) gb = sum_to(mul(g, a), b.shape());
        break;
      case Div:
        if (needs(0)) ga = sum_to(div(g, b), a.shape());
        if (needs(1)) gb = sum_to(neg(div(mul(g, a), mul(b, b))), b.shape());
        break;
    }
    return {ga, gb};
  }
};

Tensor binary(BinaryNode::Kind k, const Tensor& a, const Tensor& b) {
  FT_PROFILE_SCOPE(k == BinaryNode::Add ? "add" : k == BinaryNode::Sub ? "sub" : k == BinaryNode::Mul ? "mul" : "div");
  Tensor out;
  switch (k) {
    case BinaryNode::Add: out = binary_kernel(a, b, "add", [](float x, float y) { return x + y; }); break;
    case BinaryNode::Sub: out = binary_kernel(a, b, "sub", [](float x, float y) { return x - y; }); break;
    case BinaryNode::Mul: out = binary_kernel(a, b, "mul", [](float x, float y) { return x * y; }); break;
    case BinaryNode::Div: out = binary_kernel(a, b, "div", [](float x, float y) { return x / y; }); break;
  }
  if (should_record({&a, &b})) {
    auto node = std::make_shared<BinaryNode>(k);
    if (k == BinaryNode::Add || k == BinaryNode::Sub) node->inputs = {graph_edge(a), graph_edge(b)};  // vjp needs shapes only
    else node->inputs = {a, b};
    return record(out, node);
  }
  return out;
}

constexpr float kSqrt2OverPi = 0.7978845608028654f;
inline float gelu_tanh_f(float x) { return 0.5f * x * (1.f + std::tanh(kSqrt2OverPi * (x + 0.044715f * x * x * x))); }
inline float gelu_tanh_d(float x) {
  float t = std::tanh(kSqrt2OverPi * (x + 0.044715f * x * x * x));
  return 0.5f * (1.f + t) + 0.5f * x * (1.f - t * t) * kSqrt2OverPi * (1.f + 3.f * 0.044715f * x * x);
}
inline float gelu_f(float x) { return 0.5f * x * (1.f + std::erf(x * 0.7071067811865476f)); }
inline float gelu_d(float x) {
  return 0.5f * (1.f + std::erf(x * 0.7071067811865476f)) + x * std::exp(-0.5f * x * x) * 0.3989422804014327f;
}
inline float silu_f(float x) { return x / (1.f + std::exp(-x)); }
inline float silu_d(float x) { float s = 1.f / (1.f + std::exp(-x)); return s * (1.f + x * (1.f - s)); }

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary(BinaryNode::Add, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary(BinaryNode::Sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary(BinaryNode::Mul, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary(BinaryNode::Div, a, b); }

Tensor scale(const Tensor& x, float s) { return affine("scale", x, s, 0.f); }
Tensor add_scalar(const Tensor& x, float s) { return affine("add_scalar", x, 1.f, s); }
Tensor neg(const Tensor& x) { return affine("neg", x, -1.f, 0.f); }
Tensor square(const Tensor& x) {
  return unary("square", x, [](float v) { return v * v; }, [](float v, float) { return 2.f * v; });
}
Tensor silu(const Tensor& x) {
  return unary("silu", x, [](float v) { return silu_f(v); }, [](float v, float) { return silu_d(v); });
}
Tensor gelu_tanh(const Tensor& x) {
  return unary("gelu_tanh", x, [](float v) { return gelu_tanh_f(v); }, [](float v, float) { return gelu_tanh_d(v); });
}
Tensor gelu(const Tensor& x) {
  return unary("gelu", x, [](float v) { return gelu_f(v); }, [](float v, float) { return gelu_d(v); });
}
Tensor tanh(const Tensor& x) {
  return unary("tanh", x, [](float v) { return std::tanh(v); }, [](float, float y) { return 1.f - y * y; });
}
Tensor exp(const Tensor& x) {
  return unary("exp", x, [](float v) { return std::exp(v); }, [](float, float y) { return y; });
}
Tensor log(const Tensor& x) {
  return unary("log", x, [](float v) { return std::log(v); }, [](float v, float) { return 1.f / v; });
}
Tensor softcap(const Tensor& x, float cap) {
  FT_CHECK(cap > 0, "softcap: cap must be > 0, got ", cap);
  return unary("softcap", x, [cap](float v) { return cap * std::tanh(v / cap); },
               [cap](float, float y) { float t = y / cap; return 1.f - t * t; });
}

namespace {
using Act = Activation;
inline float act_f(Act a, float x) { return a == Act::SiLU ? silu_f(x) : a == Act::GeluTanh ? gelu_tanh_f(x) : gelu_f(x); }
inline float act_d(Act a, float x) { return a == Act::SiLU ? silu_d(x) : a == Act::GeluTanh ? gelu_tanh_d(x) : gelu_d(x); }

// SiLU-gated rows, vectorised (the vector exp of autograd/simd.h), the tail too (a partial vector):
// an element's value must not depend on where a parallel range ends, or the rows of a batch would
// depend on the batch's size (data-parallel ranks compute slices of it: optim/data_parallel.h).
// Forward: o = silu(g)·u. Backward: dg = do·u·σ(g)(1 + g(1 − σ(g))), du = do·silu(g) (either may be null).
template <int N>
FT_INLINE void silu_mul_row(const float* g, const float* u, float* o, int64_t n) {
  using V = simd::Vec<N>;
  for (int64_t i = 0; i < n; i += N) {
    const int64_t k = std::min<int64_t>(N, n - i);
    const typename V::F x = V::load_part(g + i, k, 0.f);
    V::store_part(o + i, x / (V::exp(-x) + 1.f) * V::load_part(u + i, k, 0.f), k);
  }
}
template <int N>
FT_INLINE void silu_mul_bwd_row(const float* g, const float* u, const float* go, float* gg, float* gu, int64_t n) {
  using V = simd::Vec<N>;
  for (int64_t i = 0; i < n; i += N) {
    const int64_t k = std::min<int64_t>(N, n - i);
    const typename V::F x = V::load_part(g + i, k, 0.f), d = V::load_part(go + i, k, 0.f);
    const typename V::F s = 1.f / (V::exp(-x) + 1.f);
    if (gg) V::store_part(gg + i, d * V::load_part(u + i, k, 0.f) * (s * (x * (1.f - s) + 1.f)), k);
    if (gu) V::store_part(gu + i, d * (x * s), k);
  }
}
FT_SIMD_KERNEL(silu_mul, silu_mul_row, (const float* g, const float* u, float* o, int64_t n), (g, u, o, n))
FT_SIMD_KERNEL(silu_mul_bwd, silu_mul_bwd_row,
               (const float* g, const float* u, const float* go, float* gg, float* gu, int64_t n), (g, u, go, gg, gu, n))

struct GatedActNode : Node {
  Act act;
  const char* name() const override { return "gated_act"; }
  std::vector<Tensor> backward(const Tensor& g_in) override {
    Tensor gate = f32c(inputs[0]), up = f32c(inputs[1]), g = f32c(g_in);
    Tensor gg = needs(0) ? Tensor::empty(gate.shape()) : Tensor();
    Tensor gu = needs(1) ? Tensor::empty(up.shape()) : Tensor();
    const float *pgate = gate.data<float>(), *pup = up.data<float>(), *pg = g.data<float>();
    float* pgg = gg.defined() ? gg.data<float>() : nullptr;
    float* pgu = gu.defined() ? gu.data<float>() : nullptr;
    Act a = act;
    parallel_range(gate.numel(), 1 << 14, [&](int64_t s, int64_t e) {
      if (a == Act::SiLU)
        return silu_mul_bwd(pgate + s, pup + s, pg + s, pgg ? pgg + s : nullptr, pgu ? pgu + s : nullptr, e - s);
      for (int64_t i = s; i < e; ++i) {
        if (pgg) pgg[i] = pg[i] * pup[i] * act_d(a, pgate[i]);
        if (pgu) pgu[i] = pg[i] * act_f(a, pgate[i]);
      }
    });
    return {gg, gu};
  }
};
}  // namespace

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::SiLU: return "silu";
    case Activation::GeluTanh: return "gelu_pytorch_tanh";
    case Activation::Gelu: return "gelu";
  }
  return "?";
}

Tensor gated_act(const Tensor& gate_in, const Tensor& up_in, Activation a) {
  FT_PROFILE_SCOPE("gated_act");
  FT_CHECK(gate_in.shape() == up_in.shape(), "gated_act: gate ", gate_in.shape_str(), " and up ", up_in.shape_str(), " differ");
  Tensor gate = f32c(gate_in), up = f32c(up_in);
  Tensor out = Tensor::empty(gate.shape());
  const float *pgate = gate.data<float>(), *pup = up.data<float>();
  float* po = out.data<float>();
  parallel_range(gate.numel(), 1 << 14, [&](int64_t s, int64_t e) {
    if (a == Act::SiLU) return silu_mul(pgate + s, pup + s, po + s, e - s);
    for (int64_t i = s; i < e; ++i) po[i] = act_f(a, pgate[i]) * pup[i];
  });
  if (should_record({&gate_in, &up_in})) {
    auto node = std::make_shared<GatedActNode>();
    node->act = a;
    node->inputs = {gate_in, up_in};
    return record(out, node);
  }
  return out;
}

namespace {
struct DropoutNode : Node {
  uint64_t seed, off = 0;  // off: see dropout_row_base()
  float p;
  const char* name() const override { return "dropout"; }
  std::vector<Tensor> backward(const Tensor& g_in) override {
    Tensor g = f32c(g_in);
    Tensor gx = Tensor::empty(g.shape());
    const float* pg = g.data<float>();
    float* po = gx.data<float>();
    float keep = 1.f / (1.f - p);
    uint64_t sd = seed, o = off;
    float pp = p;
    parallel_range(g.numel(), 1 << 14, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) po[i] = uniform_at(sd, o + uint64_t(i)) >= pp ? pg[i] * keep : 0.f;
    });
    return {gx};
  }
};
}  // namespace

Tensor dropout(const Tensor& x_in, float p, bool training) {
  FT_PROFILE_SCOPE("dropout");
  FT_CHECK(p >= 0 && p < 1, "dropout: probability must be in [0, 1), got ", p);
  if (!training || p == 0) return x_in;
  uint64_t seed = next_seed();
  Tensor x = f32c(x_in);
  Tensor out = Tensor::empty(x.shape());
  const float* px = x.data<float>();
  float* po = out.data<float>();
  float keep = 1.f / (1.f - p);
  const uint64_t off = x.dim() > 0 && x.size(0) > 0 ? uint64_t(dropout_row_base()) * uint64_t(x.numel() / x.size(0)) : 0;
  parallel_range(x.numel(), 1 << 14, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) po[i] = uniform_at(seed, off + uint64_t(i)) >= p ? px[i] * keep : 0.f;
  });
  if (should_record({&x_in})) {
    auto node = std::make_shared<DropoutNode>();
    node->seed = seed;
    node->off = off;
    node->p = p;
    node->inputs = {x_in};
    return record(out, node);
  }
  return out;
}

}  // namespace ft
