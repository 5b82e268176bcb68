// Model ops: rms_norm, rope, cross_entropy(_sum).
// Gradient checks: central differences in float32 (tests/gradcheck.h; h = 1e-2, tolerance
// |err| <= 2e-3 + 2e-2·|numeric| unless a test says otherwise). Forwards (and the cross-entropy
// gradient) are compared with naive double-precision references. Kernels that have AVX-512 / AVX2 /
// baseline variants are run on every path this CPU has (set_isa).
#include <cmath>
#include <string>

#include "autograd/cpu.h"
#include "gradcheck.h"

using namespace ft;
using namespace ft::testing;

namespace {

// Runs f once per ISA level available here, restoring the level in effect afterwards.
template <class F>
void for_each_isa(F f) {
  std::string prev = isa_name();
  for (const char* lvl : {"baseline", "avx2", "avx512"}) {
    set_isa(lvl);
    SCOPED_TRACE(std::string("isa ") + isa_name());
    f();
  }
  set_isa(prev);
}

// ---- cross-entropy reference (double) ----
struct CeRef { double loss = 0; std::vector<double> grad; int64_t count = 0; };
CeRef ce_ref(const std::vector<float>& x, const std::vector<int32_t>& t, int64_t V, int32_t ignore, bool mean) {
  int64_t N = int64_t(t.size());
  CeRef r;
  r.grad.assign(size_t(N * V), 0.0);
  for (int64_t i = 0; i < N; ++i) r.count += t[size_t(i)] != ignore;
  double f = mean ? (r.count ? 1.0 / double(r.count) : 0.0) : 1.0;
  for (int64_t i = 0; i < N; ++i) {
    if (t[size_t(i)] == ignore) continue;
    const float* xr = x.data() + i * V;
    double m = -INFINITY, s = 0;
    for (int64_t j = 0; j < V; ++j) m = std::max(m, double(xr[j]));
    for (int64_t j = 0; j < V; ++j) s += std::exp(double(xr[j]) - m);
    double lse = m + std::log(s);
    r.loss += (lse - xr[t[size_t(i)]]) * f;
    for (int64_t j = 0; j < V; ++j) r.grad[size_t(i * V + j)] = std::exp(double(xr[j]) - lse) * f;
    r.grad[size_t(i * V + t[size_t(i)])] -= f;
  }
  return r;
}

// Forward and gradient of cross_entropy(_sum) against the double reference.
void check_ce(const Tensor& logits_in, const std::vector<int32_t>& t, int32_t ignore, bool mean, double loss_rtol,
              double grad_atol) {
  int64_t V = logits_in.size(-1), N = int64_t(t.size());
  Tensor logits = logits_in.detach();
  logits.set_requires_grad(true);
  Tensor tt = Tensor::from_ids(t, {N});
  Tensor loss = mean ? cross_entropy(logits, tt, ignore) : cross_entropy_sum(logits, tt, ignore);
  EXPECT_EQ(loss.dim(), 0);
  CeRef ref = ce_ref(logits.contiguous().to_vector(), t, V, ignore, mean);
  EXPECT_NEAR(loss.item(), ref.loss, loss_rtol * std::max(1.0, std::abs(ref.loss)));
  loss.backward();
  std::vector<float> g = logits.grad().to_vector();
  ASSERT_EQ(g.size(), ref.grad.size());
  double worst = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    ASSERT_TRUE(std::isfinite(g[i])) << "gradient element " << i;
    worst = std::max(worst, std::abs(g[i] - ref.grad[i]));
  }
  EXPECT_LE(worst, grad_atol);
}

std::vector<int32_t> random_targets(int64_t n, int64_t V, uint64_t seed, int every_ignored, int32_t ignore) {
  std::vector<float> u = Tensor::uniform({n}, seed, 0.f, 1.f).to_vector();
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    t[size_t(i)] = (every_ignored && i % every_ignored == 1) ? ignore : std::min<int32_t>(int32_t(u[size_t(i)] * float(V)), int32_t(V - 1));
  return t;
}

}  // namespace

// ================================================================================= cross-entropy

