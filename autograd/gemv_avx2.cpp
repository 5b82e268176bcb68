// AVX2 + FMA + F16C row kernel of ft::gemv (semantics: autograd/gemv_kernels.h; modes 0, 1, 3:
// bf16 and fp16 weights are widened to fp32). One weight row at a time, front to back; two 8-lane accumulators
// per row of A, one horizontal sum per output; the summation order depends only on K.
// No STL here (ODR, see CMakeLists.txt): only <immintrin.h>, <cstdint>.
#include <immintrin.h>

#include <cstdint>

#include "autograd/gemv_kernels.h"

namespace {

// Lanes [0, n) of 8 (n < 8): -1 in the 32-bit lanes to load.
inline __m256i lane_mask(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// 8 weights at element k of the row as fp32 (n valid; n >= 8: unmasked).
template <int MODE>
inline __m256 load_w(const void* row, int64_t k, int64_t n) {
  if constexpr (MODE == 0) {
    const float* p = static_cast<const float*>(row) + k;
    return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lane_mask(n));
  } else {
    const uint16_t* p = static_cast<const uint16_t*>(row) + k;
    __m128i h;
    if (n >= 8) {
      h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    } else {
      alignas(16) uint16_t t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int64_t e = 0; e < n; ++e) t[e] = p[e];
      h = _mm_load_si128(reinterpret_cast<const __m128i*>(t));
    }
    if constexpr (MODE == 3) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

inline __m256 load_a(const float* p, int64_t n) { return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lane_mask(n)); }

inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

template <int M, int MODE>
void rows_m(int64_t n, int64_t K, float alpha, const float* A, int64_t lda, const void* W, int64_t ldw,
            float beta, float* C, int64_t ldc) {
  constexpr int64_t esz = MODE == 0 ? 4 : 2;
  for (int64_t j = 0; j < n; ++j) {
    const void* row = static_cast<const char*>(W) + j * ldw * esz;
    __m256 acc0[M], acc1[M];
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) acc0[i] = acc1[i] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
      const __m256 w0 = load_w<MODE>(row, k, 8), w1 = load_w<MODE>(row, k + 8, 8);
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i) {
        acc0[i] = _mm256_fmadd_ps(load_a(A + i * lda + k, 8), w0, acc0[i]);
        acc1[i] = _mm256_fmadd_ps(load_a(A + i * lda + k + 8, 8), w1, acc1[i]);
      }
    }
    for (; k < K; k += 8) {
      const int64_t r = K - k;
      const __m256 w0 = load_w<MODE>(row, k, r);
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i) acc0[i] = _mm256_fmadd_ps(load_a(A + i * lda + k, r), w0, acc0[i]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) {
      const float v = alpha * hsum(_mm256_add_ps(acc0[i], acc1[i]));
      float* c = C + i * ldc + j;
      *c = beta != 0.0f ? v + beta * *c : v;
    }
  }
}

template <int MODE>
void rows_mode(int m, int64_t n, int64_t K, float alpha, const float* A, int64_t lda, const void* W,
               int64_t ldw, float beta, float* C, int64_t ldc) {
  switch (m) {
    case 1: return rows_m<1, MODE>(n, K, alpha, A, lda, W, ldw, beta, C, ldc);
    case 2: return rows_m<2, MODE>(n, K, alpha, A, lda, W, ldw, beta, C, ldc);
    case 3: return rows_m<3, MODE>(n, K, alpha, A, lda, W, ldw, beta, C, ldc);
    default: return rows_m<4, MODE>(n, K, alpha, A, lda, W, ldw, beta, C, ldc);
  }
}

void rows(int mode, int m, int64_t n, int64_t K, float alpha, const void* A, int64_t lda, const void* W,
          int64_t ldw, float beta, float* C, int64_t ldc) {
  const float* a = static_cast<const float*>(A);
  if (mode == 0) rows_mode<0>(m, n, K, alpha, a, lda, W, ldw, beta, C, ldc);
  else if (mode == 1) rows_mode<1>(m, n, K, alpha, a, lda, W, ldw, beta, C, ldc);
  else rows_mode<3>(m, n, K, alpha, a, lda, W, ldw, beta, C, ldc);
}

}  // namespace

ft::gemv_detail::RowsFn ft::gemv_detail::rows_avx2() { return rows; }
