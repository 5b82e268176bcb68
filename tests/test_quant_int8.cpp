// The opt-in int8 products (autograd/quant.h qgemv_int8 / qgemm_int8, `--compute int8`): against an
// independent scalar reference of the stated formula on every ISA path (incl. AVX-VNNI where the CPU
// has it), bits 4 and 8, groups 32/64/128, M = 1..4, odd N, K with partial chunks; outputs independent
// of neighbouring rows, of M and of the thread count; the GEMM (M = 5..130) row by row the GEMV's
// bits; other widths fall back to the exact kernel; and the mode is used only when asked (the
// default products are untouched).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <vector>

#include "autograd/cpu.h"
#include "autograd/gemm.h"
#include "autograd/ops.h"
#include "autograd/quant.h"
#include "isa_levels.h"
#include "models/generate.h"
#include "models/model.h"

namespace ft {
namespace {

// The ISA levels to run: the default ladder plus AVX2 + AVX-VNNI (qgemv_int8's 256-bit vpdpbusd path).
std::vector<std::string> int8_levels() {
  std::vector<std::string> v = testing::isa_levels();
  if (cpu_features_hw().avxvnni) v.push_back("avx2vnni");
  return v;
}

// Random codes packed LSB-first, random scales (both signs) and biases large against scale·q (as MLX's).
QuantParams random_params(int64_t rows, int64_t cols, int bits, int group, uint64_t seed, std::vector<uint32_t>& codes) {
  std::vector<float> u = Tensor::uniform({rows * cols + 2 * rows * (cols / group)}, seed, 0.f, 1.f).to_vector();
  codes.resize(size_t(rows * cols));
  for (size_t i = 0; i < codes.size(); ++i) codes[i] = uint32_t(u[i] * float(1 << bits)) & ((1u << bits) - 1u);
  QuantParams p;
  p.bits = bits;
  p.group_size = group;
  p.rows = rows;
  p.cols = cols;
  std::vector<uint32_t> words(size_t(rows * cols * bits / 32), 0u);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t bit = r * cols * bits + c * bits;  // rows are whole words: one stream per row
      words[size_t(bit / 32)] |= codes[size_t(r * cols + c)] << (bit % 32);
    }
  p.packed = Tensor::empty({rows, cols * bits / 32}, DType::I32);
  std::memcpy(p.packed.raw(), words.data(), words.size() * 4);
  std::vector<float> s(size_t(rows * (cols / group))), b(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    s[i] = (u[codes.size() + 2 * i] - 0.5f) * 0.04f;
    b[i] = (u[codes.size() + 2 * i + 1] - 0.5f) * 0.04f * float(1 << bits);
  }
  p.scales = Tensor::from_vector(s, {rows, cols / group});
  p.biases = Tensor::from_vector(b, {rows, cols / group});
  check_quant_params(p, "test");
  return p;
}

// The stated formula (quant.h): per block of 32, d = amax/127, id = 1/d (0 when d = 0), xq = x·id
// rounded to nearest even (std::nearbyint in the default rounding mode); the output in double with
// exact integer sums: Σ_b d_b·(s_g·Σ q·xq + b_g·Σ xq). bound: (K/32 + groups + 40)·2⁻²³·T.
void reference(const std::vector<float>& x, int64_t M, const QuantParams& p, const std::vector<uint32_t>& codes, std::vector<double>& y,
               std::vector<double>& bound) {
  const int64_t N = p.rows, K = p.cols, G = p.group_size, gpr = K / G;
  const float* sc = p.scales.data<float>();
  const float* bi = p.biases.data<float>();
  y.assign(size_t(M * N), 0.0);
  bound.assign(size_t(M * N), 0.0);
  for (int64_t i = 0; i < M; ++i) {
    std::vector<int> xq(static_cast<size_t>(K));
    std::vector<float> d(size_t(K / 32));
    for (int64_t b0 = 0; b0 < K; b0 += 32) {
      float amax = 0;
      for (int c = 0; c < 32; ++c) amax = std::max(amax, std::fabs(x[size_t(i * K + b0 + c)]));
      const float db = amax / 127.0f, id = db != 0.0f ? 1.0f / db : 0.0f;
      d[size_t(b0 / 32)] = db;
      for (int c = 0; c < 32; ++c) {
        const float v = std::nearbyint(x[size_t(i * K + b0 + c)] * id);
        EXPECT_LE(std::fabs(v), 127.f);
        xq[size_t(b0 + c)] = int(v);
      }
    }
    for (int64_t j = 0; j < N; ++j) {
      double acc = 0, mag = 0;
      for (int64_t g = 0; g < gpr; ++g) {
        const double s = sc[j * gpr + g], b = bi[j * gpr + g];
        for (int64_t b0 = g * G; b0 < (g + 1) * G; b0 += 32) {
          int64_t isum = 0, iabs = 0, xsum = 0, xabs = 0;
          for (int64_t c = b0; c < b0 + 32; ++c) {
            isum += int64_t(codes[size_t(j * K + c)]) * xq[size_t(c)];
            iabs += std::abs(int64_t(codes[size_t(j * K + c)]) * xq[size_t(c)]);
            xsum += xq[size_t(c)];
            xabs += std::abs(xq[size_t(c)]);
          }
          const double db = d[size_t(b0 / 32)];
          acc += db * (s * double(isum) + b * double(xsum));
          mag += db * (std::fabs(s) * double(iabs) + std::fabs(b) * double(xabs));
        }
      }
      y[size_t(i * N + j)] = acc;
      bound[size_t(i * N + j)] = double(K / 32 + gpr + 40) * std::ldexp(1.0, -23) * mag + 1e-30;
    }
  }
}

TEST(QuantInt8, GemvMatchesTheStatedFormulaOnEveryIsa) {
  testing::IsaGuard guard;
  const CpuFeatures& hw = cpu_features_hw();
  for (const std::string& isa : int8_levels()) {  // each level runs the kernel it should
    set_isa(isa);
    const std::string want = isa == "baseline"                      ? "portable"
                             : isa == "avx2" || isa == "avx512f"    ? "avx2"
                             : isa == "avx2vnni"                    ? "avxvnni"
                             : hw.avx512vnni                        ? "avx512vnni"
                             : hw.avxvnni                           ? "avxvnni"
                                                                    : "avx2";
    EXPECT_EQ(qgemv_int8_path(), want) << isa;
    EXPECT_EQ(qgemm_int8_path(), isa == "amx" && hw.amx_int8 ? std::string("amx") : want) << isa;
  }
  for (int bits : {4, 8})
    for (int group : {32, 64, 128})
      // one group; partial last chunks (96, 576 = 4.5 × 128); several groups
      for (int64_t in : {int64_t(group), int64_t(group == 128 ? 640 : 96 * (group / 32)), int64_t(576 / group * group)}) {
        const int64_t out = 37;  // odd: the 4-row steps end in single rows
        std::vector<uint32_t> codes;
        const QuantParams p = random_params(out, in, bits, group, uint64_t(bits * 1000 + group + in), codes);
        std::vector<float> x = Tensor::randn({4, in}, uint64_t(in + bits), 1.f).to_vector();
        for (int64_t c = 0; c < 40 && c < in; ++c) x[size_t(c)] = 0.0f;  // an all-zero block (d = 0) in row 0
        x[size_t(in + 3)] = 1e-30f;                                        // a tiny amax neighbour in row 1
        std::vector<double> ref, bound;
        reference(x, 4, p, codes, ref, bound);
        for (const std::string& isa : int8_levels()) {
          set_isa(isa);
          SCOPED_TRACE(isa + std::string(" path ") + qgemv_int8_path() + " bits " + std::to_string(bits) + " group " +
                       std::to_string(group) + " K " + std::to_string(in));
          for (int64_t M = 1; M <= 8; ++M) {  // M <= 4: qgemv_int8; then qgemm_int8 (on AMX-INT8 its own path)
            std::vector<float> y(size_t(M * out));
            const int64_t rows = M <= 4 ? M : M - 4;
            if (M <= 4) qgemv_int8(M, x.data(), in, p, 1.f, 0.f, y.data(), out);
            else qgemm_int8(rows, x.data(), in, p, 1.f, 0.f, y.data(), out);
            for (int64_t i = 0; i < rows; ++i)
              for (int64_t j = 0; j < out; ++j) {
                const size_t k = size_t(i * out + j);
                ASSERT_LE(std::fabs(double(y[k]) - ref[k]), bound[k]) << "M " << M << " row " << i << " col " << j << ": " << y[k]
                                                                        << " vs " << ref[k];
              }
          }
        }
      }
}

// The rounding of x, pinned element by element: row j of W has one nonzero code (at column j, scale
// 1, bias 0), so y_j = d·q·xq_j with a single rounding; a wrong xq (off by one) would be off by d·q.
// Block 0 has amax 127 (d = 1, id = 1): x = ±2.5, 3.5, 0.5 are ties, rounded to even (llama.cpp's
// roundf would give ±3, 4, 1).
TEST(QuantInt8, TheRoundingOfXIsPinned) {
  testing::IsaGuard guard;
  for (int bits : {4, 8}) {
    const int64_t K = 128, N = K;
    QuantParams p;
    p.bits = bits;
    p.group_size = 32;
    p.rows = N;
    p.cols = K;
    std::vector<uint32_t> words(size_t(N * K * bits / 32), 0u);
    std::vector<uint32_t> q(static_cast<size_t>(N));
    for (int64_t j = 0; j < N; ++j) {
      q[size_t(j)] = 1u + uint32_t(j * 7 % ((1 << bits) - 1));
      const int64_t bit = j * K * bits + j * bits;
      words[size_t(bit / 32)] |= q[size_t(j)] << (bit % 32);
    }
    p.packed = Tensor::empty({N, K * bits / 32}, DType::I32);
    std::memcpy(p.packed.raw(), words.data(), words.size() * 4);
    p.scales = Tensor::full({N, K / 32}, 1.f);
    p.biases = Tensor::zeros({N, K / 32});
    std::vector<float> x = Tensor::randn({1, K}, 31, 1.f).to_vector();
    const float ties[] = {127.f, 2.5f, -2.5f, 3.5f, 0.5f, -0.5f, 1.5f, -126.5f, 0.f};
    for (size_t c = 0; c < 32; ++c) x[c] = c < std::size(ties) ? ties[c] : float(int(c) - 16) * 3.25f;
    const int want_ties[] = {127, 2, -2, 4, 0, 0, 2, -126, 0};
    for (const std::string& isa : int8_levels()) {
      set_isa(isa);
      std::vector<float> y(static_cast<size_t>(N));
      qgemv_int8(1, x.data(), K, p, 1.f, 0.f, y.data(), N);
      for (int64_t j = 0; j < N; ++j) {
        const int64_t b0 = j / 32 * 32;
        float amax = 0;
        for (int64_t c = b0; c < b0 + 32; ++c) amax = std::max(amax, std::fabs(x[size_t(c)]));
        const float d = amax / 127.0f, id = 1.0f / d;
        const double xq = std::nearbyint(x[size_t(j)] * id);
        if (j < int64_t(std::size(ties))) {
          ASSERT_EQ(int(xq), want_ties[j]) << j;
        }
        const double want = double(d) * double(q[size_t(j)]) * xq;
        ASSERT_LE(std::fabs(double(y[size_t(j)]) - want), std::ldexp(std::fabs(want), -22)) << isa << " bits " << bits << " column " << j
                                                                                               << ": " << y[size_t(j)] << " vs " << want;
      }
    }
  }
}

// alpha/beta/strides, output bits independent of neighbouring rows (slices at any offset, M = 1..4) and
// of the thread count; other widths and groups of 16 run the exact kernel.
TEST(QuantInt8, NeighboursThreadsAlphaBetaAndFallback) {
  testing::IsaGuard guard;
  for (const std::string& isa : int8_levels()) {
    set_isa(isa);
    for (int bits : {4, 8})
      for (int group : {32, 64, 128}) {
        const int64_t out = 45, in = 384;
        std::vector<uint32_t> codes;
        const QuantParams p = random_params(out, in, bits, group, uint64_t(bits + group), codes);
        const Tensor w = make_quantized(p);
        const std::vector<float> x = Tensor::randn({4, in}, uint64_t(bits * group), 1.f).to_vector();
        std::vector<float> whole(size_t(4 * out));
        qgemv_int8(4, x.data(), in, p, 1.f, 0.f, whole.data(), out, false);
        for (int64_t M = 1; M <= 3; ++M) {
          std::vector<float> y(size_t(M * out));
          qgemv_int8(M, x.data() + (4 - M) * in, in, p, 1.f, 0.f, y.data(), out);
          for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < out; ++j) ASSERT_EQ(y[size_t(i * out + j)], whole[size_t((4 - M + i) * out + j)]) << isa << " M " << M;
        }
        for (int64_t r0 : {1, 2, 3, 6}) {
          const Tensor slice = quant_slice_rows(w, r0, out);  // keeps the slice's QuantParams alive
          const QuantParams& sp = quant_params(slice);
          std::vector<float> y(size_t(out - r0));
          qgemv_int8(1, x.data(), in, sp, 1.f, 0.f, y.data(), out - r0, false);
          for (int64_t j = r0; j < out; ++j) ASSERT_EQ(y[size_t(j - r0)], whole[size_t(j)]) << isa << " rows from " << r0;
        }
        for (int threads : {1, 3}) {
          set_num_threads(threads);
          std::vector<float> y(size_t(4 * out));
          qgemv_int8(4, x.data(), in, p, 1.f, 0.f, y.data(), out);
          set_num_threads(0);
          ASSERT_EQ(y, whole) << isa << " threads " << threads;
        }
        // alpha, beta, lda > K, ldc > N
        const int64_t lda = in + 5, ldc = out + 3;
        std::vector<float> xs(size_t(2 * lda), 7.f), c(size_t(2 * ldc), 2.f);
        for (int64_t i = 0; i < 2; ++i) std::copy(x.begin() + i * in, x.begin() + (i + 1) * in, xs.begin() + i * lda);
        qgemv_int8(2, xs.data(), lda, p, 0.5f, 3.f, c.data(), ldc);
        for (int64_t i = 0; i < 2; ++i)
          for (int64_t j = 0; j < ldc; ++j) {
            if (j < out) EXPECT_FLOAT_EQ(c[size_t(i * ldc + j)], 0.5f * whole[size_t(i * out + j)] + 6.f) << isa;
            else EXPECT_EQ(c[size_t(i * ldc + j)], 2.f) << isa << ": wrote past N";
          }
      }
    // 3-, 5-, 6-bit codes and groups of 16 (GGUF Q6_K): the exact kernel, bit for bit
    for (auto [bits, group] : {std::pair{3, 32}, std::pair{5, 64}, std::pair{6, 16}, std::pair{4, 16}}) {
      std::vector<uint32_t> codes;
      const QuantParams p = random_params(13, 128, bits, group, uint64_t(bits * group), codes);
      EXPECT_FALSE(qgemv_int8_supported(p));
      const std::vector<float> x = Tensor::randn({2, 128}, 9, 1.f).to_vector();
      std::vector<float> a(26), b(26);
      qgemv_int8(2, x.data(), 128, p, 1.f, 0.f, a.data(), 13);
      qgemv(2, x.data(), 128, p, 1.f, 0.f, b.data(), 13);
      EXPECT_EQ(a, b) << isa << " bits " << bits << " group " << group;
    }
  }
}