TEST(CrossEntropy, GradCheckOddShapes) {
  for (auto [N, V] : std::vector<std::pair<int64_t, int64_t>>{{5, 7}, {1, 1}, {3, 1}, {13, 33}, {2, 2}}) {
    SCOPED_TRACE("N=" + std::to_string(N) + " V=" + std::to_string(V));
    Tensor tt = Tensor::from_ids(random_targets(N, V, 3, 3, -100), {N});
    for (bool mean : {false, true})
      check_grad([&](auto& v) { return mean ? cross_entropy(v[0], tt) : cross_entropy_sum(v[0], tt); }, {param({N, V}, 1, 2.f)});
  }
  // Leading dims are flattened: logits [B, T, V] with targets [B, T].
  Tensor t3 = Tensor::from_ids({0, 4, -100, 2, 1, 3}, {2, 3});
  check_grad([&](auto& v) { return cross_entropy(v[0], t3); }, {param({2, 3, 5}, 2)});
}

TEST(CrossEntropy, MatchesDoubleReferenceOnEveryIsa) {
  for_each_isa([] {
    for (auto [N, V] : std::vector<std::pair<int64_t, int64_t>>{{37, 1000}, {9, 17}, {4, 1}, {3, 64}}) {
      Tensor x = Tensor::randn({N, V}, 11, 3.f);
      check_ce(x, random_targets(N, V, 5, 4, -100), -100, false, 1e-5, 1e-6);
      check_ce(x, random_targets(N, V, 6, 3, 7), 7, true, 1e-5, 1e-6);
    }
  });
}

TEST(CrossEntropy, VocabularyOf50kAndHugeLogits) {
  for_each_isa([] {
    int64_t V = 50257;
    Tensor x = Tensor::randn({3, V}, 21, 4.f);
    check_ce(x, {50256, 0, 12345}, -100, true, 1e-5, 1e-7);
    // ±1e4 logits: no inf/NaN, exact where the target is the argmax, softmax concentrated correctly.
    Tensor h = Tensor::from_vector({1e4f, -1e4f, 0.f, 1e4f - 2.f, -1e4f, -1e4f, 1e4f, 9999.f,
                                    -1e4f, -1e4f, -1e4f, -1e4f}, {3, 4});
    check_ce(h, {0, 1, 2}, -100, false, 1e-6, 1e-6);
    Tensor l = cross_entropy_sum(h, Tensor::from_ids({0, 2, 3}, {3}));
    double expect = std::log1p(std::exp(-2.0)) + std::log1p(std::exp(-1.0)) + std::log(4.0);
    EXPECT_NEAR(l.item(), expect, 1e-5);
  });
}

TEST(CrossEntropy, IgnoredRowsAndNothingSupervised) {
  Tensor x = param({4, 6}, 3);
  Tensor all_ign = Tensor::from_ids({-100, -100, -100, -100}, {4});
  for (bool mean : {false, true}) {
    x.zero_grad();
    Tensor l = mean ? cross_entropy(x, all_ign) : cross_entropy_sum(x, all_ign);
    EXPECT_EQ(l.item(), 0.f);
    l.backward();
    ASSERT_TRUE(x.grad().defined());
    for (float g : x.grad().to_vector()) EXPECT_EQ(g, 0.f);
  }
  // Ignored rows get exactly zero gradient; the mean divides by the supervised count only.
  Tensor t = Tensor::from_ids({2, -100, 5, -100}, {4});
  x.zero_grad();
  Tensor l = cross_entropy(x, t);
  EXPECT_NEAR(l.item(), 0.5 * cross_entropy_sum(x.detach(), t).item(), 1e-6);
  l.backward();
  std::vector<float> g = x.grad().to_vector();
  for (int j = 0; j < 6; ++j) {
    EXPECT_EQ(g[size_t(6 + j)], 0.f);
    EXPECT_EQ(g[size_t(18 + j)], 0.f);
  }
}

