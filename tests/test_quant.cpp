// Quantised matrices (autograd/quant.h): MLX affine packing, quantisation and dequantisation against
// an independent reference written here from MLX's formula (a bit-list packer, element by
// element), hand-checked vectors, the GEMM / embedding on every ISA path against the same ops on the
// dequantised fp32 matrix (bit-identical), the decode GEMV against a double reference within its
// stated bound, and gradient checks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>
#include <tuple>

#include "autograd/cpu.h"
#include "autograd/gemm.h"
#include "autograd/gemv.h"
#include "autograd/ops.h"
#include "autograd/quant.h"
#include "gradcheck.h"
#include "isa_levels.h"

namespace ft {
namespace {

// ---- the independent reference: MLX affine_quantize / dequantize, one element at a time.
struct RefQuant {
  std::vector<uint32_t> codes;          // rows × cols
  std::vector<float> scales, biases;    // rows × groups (rounded to the storage dtype)
  std::vector<bool> clamped;            // rows × cols: the code was clamped to [0, 2^bits − 1]
};

float round_to(float x, DType dt) {
  if (dt == DType::BF16) return bf16_to_f32(f32_to_bf16(x));
  if (dt == DType::F16) return f16_to_f32(f32_to_f16(x));
  return x;
}

RefQuant ref_quantize(const std::vector<float>& w, int64_t rows, int64_t cols, int bits, int group, DType sdt) {
  RefQuant r;
  const float nb = float((1 << bits) - 1);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t g0 = 0; g0 < cols; g0 += group) {
      float lo = w[size_t(i * cols + g0)], hi = lo;
      for (int j = 1; j < group; ++j) {
        lo = std::min(lo, w[size_t(i * cols + g0 + j)]);
        hi = std::max(hi, w[size_t(i * cols + g0 + j)]);
      }
      // MLX: the end of larger magnitude dequantises exactly; scale negative when that is the max.
      const bool min_is_edge = std::fabs(lo) > std::fabs(hi);
      float s = (hi - lo) / nb;
      if (s < 1e-7f) s = 1e-7f;
      if (!min_is_edge) s = -s;
      const float edge = min_is_edge ? lo : hi;
      const float q0 = std::nearbyint(edge / s);
      float b = 0;
      if (q0 != 0) { s = edge / q0; b = edge; }
      for (int j = 0; j < group; ++j) {
        float q = std::nearbyint((w[size_t(i * cols + g0 + j)] - b) / s);
        r.clamped.push_back(q < 0 || q > nb);
        q = q < 0 ? 0 : q > nb ? nb : q;
        r.codes.push_back(uint32_t(q));
      }
      r.scales.push_back(round_to(s, sdt));
      r.biases.push_back(round_to(b, sdt));
    }
  return r;
}

// LSB-first continuous bit stream per row, built from a list of bits.
std::vector<uint32_t> ref_pack(const std::vector<uint32_t>& codes, int64_t rows, int64_t cols, int bits) {
  std::vector<uint32_t> out;
  for (int64_t i = 0; i < rows; ++i) {
    std::vector<int> stream;
    for (int64_t c = 0; c < cols; ++c)
      for (int b = 0; b < bits; ++b) stream.push_back(int((codes[size_t(i * cols + c)] >> b) & 1u));
    for (size_t w = 0; w < stream.size(); w += 32) {
      uint32_t word = 0;
      for (int b = 0; b < 32; ++b) word |= uint32_t(stream[w + size_t(b)]) << b;
      out.push_back(word);
    }
  }
  return out;
}

QuantParams params_from(const std::vector<uint32_t>& words, const std::vector<float>& s, const std::vector<float>& b, int64_t rows,
                        int64_t cols, int bits, int group) {
  QuantParams p;
  p.bits = bits;
  p.group_size = group;
  p.rows = rows;
  p.cols = cols;
  p.packed = Tensor::empty({rows, cols * bits / 32}, DType::I32);
  std::memcpy(p.packed.raw(), words.data(), words.size() * 4);
  p.scales = Tensor::from_vector(s, {rows, cols / group});
  p.biases = Tensor::from_vector(b, {rows, cols / group});
  return p;
}

TEST(Quant, HandCheckedFourBitGroup) {
  // w = 0.0, 0.1, ..., 3.1 (one group of 32): |max| > |min|, so scale = -(3.1/15) and bias = 3.1;
  // q = rint((3.1 − w)/0.20667) = 15, 15 (14.52), 14 (14.03), 14 (13.55), 13, 13, 12, 12 for w = 0 .. 0.7.
  std::vector<float> w(32);
  for (int i = 0; i < 32; ++i) w[size_t(i)] = 0.1f * float(i);
  Tensor q = quantize_affine(Tensor::from_vector(w, {1, 32}), 4, 32, DType::F32);
  const QuantParams& p = quant_params(q);
  EXPECT_EQ(static_cast<const uint32_t*>(p.packed.raw())[0], 0xCCDDEEFFu);
  EXPECT_FLOAT_EQ(p.biases.data<float>()[0], 3.1f);
  EXPECT_FLOAT_EQ(p.scales.data<float>()[0], 3.1f / -15.0f);
  std::vector<float> d = dequantize(q).to_vector();
  EXPECT_FLOAT_EQ(d[31], 3.1f);  // the edge dequantises exactly (q = 0)
  EXPECT_NEAR(d[0], 0.0f, 1e-6f);
  EXPECT_EQ(q.shape(), (Shape{1, 32}));
  EXPECT_EQ(q.dtype(), DType::Q);
}

TEST(Quant, PackingLayoutOnKnownBitPatterns) {
  // scale 1, bias 0: the dequantised values are the codes.
  auto codes = [](int bits, uint32_t w0, uint32_t w1, int64_t cols) {
    std::vector<uint32_t> words(size_t(cols * bits / 32), 0);
    words[0] = w0;
    if (words.size() > 1) words[1] = w1;
    Tensor t = make_quantized(params_from(words, {1.f}, {0.f}, 1, cols, bits, 32));
    return t.to_vector();
  };
  std::vector<float> v4 = codes(4, 0x76543210u, 0xFEDCBA98u, 32);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(v4[size_t(i)], float(i)) << i;
  std::vector<float> v8 = codes(8, 0x03020100u, 0xFF807F10u, 32);
  const float e8[8] = {0, 1, 2, 3, 0x10, 0x7F, 0x80, 0xFF};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(v8[size_t(i)], e8[i]) << i;
  // 3 bits: codes 0..7 at bits 0, 3, ..., 21 = 0xFAC688; the ninth code (0) starts at bit 24 and the
  // eleventh (2) straddles words 0 and 1 (bits 30..32).
  std::vector<float> v3 = codes(3, 0x88FAC688u, 0x1u, 32);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(v3[size_t(i)], float(i)) << i;
  EXPECT_EQ(v3[8], 0.f);   // bits 24-26 of 0x88 = 000
  EXPECT_EQ(v3[9], 1.f);   // bits 27-29: 0x88 >> 3 = 0b10001 -> low 3 bits 001
  EXPECT_EQ(v3[10], 6.f);  // bits 30, 31 (0b10 from 0x88 >> 6) and bit 0 of word 1 (1): 0b110
  // 2 bits: 0b11100100 -> 0, 1, 2, 3.
  std::vector<float> v2 = codes(2, 0xE4u, 0, 32);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(v2[size_t(i)], float(i));
  // 6 bits: 0x3F at bits 0-5, 1 at 6-11 -> 63, 1.
  std::vector<float> v6 = codes(6, 0x7Fu, 0, 32);
  EXPECT_EQ(v6[0], 63.f);
  EXPECT_EQ(v6[1], 1.f);
  // 5 bits: 0b00010_11111 -> 31, 2.
  std::vector<float> v5 = codes(5, 0x5Fu, 0, 32);
  EXPECT_EQ(v5[0], 31.f);
  EXPECT_EQ(v5[1], 2.f);
}

TEST(Quant, QuantizeMatchesReferenceAllBitsAndGroups) {
  const int64_t rows = 5, cols = 256;
  for (DType sdt : {DType::F32, DType::BF16, DType::F16})
    for (int bits : {2, 3, 4, 5, 6, 8})
      for (int group : {32, 64, 128}) {
        Tensor w = Tensor::randn({rows, cols}, uint64_t(bits * 1000 + group), 0.05f);
        if (sdt != DType::F32) w = w.to(sdt);  // the input in the model's dtype, as MLX quantises it
        std::vector<float> wv = w.to_vector();
        wv[3] = 0.f;  // a few special groups: constant, and a negative-edge one
        for (int j = 0; j < group; ++j) wv[size_t(cols + j)] = 0.25f;
        Tensor win = Tensor::from_vector(wv, {rows, cols});
        if (sdt != DType::F32) win = win.to(sdt);
        wv = win.to_vector();
        RefQuant r = ref_quantize(wv, rows, cols, bits, group, sdt);
        Tensor q = quantize_affine(win, bits, group, sdt);
        const QuantParams& p = quant_params(q);
        std::vector<uint32_t> words = ref_pack(r.codes, rows, cols, bits);
        const uint32_t* got = static_cast<const uint32_t*>(p.packed.raw());
        SCOPED_TRACE(::testing::Message() << "bits " << bits << " group " << group << " scales " << dtype_name(sdt));
        ASSERT_EQ(p.packed.numel(), int64_t(words.size()));
        for (size_t i = 0; i < words.size(); ++i) ASSERT_EQ(got[i], words[i]) << "word " << i;
        for (int64_t i = 0; i < rows; ++i)
          for (int64_t c = 0; c < cols; ++c) ASSERT_EQ(quant_code(p, i, c), r.codes[size_t(i * cols + c)]);
        std::vector<float> s = p.scales.to_vector(), b = p.biases.to_vector();
        ASSERT_EQ(s, r.scales);
        ASSERT_EQ(b, r.biases);
        // Dequantisation: scale·q + bias (rounded product, rounded sum) on every ISA path.
        testing::IsaGuard guard;
        for (const std::string& isa : testing::isa_levels()) {
          set_isa(isa);
          std::vector<float> d = dequantize(q).to_vector();
          for (int64_t i = 0; i < rows; ++i)
            for (int64_t c = 0; c < cols; ++c) {
              const size_t g = size_t(i * (cols / group) + c / group);
              const float prod = r.scales[g] * float(r.codes[size_t(i * cols + c)]);
              ASSERT_EQ(d[size_t(i * cols + c)], prod + r.biases[g]) << isa << " (" << i << ", " << c << ")";
            }
        }
        // Round trip within MLX's bound: a value whose code was not clamped is within half a step
        // (|scale|/2) of its dequantised value, up to the rounding of the stored scale/bias; a clamped
        // one (the far end of a group, when rint(edge/scale) shrank the step) within 1.5 steps.
        std::vector<float> d = dequantize(q).to_vector();
        for (int64_t i = 0; i < rows; ++i)
          for (int64_t c = 0; c < cols; ++c) {
            const size_t g = size_t(i * (cols / group) + c / group);
            const float step = std::fabs(r.scales[g]);
            const float tol = 0.5f * step * (1 + 1e-4f) + (sdt == DType::F32 ? 1e-6f : 4e-3f * (std::fabs(r.biases[g]) + step * float((1 << bits) - 1)));
            const float err = std::fabs(d[size_t(i * cols + c)] - wv[size_t(i * cols + c)]);
            if (r.clamped[size_t(i * cols + c)]) ASSERT_LE(err, 3 * tol) << i << ", " << c;
            else ASSERT_LE(err, tol) << i << ", " << c;
          }
      }
}

TEST(Quant, BadParamsAreClearErrors) {
  std::vector<uint32_t> words(8, 0);
  QuantParams p = params_from(words, {1.f, 1.f}, {0.f, 0.f}, 1, 64, 4, 32);
  EXPECT_NO_THROW(make_quantized(p, "m.q_proj"));
  QuantParams bad = p;
  bad.bits = 7;
  try {
    make_quantized(bad, "model.layers.0.q_proj");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.0.q_proj"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("7-bit"), std::string::npos) << e.what();
  }
  bad = p;
  bad.scales = Tensor::from_vector({1.f}, {1, 1});
  EXPECT_THROW(make_quantized(bad, "x"), Error);
  bad = p;
  bad.packed = Tensor::zeros({1, 7}, DType::I32);
  EXPECT_THROW(make_quantized(bad, "x"), Error);
  bad = p;
  bad.group_size = 48;
  EXPECT_THROW(make_quantized(bad, "x"), Error);
  EXPECT_THROW(quantize_affine(Tensor::zeros({2, 48}), 4, 32, DType::F32), Error);  // 48 % 32 != 0
  Tensor q = make_quantized(p);
  EXPECT_THROW(q.set_requires_grad(true), Error);
}

// The GEMM (M > kGemvMaxRows, and every dX = dY·W) dequantises while packing: bit for bit sgemm on
// the dequantised matrix. The decode GEMV (M <= kGemvMaxRows with trans_b) is regrouped by the
// affine identity and is checked against a double reference below (Quant.GemvMatchesDoubleReference).
TEST(Quant, GemmEqualsTheDequantisedMatrixOnEveryIsa) {
  testing::IsaGuard guard;
  for (int bits : {3, 4, 8})
    for (int group : {32, 128}) {
      const int64_t out = 70, in = 256;
      Tensor q = quantize_affine(Tensor::randn({out, in}, uint64_t(bits + group), 0.1f), bits, group, DType::F32);
      const QuantParams& p = quant_params(q);
      Tensor wf = dequantize(q);
      for (const std::string& isa : testing::isa_levels()) {
        set_isa(isa);
        for (int64_t M : {1, 3, 4, 9, 40}) {
          // forward y = x·Wᵀ (the GEMM path only)
          Tensor x = Tensor::randn({M, in}, uint64_t(M), 1.f);
          std::vector<float> y1(size_t(M * out)), y2(size_t(M * out));
          if (M > kGemvMaxRows) {
            gemm_qw(false, true, M, out, in, 1.f, x.data<float>(), in, p, 0.f, y1.data(), out);
            sgemm(false, true, M, out, in, 1.f, x.data<float>(), in, wf.data<float>(), in, 0.f, y2.data(), out);
            ASSERT_EQ(y1, y2) << isa << " bits " << bits << " group " << group << " M " << M;
          }
          // backward dX = dY·W
          Tensor g = Tensor::randn({M, out}, uint64_t(M + 100), 1.f);
          std::vector<float> d1(size_t(M * in)), d2(size_t(M * in));
          gemm_qw(false, false, M, in, out, 1.f, g.data<float>(), out, p, 0.f, d1.data(), in);
          sgemm(false, false, M, in, out, 1.f, g.data<float>(), out, wf.data<float>(), in, 0.f, d2.data(), in);
          ASSERT_EQ(d1, d2) << isa << " backward, bits " << bits << " M " << M;
        }
      }
    }
}

// bf16 autocast (`--dtype bfloat16` training on a quantised base): the GEMM rounds op(A) and the
// dequantised weight to bf16 — bit for bit gemm_bf16w(round_a) on the bf16 bits of dequantize(W), on
// every ISA path (bf16 pairs with AVX512-BF16 / AMX, rounded fp32 panels otherwise), odd depths
// (a last half pair), several column and depth blocks, both directions.
TEST(Quant, AutocastGemmEqualsTheBf16RoundedDequantisedMatrix) {
  testing::IsaGuard guard;
  for (int bits : {4, 8})
    for (auto [out, in, group] : {std::tuple<int64_t, int64_t, int>{70, 96, 32}, {33, 1600, 64}, {2100, 64, 64}, {40, 6208, 64}}) {
      Tensor q = quantize_affine(Tensor::randn({out, in}, uint64_t(bits * 7 + in), 0.1f), bits, group, DType::F32);
      const QuantParams& p = quant_params(q);
      std::vector<float> wf = dequantize(q).to_vector();
      std::vector<uint16_t> wb(wf.size());
      for (size_t i = 0; i < wf.size(); ++i) wb[i] = f32_to_bf16(wf[i]);
      for (const std::string& isa : testing::isa_levels()) {
        set_isa(isa);
        for (int64_t M : {9, 37}) {
          Tensor x = Tensor::randn({M, in}, uint64_t(M + in), 1.f);
          std::vector<float> y1(size_t(M * out)), y2(size_t(M * out));
          gemm_qw(false, true, M, out, in, 1.f, x.data<float>(), in, p, 0.f, y1.data(), out, true);
          gemm_bf16w(false, true, M, out, in, 1.f, x.data<float>(), in, wb.data(), in, 0.f, y2.data(), out, true);
          ASSERT_EQ(y1, y2) << isa << " forward, bits " << bits << " " << out << "x" << in << " M " << M;
          Tensor g = Tensor::randn({M, out}, uint64_t(M + out), 1.f);
          std::vector<float> d1(size_t(M * in)), d2(size_t(M * in));
          gemm_qw(false, false, M, in, out, 1.f, g.data<float>(), out, p, 0.f, d1.data(), in, true);
          gemm_bf16w(false, false, M, in, out, 1.f, g.data<float>(), out, wb.data(), in, 0.f, d2.data(), in, true);
          ASSERT_EQ(d1, d2) << isa << " backward, bits " << bits << " " << out << "x" << in << " M " << M;
          // and it is not the exact product (the rounding happened)
          std::vector<float> e(size_t(M * out));
          gemm_qw(false, true, M, out, in, 1.f, x.data<float>(), in, p, 0.f, e.data(), out);
          ASSERT_NE(y1, e) << isa;
        }
      }
    }
}

// Random codes packed by the independent bit-list packer, random scales/biases (both signs, biases
// large against scale·q so that the two terms cancel, as MLX's do).
QuantParams random_params(int64_t rows, int64_t cols, int bits, int group, uint64_t seed, std::vector<uint32_t>& codes) {
  std::vector<float> u = Tensor::uniform({rows * cols + 2 * rows * (cols / group)}, seed, 0.f, 1.f).to_vector();
  codes.resize(size_t(rows * cols));
  for (size_t i = 0; i < codes.size(); ++i) codes[i] = uint32_t(u[i] * float(1 << bits)) & ((1u << bits) - 1u);
  std::vector<float> s(size_t(rows * (cols / group))), b(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    s[i] = (u[codes.size() + 2 * i] - 0.5f) * 0.04f;
    b[i] = (u[codes.size() + 2 * i + 1] - 0.5f) * 0.04f * float(1 << bits);
  }
  return params_from(ref_pack(codes, rows, cols, bits), s, b, rows, cols, bits, group);
}

// qgemv vs the dot with the dequantised weights s·q + b evaluated in double, on every bit width and
// group size (16: GGUF Q6_K), K at its minimum (one group) and with partial unpack blocks, an odd number of rows,
// every ISA path. Stated bound (autograd/quant.h): |y − y_ref| <= K·2⁻²³·Σ_c |x_c|·(|s|·q_c + |b|) + 1e-30.
TEST(Quant, GemvMatchesDoubleReference) {
  testing::IsaGuard guard;
  for (int bits : {2, 3, 4, 5, 6, 8})
    for (int group : {16, 32, 64, 128})
      for (int64_t in : {int64_t(std::max(group, 32)), int64_t(group == 16 ? 96 : 5 * group)}) {
        const int64_t out = 37, M = 3;
        std::vector<uint32_t> codes;
        const QuantParams p = random_params(out, in, bits, group, uint64_t(bits * 1000 + group + in), codes);
        const std::vector<float> x = Tensor::randn({M, in}, uint64_t(in + bits), 1.f).to_vector();
        const float* sc = p.scales.data<float>();
        const float* bi = p.biases.data<float>();
        std::vector<double> ref(size_t(M * out)), bound(size_t(M * out));
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = 0; j < out; ++j) {
            double y = 0, mag = 0;
            for (int64_t c = 0; c < in; ++c) {
              const double s = sc[j * (in / group) + c / group], b = bi[j * (in / group) + c / group];
              const double q = codes[size_t(j * in + c)], xv = x[size_t(i * in + c)];
              y += xv * (s * q + b);
              mag += std::fabs(xv) * (std::fabs(s) * q + std::fabs(b));
            }
            ref[size_t(i * out + j)] = y;
            bound[size_t(i * out + j)] = double(in) * std::ldexp(1.0, -23) * mag + 1e-30;
          }
        for (const std::string& isa : testing::isa_levels()) {
          set_isa(isa);
          std::vector<float> y(size_t(M * out)), y1(static_cast<size_t>(out));
          qgemv(M, x.data(), in, p, 1.f, 0.f, y.data(), out);
          for (int64_t i = 0; i < M; ++i) {
            // a row of A alone gives the bits it gives beside the others
            qgemv(1, x.data() + i * in, in, p, 1.f, 0.f, y1.data(), out);
            for (int64_t j = 0; j < out; ++j) {
              const size_t k = size_t(i * out + j);
              ASSERT_LE(std::fabs(double(y[k]) - ref[k]), bound[k])
                  << isa << " bits " << bits << " group " << group << " K " << in << " row " << i << " col " << j << ": " << y[k]
                  << " vs " << ref[k];
              ASSERT_EQ(y1[size_t(j)], y[k]) << isa << " bits " << bits << " group " << group << " M=1 vs M=3";
            }
          }
        }
      }
}

