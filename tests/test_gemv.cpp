// ft::gemv (decode-time x·Wᵀ, autograd/gemv.h) against a naive double-precision reference, for
// every ISA path this machine has (set_isa): M = 1..6, sizes around the SIMD widths, padded
// leading dimensions, weight rows off the cache-line boundary, fp32, bf16 and fp16 weights,
// alpha/beta; results independent of the thread count and of M (bitwise); bad arguments.
// Tolerance as in test_gemm.cpp: |C - ref| <= 1e-5·sqrt(K)·(|alpha|·Σ|a·w| + |beta·C0|), with
// A exact in the reference by default (a path that rounded it to bf16 would miss by ~2^-9), and
// rounded to bf16 for bf16 weights with round_a.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "autograd/cpu.h"
#include "isa_levels.h"
#include "autograd/dtype.h"
#include "autograd/error.h"
#include "autograd/gemm.h"
#include "autograd/gemv.h"

namespace {

using ft::testing::isa_levels;
using ft::testing::IsaGuard;

struct Case {
  int64_t M, N, K, lda, ldw, ldc, off;  // off: elements W starts past an aligned base
  float alpha, beta;
  std::vector<float> A, W, C0;
  std::vector<uint16_t> Wh, Wf16;  // bf16 and fp16 copies of W (exact)
  const void* w(ft::DType t) const {
    return t == ft::DType::BF16 ? static_cast<const void*>(Wh.data() + off)
         : t == ft::DType::F16  ? static_cast<const void*>(Wf16.data() + off)
                                : static_cast<const void*>(W.data() + off);
  }
};

Case make(int64_t M, int64_t N, int64_t K, int pad, int64_t off, float alpha, float beta, uint32_t seed) {
  Case c{M, N, K, K + pad, K + 2 * pad, N + pad, off, alpha, beta, {}, {}, {}, {}, {}};
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  c.A.resize(size_t(M * c.lda + 1));
  c.W.resize(size_t(off + N * c.ldw + 1));
  c.C0.resize(size_t(M * c.ldc + 1));
  for (float& x : c.A) x = u(rng);
  for (float& x : c.W) x = std::round(u(rng) * 256.0f) / 256.0f;  // exact in bf16 and fp16
  for (float& x : c.C0) x = beta == 0.0f ? std::numeric_limits<float>::quiet_NaN() : u(rng);
  for (float x : c.W) {
    c.Wh.push_back(ft::f32_to_bf16(x));
    c.Wf16.push_back(ft::f32_to_f16(x));
  }
  return c;
}

void check_one(const Case& c, ft::DType wt, bool round, const std::string& what) {
  std::vector<float> C = c.C0;
  ft::gemv(c.M, c.N, c.K, c.alpha, c.A.data(), c.lda, c.w(wt), wt, c.ldw, c.beta, C.data(), c.ldc, true, round);
  const bool round_a = wt == ft::DType::BF16 && round;
  const double tol = 1e-5 * std::sqrt(double(std::max<int64_t>(c.K, 1)));
  int bad = 0;
  for (int64_t i = 0; i < c.M && bad < 5; ++i) {
    for (int64_t j = 0; j < c.N && bad < 5; ++j) {
      double s = 0, sa = 0;
      for (int64_t k = 0; k < c.K; ++k) {
        float a = c.A[size_t(i * c.lda + k)];
        if (round_a) a = ft::bf16_to_f32(ft::f32_to_bf16(a));
        const double t = double(a) * double(c.W[size_t(c.off + j * c.ldw + k)]);
        s += t;
        sa += std::fabs(t);
      }
      const double c0 = c.beta == 0.0f ? 0.0 : double(c.C0[size_t(i * c.ldc + j)]);
      const double want = double(c.alpha) * s + double(c.beta) * c0;
      const double lim = tol * (std::fabs(double(c.alpha)) * sa + std::fabs(double(c.beta) * c0)) + 1e-30;
      const double got = C[size_t(i * c.ldc + j)];
      if (!(std::fabs(got - want) <= lim)) {
        ADD_FAILURE() << what << ": C[" << i << "][" << j << "] = " << got << ", expected " << want << " (tolerance " << lim << ")";
        ++bad;
      }
    }
    for (int64_t j = c.N; j < c.ldc; ++j) {
      const float o = C[size_t(i * c.ldc + j)], w = c.C0[size_t(i * c.ldc + j)];
      if (!(o == w || (std::isnan(o) && std::isnan(w)))) {
        ADD_FAILURE() << what << ": padding C[" << i << "][" << j << "] was overwritten";
        ++bad;
      }
    }
  }
}

// Exact (the default) and, for bf16 weights, with round_a.
void check(const Case& c, ft::DType wt, const std::string& what) {
  check_one(c, wt, false, what);
  if (wt == ft::DType::BF16) check_one(c, wt, true, what + " round_a");
}

const ft::DType kWeightTypes[] = {ft::DType::F32, ft::DType::BF16, ft::DType::F16};

std::string describe(const Case& c, const std::string& isa, ft::DType wt) {
  return "gemv isa=" + isa + " " + ft::dtype_name(wt) + " M=" + std::to_string(c.M) + " N=" + std::to_string(c.N) +
         " K=" + std::to_string(c.K) + " lda=" + std::to_string(c.lda) + " ldw=" + std::to_string(c.ldw) +
         " ldc=" + std::to_string(c.ldc) + " off=" + std::to_string(c.off) + " alpha=" + std::to_string(c.alpha) +
         " beta=" + std::to_string(c.beta);
}

TEST(Gemv, OddShapesAllIsas) {
  IsaGuard guard;
  const int64_t Ks[] = {1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 129, 577};
  const int64_t Ns[] = {1, 2, 5, 17};
  const float ab[][2] = {{1.0f, 0.0f}, {0.5f, 0.0f}, {-1.5f, 0.25f}, {1.0f, 1.0f}};
  uint32_t seed = 1;
  for (const std::string& isa : isa_levels()) {
    ft::set_isa(isa);
    for (int64_t M = 1; M <= 6; ++M)
      for (int64_t K : Ks)
        for (int64_t N : Ns) {
          const int v = int(seed % 4);
          const Case c = make(M, N, K, int(seed % 3) * 5, int64_t(seed % 5) * 3, ab[v][0], ab[v][1], seed);
          ++seed;
          for (ft::DType wt : kWeightTypes) check(c, wt, describe(c, isa, wt));
        }
  }
}

// Big enough for the parallel path (many 32 KiB blocks); the M rows of A computed together, one
// at a time, with 1 thread and with all: bitwise the same.
TEST(Gemv, IndependentOfThreadsAndRows) {
  IsaGuard guard;
  for (const std::string& isa : isa_levels()) {
    ft::set_isa(isa);
    for (ft::DType dt : kWeightTypes) {
      const Case c = make(4, 1000, 577, 3, 5, 1.0f, 0.0f, 7);
      check(c, dt, describe(c, isa, dt));
      std::vector<float> all(size_t(c.M * c.ldc)), one(all.size()), serial(all.size());
      ft::gemv(c.M, c.N, c.K, 1.0f, c.A.data(), c.lda, c.w(dt), dt, c.ldw, 0.0f, all.data(), c.ldc);
      for (int64_t i = 0; i < c.M; ++i)
        ft::gemv(1, c.N, c.K, 1.0f, c.A.data() + i * c.lda, c.lda, c.w(dt), dt, c.ldw, 0.0f, one.data() + i * c.ldc, c.ldc);
      ft::set_num_threads(1);
      ft::gemv(c.M, c.N, c.K, 1.0f, c.A.data(), c.lda, c.w(dt), dt, c.ldw, 0.0f, serial.data(), c.ldc);
      ft::set_num_threads(0);
      for (int64_t i = 0; i < c.M; ++i)
        for (int64_t j = 0; j < c.N; ++j) {
          const size_t e = size_t(i * c.ldc + j);
          ASSERT_EQ(all[e], one[e]) << isa << " " << ft::dtype_name(dt) << " row " << i << " col " << j;
          ASSERT_EQ(all[e], serial[e]) << isa << " " << ft::dtype_name(dt) << " row " << i << " col " << j;
        }
    }
  }
}

// The summation order depends only on the ISA path and K: weights at any address give the same
// bits, and so do fp16 and bf16 weights (exact by default) and their fp32 values.
TEST(Gemv, IndependentOfAlignmentAndWeightType) {
  IsaGuard guard;
  for (const std::string& isa : isa_levels()) {
    ft::set_isa(isa);
    const Case c = make(2, 37, 301, 0, 0, 1.0f, 0.0f, 5);
    std::vector<float> ref(size_t(c.M * c.ldc)), got(ref.size());
    ft::gemv(c.M, c.N, c.K, 1.0f, c.A.data(), c.lda, c.W.data(), ft::DType::F32, c.ldw, 0.0f, ref.data(), c.ldc);
    for (ft::DType dt : kWeightTypes) {
      for (int64_t shift = 0; shift < 9; ++shift) {
        // The same weights, shift elements further on (other alignments of every row).
        std::vector<float> wf(size_t(shift) + c.W.size());
        std::vector<uint16_t> wh(wf.size());
        for (size_t e = 0; e < c.W.size(); ++e) {
          wf[size_t(shift) + e] = c.W[e];
          wh[size_t(shift) + e] = dt == ft::DType::F16 ? c.Wf16[e] : c.Wh[e];
        }
        const void* w = dt == ft::DType::F32 ? static_cast<const void*>(wf.data() + shift) : static_cast<const void*>(wh.data() + shift);
        ft::gemv(c.M, c.N, c.K, 1.0f, c.A.data(), c.lda, w, dt, c.ldw, 0.0f, got.data(), c.ldc);
        ASSERT_EQ(got, ref) << isa << " " << ft::dtype_name(dt) << " shift " << shift;
      }
    }
  }
}

// The GEMM entry points route x·Wᵀ with M <= kGemvMaxRows here: same bits as gemv itself.
TEST(Gemv, GemmRoutesSkinnyProducts) {
  const Case c = make(3, 300, 200, 0, 0, 1.0f, 0.0f, 11);
  std::vector<float> a(size_t(c.M * c.ldc)), b(a.size());
  ft::gemv(c.M, c.N, c.K, 1.0f, c.A.data(), c.lda, c.Wh.data(), ft::DType::BF16, c.ldw, 0.0f, a.data(), c.ldc);
  ft::gemm_bf16w(false, true, c.M, c.N, c.K, 1.0f, c.A.data(), c.lda, c.Wh.data(), c.ldw, 0.0f, b.data(), c.ldc);
  EXPECT_EQ(a, b);
  ft::gemv(c.M, c.N, c.K, 1.0f, c.A.data(), c.lda, c.W.data(), ft::DType::F32, c.ldw, 0.0f, a.data(), c.ldc);
  ft::sgemm(false, true, c.M, c.N, c.K, 1.0f, c.A.data(), c.lda, c.W.data(), c.ldw, 0.0f, b.data(), c.ldc);
  EXPECT_EQ(a, b);
  ft::gemv(c.M, c.N, c.K, 1.0f, c.A.data(), c.lda, c.Wf16.data(), ft::DType::F16, c.ldw, 0.0f, a.data(), c.ldc);
  ft::gemm_f16w(false, true, c.M, c.N, c.K, 1.0f, c.A.data(), c.lda, c.Wf16.data(), c.ldw, 0.0f, b.data(), c.ldc);
  EXPECT_EQ(a, b);
}

TEST(Gemv, BadArgumentsThrow) {
  std::vector<float> A(64, 1.0f), W(64, 1.0f), C(64, 0.0f);
  EXPECT_THROW(ft::gemv(1, 4, 8, 1.0f, A.data(), 8, W.data(), ft::DType::I32, 8, 0.0f, C.data(), 4), ft::Error);
  EXPECT_THROW(ft::gemv(1, 4, 8, 1.0f, A.data(), 7, W.data(), ft::DType::F32, 8, 0.0f, C.data(), 4), ft::Error);
  EXPECT_THROW(ft::gemv(1, 4, 8, 1.0f, A.data(), 8, W.data(), ft::DType::F32, 7, 0.0f, C.data(), 4), ft::Error);
  EXPECT_THROW(ft::gemv(1, 4, 8, 1.0f, A.data(), 8, W.data(), ft::DType::F32, 8, 0.0f, C.data(), 3), ft::Error);
  EXPECT_THROW(ft::gemv(1, 4, 8, 1.0f, A.data(), 8, nullptr, ft::DType::F32, 8, 0.0f, C.data(), 4), ft::Error);
  EXPECT_THROW(ft::gemv(-1, 4, 8, 1.0f, A.data(), 8, W.data(), ft::DType::F32, 8, 0.0f, C.data(), 4), ft::Error);
  // K == 0: C = beta·C, A and W not read.
  ft::gemv(1, 4, 0, 1.0f, nullptr, 1, nullptr, ft::DType::F32, 1, 0.5f, C.data(), 4);
  EXPECT_EQ(C[0], 0.0f);
}

}  // namespace
