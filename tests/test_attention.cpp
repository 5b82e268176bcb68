// Fused attention (autograd/ops.h: attention): forward against a naive double-precision reference
// (explicit scores, softcap, mask, softmax) on odd shapes, GQA ratios 1/2/4/8, sliding windows
// shorter and longer than T, softcap, q_offset (decode against a cache, split-key path), segment
// ids, non-causal; gradient checks by central differences (float32, h = 1e-2, tolerance
// |err| <= 2e-3 + 2e-2·|numeric|, tests/gradcheck.h) on the same kinds of cases; every ISA path;
// huge logits and fully masked rows; peak memory of forward+backward at T = 2048.
#include <cmath>
#include <cstdio>
#include <string>

#include "autograd/attention_kernels.h"
#include "autograd/cpu.h"
#include "gradcheck.h"
#include "isa_levels.h"

using namespace ft;
using namespace ft::testing;

namespace {

struct Case {
  const char* name;
  int64_t B, Tq, Tk, Hq, Hkv, D;
  AttentionOptions opt;
  bool seg = false;  // random packed-sequence segment ids
};

AttentionOptions opts(bool causal, int64_t window = 0, float cap = 0, int64_t q_off = 0, float scale = 0) {
  AttentionOptions o;
  o.causal = causal;
  o.window = window;
  o.softcap = cap;
  o.q_offset = q_off;
  o.scale = scale;
  return o;
}

// Sorted segment ids [B, Tk] with segments of random lengths 1..12 (packed sequences).
Tensor make_segments(int64_t B, int64_t Tk, uint64_t seed) {
  std::vector<int32_t> ids(size_t(B * Tk));
  for (int64_t b = 0; b < B; ++b) {
    int32_t s = 0;
    int64_t left = 0;
    for (int64_t j = 0; j < Tk; ++j) {
      if (left == 0) { ++s; left = 1 + int64_t(uniform_at(seed, uint64_t(b * Tk + j)) * 12); }
      ids[size_t(b * Tk + j)] = s;
      --left;
    }
  }
  return Tensor::from_ids(ids, {B, Tk});
}

// Naive attention in double: out [B, Tq, Hq, D].
std::vector<double> reference(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& o) {
  const int64_t B = q.size(0), Tq = q.size(1), Hq = q.size(2), D = q.size(3), Tk = k.size(1), Hkv = k.size(2);
  const int64_t rep = Hq / Hkv;
  std::vector<float> qv = q.to_vector(), kv = k.to_vector(), vv = v.to_vector();
  std::vector<int32_t> seg = o.segment_ids.defined() ? o.segment_ids.to_ids() : std::vector<int32_t>();
  const double scale = o.scale != 0 ? o.scale : 1.0 / std::sqrt(double(D));
  std::vector<double> out(size_t(B * Tq * Hq * D), 0.0), s(static_cast<size_t>(Tk));
  std::vector<char> vis(static_cast<size_t>(Tk));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t i = 0; i < Tq; ++i) {
        const int64_t pos = o.q_offset + i, g = h / rep;
        double mx = -INFINITY;
        for (int64_t j = 0; j < Tk; ++j) {
          bool ok = (!o.causal || j <= pos) && (o.window == 0 || pos - j < o.window);
          if (!seg.empty()) ok = ok && seg[size_t(b * Tk + pos)] == seg[size_t(b * Tk + j)];
          vis[size_t(j)] = ok;
          double d = 0;
          for (int64_t c = 0; c < D; ++c)
            d += double(qv[size_t(((b * Tq + i) * Hq + h) * D + c)]) * kv[size_t(((b * Tk + j) * Hkv + g) * D + c)];
          d *= scale;
          if (o.softcap > 0) d = o.softcap * std::tanh(d / o.softcap);
          s[size_t(j)] = d;
          if (ok) mx = std::max(mx, d);
        }
        if (mx == -INFINITY) continue;  // fully masked row: zeros
        double z = 0;
        for (int64_t j = 0; j < Tk; ++j) z += vis[size_t(j)] ? std::exp(s[size_t(j)] - mx) : 0.0;
        for (int64_t j = 0; j < Tk; ++j) {
          if (!vis[size_t(j)]) continue;
          const double p = std::exp(s[size_t(j)] - mx) / z;
          for (int64_t c = 0; c < D; ++c)
            out[size_t(((b * Tq + i) * Hq + h) * D + c)] += p * vv[size_t(((b * Tk + j) * Hkv + g) * D + c)];
        }
      }
  return out;
}