// The kernels take several rows of W at a time (and, for one row of A, several rows of W share
// the loads of x): an output's bits must not depend on its neighbours. Every row of W gives the
// same value computed inside the whole matrix, inside a slice that starts at any offset (the row
// then sits at another place of the kernel's row groups), and with M = 1..4 rows of A, on every
// bit width, group size and ISA path, single-threaded and split over tasks.
TEST(Quant, GemvOutputsIndependentOfNeighbourRows) {
  testing::IsaGuard guard;
  for (int bits : {2, 3, 4, 5, 6, 8})
    for (int group : {16, 32, 64, 128}) {
      const int64_t out = 23, in = group == 16 ? 160 : 3 * std::max<int64_t>(group, 64);
      std::vector<uint32_t> codes;
      const QuantParams p = random_params(out, in, bits, group, uint64_t(bits * 7 + group), codes);
      Tensor w = make_quantized(p);
      const std::vector<float> x = Tensor::randn({4, in}, uint64_t(bits + group), 1.f).to_vector();
      for (const std::string& isa : testing::isa_levels()) {
        set_isa(isa);
        std::vector<float> whole(size_t(4 * out));
        qgemv(4, x.data(), in, p, 1.f, 0.f, whole.data(), out, false);
        for (int64_t M = 1; M <= 3; ++M) {
          std::vector<float> y(size_t(M * out));
          qgemv(M, x.data(), in, p, 1.f, 0.f, y.data(), out);
          for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < out; ++j)
              ASSERT_EQ(y[size_t(i * out + j)], whole[size_t(i * out + j)]) << isa << " bits " << bits << " group " << group << " M " << M;
        }
        for (int64_t r0 : {1, 2, 3, 5})
          for (int64_t M : {1, 2}) {
            const Tensor slice = quant_slice_rows(w, r0, out);
            const QuantParams& sp = quant_params(slice);
            std::vector<float> y(size_t(M * (out - r0)));
            qgemv(M, x.data(), in, sp, 1.f, 0.f, y.data(), out - r0, false);
            for (int64_t i = 0; i < M; ++i)
              for (int64_t j = r0; j < out; ++j)
                ASSERT_EQ(y[size_t(i * (out - r0) + j - r0)], whole[size_t(i * out + j)])
                    << isa << " bits " << bits << " group " << group << " rows from " << r0 << " M " << M;
          }
      }
    }
}

