#pragma once
// Internal to the AVX-512 quantised GEMV kernels (quant_avx512.cpp, quant_int8_avx512.cpp; both built
// with the AVX-512 flags, see CMakeLists.txt): masks, the bias terms Σ_g b_g·xs_g and the reduction
// of up to four accumulators whose order makes an output's bits independent of its neighbours.
// Everything in an anonymous namespace (each including file gets its own copy: no ODR across ISAs).
#include <immintrin.h>

#include <cstdint>

#include "autograd/quant_int8_prep.h"

namespace {

inline __mmask16 first_n(int64_t n) { return n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1u); }

// Scales and biases stored as fp32 (SK 0), fp16 (SK 1) or bf16 (SK 2), widened exactly as they are
// read (quant_kernels.h View::skind): the address of element i, one element, the elements i .. i+15
// under mask m (0 elsewhere).
template <int SK>
inline const void* sc_ptr(const void* p, int64_t i) {
  return static_cast<const char*>(p) + i * (SK ? 2 : 4);
}
template <int SK>
inline float sc_at(const void* p, int64_t i) {
  if constexpr (SK == 0) return static_cast<const float*>(p)[i];
  else if constexpr (SK == 1) return _cvtsh_ss(static_cast<const uint16_t*>(p)[i]);
  else {
    const uint32_t u = uint32_t(static_cast<const uint16_t*>(p)[i]) << 16;
    float f;
    __builtin_memcpy(&f, &u, 4);
    return f;
  }
}
template <int SK>
inline __m512 sc_load(const void* p, int64_t i, __mmask16 m) {
  if constexpr (SK == 0) return _mm512_maskz_loadu_ps(m, static_cast<const float*>(p) + i);
  else {
    const __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(p) + i);
    if constexpr (SK == 1) return _mm512_cvtph_ps(h);
    else return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
}

// The scale of group g in every lane (bf16: the 16 bits broadcast into the upper half of each lane,
// the lower half zeroed — one masked vpbroadcastw).
template <int SK>
inline __m512 sc_bcast(const void* p, int64_t g) {
  if constexpr (SK == 2) {
    short h;
    __builtin_memcpy(&h, static_cast<const uint16_t*>(p) + g, 2);
    return _mm512_castsi512_ps(_mm512_maskz_set1_epi16(__mmask32(0xAAAAAAAAu), h));
  } else {
    return _mm512_set1_ps(sc_at<SK>(p, g));
  }
}
// Lane l gets the scale of group g0 + sidx[l] (sidx[l] < 16, the groups g0 .. g0+15 under mask m
// exist): fp32 a load and a permute; bf16 a 16-bit load and one masked 16-bit permute that puts the
// value in the upper half of each lane (widx: word 2l+1 = sidx[l], see sc_widx), fp16 a conversion too.
template <int SK>
inline __m512 sc_perm(const void* p, int64_t g0, __mmask16 m, __m512i sidx, __m512i widx) {
  if constexpr (SK == 2) {
    const __m512i raw = _mm512_castsi256_si512(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(p) + g0));
    return _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16(__mmask32(0xAAAAAAAAu), widx, raw));
  } else {
    (void)widx;
    return _mm512_permutexvar_ps(sidx, sc_load<SK>(p, g0, m));
  }
}
// The 16-bit word indices for sc_perm<2> from the lane indices t[0 .. 16).
inline __m512i sc_widx(const int32_t* t) {
  alignas(64) int16_t w[32];
  for (int l = 0; l < 16; ++l) {
    w[2 * l] = 0;
    w[2 * l + 1] = int16_t(t[l]);
  }
  return _mm512_load_si512(w);
}

// Σ_g b_g·xs_g over a row's gpr groups for each of the M rows of A, added to acc lane-wise. bmul != 0
// (View::bias_mul): b points at the scales and b_g = bmul · the value read (exact, a power of two).
template <int M, int SK = 0>
inline void bias_terms(const void* b, int64_t gpr, const float* XS, int64_t ldxs, __m512* acc, float bmul = 0.0f) {
  for (int64_t g = 0; g < gpr; g += 16) {
    const __mmask16 mk = first_n(gpr - g);
    __m512 bv = sc_load<SK>(b, g, mk);
    if (bmul != 0.0f) bv = _mm512_mul_ps(bv, _mm512_set1_ps(bmul));
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) acc[i] = _mm512_fmadd_ps(bv, _mm512_maskz_loadu_ps(mk, XS + i * ldxs + g), acc[i]);
  }
}