// Forward of case c (inputs from seeds) against the reference; max abs error must be <= tol.
void check_forward(const Case& c, double tol = 2e-5, float qscale = 1.f) {
  SCOPED_TRACE(c.name);
  Tensor q = Tensor::randn({c.B, c.Tq, c.Hq, c.D}, 11, qscale), k = Tensor::randn({c.B, c.Tk, c.Hkv, c.D}, 12);
  Tensor v = Tensor::randn({c.B, c.Tk, c.Hkv, c.D}, 13);
  AttentionOptions o = c.opt;
  if (c.seg) o.segment_ids = make_segments(c.B, c.Tk, 14);
  std::vector<double> ref = reference(q, k, v, o);
  std::vector<float> got = attention(q, k, v, o).to_vector();
  ASSERT_EQ(got.size(), ref.size());
  double err = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(std::isfinite(got[i])) << "element " << i;
    err = std::max(err, std::abs(double(got[i]) - ref[i]));
  }
  EXPECT_LE(err, tol);
  // With autograd recording (stores lse) the output is the same.
  Tensor qg = q.clone();
  qg.set_requires_grad(true);
  EXPECT_EQ(attention(qg, k, v, o).to_vector(), got);
}

void check_gradients(const Case& c) {
  SCOPED_TRACE(c.name);
  AttentionOptions o = c.opt;
  if (c.seg) o.segment_ids = make_segments(c.B, c.Tk, 14);
  GradCheckResult r = check_grad([o](auto& x) { return attention(x[0], x[1], x[2], o); },
                                 {param({c.B, c.Tq, c.Hq, c.D}, 21), param({c.B, c.Tk, c.Hkv, c.D}, 22),
                                  param({c.B, c.Tk, c.Hkv, c.D}, 23)});
  EXPECT_LT(r.max_abs_err, 2e-3);
}

const std::vector<Case>& forward_cases() {
  static const std::vector<Case> cases = {
      {"one element", 1, 1, 1, 1, 1, 1, opts(true)},
      {"T=5 D=3 gqa2", 2, 5, 5, 2, 1, 3, opts(true)},
      {"T=17 window 4 gqa2", 1, 17, 17, 4, 2, 8, opts(true, 4)},
      {"T=33 window > T gqa8", 1, 33, 33, 8, 1, 16, opts(true, 100)},
      {"T=130 D=64 mha", 2, 130, 130, 4, 4, 64, opts(true)},
      {"T=130 softcap gqa4", 1, 130, 130, 8, 2, 32, opts(true, 0, 5.f, 0, 0.5f)},
      {"T=257 window 40 (skipped blocks)", 1, 257, 257, 2, 2, 8, opts(true, 40)},
      {"T=300 window 1 (self only)", 1, 300, 300, 2, 1, 4, opts(true, 1)},
      {"decode Tq=1 Tk=300 gqa8", 2, 1, 300, 8, 1, 64, opts(true, 0, 0, 299)},
      {"chunked prefill q_offset 33 window 10", 1, 7, 40, 4, 2, 16, opts(true, 10, 0, 33)},
      {"non-causal Tq!=Tk", 2, 17, 33, 4, 4, 8, opts(false)},
      {"non-causal window 5", 1, 17, 17, 2, 2, 4, opts(false, 5)},
      {"segments gqa2", 2, 33, 33, 4, 2, 8, opts(true), true},
      {"segments non-causal", 1, 140, 140, 2, 1, 4, opts(false), true},
      {"segments + q_offset + window", 1, 9, 40, 2, 1, 4, opts(true, 6, 0, 31), true},
      {"D=256 (Gemma)", 1, 20, 20, 2, 1, 256, opts(true, 0, 50.f, 0, 1.f / 16)},
      {"D=80 softcap window", 1, 33, 33, 4, 2, 80, opts(true, 9, 3.f)},
      {"split-key decode Tk=1100", 1, 1, 1100, 8, 1, 64, opts(true, 0, 0, 1099)},
      {"split-key decode window 500", 1, 1, 1100, 4, 1, 16, opts(true, 500, 0, 1099)},
      {"split-key Tq=3 softcap", 1, 3, 1500, 2, 2, 8, opts(true, 0, 2.f, 1497)},
      {"T=1 B=3", 3, 1, 1, 4, 1, 5, opts(true)},
  };
  return cases;
}