// alpha, beta, lda > K, M > kGemvMaxRows through qgemv directly; the linear op's decode path.
TEST(Quant, GemvAlphaBetaStridesAndTheLinearOp) {
  testing::IsaGuard guard;
  std::vector<uint32_t> codes;
  const int64_t out = 19, in = 96, M = 6, lda = 101, ldc = 23;
  const QuantParams p = random_params(out, in, 4, 32, 77, codes);
  const std::vector<float> x = Tensor::randn({M, lda}, 78).to_vector();
  for (const std::string& isa : testing::isa_levels()) {
    set_isa(isa);
    std::vector<float> plain(size_t(M * ldc), 0.f), c(size_t(M * ldc), 2.f);
    qgemv(M, x.data(), lda, p, 1.f, 0.f, plain.data(), ldc);
    qgemv(M, x.data(), lda, p, 0.5f, 3.f, c.data(), ldc);
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < ldc; ++j) {
        const size_t k = size_t(i * ldc + j);
        if (j < out) EXPECT_FLOAT_EQ(c[k], 0.5f * plain[k] + 6.f) << isa;
        else EXPECT_EQ(c[k], 2.f) << isa << ": wrote past N";
      }
  }
  // linear() with one row goes through qgemv: within the bound of the dequantised matrix's product.
  Tensor q = make_quantized(p);
  Tensor xr = Tensor::randn({1, in}, 79);
  NoGradGuard ng;
  const std::vector<float> a = linear(xr, q).to_vector(), b = linear(xr, dequantize(q)).to_vector();
  for (size_t j = 0; j < a.size(); ++j) EXPECT_NEAR(a[j], b[j], 1e-4f * (1.f + std::fabs(b[j])));
}