TEST(CrossEntropy, StridedBf16AndInt64Inputs) {
  int64_t N = 5, V = 11;
  Tensor wide = Tensor::randn({N, V + 3}, 8, 2.f);
  Tensor view = wide.slice(1, 0, V);  // row stride V + 3: read in place
  ASSERT_FALSE(view.is_contiguous());
  std::vector<int32_t> t = {1, 10, 0, -100, 7};
  Tensor dense = view.contiguous();
  float a = cross_entropy_sum(view, Tensor::from_ids(t, {N})).item();
  EXPECT_FLOAT_EQ(a, cross_entropy_sum(dense, Tensor::from_ids(t, {N})).item());
  check_ce(view, t, -100, false, 1e-5, 1e-6);
  Tensor ids64 = Tensor::empty({N}, DType::I64);
  for (int64_t i = 0; i < N; ++i) ids64.data<int64_t>()[i] = t[size_t(i)];
  EXPECT_FLOAT_EQ(cross_entropy_sum(dense, ids64).item(), a);
  Tensor b16 = dense.to(DType::BF16);
  check_ce(b16.to(DType::F32), t, -100, false, 1e-5, 1e-6);
  EXPECT_FLOAT_EQ(cross_entropy_sum(b16, Tensor::from_ids(t, {N})).item(),
                  cross_entropy_sum(b16.to(DType::F32), Tensor::from_ids(t, {N})).item());
}

TEST(CrossEntropy, BadTargetsAndShapesAreErrors) {
  Tensor x = Tensor::randn({3, 5}, 1);
  try {
    cross_entropy_sum(x, Tensor::from_ids({0, 5, 1}, {3}));
    ADD_FAILURE() << "no error for target 5 with V = 5";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("target id 5"), std::string::npos) << m;
    EXPECT_NE(m.find("row 1"), std::string::npos) << m;
  }
  EXPECT_THROW(cross_entropy(x, Tensor::from_ids({0, -1, 1}, {3})), Error);
  EXPECT_THROW(cross_entropy(x, Tensor::from_ids({0, 1}, {2})), Error);
  EXPECT_THROW(cross_entropy(x, Tensor::randn({3}, 2)), Error);  // float targets
  EXPECT_THROW(cross_entropy(Tensor::randn({3, 0}, 1), Tensor::from_ids({0, 0, 0}, {3})), Error);
}

TEST(CrossEntropy, AllocatesOnlyTheGradient) {
  const int64_t N = 64, V = 8192, D = 16;
  const int64_t nv_bytes = N * V * int64_t(sizeof(float));
  Tensor logits = Tensor::randn({N, V}, 4);
  logits.set_requires_grad(true);
  Tensor t = Tensor::from_ids(random_targets(N, V, 9, 5, -100), {N});
  int64_t base = memory_stats().current;
  reset_peak_memory();
  Tensor loss = cross_entropy(logits, t);
  EXPECT_LE(memory_stats().peak - base, 64 * N);  // O(N): the saved row statistics and targets
  // The node's backward: the gradient is the only [N, V] allocation.
  base = memory_stats().current;
  reset_peak_memory();
  {
    std::vector<Tensor> g = loss.grad_fn()->backward(Tensor::full({}, 1.f));
    ASSERT_EQ(g.size(), 1u);
    EXPECT_EQ(g[0].shape(), logits.shape());
  }
  EXPECT_LE(memory_stats().peak - base, nv_bytes + 64 * N);
  // End to end as in a model: logits = linear(h, frozen W); backward allocates dlogits and dh only.
  Tensor h = param({N, D}, 5), w = Tensor::randn({V, D}, 6);
  Tensor lg = linear(h, w);
  base = memory_stats().current;
  reset_peak_memory();
  cross_entropy(lg, t).backward();
  EXPECT_LE(memory_stats().peak - base, nv_bytes + nv_bytes / 20);
}

// ================================================================================= rms_norm

namespace {
// Double-precision RMSNorm forward and vjp for x [R, D], weight w (already as floats), upstream g.
struct NormRef { std::vector<double> y, dx, dw; };
NormRef norm_ref(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& g, int64_t D,
                 double eps, bool plus_one) {
  int64_t R = int64_t(x.size()) / D;
  NormRef r;
  r.y.resize(x.size());
  r.dx.resize(x.size());
  r.dw.assign(size_t(D), 0.0);
  for (int64_t i = 0; i < R; ++i) {
    const float* xr = x.data() + i * D;
    const float* gr = g.data() + i * D;
    double ss = 0, gwx = 0;
    for (int64_t j = 0; j < D; ++j) ss += double(xr[j]) * xr[j];
    double rs = 1.0 / std::sqrt(ss / double(D) + eps);
    for (int64_t j = 0; j < D; ++j) {
      double wj = plus_one ? 1.0 + w[size_t(j)] : double(w[size_t(j)]);
      r.y[size_t(i * D + j)] = xr[j] * rs * wj;
      gwx += double(gr[j]) * wj * xr[j];
      r.dw[size_t(j)] += double(gr[j]) * xr[j] * rs;
    }
    for (int64_t j = 0; j < D; ++j) {
      double wj = plus_one ? 1.0 + w[size_t(j)] : double(w[size_t(j)]);
      r.dx[size_t(i * D + j)] = rs * gr[j] * wj - xr[j] * rs * rs * rs * gwx / double(D);
    }
  }
  return r;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::abs(double(a[i]) - b[i]));
  return m;
}
}  // namespace

