// ft::sgemm / gemm_bf16w / sgemm_batched against a naive double-precision reference, for every
// ISA path this machine has (set_isa), all transpose combinations, odd shapes, padded leading
// dimensions and alpha/beta variants.
//
// Tolerance: |C - ref| <= 1e-5·sqrt(K)·(|alpha|·Σ_k |a_ik·b_kj| + |beta·C0_ij|) (fp32
// accumulation; a wrong index or a missed tile gives errors of order 1). For gemm_bf16w the
// reference uses the bf16 values of B exactly and A exactly (the default: exact fp32 on every
// path; a path that rounded A to bf16 would miss by ~2^-9 relative, far above the tolerance) or,
// with round_a, A rounded to bf16 (RNE) — AMX, vdpbf16ps and the rounded fp32 panels alike; with
// that the same tolerance holds.
#include <gtest/gtest.h>
#include <tbb/parallel_for.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "autograd/cpu.h"
#include "isa_levels.h"
#include "autograd/dtype.h"
#include "autograd/error.h"
#include "autograd/gemm.h"

namespace {

using ft::testing::isa_levels;
using ft::testing::IsaGuard;

struct Problem {
  bool ta, tb;
  int64_t M, N, K, lda, ldb, ldc;
  float alpha, beta;
  std::vector<float> A, B, C0;
  std::vector<uint16_t> Bh;  // bf16 copy of B