// The mode is per scope and only changes a quantised weight's forward products x·Wᵀ: linear() with
// <= 4 rows gives qgemv's exact bits by default and qgemv_int8's inside Int8ComputeGuard; with 9 rows
// the exact GEMM by default and, inside the guard, qgemm_int8's bits; a float weight and the
// backward-shaped product dY·W (no trans_b) are the same either way; the guard restores the mode.
TEST(QuantInt8, OnlyWhenAskedAndOnlyTheForwardProducts) {
  NoGradGuard ng;
  std::vector<uint32_t> codes;
  const QuantParams p = random_params(40, 128, 4, 32, 21, codes);
  const Tensor w = make_quantized(p), wf = dequantize(w);
  const Tensor x1 = Tensor::randn({1, 128}, 22), x9 = Tensor::randn({9, 128}, 23);
  std::vector<float> exact(40), int8(40), int8_rows(9 * 40);
  qgemv(1, x1.data<float>(), 128, p, 1.f, 0.f, exact.data(), 40);
  qgemv_int8(1, x1.data<float>(), 128, p, 1.f, 0.f, int8.data(), 40);
  qgemm_int8(9, x9.data<float>(), 128, p, 1.f, 0.f, int8_rows.data(), 40);  // row by row qgemv_int8's bits (GemmRowsAreTheGemvBitForBit)
  ASSERT_NE(exact, int8);  // the two paths differ on this input
  EXPECT_FALSE(int8_compute());
  const std::vector<float> d1 = linear(x1, w).to_vector(), d9 = linear(x9, w).to_vector(), f1 = linear(x1, wf).to_vector(),
                           f9 = linear(x9, wf).to_vector();
  ASSERT_NE(d9, int8_rows);
  EXPECT_EQ(d1, exact);
  // dY·W: [9, 40] × [40, 128], the shape of a backward product (trans_b off)
  const std::vector<float> dy = Tensor::randn({9, 40}, 24).to_vector();
  std::vector<float> dx_off(9 * 128), dx_on(9 * 128);
  gemm_qw(false, false, 9, 128, 40, 1.f, dy.data(), 40, p, 0.f, dx_off.data(), 128);
  {
    Int8ComputeGuard on;
    EXPECT_TRUE(int8_compute());
    EXPECT_EQ(linear(x1, w).to_vector(), int8);
    EXPECT_EQ(linear(x9, w).to_vector(), int8_rows);  // prefill-sized: the int8 GEMM
    EXPECT_EQ(linear(x1, wf).to_vector(), f1);        // a float weight: unchanged
    EXPECT_EQ(linear(x9, wf).to_vector(), f9);
    gemm_qw(false, false, 9, 128, 40, 1.f, dy.data(), 40, p, 0.f, dx_on.data(), 128);
    EXPECT_EQ(dx_on, dx_off);  // no trans_b: the exact GEMM
    // trans_a: op(A) = x9 stored transposed [128, 9]
    std::vector<float> xt(9 * 128), yt(9 * 40);
    for (int64_t i = 0; i < 9; ++i)
      for (int64_t k = 0; k < 128; ++k) xt[size_t(k * 9 + i)] = x9.data<float>()[i * 128 + k];
    gemm_qw(true, true, 9, 40, 128, 1.f, xt.data(), 9, p, 0.f, yt.data(), 40);
    EXPECT_EQ(yt, int8_rows);
    {
      Int8ComputeGuard off(false);
      EXPECT_EQ(linear(x1, w).to_vector(), exact);
      EXPECT_EQ(linear(x9, w).to_vector(), d9);
    }
    EXPECT_TRUE(int8_compute());
  }
  EXPECT_FALSE(int8_compute());
  EXPECT_EQ(linear(x1, w).to_vector(), exact);
  EXPECT_EQ(linear(x9, w).to_vector(), d9);
}