template <int M>
inline void store_rows(const __m512* acc, float alpha, float beta, float* C, int64_t ldc, int64_t j) {
#pragma GCC unroll 4
  for (int i = 0; i < M; ++i) {
    const float val = alpha * _mm512_reduce_add_ps(acc[i]);
    float* c = C + i * ldc + j;
    *c = beta != 0.0f ? val + beta * *c : val;
  }
}

// The sums of up to four accumulators (a[i] for i < n, the others ignored), each summed over its 16
// lanes in _mm512_reduce_add_ps's order: lanes i and i+8, then i and i+4, then i and i+2, then i and
// i+1 (fp32 addition commutes exactly, so only this pairing matters): an output's bits do not depend
// on which accumulators are reduced beside it.
inline __m128 reduce4(const __m512* a, int n) {
  const __m512 z = _mm512_setzero_ps();
  const __m512 a0 = a[0], a1 = n > 1 ? a[1] : z, a2 = n > 2 ? a[2] : z, a3 = n > 3 ? a[3] : z;
  // [a0.lo8 | a1.lo8] + [a0.hi8 | a1.hi8], and the same for a2, a3
  const __m512 s01 = _mm512_add_ps(_mm512_shuffle_f32x4(a0, a1, 0x44), _mm512_shuffle_f32x4(a0, a1, 0xee));
  const __m512 s23 = _mm512_add_ps(_mm512_shuffle_f32x4(a2, a3, 0x44), _mm512_shuffle_f32x4(a2, a3, 0xee));
  // [a0 lanes 0-3 | a1 0-3 | a2 0-3 | a3 0-3] + [the lanes 4-7 of each]
  const __m512 t = _mm512_add_ps(_mm512_shuffle_f32x4(s01, s23, 0x88), _mm512_shuffle_f32x4(s01, s23, 0xdd));
  const __m512 u = _mm512_add_ps(t, _mm512_permute_ps(t, 0x4e));  // lane i + lane i^2 within each 128 bits
  const __m512 w = _mm512_add_ps(u, _mm512_permute_ps(u, 0xb1));  // + lane i^1: the sum in lane 0 of each 128 bits
  // lane 0 of each 128-bit quarter -> lanes 0..3
  return _mm512_castps512_ps128(_mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), w));
}

// Outputs of R rows of W (j .. j+R-1) × M rows of A from acc[r·M + i] (R·M <= 4).
template <int R, int M>
inline void store_outputs(const __m512* acc, float alpha, float beta, float* C, int64_t ldc, int64_t j) {
  alignas(16) float sum[4];
  _mm_store_ps(sum, _mm_mul_ps(_mm_set1_ps(alpha), reduce4(acc, R * M)));
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) {
      float* c = C + i * ldc + j + r;
      *c = beta != 0.0f ? sum[r * M + i] + beta * *c : sum[r * M + i];
    }
}

// One block of 32 values of x rounded to int8 as qgemv_int8 states (autograd/quant.h): |x| max,
// d = block_scale, x·id clamped to ±127 (vmaxps/vminps give the constant for a NaN, as the portable
// code), vcvtps2dq rounds to nearest even. Returns the 32 values in natural order; *d the block's
// scale, *bs = Σ xq (exact).
inline __m256i round_block32(const float* x, float* d, int32_t* bs) {
  const __m512 absm = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff)), lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
  const __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
  float id;
  *d = block_scale(_mm512_reduce_max_ps(_mm512_max_ps(_mm512_and_ps(v0, absm), _mm512_and_ps(v1, absm))), &id);
  const __m512 s = _mm512_set1_ps(id);
  const __m512i q0 = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v0, s), lo), hi));
  const __m512i q1 = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v1, s), lo), hi));
  *bs = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
  return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm512_cvtepi32_epi8(q0)), _mm512_cvtepi32_epi8(q1), 1);
}

}  // namespace