  float a(int64_t i, int64_t k) const { return ta ? A[k * lda + i] : A[i * lda + k]; }
  float b(int64_t k, int64_t j) const { return tb ? B[j * ldb + k] : B[k * ldb + j]; }
};

Problem make(bool ta, bool tb, int64_t M, int64_t N, int64_t K, int pad, float alpha, float beta,
             uint32_t seed) {
  Problem p{ta, tb, M, N, K, 0, 0, 0, alpha, beta, {}, {}, {}, {}};
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  p.lda = (ta ? M : K) + pad;
  p.ldb = (tb ? K : N) + pad;
  p.ldc = N + pad;
  p.A.resize(size_t((ta ? K : M) * p.lda + 1));
  p.B.resize(size_t((tb ? N : K) * p.ldb + 1));
  p.C0.resize(size_t(M * p.ldc + 1));
  for (float& x : p.A) x = u(rng);
  for (float& x : p.B) x = ft::bf16_to_f32(ft::f32_to_bf16(u(rng)));  // exact in bf16 too
  for (float& x : p.C0) x = beta == 0.0f ? std::numeric_limits<float>::quiet_NaN() : u(rng);
  p.Bh.resize(p.B.size());
  for (size_t i = 0; i < p.B.size(); ++i) p.Bh[i] = ft::f32_to_bf16(p.B[i]);
  return p;
}

struct Ref {
  std::vector<double> val, scale;
};

Ref reference(const Problem& p, bool round_a) {
  Ref r;
  r.val.resize(size_t(p.M * p.N));
  r.scale.resize(r.val.size());
  for (int64_t i = 0; i < p.M; ++i)
    for (int64_t j = 0; j < p.N; ++j) {
      double s = 0, sa = 0;
      for (int64_t k = 0; k < p.K; ++k) {
        float av = p.a(i, k);
        if (round_a) av = ft::bf16_to_f32(ft::f32_to_bf16(av));
        const double t = double(av) * double(p.b(k, j));
        s += t;
        sa += std::fabs(t);
      }
      const double c0 = p.beta == 0.0f ? 0.0 : double(p.C0[i * p.ldc + j]);
      r.val[i * p.N + j] = double(p.alpha) * s + double(p.beta) * c0;
      r.scale[i * p.N + j] = std::fabs(double(p.alpha)) * sa + std::fabs(double(p.beta) * c0);
    }
  return r;
}

// Checks C against ref; also that the padding between rows (j >= N) was not touched.
void expect_close(const Problem& p, const Ref& r, const std::vector<float>& C,
                  const std::string& what) {
  const double tol = 1e-5 * std::sqrt(double(std::max<int64_t>(p.K, 1)));
  int bad = 0;
  for (int64_t i = 0; i < p.M && bad < 5; ++i) {
    for (int64_t j = 0; j < p.N && bad < 5; ++j) {
      const double c = C[i * p.ldc + j], e = r.val[i * p.N + j];
      const double lim = tol * r.scale[i * p.N + j] + 1e-30;
      if (!(std::fabs(c - e) <= lim)) {
        ADD_FAILURE() << what << ": C[" << i << "][" << j << "] = " << c << ", expected " << e
                      << " (tolerance " << lim << ")";
        ++bad;
      }
    }
    for (int64_t j = p.N; j < p.ldc; ++j) {
      const float o = C[i * p.ldc + j], w = p.C0[i * p.ldc + j];
      if (!(o == w || (std::isnan(o) && std::isnan(w)))) {
        ADD_FAILURE() << what << ": padding C[" << i << "][" << j << "] was overwritten";
        ++bad;
      }
    }
  }
}

std::string describe(const Problem& p, const std::string& isa, const char* fn) {
  return std::string(fn) + " isa=" + isa + " ta=" + std::to_string(p.ta) +
         " tb=" + std::to_string(p.tb) + " M=" + std::to_string(p.M) +
         " N=" + std::to_string(p.N) + " K=" + std::to_string(p.K) +
         " lda=" + std::to_string(p.lda) + " ldb=" + std::to_string(p.ldb) +
         " ldc=" + std::to_string(p.ldc) + " alpha=" + std::to_string(p.alpha) +
         " beta=" + std::to_string(p.beta);
}

// Runs sgemm and gemm_bf16w on p for every ISA level and checks both.
void check_all_isas(const Problem& p) {
  IsaGuard guard;
  const Ref ref = reference(p, false);
  Ref ref_rounded;
  for (const std::string& isa : isa_levels()) {
    ft::set_isa(isa);
    std::vector<float> C = p.C0;
    ft::sgemm(p.ta, p.tb, p.M, p.N, p.K, p.alpha, p.A.data(), p.lda, p.B.data(), p.ldb, p.beta,
              C.data(), p.ldc);
    expect_close(p, ref, C, describe(p, isa, "sgemm"));

    C = p.C0;
    ft::gemm_bf16w(p.ta, p.tb, p.M, p.N, p.K, p.alpha, p.A.data(), p.lda, p.Bh.data(), p.ldb,
                   p.beta, C.data(), p.ldc);
    expect_close(p, ref, C, describe(p, isa, "gemm_bf16w"));

    C = p.C0;
    ft::gemm_bf16w(p.ta, p.tb, p.M, p.N, p.K, p.alpha, p.A.data(), p.lda, p.Bh.data(), p.ldb,
                   p.beta, C.data(), p.ldc, /*round_a=*/true);
    if (ref_rounded.val.empty()) ref_rounded = reference(p, true);
    expect_close(p, ref_rounded, C,
                 describe(p, isa, "gemm_bf16w round_a") + " path=" + ft::gemm_bf16_dot_path());
  }
}

TEST(Gemm, CpuFeaturesAndIsaOverride) {
  IsaGuard guard;
  const ft::CpuFeatures& hw = ft::cpu_features_hw();
  EXPECT_TRUE(!hw.avx512bf16 || hw.avx512f);
  EXPECT_TRUE(!hw.avx512f || hw.avx2);
  ft::set_isa("baseline");
  EXPECT_STREQ(ft::isa_name(), "baseline");
  EXPECT_FALSE(ft::cpu_features().avx2);
  ft::set_isa("avx2");
  EXPECT_EQ(ft::cpu_features().avx2, hw.avx2);
  EXPECT_FALSE(ft::cpu_features().avx512f);
  EXPECT_FALSE(ft::cpu_features().avxvnni);
  EXPECT_FALSE(ft::cpu_features().avx512vnni);
  ft::set_isa("avx2vnni");  // the int8 decode kernels' AVX-VNNI path (not in the default ladder)
  EXPECT_EQ(ft::cpu_features().avxvnni, hw.avxvnni);
  EXPECT_FALSE(ft::cpu_features().avx512f);
  EXPECT_FALSE(ft::cpu_features().avx512vnni);
  ft::set_isa("avx512f");
  EXPECT_FALSE(ft::cpu_features().avx512vnni);
  EXPECT_FALSE(ft::cpu_features().avxvnni);
  EXPECT_EQ(ft::cpu_features().avx512f, hw.avx512f);
  EXPECT_FALSE(ft::cpu_features().avx512bf16);
  EXPECT_FALSE(ft::cpu_features().fast_bf16_dot);
  EXPECT_FALSE(ft::cpu_features().amx);
  EXPECT_STREQ(ft::gemm_bf16_dot_path(), "fp32");
  ft::set_isa("avx512");
  EXPECT_FALSE(ft::cpu_features().amx);
  EXPECT_EQ(ft::cpu_features().avx512vnni, hw.avx512vnni);
  EXPECT_EQ(ft::cpu_features().avx512bf16, hw.avx512bf16);
  ft::set_isa("native");
  EXPECT_EQ(ft::cpu_features().avx512bf16, hw.avx512bf16);
  EXPECT_EQ(ft::cpu_features().amx, hw.amx);
  EXPECT_STREQ(ft::gemm_bf16_dot_path(), hw.amx ? "amx" : hw.fast_bf16_dot ? "avx512bf16" : "fp32");
  EXPECT_STREQ(ft::isa_name(), hw.amx          ? "amx"
                               : hw.avx512bf16 ? "avx512"
                               : hw.avx512f    ? "avx512f"
                               : hw.avx2       ? (hw.avxvnni ? "avx2vnni" : "avx2")
                                               : "baseline");
  EXPECT_TRUE(!hw.avx512vnni || hw.avx512f);
  EXPECT_TRUE(!hw.avxvnni || hw.avx2);
  EXPECT_TRUE(!hw.fast_bf16_dot || hw.avx512bf16);
  EXPECT_TRUE(!hw.amx || hw.avx512bf16);
  EXPECT_THROW(ft::set_isa("sse9"), ft::Error);
  EXPECT_GE(ft::num_threads(), 1);
}

TEST(Gemm, OddShapesAllTransposesAllIsas) {
  const int64_t shapes[][3] = {
      {1, 1, 1},    {1, 1, 7},    {1, 13, 1},  {5, 1, 3},   {2, 3, 4},   {3, 33, 2},
      {7, 5, 9},    {13, 31, 17}, {14, 32, 8}, {15, 33, 9}, {16, 16, 16}, {6, 48, 5},
      {28, 64, 3},  {29, 65, 31}, {45, 17, 64}, {17, 97, 33}, {70, 40, 129}, {1, 70, 45},
      {64, 1, 70},  {33, 30, 2}};
  const float ab[][2] = {{1.0f, 0.0f}, {0.5f, 0.0f}, {-1.5f, 0.25f}, {1.0f, 1.0f}};
  uint32_t seed = 1;
  for (const auto& s : shapes)
    for (int t = 0; t < 4; ++t) {
      const int v = int(seed % 4);
      check_all_isas(make(t & 1, t & 2, s[0], s[1], s[2], int(seed % 3) * 3, ab[v][0], ab[v][1],
                          seed));
      ++seed;
    }
}

TEST(Gemm, BlockBoundariesAndThreads) {
  // Several depth blocks (K > 1536), several column blocks of packed B (N·K > 2^20), many row
  // panels (parallel path), vectors (M = 1, N = 1), few rows (unpacked path for trans_b, serial
  // and parallel).
  const int64_t shapes[][3] = {{129, 67, 1100}, {37, 1800, 600}, {300, 200, 64}, {1, 300, 700},
                               {500, 1, 300},   {3, 1000, 300},  {4, 37, 100},   {5, 77, 50},
                               {33, 40, 3100},  {20, 700, 1700}};
  uint32_t seed = 100;
  for (const auto& s : shapes)
    for (int t = 0; t < 4; ++t, ++seed)
      check_all_isas(make(t & 1, t & 2, s[0], s[1], s[2], t == 3 ? 5 : 0, t == 2 ? 2.0f : 1.0f,
                          t == 1 ? -0.5f : 0.0f, seed));
}

TEST(Gemm, AlphaZeroAndKZeroDoNotReadAB) {
  IsaGuard guard;
  for (const std::string& isa : isa_levels()) {
    ft::set_isa(isa);
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> A(12, nan), B(12, nan), C = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    ft::sgemm(false, false, 3, 3, 4, 0.0f, A.data(), 4, B.data(), 3, 2.0f, C.data(), 3);
    for (int i = 0; i < 9; ++i) EXPECT_EQ(C[i], 2.0f * float(i + 1)) << isa;
    C.assign(9, nan);
    ft::sgemm(false, true, 3, 3, 0, 1.0f, nullptr, 1, nullptr, 1, 0.0f, C.data(), 3);
    for (float c : C) EXPECT_EQ(c, 0.0f) << isa;
    ft::sgemm(false, false, 0, 3, 4, 1.0f, nullptr, 4, nullptr, 3, 0.0f, nullptr, 3);  // no-op
  }
}

TEST(Gemm, ThreadCountAndNestingDoNotChangeResults) {
  // Deterministic: same bits with 1 thread, with all threads, and from inside a parallel loop.
  Problem p = make(false, true, 257, 191, 700, 0, 1.0f, 0.0f, 7);
  p.C0.pop_back();  // the NaN guard element would make every comparison unequal
  std::vector<float> ref = p.C0, one = p.C0;
  ft::sgemm(p.ta, p.tb, p.M, p.N, p.K, 1.0f, p.A.data(), p.lda, p.B.data(), p.ldb, 0.0f,
            ref.data(), p.ldc);
  ft::set_num_threads(1);
  EXPECT_EQ(ft::num_threads(), 1);
  ft::sgemm(p.ta, p.tb, p.M, p.N, p.K, 1.0f, p.A.data(), p.lda, p.B.data(), p.ldb, 0.0f,
            one.data(), p.ldc);
  ft::set_num_threads(0);
  EXPECT_EQ(ref, one);
  std::vector<std::vector<float>> outs(6, p.C0);
  tbb::parallel_for(0, 6, [&](int i) {
    ft::sgemm(p.ta, p.tb, p.M, p.N, p.K, 1.0f, p.A.data(), p.lda, p.B.data(), p.ldb, 0.0f,
              outs[i].data(), p.ldc);
  });
  for (const auto& o : outs) EXPECT_EQ(ref, o);
}

TEST(Gemm, Bf16ThreadCountsDoNotChangeResults) {
  // gemm_bf16w, exact and with round_a, on every ISA path: the same bits with 1, 2, 3 and all
  // threads (the AMX tiles included where the CPU has them).
  IsaGuard guard;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      Problem p = make(ta, tb, 197, 173, 611, 3, 1.0f, 0.0f, 11 + 2 * ta + tb);
      for (const std::string& isa : isa_levels()) {
        ft::set_isa(isa);
        for (bool round : {false, true}) {
          std::vector<float> ref = p.C0;
          ft::gemm_bf16w(ta, tb, p.M, p.N, p.K, 1.0f, p.A.data(), p.lda, p.Bh.data(), p.ldb, 0.0f, ref.data(), p.ldc, round);
          for (int t : {1, 2, 3}) {
            ft::set_num_threads(t);
            std::vector<float> C = p.C0;
            ft::gemm_bf16w(ta, tb, p.M, p.N, p.K, 1.0f, p.A.data(), p.lda, p.Bh.data(), p.ldb, 0.0f, C.data(), p.ldc, round);
            ft::set_num_threads(0);
            // bitwise (C0's NaN padding and guard element must stay as they are too)
            const bool same = std::memcmp(C.data(), ref.data(), C.size() * sizeof(float)) == 0;
            EXPECT_TRUE(same) << "isa " << isa << " round_a " << round << " ta " << ta << " tb " << tb << " threads " << t;
          }
        }
      }
    }
}