TEST(Quant, ResultsIndependentOfThreadCount) {
  testing::IsaGuard guard;
  for (const std::string& isa : testing::isa_levels()) {
    set_isa(isa);
    for (int bits : {3, 4, 8}) {
      Tensor q = quantize_affine(Tensor::randn({300, 512}, uint64_t(3 + bits), 0.1f), bits, 64, DType::F32);
      Tensor x = Tensor::randn({64, 512}, 4), x1 = Tensor::randn({1, 512}, 5), x3 = Tensor::randn({3, 512}, 6);
      auto run = [&] {
        NoGradGuard ng;
        std::vector<float> a = linear(x, q).to_vector();
        for (const Tensor* t : {&x1, &x3}) {
          std::vector<float> b = linear(*t, q).to_vector();
          a.insert(a.end(), b.begin(), b.end());
        }
        return a;
      };
      std::vector<float> all = run();
      set_num_threads(1);
      std::vector<float> one = run();
      set_num_threads(3);
      std::vector<float> three = run();
      set_num_threads(0);
      EXPECT_EQ(all, one) << isa << " bits " << bits;
      EXPECT_EQ(all, three) << isa << " bits " << bits;
    }
  }
}

// Scales and biases held in 16 bits (fp16 as GGUF's Q4_0/Q8_0 carry them, bf16 as an MLX bf16
// checkpoint does) are widened exactly by the kernels a block of rows at a time: every path gives
// the bits of the same matrix with its scales in fp32 — dequantisation (whole and unaligned
// segments), the GEMM (prefill/training), the decode GEMV (1..5 rows, odd row counts, enough rows
// for several widened blocks, a slice), the opt-in int8 GEMV, on every ISA path and thread count.
// Every kernel on every ISA path gives the bits of p2 that it gives of p1 (the same [out, in] matrix
// held two ways): dequantisation, dequantize_block, the GEMM forward and dX, the decode GEMV, the int8
// GEMV and GEMM (4/8 bits, groups >= 32), and a row slice's GEMV.
void expect_kernels_agree(const QuantParams& p2, const QuantParams& p1, int64_t out, int64_t in, int bits, int group) {
  const Tensor q1 = make_quantized(p1), q2 = make_quantized(p2);
  for (const std::string& isa : testing::isa_levels()) {
    set_isa(isa);
    ASSERT_EQ(dequantize(q2).to_vector(), dequantize(q1).to_vector()) << isa;
    std::vector<float> a(size_t(out * 37)), b(a.size());
    dequantize_block(p2, 3, out, 5, 42, a.data(), 37);
    dequantize_block(p1, 3, out, 5, 42, b.data(), 37);
    ASSERT_EQ(a, b) << isa;
    for (int64_t M : {1, 2, 5, 9}) {
      const Tensor x = Tensor::randn({M, in}, uint64_t(M + bits), 1.f);
      std::vector<float> y2(size_t(M * out)), y1(y2.size());
      gemm_qw(false, true, M, out, in, 1.f, x.data<float>(), in, p2, 0.f, y2.data(), out);
      gemm_qw(false, true, M, out, in, 1.f, x.data<float>(), in, p1, 0.f, y1.data(), out);
      ASSERT_EQ(y2, y1) << isa << " M " << M;
      if ((bits == 4 || bits == 8) && group >= 32) {
        qgemv_int8(M, x.data<float>(), in, p2, 1.f, 0.f, y2.data(), out);
        qgemv_int8(M, x.data<float>(), in, p1, 1.f, 0.f, y1.data(), out);
        ASSERT_EQ(y2, y1) << isa << " int8 M " << M;
      }
    }
    // dX = dY·W (the backward's packer) and a row slice (the LM head's chunks)
    const Tensor dy = Tensor::randn({7, out}, 3, 1.f);
    std::vector<float> d2(size_t(7 * in)), d1(d2.size());
    gemm_qw(false, false, 7, in, out, 1.f, dy.data<float>(), out, p2, 0.f, d2.data(), in);
    gemm_qw(false, false, 7, in, out, 1.f, dy.data<float>(), out, p1, 0.f, d1.data(), in);
    ASSERT_EQ(d2, d1) << isa;
    const Tensor s2 = quant_slice_rows(q2, 37, 250), s1 = quant_slice_rows(q1, 37, 250);
    const Tensor x = Tensor::randn({1, in}, 8, 1.f);
    std::vector<float> z2(213), z1(213);
    qgemv(1, x.data<float>(), in, quant_params(s2), 1.f, 0.f, z2.data(), 213);
    qgemv(1, x.data<float>(), in, quant_params(s1), 1.f, 0.f, z1.data(), 213);
    ASSERT_EQ(z2, z1) << isa;
  }
}