const std::vector<Case>& grad_cases() {
  static const std::vector<Case> cases = {
      {"one element", 1, 1, 1, 1, 1, 1, opts(true)},
      {"T=5 D=3 gqa2", 2, 5, 5, 2, 1, 3, opts(true)},
      {"T=17 window 4 gqa4", 1, 17, 17, 4, 1, 4, opts(true, 4)},
      {"T=17 window > T gqa8", 1, 17, 17, 8, 1, 2, opts(true, 50)},
      {"T=33 mha", 1, 33, 33, 2, 2, 4, opts(true)},
      {"T=130 gqa2 (two key blocks)", 1, 130, 130, 2, 1, 2, opts(true)},
      {"T=140 window 20", 1, 140, 140, 1, 1, 2, opts(true, 20)},
      {"softcap", 1, 9, 9, 4, 2, 4, opts(true, 0, 1.5f, 0, 1.f)},
      {"softcap window q_offset", 1, 6, 20, 2, 1, 4, opts(true, 8, 2.f, 14, 0.8f)},
      {"decode q_offset", 2, 1, 23, 4, 2, 4, opts(true, 0, 0, 22)},
      {"non-causal", 1, 7, 12, 2, 1, 3, opts(false)},
      {"non-causal window", 1, 9, 9, 2, 2, 3, opts(false, 3)},
      {"segments", 2, 17, 17, 2, 1, 3, opts(true), true},
      {"segments non-causal q_offset", 1, 8, 21, 2, 2, 2, opts(false, 0, 0, 10), true},
      {"split-key decode", 1, 1, 600, 2, 1, 2, opts(true, 0, 0, 599)},
  };
  return cases;
}

using ft::testing::IsaGuard;
// Forces tile sizes (0 = automatic) and the backward schedule (1 = two sweeps, 2 = one pass).
struct Overrides {
  Overrides(int64_t positions, int64_t keys, int backward = 0) { attn_detail::set_test_overrides(positions, keys, backward); }
  ~Overrides() { attn_detail::set_test_overrides(0, 0, 0); }
};

}  // namespace

TEST(Attention, ForwardMatchesReference) {
  for (const Case& c : forward_cases()) check_forward(c);
}

TEST(Attention, ForwardEveryIsaPath) {
  IsaGuard guard;
  for (const char* isa : {"baseline", "avx2", "avx512"}) {
    SCOPED_TRACE(isa);
    set_isa(isa);
    for (const Case& c : forward_cases()) check_forward(c);
  }
}

TEST(Attention, GradientsMatchFiniteDifferences) {
  for (int backward : {1, 2}) {
    SCOPED_TRACE(backward == 1 ? "two sweeps" : "one pass");
    Overrides o(0, 0, backward);
    for (const Case& c : grad_cases()) check_gradients(c);
  }
}

