// AVX-512 row kernel of ft::gemv (semantics: autograd/gemv_kernels.h). One weight row at a time,
// read front to back (one sequential stream, prefetched kPrefetchBytes ahead in software as well;
// interleaving several rows measured ~2× slower on Zen 5), two 16-lane
// accumulators per row of A, one horizontal sum per output. Full 64-byte vectors of the weights
// are loaded as two 32-byte halves: rows off the cache-line boundary (an mmapped checkpoint, odd
// K) then split at most one load in two across lines, instead of every load (measured ~25%
// faster there, equal when aligned), with the same register contents, so the summation order
// depends only on K.
// No STL here (ODR, see CMakeLists.txt): only <immintrin.h>, <cstdint>.
#include <immintrin.h>

#include <cstdint>

#include "autograd/gemv_kernels.h"

namespace {

inline __mmask16 mask16(int64_t n) { return n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1); }
inline __mmask32 mask32(int64_t n) { return n >= 32 ? __mmask32(0xffffffffu) : __mmask32((1u << n) - 1); }

// K elements per vector: 16 floats, or 32 bf16 in dot-product mode.
template <int MODE> constexpr int64_t kLanes = MODE == 2 ? 32 : 16;

// 64 bytes at p, loaded as two 32-byte halves (see the top of the file).
inline __m512i load64(const void* p) {
  const __m256i lo = _mm256_loadu_si256(static_cast<const __m256i*>(p));
  const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const char*>(p) + 32));
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

// Vector of the weight row at element k (n valid elements; n >= lanes: unmasked).
template <int MODE>
inline __m512 load_w(const void* row, int64_t k, int64_t n) {
  if constexpr (MODE == 0) {
    const float* p = static_cast<const float*>(row) + k;
    return n >= 16 ? _mm512_castsi512_ps(load64(p)) : _mm512_maskz_loadu_ps(mask16(n), p);
  } else if constexpr (MODE == 1 || MODE == 3) {
    const uint16_t* p = static_cast<const uint16_t*>(row) + k;
    const __m256i h = n >= 16 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)) : _mm256_maskz_loadu_epi16(mask16(n), p);
    if constexpr (MODE == 3) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  } else {
    const uint16_t* p = static_cast<const uint16_t*>(row) + k;
    return _mm512_castsi512_ps(n >= 32 ? load64(p) : _mm512_maskz_loadu_epi16(mask32(n), p));
  }
}

// Vector of row i of A at element k.
template <int MODE>
inline __m512 load_a(const void* A, int64_t lda, int i, int64_t k, int64_t n) {
  if constexpr (MODE == 2) {
    const uint16_t* p = static_cast<const uint16_t*>(A) + i * lda + k;
    return _mm512_castsi512_ps(n >= 32 ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi16(mask32(n), p));
  } else {
    const float* p = static_cast<const float*>(A) + i * lda + k;
    return n >= 16 ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(mask16(n), p);
  }
}

template <int MODE>
inline __m512 madd(__m512 acc, __m512 a, __m512 w) {
  if constexpr (MODE == 2)
    return _mm512_dpbf16_ps(acc, (__m512bh)_mm512_castps_si512(a), (__m512bh)_mm512_castps_si512(w));
  else
    return _mm512_fmadd_ps(a, w, acc);
}

// Software prefetch distance along the weight stream: 4 KiB ahead (one row of a K = 2048 bf16
// matrix; rows are contiguous). On a Sapphire/Emerald Rapids-class Xeon the hardware prefetcher
// alone left one core's stream at ~10 GB/s of its ~15: a 1B-shaped f16 model decoded at 9.0 tok/s
// on 2 threads without it, 12.3–12.8 with it (2–8 KiB measured alike; 2026-12-05, bench/RESULTS.md).
// Prefetching past the matrix's end is harmless (prefetches do not fault).
constexpr int64_t kPrefetchBytes = 4096;

template <int M, int MODE>
void rows_m(int64_t n, int64_t K, float alpha, const void* A, int64_t lda, const void* W, int64_t ldw,
            float beta, float* C, int64_t ldc) {
  constexpr int64_t L = kLanes<MODE>;
  constexpr int64_t esz = MODE == 0 ? 4 : 2;
  for (int64_t j = 0; j < n; ++j) {
    const void* row = static_cast<const char*>(W) + j * ldw * esz;
    __m512 acc0[M], acc1[M];
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) acc0[i] = acc1[i] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 2 * L <= K; k += 2 * L) {
#pragma GCC unroll 2
      for (int64_t b = 0; b < 2 * L * esz; b += 64) _mm_prefetch(static_cast<const char*>(row) + k * esz + b + kPrefetchBytes, _MM_HINT_T0);
      const __m512 w0 = load_w<MODE>(row, k, L), w1 = load_w<MODE>(row, k + L, L);
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i) {
        acc0[i] = madd<MODE>(acc0[i], load_a<MODE>(A, lda, i, k, L), w0);
        acc1[i] = madd<MODE>(acc1[i], load_a<MODE>(A, lda, i, k + L, L), w1);
      }
    }
    for (; k < K; k += L) {
      const int64_t r = K - k;
      const __m512 w0 = load_w<MODE>(row, k, r);
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i) acc0[i] = madd<MODE>(acc0[i], load_a<MODE>(A, lda, i, k, r), w0);
    }
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) {
      const float v = alpha * _mm512_reduce_add_ps(_mm512_add_ps(acc0[i], acc1[i]));
      float* c = C + i * ldc + j;
      *c = beta != 0.0f ? v + beta * *c : v;
    }
  }
}

template <int MODE>
void rows_mode(int m, int64_t n, int64_t K, float alpha, const void* A, int64_t lda, const void* W,
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
  if (mode == 0) rows_mode<0>(m, n, K, alpha, A, lda, W, ldw, beta, C, ldc);
  else if (mode == 1) rows_mode<1>(m, n, K, alpha, A, lda, W, ldw, beta, C, ldc);
  else if (mode == 2) rows_mode<2>(m, n, K, alpha, A, lda, W, ldw, beta, C, ldc);
  else rows_mode<3>(m, n, K, alpha, A, lda, W, ldw, beta, C, ldc);
}

}  // namespace

ft::gemv_detail::RowsFn ft::gemv_detail::rows_avx512() { return rows; }