TEST(RmsNorm, GradCheckOddShapes) {
  for (bool plus_one : {false, true}) {
    for (Shape s : std::vector<Shape>{{3, 7}, {13, 33}, {2, 3, 33}, {1, 1, 1, 7}, {9, 1, 7}, {2, 3, 4, 8}}) {
      SCOPED_TRACE(shape_str(s) + (plus_one ? " plus_one" : ""));
      int64_t D = s.back();
      check_grad([&](auto& v) { return rms_norm(v[0], v[1], 1e-5f, plus_one); }, {param(s, 1), param({D}, 2)});
      // Frozen weight (bf16 base weight): only dx.
      Tensor w16 = Tensor::randn({D}, 3).to(DType::BF16);
      check_grad([&](auto& v) { return rms_norm(v[0], w16, 1e-5f, plus_one); }, {param(s, 4)});
    }
    // Frozen activations, trainable weight: only dw.
    Tensor xc = Tensor::randn({6, 5}, 7);
    check_grad([&](auto& v) { return rms_norm(xc, v[0], 1e-5f, plus_one); }, {param({5}, 8)});
    // D = 1: y = x / sqrt(x² + eps)·w' is smooth only for a large eps relative to h².
    check_grad([&](auto& v) { return rms_norm(v[0], v[1], 0.5f, plus_one); }, {param({5, 1}, 5), param({1}, 6)});
  }
}

TEST(RmsNorm, MatchesDoubleReferenceOnEveryIsa) {
  for_each_isa([] {
    for (auto [R, D] : std::vector<std::pair<int64_t, int64_t>>{{37, 576}, {300, 129}, {5, 1}, {130, 7}, {1, 33}}) {
      for (bool plus_one : {false, true}) {
        for (DType wt : {DType::F32, DType::BF16}) {
          SCOPED_TRACE("R=" + std::to_string(R) + " D=" + std::to_string(D) + (plus_one ? " plus_one " : " ") + dtype_name(wt));
          Tensor x = param({R, D}, 7, 2.f);
          Tensor w = Tensor::randn({D}, 8, 0.5f).to(wt);
          w.set_requires_grad(true);
          Tensor g = Tensor::randn({R, D}, 9);
          Tensor y = rms_norm(x, w, 1e-6f, plus_one);
          y.backward(g);
          NormRef ref = norm_ref(x.to_vector(), w.to(DType::F32).to_vector(), g.to_vector(), D, 1e-6, plus_one);
          // Values are O(1..10); dw sums up to 300 rows (observed worst: 8e-7, 4e-7, 5e-6).
          EXPECT_LE(max_abs_diff(y.to_vector(), ref.y), 3e-6);
          EXPECT_LE(max_abs_diff(x.grad().to_vector(), ref.dx), 1.5e-6);
          EXPECT_LE(max_abs_diff(w.grad().to_vector(), ref.dw), 2e-5);
        }
      }
    }
  });
}

TEST(RmsNorm, WeightGradientIsDeterministicAcrossThreadCounts) {
  Tensor x = param({1000, 96}, 1), w = param({96}, 2);
  Tensor g = Tensor::randn({1000, 96}, 3);
  std::vector<std::vector<float>> dws;
  for (int threads : {1, 2, 0}) {
    set_num_threads(threads);
    w.zero_grad();
    rms_norm(x, w, 1e-6f, true).backward(g);
    dws.push_back(w.grad().to_vector());
  }
  set_num_threads(0);
  EXPECT_EQ(dws[0], dws[1]);
  EXPECT_EQ(dws[0], dws[2]);
}