TEST(Quant, SixteenBitScalesGiveTheBitsOfFp32Scales) {
  testing::IsaGuard guard;
  for (DType st : {DType::F16, DType::BF16})
    for (int bits : {3, 4, 8})
      for (int group : {16, 32, 64})
        for (int64_t in : {int64_t(group == 16 ? 96 : 4 * group), int64_t(9 * std::max(group, 32))}) {  // 9 (or 18) groups: partial 8-wide loads
        const int64_t out = 301;
        std::vector<uint32_t> codes;
        QuantParams p32 = random_params(out, in, bits, group, uint64_t(bits * 31 + group + in), codes);
        // scales/biases representable in st, so that both params hold the same values
        p32.scales = p32.scales.to(st).to(DType::F32).contiguous();
        p32.biases = p32.biases.to(st).to(DType::F32).contiguous();
        QuantParams p16 = p32;
        p16.scales = p32.scales.to(st).contiguous();
        p16.biases = p32.biases.to(st).contiguous();
        check_quant_params(p16, "16-bit");
        EXPECT_EQ(p16.nbytes() + 2 * 2 * size_t(out * (in / group)), p32.nbytes());
        SCOPED_TRACE(::testing::Message() << dtype_name(st) << " bits " << bits << " group " << group << " K " << in);
        expect_kernels_agree(p16, p32, out, in, bits, group);
      }
}

