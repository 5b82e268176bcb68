// AVX2 + FMA kernels for quantised matrices (vector unpacking for 4 and 8 bits, scalar for 2/3/5/6) (semantics: autograd/quant_kernels.h).
// The GEMV mirrors ft::gemv's AVX2 fp32 kernel (gemv_avx2.cpp): two 8-lane accumulators per row
// of A over 16-element steps, one horizontal sum per output — so a quantised matrix gives the
// bits of gemv on its dequantised fp32 copy. Built with -ffp-contract=off (scale·q + bias is a
// rounded product then a rounded sum; the only fused operations are the explicit _mm256_fmadd_ps).
// No STL here (ODR, see CMakeLists.txt): only <immintrin.h>, <cstdint>, <cstring>.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "autograd/quant_kernels.h"

namespace {

using ft::quant_detail::View;

// Code of element c of a row (any width: one LSB-first bit stream per row), for the
// bit widths without a vector unpacker (2, 3, 5, 6).
inline uint32_t code_at(const uint32_t* row, int bits, int64_t c) {
  const int64_t bit = c * bits;
  const int64_t w = bit >> 5;
  const int sh = int(bit & 31);
  uint32_t x = row[w] >> sh;
  if (sh + bits > 32) x |= row[w + 1] << (32 - sh);
  return x & ((1u << bits) - 1u);
}

// 8 dequantised weights of row r from element c (c % 8 == 0).
template <int BITS>
inline __m256 deq8(const View& v, int64_t r, int64_t c) {
  const uint32_t* row = v.packed + r * v.wpr;
  __m256i q;
  if constexpr (BITS == 4) {
    uint32_t w;
    std::memcpy(&w, row + c / 8, 4);
    q = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(int(w)), _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)),
                         _mm256_set1_epi32(15));
  } else if constexpr (BITS == 8) {
    int64_t b;
    std::memcpy(&b, reinterpret_cast<const unsigned char*>(row) + c, 8);
    q = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(b));
  } else {
    alignas(32) int32_t t[8];
    for (int u = 0; u < 8; ++u) t[u] = int32_t(code_at(row, v.bits, c + u));
    q = _mm256_load_si256(reinterpret_cast<const __m256i*>(t));
  }
  const int64_t g = r * v.gpr + c / v.group;
  const __m256 p = _mm256_mul_ps(_mm256_set1_ps(v.scales[g]), _mm256_cvtepi32_ps(q));
  return _mm256_add_ps(p, _mm256_set1_ps(v.biases[g]));
}

template <int BITS>
void dequant(const View& v, int64_t r, int64_t c0, int64_t c1, float* out) {
  for (int64_t c = c0; c < c1; c += 8) _mm256_storeu_ps(out + (c - c0), deq8<BITS>(v, r, c));
}

inline float hsum(__m256 v) {  // as gemv_avx2.cpp
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

template <int M, int BITS>
void rows_m(const View& v, int64_t j0, int64_t n, float alpha, const float* A, int64_t lda, float beta, float* C, int64_t ldc) {
  const int64_t K = v.cols;
  for (int64_t j = 0; j < n; ++j) {
    __m256 acc0[M], acc1[M];
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) acc0[i] = acc1[i] = _mm256_setzero_ps();
    for (int64_t k = 0; k < K; k += 16) {  // K is a multiple of 32
      const __m256 w0 = deq8<BITS>(v, j0 + j, k), w1 = deq8<BITS>(v, j0 + j, k + 8);
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i) {
        acc0[i] = _mm256_fmadd_ps(_mm256_loadu_ps(A + i * lda + k), w0, acc0[i]);
        acc1[i] = _mm256_fmadd_ps(_mm256_loadu_ps(A + i * lda + k + 8), w1, acc1[i]);
      }
    }
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) {
      const float val = alpha * hsum(_mm256_add_ps(acc0[i], acc1[i]));
      float* c = C + i * ldc + j;
      *c = beta != 0.0f ? val + beta * *c : val;
    }
  }
}

template <int BITS>
void rows(const View& v, int m, int64_t j0, int64_t n, float alpha, const float* A, int64_t lda, float beta, float* C, int64_t ldc) {
  switch (m) {
    case 1: return rows_m<1, BITS>(v, j0, n, alpha, A, lda, beta, C, ldc);
    case 2: return rows_m<2, BITS>(v, j0, n, alpha, A, lda, beta, C, ldc);
    case 3: return rows_m<3, BITS>(v, j0, n, alpha, A, lda, beta, C, ldc);
    default: return rows_m<4, BITS>(v, j0, n, alpha, A, lda, beta, C, ldc);
  }
}

void dequant_any(const View& v, int64_t r, int64_t c0, int64_t c1, float* out) {
  if (v.bits == 4) dequant<4>(v, r, c0, c1, out);
  else if (v.bits == 8) dequant<8>(v, r, c0, c1, out);
  else dequant<0>(v, r, c0, c1, out);
}
void rows_any(const View& v, int m, int64_t j0, int64_t n, float alpha, const float* A, int64_t lda, float beta, float* C,
              int64_t ldc) {
  if (v.bits == 4) rows<4>(v, m, j0, n, alpha, A, lda, beta, C, ldc);
  else if (v.bits == 8) rows<8>(v, m, j0, n, alpha, A, lda, beta, C, ldc);
  else rows<0>(v, m, j0, n, alpha, A, lda, beta, C, ldc);
}

const ft::quant_detail::Kernels kKernels = {dequant_any, rows_any};

}  // namespace

const ft::quant_detail::Kernels* ft::quant_detail::kernels_avx2() { return &kKernels; }