TEST(RmsNorm, HeadNormOnFourDimsAndErrors) {
  // q_norm / k_norm: [B, T, H, D] normalised over D with a [D] weight, same as rows of D.
  Tensor q = Tensor::randn({2, 3, 4, 8}, 1), w = Tensor::randn({8}, 2);
  std::vector<float> a = rms_norm(q, w, 1e-6f).to_vector(), b = rms_norm(q.view({24, 8}), w, 1e-6f).to_vector();
  EXPECT_EQ(a, b);
  // Strided input (a transposed view) is read correctly.
  Tensor xt = Tensor::randn({6, 5}, 3).transpose(0, 1);
  EXPECT_EQ(rms_norm(xt, Tensor::randn({6}, 4), 1e-6f).to_vector(),
            rms_norm(xt.contiguous(), Tensor::randn({6}, 4), 1e-6f).to_vector());
  EXPECT_THROW(rms_norm(q, Tensor::randn({7}, 2), 1e-6f), Error);
  EXPECT_THROW(rms_norm(q, Tensor::randn({2, 4}, 2), 1e-6f), Error);
  EXPECT_THROW(rms_norm(Tensor::from_ids({1, 2}, {1, 2}), Tensor::randn({2}, 2), 1e-6f), Error);
  EXPECT_THROW(rms_norm(q, w, -1.f), Error);
}

// ================================================================================= rope

namespace {
// HF tables: angle[p, i] = p·theta^(−2i/rot), cos/sin = cat(cos(angle), cos(angle)) etc. [T, rot].
std::pair<Tensor, Tensor> rope_tables(const std::vector<int>& positions, int64_t rot, double theta = 10000.0) {
  int64_t T = int64_t(positions.size());
  std::vector<float> c(size_t(T * rot)), s(size_t(T * rot));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < rot / 2; ++i) {
      double a = positions[size_t(t)] * std::pow(theta, -2.0 * double(i) / double(rot));
      c[size_t(t * rot + i)] = c[size_t(t * rot + i + rot / 2)] = float(std::cos(a));
      s[size_t(t * rot + i)] = s[size_t(t * rot + i + rot / 2)] = float(std::sin(a));
    }
  return {Tensor::from_vector(c, {T, rot}), Tensor::from_vector(s, {T, rot})};
}

// Double reference of the forward with general (per-position) tables; cos/sin [T, rot] or [B, T, rot].
std::vector<double> rope_ref(const Tensor& x, const Tensor& cs, const Tensor& sn) {
  int64_t B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3), rot = cs.size(-1), h = rot / 2;
  bool per = cs.dim() == 3;
  std::vector<float> xv = x.contiguous().to_vector(), cv = cs.to_vector(), sv = sn.to_vector();
  std::vector<double> o(xv.size());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t hh = 0; hh < H; ++hh) {
        const float* xr = xv.data() + ((b * T + t) * H + hh) * D;
        const float* c = cv.data() + (per ? b * T + t : t) * rot;
        const float* s = sv.data() + (per ? b * T + t : t) * rot;
        double* orow = o.data() + ((b * T + t) * H + hh) * D;
        for (int64_t i = 0; i < D; ++i) {
          if (i < h) orow[i] = double(xr[i]) * c[i] - double(xr[i + h]) * s[i];
          else if (i < rot) orow[i] = double(xr[i]) * c[i] + double(xr[i - h]) * s[i];
          else orow[i] = xr[i];
        }
      }
  return o;
}
}  // namespace

TEST(RopeOp, MatchesDoubleReferenceOnEveryIsa) {
  for_each_isa([] {
    struct Case { Shape x; int64_t rot; };
    for (const Case& c : std::vector<Case>{{{2, 5, 3, 8}, 8}, {{2, 5, 3, 10}, 6}, {{1, 7, 9, 64}, 64},
                                           {{3, 4, 2, 96}, 32}, {{1, 1, 1, 2}, 2}, {{2, 3, 1, 5}, 0}}) {
      SCOPED_TRACE(shape_str(c.x) + " rot " + std::to_string(c.rot));
      Tensor x = Tensor::randn(c.x, 1);
      std::vector<int> pos;
      for (int t = 0; t < c.x[1]; ++t) pos.push_back(3 * t + 1);
      auto [cs, sn] = rope_tables(pos, c.rot);
      EXPECT_LE(max_abs_diff(rope(x, cs, sn).to_vector(), rope_ref(x, cs, sn)), 1e-6);
      // Arbitrary (non-HF) tables and per-sample tables [B, T, rot].
      Tensor c3 = Tensor::randn({c.x[0], c.x[1], c.rot}, 2), s3 = Tensor::randn({c.x[0], c.x[1], c.rot}, 3);
      EXPECT_LE(max_abs_diff(rope(x, c3, s3).to_vector(), rope_ref(x, c3, s3)), 1e-5);
    }
  });
}