// Two-level scales (QuantParams::two_level, GGUF's K-quants): every kernel computes with the products
// super · code, i.e. gives the bits of the one-level fp32 matrix holding those products (dequantisation,
// dequantize_block, the GEMM forward and dX, the decode GEMV, the int8 GEMV and GEMM, row slices), on
// every ISA path; the shapes are checked, and the bytes are the codes' and the multipliers'.
TEST(Quant, TwoLevelScalesGiveTheBitsOfTheirProducts) {
  testing::IsaGuard guard;
  for (int bits : {4, 5, 6, 8})
    for (int group : {16, 32, 64})
      for (int64_t in : {int64_t(256), int64_t(768)}) {
        const int64_t out = 301, gpr = in / group, sg = 256 / group;
        std::vector<uint32_t> codes;
        QuantParams p1 = random_params(out, in, bits, group, uint64_t(bits * 131 + group + in), codes);
        QuantParams p2 = p1;
        p2.scales = p2.biases = Tensor();
        p2.super_group = int(sg);
        p2.scale_codes = Tensor::zeros({out, gpr / 4}, DType::I32);
        p2.bias_codes = Tensor::zeros({out, gpr / 4}, DType::I32);
        p2.super_scales = Tensor::randn({out, gpr / sg}, uint64_t(in + bits), 1e-3f);
        p2.super_biases = Tensor::randn({out, gpr / sg}, uint64_t(in + bits + 1), 1e-2f);
        const std::vector<float> u = Tensor::uniform({2 * out * gpr}, uint64_t(group + bits), -128.f, 128.f).to_vector();
        int8_t* sc = static_cast<int8_t*>(p2.scale_codes.raw());
        int8_t* bc = static_cast<int8_t*>(p2.bias_codes.raw());
        for (int64_t i = 0; i < out * gpr; ++i) {
          sc[i] = int8_t(std::clamp(std::floor(u[size_t(2 * i)]), -128.f, 127.f));
          bc[i] = int8_t(std::clamp(std::floor(u[size_t(2 * i + 1)]), -128.f, 127.f));
        }
        check_quant_params(p2, "two-level");
        EXPECT_EQ(p2.nbytes(), size_t(out * in * bits / 8 + 2 * out * gpr + 8 * out * (gpr / sg)));
        p1.scales = quant_group_params(p2, false);
        p1.biases = quant_group_params(p2, true);
        {  // the products, element by element
          const float* s1 = p1.scales.data<float>();
          const float* b1 = p1.biases.data<float>();
          const float* ss = p2.super_scales.data<float>();
          const float* sb = p2.super_biases.data<float>();
          for (int64_t r = 0; r < out; ++r)
            for (int64_t g = 0; g < gpr; ++g) {
              ASSERT_EQ(s1[r * gpr + g], ss[r * (gpr / sg) + g / sg] * float(sc[r * gpr + g]));
              ASSERT_EQ(b1[r * gpr + g], sb[r * (gpr / sg) + g / sg] * float(bc[r * gpr + g]));
            }
          const Tensor rows = quant_group_params(p2, true, 7, 9);
          ASSERT_EQ(rows.shape(), (Shape{2, gpr}));
          EXPECT_EQ(rows.to_vector()[size_t(gpr + 1)], b1[8 * gpr + 1]);
        }
        SCOPED_TRACE(::testing::Message() << "bits " << bits << " group " << group << " K " << in);
        EXPECT_EQ(quant_params(quant_slice_rows(make_quantized(p2), 37, 250)).nbytes(), size_t(213 * (in * bits / 8 + 2 * gpr + 8 * (gpr / sg))));
        expect_kernels_agree(p2, p1, out, in, bits, group);
        // shapes that do not fit are clear errors
        QuantParams bad = p2;
        bad.super_scales = Tensor::zeros({out, gpr / sg + 1});
        EXPECT_THROW(check_quant_params(bad, "two-level"), Error);
        bad = p2;
        bad.super_group = 3;
        EXPECT_THROW(check_quant_params(bad, "two-level"), Error);
        bad = p2;
        bad.scales = p1.scales;
        EXPECT_THROW(check_quant_params(bad, "two-level"), Error);
      }
}