TEST(Gemm, AmxReloadsItsTileConfigAfterOtherAmxCode) {
  // Other AMX code on the same thread (oneDNN, e.g. inside PyTorch or a oneDNN matmul) leaves another
  // tile configuration behind, or none (tilerelease): ft's kernel must load its own again rather than
  // compute with the other tile shapes or fault (SIGILL).
  if (!ft::cpu_features_hw().amx) GTEST_SKIP() << "no AMX on this CPU";
  IsaGuard guard;
  ft::set_isa("amx");
  ft::set_num_threads(1);  // the kernel runs on this thread, whose tile state is changed below
  const Problem p = make(false, true, 64, 64, 96, 0, 1.0f, 0.0f, 5);
  const Ref ref = reference(p, true);
  struct alignas(64) Cfg {
    uint8_t palette = 1, start_row = 0, reserved[14] = {};
    uint16_t colsb[16] = {16, 16, 16, 16, 16, 16, 16, 16};
    uint8_t rows[16] = {4, 4, 4, 4, 4, 4, 4, 4};
  } other;
  for (const char* before : {"ft's own", "another configuration", "released tiles"}) {
    if (std::string(before) == "another configuration") __asm__ volatile("ldtilecfg %0" : : "m"(other) : "memory");
    if (std::string(before) == "released tiles") __asm__ volatile("tilerelease" : : : "memory");
    std::vector<float> C = p.C0;
    ft::gemm_bf16w(p.ta, p.tb, p.M, p.N, p.K, 1.0f, p.A.data(), p.lda, p.Bh.data(), p.ldb, 0.0f, C.data(), p.ldc,
                   /*round_a=*/true);
    expect_close(p, ref, C, std::string("gemm_bf16w round_a on AMX after ") + before);
  }
  ft::set_num_threads(0);
}