TEST(RopeOp, GradCheckFullAndPartialRotary) {
  // Arbitrary tables (cos[i] != cos[i + rot/2]) check that the backward is the exact transpose.
  struct Case { Shape x; int64_t rot; };
  for (const Case& c : std::vector<Case>{{{1, 1, 1, 2}, 2}, {{2, 3, 3, 8}, 8}, {{2, 3, 2, 10}, 4}, {{1, 5, 1, 7}, 6},
                                         {{3, 1, 2, 33}, 16}, {{1, 2, 1, 3}, 0}}) {
    SCOPED_TRACE(shape_str(c.x) + " rot " + std::to_string(c.rot));
    Tensor cs = Tensor::randn({c.x[1], c.rot}, 4), sn = Tensor::randn({c.x[1], c.rot}, 5);
    check_grad([&](auto& v) { return rope(v[0], cs, sn); }, {param(c.x, 6)});
    Tensor c3 = Tensor::randn({c.x[0], c.x[1], c.rot}, 7), s3 = Tensor::randn({c.x[0], c.x[1], c.rot}, 8);
    check_grad([&](auto& v) { return rope(v[0], c3, s3); }, {param(c.x, 9)});
  }
}

TEST(RopeOp, PerSamplePositionsAndInverse) {
  // Per-sample tables equal running each sample with its own [T, rot] table.
  Tensor x = Tensor::randn({2, 4, 3, 16}, 1);
  auto [c0, s0] = rope_tables({0, 1, 2, 3}, 12);
  auto [c1, s1] = rope_tables({7, 8, 0, 1}, 12);  // e.g. a packed row: two sequences
  Tensor c3 = concat({c0.view({1, 4, 12}), c1.view({1, 4, 12})}, 0), s3 = concat({s0.view({1, 4, 12}), s1.view({1, 4, 12})}, 0);
  std::vector<float> both = rope(x, c3, s3).to_vector();
  std::vector<float> a = rope(x.slice(0, 0, 1), c0, s0).to_vector(), b = rope(x.slice(0, 1, 2), c1, s1).to_vector();
  a.insert(a.end(), b.begin(), b.end());
  EXPECT_EQ(both, a);
  // Rotating by −angle undoes the rotation (sin → −sin).
  std::vector<float> back = rope(rope(x, c1, s1), c1, neg(s1)).to_vector(), xv = x.to_vector();
  for (size_t i = 0; i < xv.size(); ++i) EXPECT_NEAR(back[i], xv[i], 1e-5);
}

TEST(RopeOp, BadShapesAreErrors) {
  Tensor x = Tensor::randn({2, 4, 3, 8}, 1);
  auto [cs, sn] = rope_tables({0, 1, 2, 3}, 8);
  EXPECT_THROW(rope(x.view({8, 3, 8}), cs, sn), Error);                        // not [B, T, H, D]
  EXPECT_THROW(rope(x, cs.slice(0, 0, 3), sn.slice(0, 0, 3)), Error);          // T mismatch
  EXPECT_THROW(rope(x, cs.slice(1, 0, 7), sn.slice(1, 0, 7)), Error);          // odd rot
  auto [c10, s10] = rope_tables({0, 1, 2, 3}, 10);
  EXPECT_THROW(rope(x, c10, s10), Error);                                      // rot > D
  EXPECT_THROW(rope(x, cs, sn.slice(1, 0, 6)), Error);                         // cos/sin differ
  EXPECT_THROW(rope(x, Tensor::randn({3, 4, 8}, 1), Tensor::randn({3, 4, 8}, 2)), Error);  // B mismatch
}