// Biases derived from the scales (QuantParams::bias_from_scale, GGUF's Q4_0/Q5_0/Q8_0): every kernel on
// every ISA path gives the bits it gives with the biases −2^(bits−1)·scale stored, for fp32, fp16 and
// bf16 scales; the bytes are the codes' and the scales'; a wrong factor or biases stored as well are errors.
TEST(Quant, BiasesFromScalesGiveTheBitsOfStoredBiases) {
  testing::IsaGuard guard;
  for (DType st : {DType::F32, DType::F16, DType::BF16})
    for (int bits : {4, 5, 8})
      for (int group : {32, 64})
        for (int64_t in : {int64_t(256), int64_t(9 * group)}) {
          const int64_t out = 301, gpr = in / group;
          const int k = -(1 << (bits - 1));
          std::vector<uint32_t> codes;
          QuantParams p1 = random_params(out, in, bits, group, uint64_t(bits * 17 + group + in), codes);
          p1.scales = p1.scales.to(st).contiguous();
          p1.scale_dtype = st;
          std::vector<float> b = p1.scales.to(DType::F32).to_vector();
          for (float& x : b) x *= float(k);
          p1.biases = Tensor::from_vector(b, {out, gpr}).to(st).contiguous();  // exact: k is a power of two
          ASSERT_EQ(p1.biases.to(DType::F32).to_vector(), b);
          QuantParams p2 = p1;
          p2.biases = Tensor();
          p2.bias_from_scale = k;
          check_quant_params(p2, "derived");
          EXPECT_EQ(p2.nbytes(), size_t(out * in * bits / 8) + dtype_size(st) * size_t(out * gpr));
          EXPECT_EQ(quant_group_params(p2, true).to_vector(), b);
          EXPECT_EQ(quant_group_params(p2, true, 7, 9).to_vector(), std::vector<float>(b.begin() + 7 * gpr, b.begin() + 9 * gpr));
          SCOPED_TRACE(::testing::Message() << dtype_name(st) << " bits " << bits << " group " << group << " K " << in);
          expect_kernels_agree(p2, p1, out, in, bits, group);
          QuantParams bad = p2;
          bad.bias_from_scale = k / 2;
          EXPECT_THROW(check_quant_params(bad, "derived"), Error);
          bad = p2;
          bad.biases = p1.biases;
          EXPECT_THROW(check_quant_params(bad, "derived"), Error);
        }
  // compact_quant_scales keeps the derivation (only the scales are narrowed)
  std::vector<uint32_t> codes;
  QuantParams p = random_params(4, 64, 4, 32, 5, codes);
  p.scales = p.scales.to(DType::F16).to(DType::F32).contiguous();
  p.biases = Tensor();
  p.bias_from_scale = -8;
  compact_quant_scales(p);
  EXPECT_EQ(p.scales.dtype(), DType::F16);
  EXPECT_FALSE(p.biases.defined());
}