TEST(Attention, GradientsEveryIsaPath) {
  IsaGuard guard;
  for (const char* isa : {"baseline", "avx2"}) {
    SCOPED_TRACE(isa);
    set_isa(isa);
    for (size_t i : {size_t(5), size_t(8), size_t(12)}) check_gradients(grad_cases()[i]);
  }
}

// Tiny tiles: many key/query blocks, partial tiles at both ends, skipped blocks, split keys.
TEST(Attention, SmallTiles) {
  for (auto [bq, bk] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {3, 5}, {7, 16}}) {
    SCOPED_TRACE(std::to_string(bq) + "x" + std::to_string(bk));
    Overrides tiles(bq, bk, bk == 5 ? 2 : 1);
    for (const Case& c : forward_cases())
      if (c.Tk * c.Tq <= 40000) check_forward(c);
    for (const Case& c : grad_cases())
      if (c.Tk <= 40) check_gradients(c);
  }
  for (int backward : {1, 2}) {  // window narrower than a key block and much shorter than T
    Overrides tiles(4, 8, backward);
    check_gradients({"T=60 window 5", 1, 60, 60, 2, 1, 2, opts(true, 5)});
    check_gradients({"T=60 window 11 q_offset", 1, 40, 60, 2, 2, 2, opts(true, 11, 0, 20)});
  }
}

// Both backward schedules and any thread count give bitwise the same results.
TEST(Attention, DeterministicAcrossSchedulesAndThreads) {
  AttentionOptions o = opts(true, 300, 0, 0);
  o.segment_ids = make_segments(2, 700, 3);
  auto run = [&](int backward, int threads) {
    set_num_threads(threads);
    Overrides ov(0, 0, backward);
    Tensor q = param({2, 700, 4, 16}, 1), k = param({2, 700, 2, 16}, 2), v = param({2, 700, 2, 16}, 3);
    Tensor out = attention(q, k, v, o);
    out.backward(Tensor::randn(out.shape(), 4));
    set_num_threads(0);
    return std::vector<std::vector<float>>{out.to_vector(), q.grad().to_vector(), k.grad().to_vector(), v.grad().to_vector()};
  };
  IsaGuard guard;
  for (const char* isa : {"baseline", "avx2", "avx512"}) {  // ft::sgemm tiles, AVX2 and AVX-512 tile GEMMs
    SCOPED_TRACE(isa);
    set_isa(isa);
    const auto ref = run(1, 0);
    EXPECT_TRUE(ref == run(2, 0));
    EXPECT_TRUE(ref == run(1, 1));
    EXPECT_TRUE(ref == run(0, 3));
  }
}

// Gradients reach only the inputs that require them, and match the all-inputs run.
TEST(Attention, PartialGradients) {
  Tensor q = param({1, 9, 4, 8}, 1), k = param({1, 9, 2, 8}, 2), v = param({1, 9, 2, 8}, 3);
  Tensor G = Tensor::randn({1, 9, 4, 8}, 4);
  attention(q, k, v).backward(G);
  std::vector<float> gq = q.grad().to_vector(), gk = k.grad().to_vector(), gv = v.grad().to_vector();
  for (int which = 0; which < 3; ++which) {
    Tensor a = q.detach().clone(), b = k.detach().clone(), c = v.detach().clone();
    Tensor* t[3] = {&a, &b, &c};
    t[which]->set_requires_grad(true);
    attention(a, b, c).backward(G);
    for (int i = 0; i < 3; ++i) EXPECT_EQ(t[i]->grad().defined(), i == which);
    EXPECT_EQ(t[which]->grad().to_vector(), which == 0 ? gq : which == 1 ? gk : gv);
  }
}