// The level whose qgemv_int8 gives qgemm_int8's bits at the level in effect: the same, except on
// AMX-INT8, whose tiles follow the portable kernel's order (quant.h).
std::string gemm_reference_level(const std::string& isa) { return std::string(qgemm_int8_path()) == "amx" ? "baseline" : isa; }

// qgemv_int8 row by row (C = alpha·x·Wᵀ + beta·C) at the level qgemm_int8 follows at `isa`.
void reference_rows(const std::string& isa, int64_t M, const float* x, int64_t lda, const QuantParams& p, float alpha, float beta,
                    float* c, int64_t ldc) {
  set_isa(gemm_reference_level(isa));
  for (int64_t i = 0; i < M; ++i) qgemv_int8(1, x + i * lda, lda, p, alpha, beta, c + i * ldc, ldc);
  set_isa(isa);
}

// The int8 GEMM (qgemm_int8, and qgemv_int8 with M > 4): every output bit for bit what qgemv_int8
// gives for its row of A alone (on AMX-INT8: the portable qgemv_int8), for M = 5..130 (whole and
// partial 4-row and 16-row tiles, several blocks of A), odd N (partial panels of W), K with partial
// chunks, bits 4 and 8, groups 32/64/128, fp32, fp16 and bf16 scales, on every ISA path, with 1, 2
// and 3 threads, alpha/beta and lda/ldc strides.
TEST(QuantInt8, GemmRowsAreTheGemvBitForBit) {
  testing::IsaGuard guard;
  for (int bits : {4, 8})
    for (int group : {32, 64, 128})
      for (int64_t in : {int64_t(group == 128 ? 640 : 96 * (group / 32)), int64_t(576 / group * group)}) {
        const int64_t out = 45, Mmax = 130, lda = in + 7, ldc = out + 5;
        std::vector<uint32_t> codes;
        QuantParams p = random_params(out, in, bits, group, uint64_t(bits * 77 + group + in), codes);
        // 16-bit scales for some shapes (the kernels that read them directly), fp32 for the others
        const DType sd = in % 3 == 0 ? DType::F32 : group == 64 ? DType::BF16 : DType::F16;
        if (sd != DType::F32) {
          p.scales = p.scales.to(sd);
          p.biases = p.biases.to(sd);
          p.scale_dtype = sd;
        }
        std::vector<float> x = Tensor::randn({Mmax, lda}, uint64_t(in * bits + group), 1.f).to_vector();
        for (int64_t c = 0; c < 40 && c < in; ++c) x[size_t(3 * lda + c)] = 0.0f;  // an all-zero block (d = 0) in row 3
        const std::vector<float> c0 = Tensor::randn({Mmax, ldc}, 5, 1.f).to_vector();
        for (const std::string& isa : int8_levels()) {
          set_isa(isa);
          SCOPED_TRACE(isa + std::string(" path ") + qgemm_int8_path() + " bits " + std::to_string(bits) + " group " +
                       std::to_string(group) + " K " + std::to_string(in) + " scales " + dtype_name(sd));
          // the reference: row by row, C = 0.75·x·Wᵀ − 0.5·C (beta != 0) and C = x·Wᵀ (beta = 0)
          std::vector<float> ref_b(c0), ref_0(size_t(Mmax * ldc), -1.f);
          reference_rows(isa, Mmax, x.data(), lda, p, 0.75f, -0.5f, ref_b.data(), ldc);
          reference_rows(isa, Mmax, x.data(), lda, p, 1.f, 0.f, ref_0.data(), ldc);
          for (int64_t M : {5, 6, 7, 8, 13, 16, 17, 63, 64, 130}) {
            std::vector<float> y(size_t(Mmax * ldc), -1.f);
            qgemm_int8(M, x.data(), lda, p, 1.f, 0.f, y.data(), ldc);
            for (int64_t k = 0; k < Mmax * ldc; ++k)
              ASSERT_EQ(y[size_t(k)], k < M * ldc ? ref_0[size_t(k)] : -1.f) << "M " << M << " row " << k / ldc << " col " << k % ldc;
            std::vector<float> yv(size_t(M * ldc), -1.f);
            qgemv_int8(M, x.data(), lda, p, 1.f, 0.f, yv.data(), ldc);
            ASSERT_TRUE(std::equal(yv.begin(), yv.end(), ref_0.begin())) << "qgemv_int8 M " << M;
          }
          for (int threads : {1, 2, 3})
            for (int64_t M : {9, 130}) {
              set_num_threads(threads);
              std::vector<float> y(c0);
              qgemm_int8(M, x.data(), lda, p, 0.75f, -0.5f, y.data(), ldc);
              set_num_threads(0);
              for (int64_t k = 0; k < Mmax * ldc; ++k)
                ASSERT_EQ(y[size_t(k)], k < M * ldc && k % ldc < out ? ref_b[size_t(k)] : c0[size_t(k)])
                    << "threads " << threads << " M " << M << " row " << k / ldc << " col " << k % ldc;
            }
          // a slice of rows of W (another alignment of the panels): the same outputs
          const Tensor w = make_quantized(p);
          const Tensor slice = quant_slice_rows(w, 3, out);
          std::vector<float> ys(size_t(17 * (out - 3)));
          qgemm_int8(17, x.data(), lda, quant_params(slice), 1.f, 0.f, ys.data(), out - 3);
          for (int64_t i = 0; i < 17; ++i)
            for (int64_t j = 3; j < out; ++j) ASSERT_EQ(ys[size_t(i * (out - 3) + j - 3)], ref_0[size_t(i * ldc + j)]) << "slice " << i << " " << j;
        }
      }
}