// compact_quant_scales: fp16 where every scale and bias is an fp16 value, else bf16 where they all
// are bf16 values, else fp32 unchanged; a mix of dtypes is refused.
TEST(Quant, CompactScalesOnlyWhereExact) {
  auto params = [](std::vector<float> s) {
    QuantParams p;
    p.bits = 4;
    p.group_size = 32;
    p.rows = 1;
    p.cols = 32 * int64_t(s.size());
    p.packed = Tensor::zeros({1, p.words_per_row()}, DType::I32);
    p.scales = Tensor::from_vector(s, {1, int64_t(s.size())});
    std::vector<float> b(s.size());
    for (size_t i = 0; i < s.size(); ++i) b[i] = -8.f * s[i];
    p.biases = Tensor::from_vector(b, {1, int64_t(s.size())});
    return p;
  };
  QuantParams a = params({0.5f, -0.0f, 0.0009765625f, 65504.f / 8});  // fp16 values, incl. -0 and -8·d in range
  compact_quant_scales(a);
  EXPECT_EQ(a.scales.dtype(), DType::F16);
  EXPECT_EQ(a.biases.dtype(), DType::F16);
  EXPECT_EQ(a.scales.to(DType::F32).to_vector(), (std::vector<float>{0.5f, -0.0f, 0.0009765625f, 65504.f / 8}));
  EXPECT_TRUE(std::signbit(a.scales.to(DType::F32).to_vector()[1]));
  QuantParams b = params({0.5f, 1e-20f});  // 1e-20 rounded to bf16 is exact in bf16, not in fp16
  b.scales = b.scales.to(DType::BF16).to(DType::F32).contiguous();
  b.biases = b.biases.to(DType::BF16).to(DType::F32).contiguous();
  const std::vector<float> bv = b.scales.to_vector();
  compact_quant_scales(b);
  EXPECT_EQ(b.scales.dtype(), DType::BF16);
  EXPECT_EQ(b.scales.to(DType::F32).to_vector(), bv);
  QuantParams c = params({0.5f, 0.1f});  // 0.1f is neither
  compact_quant_scales(c);
  EXPECT_EQ(c.scales.dtype(), DType::F32);
  QuantParams d = params({0.5f, 0.25f});
  d.biases = d.biases.to(DType::BF16).contiguous();
  EXPECT_THROW(check_quant_params(d, "mixed"), Error);
  d.scales = d.scales.to(DType::F16).contiguous();
  EXPECT_THROW(check_quant_params(d, "mixed"), Error);
}

TEST(Quant, EmbeddingAndSlicedLmHeadMatchDequantised) {
  Tensor q = quantize_affine(Tensor::randn({50, 64}, 9, 0.2f), 8, 32, DType::BF16);
  Tensor wf = dequantize(q);
  Tensor ids = Tensor::from_ids({3, 0, 49, 3}, {2, 2});
  EXPECT_EQ(embedding(q, ids).to_vector(), embedding(wf, ids).to_vector());
  Tensor h = Tensor::randn({6, 64}, 10);
  Tensor t = Tensor::from_ids({1, 2, 3, -100, 49, 0}, {6});
  Tensor hq = h.clone().set_requires_grad(true), hf = h.clone().set_requires_grad(true);
  Tensor lq = linear_cross_entropy_sum(hq, q, t), lf = linear_cross_entropy_sum(hf, wf, t);
  EXPECT_EQ(lq.item(), lf.item());
  lq.backward();
  lf.backward();
  EXPECT_EQ(hq.grad().to_vector(), hf.grad().to_vector());
  Tensor s = q.slice(0, 10, 20);
  EXPECT_EQ(s.to_vector(), wf.slice(0, 10, 20).contiguous().to_vector());
  EXPECT_LT(q.nbytes(), wf.nbytes() / 3);
}

TEST(Quant, GradCheckQuantisedLinearAndLoraOnTop) {
  Tensor q = quantize_affine(Tensor::randn({6, 64}, 11, 0.3f), 4, 32, DType::F32);
  Tensor bias = Tensor::randn({6}, 12);
  // Input gradient of the quantised linear (no weight gradient: the weight is frozen).
  testing::check_grad([&](const std::vector<Tensor>& in) { return linear(in[0], q, bias); }, {testing::param({3, 64}, 13)}, 2e-3, 2e-2);
  // LoRA on top: gradients of x, A and B.
  testing::check_grad([&](const std::vector<Tensor>& in) { return lora_linear(in[0], q, bias, in[1], in[2], 0.5f); },
                      {testing::param({3, 64}, 14), testing::param({4, 64}, 15, 0.2f), testing::param({6, 4}, 16, 0.2f)}, 2e-3, 2e-2);
}

}  // namespace
}  // namespace ft