TEST(Attention, HugeLogitsStayFinite) {
  // scale ×1000: scores in the thousands; softmax is one-hot-like but exact in the reference.
  for (bool cap : {false, true}) {
    Case c{"huge logits", 2, 37, 37, 4, 2, 16, opts(true, 0, cap ? 30.f : 0.f, 0, 1000.f / 4.f)};
    check_forward(c, 1e-4);
    Tensor q = param({2, 37, 4, 16}, 1), k = param({2, 37, 2, 16}, 2), v = param({2, 37, 2, 16}, 3);
    attention(q, k, v, c.opt).backward(Tensor::randn({2, 37, 4, 16}, 4));
    for (const Tensor* t : {&q, &k, &v})
      for (float x : t->grad().to_vector()) ASSERT_TRUE(std::isfinite(x));
  }
}

TEST(Attention, FullyMaskedRowsAreZero) {
  // (a) causal with negative q_offset: rows 0..2 see no key; (b) a window that ends before the
  // first key; (c) no keys at all.
  struct M { AttentionOptions o; int64_t Tq, Tk, masked; };
  for (const M& m : {M{opts(true, 0, 0, -3), 6, 6, 3}, M{opts(true, 3, 0, 10), 4, 5, 4}, M{opts(true, 0, 0, 0), 4, 0, 4}}) {
    Tensor q = param({2, m.Tq, 2, 4}, 1), k = param({2, m.Tk, 1, 4}, 2), v = param({2, m.Tk, 1, 4}, 3);
    Tensor out = attention(q, k, v, m.o);
    out.backward(Tensor::randn(out.shape(), 4));
    std::vector<float> o = out.to_vector(), gq = q.grad().to_vector();
    std::vector<double> ref = reference(q, k, v, m.o);
    for (size_t i = 0; i < o.size(); ++i) {
      ASSERT_TRUE(std::isfinite(o[i]));
      EXPECT_NEAR(o[i], ref[i], 2e-5);
      const int64_t t = int64_t(i) / 8 % m.Tq;
      if (t < m.masked) {
        EXPECT_EQ(o[i], 0.f);
        EXPECT_EQ(gq[i], 0.f);
      }
    }
    for (const Tensor* t : {&k, &v})
      for (float x : t->grad().to_vector()) ASSERT_TRUE(std::isfinite(x));
  }
  // Masked rows mixed with live ones in one tile still pass gradient checks.
  check_gradients({"negative q_offset", 1, 6, 6, 2, 1, 3, opts(true, 0, 0, -2)});
  check_gradients({"window before keys", 1, 5, 4, 2, 1, 3, opts(true, 2, 0, 3)});
}

TEST(Attention, MemoryIsLinearInT) {
  // B=1, H=4, T=2048, D=64: one score matrix per head would be 4·T·T·4 B = 64 MiB. Bound on the
  // peak growth of forward + backward, linear in T: out, dq, dk, dv and the engine's copies of
  // dq/dk/dv into .grad (7·|q|, |q| = B·T·H·D·4 B = 2 MiB) plus lse, delta (B·H·T floats each) and
  // per-task scratch (< 1 MiB per thread): < 8·|q| + num_threads() MiB.
  const int64_t T = 2048, H = 4, D = 64;
  Tensor q = param({1, T, H, D}, 1), k = param({1, T, H, D}, 2), v = param({1, T, H, D}, 3);
  Tensor G = Tensor::randn({1, T, H, D}, 4);
  const int64_t qbytes = T * H * D * 4;
  const int64_t base = memory_stats().current;
  reset_peak_memory();
  {
    Tensor out = attention(q, k, v);
    out.backward(G);
  }
  const int64_t grown = memory_stats().peak - base;
  std::printf("attention fwd+bwd T=2048: peak grew by %.2f MiB\n", double(grown) / (1 << 20));
  EXPECT_LT(grown, 8 * qbytes + int64_t(num_threads()) * (1 << 20)) << "peak grew by " << grown << " bytes";
  EXPECT_LT(grown, 4 * T * T * 4 / 3);
  for (const Tensor* t : {&q, &k, &v}) EXPECT_TRUE(t->grad().defined());
}