// A prefill-sized shape with several blocks of A and many panels (K = 2048, N = 300, M = 200):
// row by row the GEMV's bits on the native path (AMX-INT8: the portable GEMV's), threaded.
TEST(QuantInt8, GemmLargeShapeMatchesTheGemv) {
  for (int bits : {4, 8}) {
    const int64_t out = 300, in = 2048, M = 200;
    std::vector<uint32_t> codes;
    const QuantParams p = random_params(out, in, bits, bits == 4 ? 32 : 128, uint64_t(bits), codes);
    const std::vector<float> x = Tensor::randn({M, in}, 3, 1.f).to_vector();
    std::vector<float> y(size_t(M * out)), r(static_cast<size_t>(out));
    qgemm_int8(M, x.data(), in, p, 1.f, 0.f, y.data(), out);
    testing::IsaGuard guard;
    set_isa(gemm_reference_level(isa_name()));
    for (int64_t i = 0; i < M; ++i) {
      qgemv_int8(1, x.data() + i * in, in, p, 1.f, 0.f, r.data(), out);
      ASSERT_TRUE(std::equal(r.begin(), r.end(), y.begin() + i * out)) << "bits " << bits << " row " << i;
    }
  }
}

// generate(): the default options decode exactly as before (the same margins with the mode
// explicitly off), int8_activations changes the decode steps' numbers, and the mode does not leak out.
TEST(QuantInt8, GenerateUsesInt8OnlyWhenAsked) {
  const std::filesystem::path dir = std::filesystem::path(FT_TEST_DATA).parent_path() / "fixtures" / "models" / "llama";
  LoadOptions lo{"float32"};
  lo.quantize = 4;
  lo.group_size = 32;
  const Model m = Model::load(dir.string(), lo);
  GenerateOptions go;
  go.max_tokens = 8;
  const std::vector<int32_t> prompt = {1, 5, 9, 13, 17};
  GenerateStats s_default, s_off, s_int8;
  const auto t_default = generate(m, prompt, go, nullptr, &s_default);
  {
    Int8ComputeGuard off(false);
    generate(m, prompt, go, nullptr, &s_off);
  }
  go.int8_activations = true;
  generate(m, prompt, go, nullptr, &s_int8);
  EXPECT_FALSE(int8_compute());
  EXPECT_EQ(s_default.margins, s_off.margins);
  ASSERT_EQ(s_int8.margins.size(), s_default.margins.size());
  EXPECT_NE(s_int8.margins, s_default.margins);  // the decode steps (and the last prompt row's LM head GEMV) changed
  go.int8_activations = false;
  EXPECT_EQ(generate(m, prompt, go, nullptr), t_default);
}

}  // namespace
}  // namespace ft