TEST(Gemm, Batched) {
  IsaGuard guard;
  for (int64_t batch : {1, 3, 9}) {
    const int64_t M = 19, N = 23, K = 37, sa = M * K + 5, sb = N * K + 3, sc = M * N + 7;
    std::mt19937 rng{uint32_t(batch)};
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<float> A(size_t(batch * sa)), B(size_t(batch * sb)), C(size_t(batch * sc), 9.0f);
    for (float& x : A) x = u(rng);
    for (float& x : B) x = u(rng);
    ft::sgemm_batched(false, true, batch, M, N, K, 1.0f, A.data(), K, sa, B.data(), K, sb, 0.0f,
                      C.data(), N, sc);
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
          double s = 0, sabs = 0;
          for (int64_t k = 0; k < K; ++k) {
            const double t = double(A[b * sa + i * K + k]) * B[b * sb + j * K + k];
            s += t;
            sabs += std::fabs(t);
          }
          EXPECT_NEAR(C[b * sc + i * N + j], s, 1e-5 * std::sqrt(double(K)) * sabs)
              << "batch item " << b << " C[" << i << "][" << j << "]";
        }
    for (int64_t b = 0; b < batch; ++b)  // gaps between items untouched
      for (int64_t x = M * N; x < sc; ++x) EXPECT_EQ(C[b * sc + x], 9.0f);
  }
}