TEST(Attention, BadInputsThrow) {
  Tensor q = Tensor::randn({1, 4, 4, 8}, 1), k = Tensor::randn({1, 4, 3, 8}, 2), k2 = Tensor::randn({1, 4, 2, 8}, 3);
  EXPECT_THROW(attention(q, k, k), Error);                                   // 4 % 3 heads
  EXPECT_THROW(attention(q, k2, Tensor::randn({1, 5, 2, 8}, 4)), Error);     // k/v shapes differ
  EXPECT_THROW(attention(q, Tensor::randn({1, 4, 2, 7}, 5), Tensor::randn({1, 4, 2, 7}, 5)), Error);  // head_dim
  EXPECT_THROW(attention(q.view({4, 4, 8}), k2, k2), Error);                 // rank
  EXPECT_THROW(attention(q, k2, k2, opts(true, -1)), Error);                 // window
  EXPECT_THROW(attention(q, k2, k2, opts(true, 0, -2.f)), Error);            // softcap
  AttentionOptions o;
  o.segment_ids = Tensor::from_ids({1, 1, 2}, {1, 3});
  EXPECT_THROW(attention(q, k2, k2, o), Error);                              // segment_ids shape
  o.segment_ids = Tensor::zeros({1, 4});
  EXPECT_THROW(attention(q, k2, k2, o), Error);                              // segment_ids dtype
  o.segment_ids = Tensor::from_ids({1, 1, 2, 2}, {1, 4});
  o.q_offset = 2;
  EXPECT_THROW(attention(q, k2, k2, o), Error);                              // q_offset + Tq > Tk
}

// Strided (non-contiguous) inputs and bf16 values are accepted (converted to contiguous fp32).
TEST(Attention, StridedAndBf16Inputs) {
  Tensor qkv = Tensor::randn({1, 6, 8, 4}, 1);  // [B, T, Hq + 2·Hkv, D], Hq = 4, Hkv = 2
  Tensor q = qkv.slice(2, 0, 4), k = qkv.slice(2, 4, 6), v = qkv.slice(2, 6, 8);
  EXPECT_FALSE(q.is_contiguous());
  std::vector<float> a = attention(q, k, v).to_vector(), b = attention(q.contiguous(), k.contiguous(), v.contiguous()).to_vector();
  EXPECT_EQ(a, b);
  Tensor q16 = q.contiguous().to(DType::BF16);
  std::vector<float> c = attention(q16, k, v).to_vector(), d = attention(q16.to(DType::F32), k, v).to_vector();
  EXPECT_EQ(c, d);
}

// Decode against a preallocated KV cache: the prefix views cache.slice(1, 0, len) (not contiguous
// for B > 1) are read in place, with no copy of the cache and bitwise the same result.
TEST(Attention, KvCacheViewsAreReadInPlace) {
  const int64_t B = 2, cap = 4096, len = 3000, Hkv = 2, D = 64;
  Tensor kc = Tensor::randn({B, cap, Hkv, D}, 1), vc = Tensor::randn({B, cap, Hkv, D}, 2);
  Tensor q = Tensor::randn({B, 1, 8, D}, 3);
  Tensor k = kc.slice(1, 0, len), v = vc.slice(1, 0, len);
  ASSERT_FALSE(k.is_contiguous());
  AttentionOptions o;
  o.q_offset = len - 1;
  o.window = 2500;
  std::vector<float> want = attention(q, k.contiguous(), v.contiguous(), o).to_vector();
  const int64_t base = memory_stats().current;
  reset_peak_memory();
  std::vector<float> got = attention(q, k, v, o).to_vector();
  const int64_t grown = memory_stats().peak - base;
  EXPECT_EQ(got, want);
  EXPECT_LT(grown, 256 * 1024) << "the decode step allocated " << grown << " bytes (cache: " << k.nbytes() << ")";
}