TEST(Gemm, BadArgumentsThrow) {
  std::vector<float> A(64), B(64), C(64);
  EXPECT_THROW(ft::sgemm(false, false, 4, 4, 4, 1, A.data(), 3, B.data(), 4, 0, C.data(), 4),
               ft::Error);  // lda < K
  EXPECT_THROW(ft::sgemm(false, true, 4, 4, 5, 1, A.data(), 5, B.data(), 4, 0, C.data(), 4),
               ft::Error);  // ldb < K with trans_b
  EXPECT_THROW(ft::sgemm(false, false, 4, 4, 4, 1, A.data(), 4, B.data(), 4, 0, C.data(), 3),
               ft::Error);  // ldc < N
  EXPECT_THROW(ft::sgemm(false, false, -1, 4, 4, 1, A.data(), 4, B.data(), 4, 0, C.data(), 4),
               ft::Error);
  EXPECT_THROW(ft::sgemm(false, false, 4, 4, 4, 1, nullptr, 4, B.data(), 4, 0, C.data(), 4),
               ft::Error);
  try {
    ft::sgemm(true, false, 4, 4, 4, 1, A.data(), 2, B.data(), 4, 0, C.data(), 4);
    ADD_FAILURE() << "no throw";
  } catch (const ft::Error& e) {
    EXPECT_NE(std::string(e.what()).find("lda=2"), std::string::npos) << e.what();
  }
}

}  // namespace
