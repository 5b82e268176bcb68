#pragma once
// Internal: the AVX2 kernels of the opt-in int8 decode GEMV (qgemv_int8, autograd/quant.h; layouts:
// autograd/quant_kernels.h), included by exactly two files with FT_Q8_VNNI set:
//   quant_int8_avxvnni.cpp (FT_Q8_VNNI 1, built with -mavxvnni): vpdpbusd on ymm (AVX-VNNI);
//   quant_int8_avx2.cpp    (FT_Q8_VNNI 0): 4-bit codes through vpmaddubsw (u8·s8 pairs to int16:
//     at most 2·15·127 per pair, and two such pairs summed: no saturation) then vpmaddwd with ones;
//     8-bit codes through a widening vpmaddwd (u8 and s8 widened to int16; vpmaddubsw would saturate:
//     2·255·127 > 32767).
// Both give the same int32 lane sums (lane l = the codes of word l of a 32-byte chunk), so the same
// results. Per 32 bytes of a row of W (a chunk: 64 4-bit or 32 8-bit codes) the lane sums are exact,
// converted to fp32, scaled by the lane's block scale d_b and group scale s_g, as quant_int8_avx512.cpp
// with 8 lanes. One row of A takes 4 rows of W at a time (2 rows: 2) sharing the loads of x, with the
// row group two groups ahead prefetched; every output's operations and order are the same whatever
// its neighbours. Everything in an anonymous namespace; no STL (ODR, see CMakeLists.txt).
#include <immintrin.h>

#include <cstdint>

#include "autograd/quant_int8_prep.h"
#include "autograd/quant_kernels.h"

namespace {

using ft::quant_detail::View;

inline __m256i first_n8(int64_t n) {  // 32-bit lanes < n all ones
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n > 8 ? 8 : n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Scales and biases stored as fp32 (SK 0), fp16 (SK 1) or bf16 (SK 2) (quant_kernels.h View::skind),
// widened exactly as they are read: element i, and elements i .. i+n-1 (n >= 1; 0 in lanes >= n).
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
// sc_load8 reads only elements i .. i+n-1, and elements before i down to i+n-8 when i+n >= 8 (callers
// pass i relative to the start of a row's scales, so those are the row's own).
template <int SK>
inline __m256 sc_load8(const void* p, int64_t i, int64_t n) {
  if constexpr (SK == 0) {
    return _mm256_maskload_ps(static_cast<const float*>(p) + i, first_n8(n));
  } else {
    const uint16_t* q = static_cast<const uint16_t*>(p) + i;
    __m128i h;
    if (n >= 8) {
      h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
    } else if (n == 2) {  // 4-bit codes in groups of 32: two groups per chunk
      int32_t u;
      __builtin_memcpy(&u, q, 4);
      h = _mm_cvtsi32_si128(u);
    } else if (i + n >= 8) {  // the 8 elements ending at i+n-1, shifted down by 8-n (no store-forwarding stall)
      const __m128i k = _mm_setr_epi16(0, 1, 2, 3, 4, 5, 6, 7);
      __m128i ctl = _mm_add_epi16(_mm_set1_epi16(0x0100), _mm_mullo_epi16(_mm_set1_epi16(0x0202), _mm_add_epi16(k, _mm_set1_epi16(short(8 - n)))));
      ctl = _mm_or_si128(ctl, _mm_cmpgt_epi16(k, _mm_set1_epi16(short(n - 1))));  // lanes >= n: 0xffff (pshufb zeroes them)
      h = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + n - 8)), ctl);
    } else {
      uint64_t lo = 0, hi = 0;  // a row of fewer than 8 groups: the values assembled in registers
      for (int64_t e = 0; e < n; ++e) (e < 4 ? lo : hi) |= uint64_t(q[e]) << (16 * (e & 3));
      h = _mm_set_epi64x(int64_t(hi), int64_t(lo));
    }
    if constexpr (SK == 1) return _mm256_cvtph_ps(h);
    else return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

inline float hsum8(__m256 v) {  // a fixed order: the halves, then as _mm_hadd would
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

// int32 lane l = Σ over the 8 codes of word l: 4-bit codes (lo = even codes, hi = odd codes) against x0/x1
inline __m256i dot4(__m256i lo, __m256i hi, __m256i x0, __m256i x1) {
#if FT_Q8_VNNI
  return _mm256_dpbusd_avx_epi32(_mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), lo, x0), hi, x1);
#else
  const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(lo, x0), _mm256_maddubs_epi16(hi, x1));
  return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
#endif
}

// 8-bit codes: int32 lanes summing 4 products each (a chunk of 32 codes is one block of 32, so which
// codes a lane sums does not matter: all lanes carry the same d_b and s_g)
inline __m256i dot8(__m256i W, const int8_t* xq) {
#if FT_Q8_VNNI
  return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), W, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq)));
#else
  const __m256i w0 = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(W)), w1 = _mm256_cvtepu8_epi16(_mm256_extracti128_si256(W, 1));
  const __m256i x0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(xq)));
  const __m256i x1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(xq + 16)));
  return _mm256_add_epi32(_mm256_madd_epi16(w0, x0), _mm256_madd_epi16(w1, x1));
#endif
}

template <int M, int BITS, int G, int R, int SK>
inline void rows_r(const View& v, int64_t j, float alpha, const int8_t* XQ, int64_t ldxq, const float* XD, int64_t ldxd,
                   const float* XS, int64_t ldxs, float beta, float* C, int64_t ldc, __m256i sidx, bool prefetch) {
  constexpr int CPL = 32 / BITS, CH = 8 * CPL;
  constexpr bool one_group = CH <= G;
  constexpr int per = one_group ? G / CH : 1;  // chunks per group
  constexpr int ns = one_group ? 1 : CH / G;   // groups per chunk (4 bits, groups of 32: 2)
  const int64_t K = v.cols, gpr = v.gpr, wpr = v.wpr;
  const int64_t nch = (K + CH - 1) / CH;
  const int64_t tailw = (K % CH) * BITS / 32;  // words of W in a partial last chunk (only when !one_group)
  const void* sbase = SK ? static_cast<const void*>(v.scales16) : static_cast<const void*>(v.scales);
  const void* bbase = SK ? static_cast<const void*>(v.biases16) : static_cast<const void*>(v.biases);
  const uint32_t* w[R];
  const void* s[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    w[r] = v.packed + (j + r) * wpr;
    s[r] = sc_ptr<SK>(sbase, (j + r) * gpr);
  }
  // The codes of the row group two groups ahead are prefetched a few lines per chunk, spread over this
  // group's chunks (all at once, they stall on the line-fill buffers when the weights come from memory).
  const char* pf = prefetch ? reinterpret_cast<const char*>(v.packed + (j + 2 * R) * wpr) : nullptr;
  const int64_t pf_per_chunk = prefetch ? (R * wpr * 4 + 64 * nch - 1) / (64 * nch) * 64 : 0;
  if (prefetch) {
    const char* ps = static_cast<const char*>(sc_ptr<SK>(sbase, (j + 2 * R) * gpr));
    const char* pb = static_cast<const char*>(sc_ptr<SK>(bbase, (j + 2 * R) * gpr));
    for (int64_t b = 0; b < R * gpr * (SK ? 2 : 4); b += 64) {
      _mm_prefetch(ps + b, _MM_HINT_T0);
      _mm_prefetch(pb + b, _MM_HINT_T0);
    }
  }
  __m256 acc[R * M], t[R * M], f[R * M];
#pragma GCC unroll 4
  for (int u = 0; u < R * M; ++u) acc[u] = _mm256_setzero_ps();
  auto chunk = [&](int64_t ci, __m256* out) __attribute__((always_inline)) {
    const bool full = ci + 1 < nch || tailw == 0;
    for (int64_t b = ci * pf_per_chunk; b < (ci + 1) * pf_per_chunk; b += 64) _mm_prefetch(pf + b, _MM_HINT_T0);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m256i W = full ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[r] + ci * 8))
                             : _mm256_maskload_epi32(reinterpret_cast<const int*>(w[r] + ci * 8), first_n8(tailw));
      if constexpr (BITS == 4) {
        const __m256i nib = _mm256_set1_epi8(0x0f);
        const __m256i lo = _mm256_and_si256(W, nib), hi = _mm256_and_si256(_mm256_srli_epi16(W, 4), nib);
#pragma GCC unroll 4
        for (int i = 0; i < M; ++i) {
          const int8_t* xq = XQ + i * ldxq + ci * CH;
          const __m256i q = dot4(lo, hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq)),
                                 _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 32)));
          out[r * M + i] = _mm256_mul_ps(_mm256_cvtepi32_ps(q), _mm256_loadu_ps(XD + i * ldxd + ci * 8));
        }
      } else {
#pragma GCC unroll 4
        for (int i = 0; i < M; ++i)
          out[r * M + i] = _mm256_mul_ps(_mm256_cvtepi32_ps(dot8(W, XQ + i * ldxq + ci * CH)), _mm256_loadu_ps(XD + i * ldxd + ci * 8));
      }
    }
  };
  if constexpr (one_group) {
    for (int64_t g = 0; g < gpr; ++g) {
      chunk(g * per, t);
      for (int64_t ci = g * per + 1; ci < (g + 1) * per; ++ci) {
        chunk(ci, f);
#pragma GCC unroll 4
        for (int u = 0; u < R * M; ++u) t[u] = _mm256_add_ps(t[u], f[u]);
      }
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const __m256 sv = _mm256_set1_ps(sc_at<SK>(s[r], g));
#pragma GCC unroll 4
        for (int i = 0; i < M; ++i) acc[r * M + i] = _mm256_fmadd_ps(sv, t[r * M + i], acc[r * M + i]);
      }
    }
  } else {
    for (int64_t ci = 0; ci < nch; ++ci) {
      chunk(ci, f);
      const int64_t g0 = ci * ns;
      const int64_t nv = ns < gpr - g0 ? ns : gpr - g0;
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const __m256 sv = _mm256_permutevar8x32_ps(sc_load8<SK>(s[r], g0, nv), sidx);
#pragma GCC unroll 4
        for (int i = 0; i < M; ++i) acc[r * M + i] = _mm256_fmadd_ps(sv, f[r * M + i], acc[r * M + i]);
      }
    }
  }
  // Σ_g b_g·xs_g, then each output's 8 lanes summed in a fixed order
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    const void* b = sc_ptr<SK>(bbase, (j + r) * gpr);
    for (int64_t g = 0; g < gpr; g += 8) {
      const __m256i mk = first_n8(gpr - g);
      __m256 bv = sc_load8<SK>(b, g, gpr - g);
      if (v.bias_mul != 0.0f) bv = _mm256_mul_ps(bv, _mm256_set1_ps(v.bias_mul));  // View::bias_mul: exact
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i) acc[r * M + i] = _mm256_fmadd_ps(bv, _mm256_maskload_ps(XS + i * ldxs + g, mk), acc[r * M + i]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) {
      const float val = alpha * hsum8(acc[r * M + i]);
      float* c = C + i * ldc + r;
      *c = beta != 0.0f ? val + beta * *c : val;
    }
  }
}

template <int M, int BITS, int G, int SK>
void rows_mbgs(const View& v, int64_t j0, int64_t n, float alpha, const int8_t* XQ, int64_t ldxq, const float* XD, int64_t ldxd,
               const float* XS, int64_t ldxs, float beta, float* C, int64_t ldc) {
  constexpr int CPL = 32 / BITS, CH = 8 * CPL;
  constexpr int R = M == 1 ? 4 : M == 2 ? 2 : 1;
  alignas(32) int32_t t[8];
  for (int l = 0; l < 8; ++l) t[l] = CH <= G ? 0 : int32_t(l * CPL / G);
  const __m256i sidx = _mm256_load_si256(reinterpret_cast<const __m256i*>(t));
  int64_t j = 0;
  for (; j + R <= n; j += R)
    rows_r<M, BITS, G, R, SK>(v, j0 + j, alpha, XQ, ldxq, XD, ldxd, XS, ldxs, beta, C + j, ldc, sidx, j + 3 * R <= n);
  for (; j < n; ++j) rows_r<M, BITS, G, 1, SK>(v, j0 + j, alpha, XQ, ldxq, XD, ldxd, XS, ldxs, beta, C + j, ldc, sidx, false);
}

template <int M, int BITS, int G>
void rows_mbg(const View& v, int64_t j0, int64_t n, float alpha, const int8_t* XQ, int64_t ldxq, const float* XD, int64_t ldxd,
              const float* XS, int64_t ldxs, float beta, float* C, int64_t ldc) {
  switch (v.skind) {
    case 1: return rows_mbgs<M, BITS, G, 1>(v, j0, n, alpha, XQ, ldxq, XD, ldxd, XS, ldxs, beta, C, ldc);
    case 2: return rows_mbgs<M, BITS, G, 2>(v, j0, n, alpha, XQ, ldxq, XD, ldxd, XS, ldxs, beta, C, ldc);
    default: return rows_mbgs<M, BITS, G, 0>(v, j0, n, alpha, XQ, ldxq, XD, ldxd, XS, ldxs, beta, C, ldc);
  }
}

template <int M, int BITS>
void rows_mb(const View& v, int64_t j0, int64_t n, float alpha, const int8_t* XQ, int64_t ldxq, const float* XD, int64_t ldxd,
             const float* XS, int64_t ldxs, float beta, float* C, int64_t ldc) {
  switch (v.group) {
    case 32: return rows_mbg<M, BITS, 32>(v, j0, n, alpha, XQ, ldxq, XD, ldxd, XS, ldxs, beta, C, ldc);
    case 64: return rows_mbg<M, BITS, 64>(v, j0, n, alpha, XQ, ldxq, XD, ldxd, XS, ldxs, beta, C, ldc);
    default: return rows_mbg<M, BITS, 128>(v, j0, n, alpha, XQ, ldxq, XD, ldxd, XS, ldxs, beta, C, ldc);
  }
}

template <int M>
void rows_m(const View& v, int64_t j0, int64_t n, float alpha, const int8_t* XQ, int64_t ldxq, const float* XD, int64_t ldxd,
            const float* XS, int64_t ldxs, float beta, float* C, int64_t ldc) {
  if (v.bits == 4) return rows_mb<M, 4>(v, j0, n, alpha, XQ, ldxq, XD, ldxd, XS, ldxs, beta, C, ldc);
  return rows_mb<M, 8>(v, j0, n, alpha, XQ, ldxq, XD, ldxd, XS, ldxs, beta, C, ldc);
}

void rows_any(const View& v, int m, int64_t j0, int64_t n, float alpha, const int8_t* XQ, int64_t ldxq, const float* XD,
              int64_t ldxd, const float* XS, int64_t ldxs, float beta, float* C, int64_t ldc) {
  switch (m) {
    case 1: return rows_m<1>(v, j0, n, alpha, XQ, ldxq, XD, ldxd, XS, ldxs, beta, C, ldc);
    case 2: return rows_m<2>(v, j0, n, alpha, XQ, ldxq, XD, ldxd, XS, ldxs, beta, C, ldc);
    case 3: return rows_m<3>(v, j0, n, alpha, XQ, ldxq, XD, ldxd, XS, ldxs, beta, C, ldc);
    default: return rows_m<4>(v, j0, n, alpha, XQ, ldxq, XD, ldxd, XS, ldxs, beta, C, ldc);
  }
}

// ---- the int8 GEMM (qgemm_int8, autograd/quant.h): a register tile of R rows of W × M rows of A
// (R·M <= 8 accumulators), x's int8 values and block scales taken from memory per product. Every
// output gets exactly rows_r's fp32 operations in rows_r's order (the int32 lane sums are the same
// integers: integer sums are exact, whatever the instruction order):
//   per chunk f = cvt(lane sums)·d; one_group: t = f, t += f over the group's further chunks,
//   acc = fma(s_g, t, acc); else acc = fma(permuted group scales, f, acc); then the bias terms in
//   steps of 8 groups, hsum8 and alpha·sum (+ beta·C)
// so each output is bit-identical to qgemv_int8's for that row of A alone.
template <int M, int BITS, int G, int R>
inline void tile(const View& v, int64_t j, float alpha, const int8_t* XQ, int64_t ldxq, const float* XD, int64_t ldxd,
                 const float* XS, int64_t ldxs, float beta, float* C, int64_t ldc, __m256i sidx) {
  constexpr int CPL = 32 / BITS, CH = 8 * CPL;
  constexpr bool one_group = CH <= G;
  constexpr int per = one_group ? G / CH : 1;
  constexpr int ns = one_group ? 1 : CH / G;
  const int64_t K = v.cols, gpr = v.gpr, wpr = v.wpr;
  const int64_t nch = (K + CH - 1) / CH;
  const int64_t tailw = (K % CH) * BITS / 32;
  const uint32_t* w[R];
  const float* s[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    w[r] = v.packed + (j + r) * wpr;
    s[r] = v.scales + (j + r) * gpr;
  }
  __m256 acc[R * M];
#pragma GCC unroll 8
  for (int u = 0; u < R * M; ++u) acc[u] = _mm256_setzero_ps();
  // W row r's chunk ci: lo/hi = the even/odd 4-bit codes (4 bits), or the 8-bit codes in lo
  auto load_w = [&](int64_t ci, int r, __m256i& lo, __m256i& hi) __attribute__((always_inline)) {
    const bool full = ci + 1 < nch || tailw == 0;
    const __m256i W = full ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[r] + ci * 8))
                           : _mm256_maskload_epi32(reinterpret_cast<const int*>(w[r] + ci * 8), first_n8(tailw));
    if constexpr (BITS == 4) {
      const __m256i nib = _mm256_set1_epi8(0x0f);
      lo = _mm256_and_si256(W, nib);
      hi = _mm256_and_si256(_mm256_srli_epi16(W, 4), nib);
    } else {
      lo = W;
      hi = W;
    }
  };
  auto prod = [&](int64_t ci, __m256i lo, __m256i hi, int i) __attribute__((always_inline)) {
    const int8_t* xq = XQ + i * ldxq + ci * CH;
    __m256i q;
    if constexpr (BITS == 4)
      q = dot4(lo, hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq)), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 32)));
    else
      q = dot8(lo, xq);
    return _mm256_mul_ps(_mm256_cvtepi32_ps(q), _mm256_loadu_ps(XD + i * ldxd + ci * 8));
  };
  if constexpr (one_group && per > 1) {
    __m256 t[R * M];
    for (int64_t g = 0; g < gpr; ++g) {
      for (int k = 0; k < per; ++k) {
        const int64_t ci = g * per + k;
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
          __m256i lo, hi;
          load_w(ci, r, lo, hi);
#pragma GCC unroll 4
          for (int i = 0; i < M; ++i) {
            const __m256 f = prod(ci, lo, hi, i);
            t[r * M + i] = k == 0 ? f : _mm256_add_ps(t[r * M + i], f);
          }
        }
      }
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const __m256 sv = _mm256_set1_ps(s[r][g]);
#pragma GCC unroll 4
        for (int i = 0; i < M; ++i) acc[r * M + i] = _mm256_fmadd_ps(sv, t[r * M + i], acc[r * M + i]);
      }
    }
  } else {
    for (int64_t ci = 0; ci < nch; ++ci) {
      const int64_t g0 = ci * ns;
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        __m256i lo, hi;
        load_w(ci, r, lo, hi);
        __m256 sv;
        if constexpr (one_group) sv = _mm256_set1_ps(s[r][ci]);
        else sv = _mm256_permutevar8x32_ps(_mm256_maskload_ps(s[r] + g0, first_n8(ns < gpr - g0 ? ns : gpr - g0)), sidx);
#pragma GCC unroll 4
        for (int i = 0; i < M; ++i) acc[r * M + i] = _mm256_fmadd_ps(sv, prod(ci, lo, hi, i), acc[r * M + i]);
      }
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    const float* b = v.biases + (j + r) * gpr;
    for (int64_t g = 0; g < gpr; g += 8) {
      const __m256i mk = first_n8(gpr - g);
      const __m256 bv = _mm256_maskload_ps(b + g, mk);
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i) acc[r * M + i] = _mm256_fmadd_ps(bv, _mm256_maskload_ps(XS + i * ldxs + g, mk), acc[r * M + i]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) {
      const float val = alpha * hsum8(acc[r * M + i]);
      float* c = C + i * ldc + r;
      *c = beta != 0.0f ? val + beta * *c : val;
    }
  }
}

template <int N>
struct IntC {
  static constexpr int value = N;
};

// Rows j0 .. j0+n-1 of W × m (any) rows of A: panels of R rows of W (kept in L1) over which every
// MT-row block of A passes in turn; the last n mod R rows one at a time.
template <int BITS, int G>
void gemm_bg(const View& v, int m, int64_t j0, int64_t n, float alpha, const int8_t* XQ, int64_t ldxq, const float* XD, int64_t ldxd,
             const float* XS, int64_t ldxs, float beta, float* C, int64_t ldc) {
  constexpr int CPL = 32 / BITS, CH = 8 * CPL;
  // R·MT accumulators, and as many partial sums t when a group spans chunks (measured on Zen 3: 1×4,
  // 2×2, 2×3 and 2×4 within a few per cent of each other; the integer multiplies bound the loop)
  constexpr int R = 2, MT = CH < G ? 2 : 4;
  alignas(32) int32_t t[8];
  for (int l = 0; l < 8; ++l) t[l] = CH <= G ? 0 : int32_t(l * CPL / G);
  const __m256i sidx = _mm256_load_si256(reinterpret_cast<const __m256i*>(t));
  auto blocks = [&](auto rr, int64_t j) __attribute__((always_inline)) {
    constexpr int RR = decltype(rr)::value;
    int i0 = 0;
    for (; i0 + MT <= m; i0 += MT)
      tile<MT, BITS, G, RR>(v, j0 + j, alpha, XQ + i0 * ldxq, ldxq, XD + i0 * ldxd, ldxd, XS + i0 * ldxs, ldxs, beta, C + i0 * ldc + j, ldc, sidx);
    const int64_t o = i0;
    switch (m - i0) {
      case 3: return tile<3, BITS, G, RR>(v, j0 + j, alpha, XQ + o * ldxq, ldxq, XD + o * ldxd, ldxd, XS + o * ldxs, ldxs, beta, C + o * ldc + j, ldc, sidx);
      case 2: return tile<2, BITS, G, RR>(v, j0 + j, alpha, XQ + o * ldxq, ldxq, XD + o * ldxd, ldxd, XS + o * ldxs, ldxs, beta, C + o * ldc + j, ldc, sidx);
      case 1: return tile<1, BITS, G, RR>(v, j0 + j, alpha, XQ + o * ldxq, ldxq, XD + o * ldxd, ldxd, XS + o * ldxs, ldxs, beta, C + o * ldc + j, ldc, sidx);
      default: return;
    }
  };
  int64_t j = 0;
  for (; j + R <= n; j += R) blocks(IntC<R>{}, j);
  for (; j < n; ++j) blocks(IntC<1>{}, j);
}

template <int BITS>
void gemm_b(const View& v, int m, int64_t j0, int64_t n, float alpha, const int8_t* XQ, int64_t ldxq, const float* XD, int64_t ldxd,
            const float* XS, int64_t ldxs, float beta, float* C, int64_t ldc) {
  switch (v.group) {
    case 32: return gemm_bg<BITS, 32>(v, m, j0, n, alpha, XQ, ldxq, XD, ldxd, XS, ldxs, beta, C, ldc);
    case 64: return gemm_bg<BITS, 64>(v, m, j0, n, alpha, XQ, ldxq, XD, ldxd, XS, ldxs, beta, C, ldc);
    default: return gemm_bg<BITS, 128>(v, m, j0, n, alpha, XQ, ldxq, XD, ldxd, XS, ldxs, beta, C, ldc);
  }
}

void gemm_any(const View& v, int m, int64_t j0, int64_t n, float alpha, const int8_t* XQ, int64_t ldxq, const float* XD,
              int64_t ldxd, const float* XS, int64_t ldxs, float beta, float* C, int64_t ldc) {
  if (v.bits == 4) return gemm_b<4>(v, m, j0, n, alpha, XQ, ldxq, XD, ldxd, XS, ldxs, beta, C, ldc);
  return gemm_b<8>(v, m, j0, n, alpha, XQ, ldxq, XD, ldxd, XS, ldxs, beta, C, ldc);
}

// x rounded to int8 per block of 32 (quant_kernels.h Int8PrepFn): |x| max, x·id clamped to ±127
// (vmaxps/vminps give the constant for a NaN, as the portable code), vcvtps2dq rounds to nearest even,
// then packed to bytes in order.
void prep(const float* x, int64_t K, int bits, int8_t* XQ, float* XD, int32_t* BS) {
  const int64_t CH = 8 * (32 / bits);
  const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)), lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  for (int64_t b = 0; b < K / 32; ++b) {
    __m256 v[4];
    for (int k = 0; k < 4; ++k) v[k] = _mm256_loadu_ps(x + 32 * b + 8 * k);
    __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v[0], absm), _mm256_and_ps(v[1], absm)),
                             _mm256_max_ps(_mm256_and_ps(v[2], absm), _mm256_and_ps(v[3], absm)));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    float id;
    const float d = block_scale(_mm_cvtss_f32(h), &id);
    const __m256 s = _mm256_set1_ps(id);
    __m256i q[4];
    for (int k = 0; k < 4; ++k) q[k] = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(v[k], s), lo), hi));
    const __m256i qs = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    __m128i h4 = _mm_add_epi32(_mm256_castsi256_si128(qs), _mm256_extracti128_si256(qs, 1));
    h4 = _mm_add_epi32(h4, _mm_shuffle_epi32(h4, 0x4e));
    BS[b] = _mm_cvtsi128_si32(_mm_add_epi32(h4, _mm_shuffle_epi32(h4, 0xb1)));
    // packs interleave the 128-bit halves: dwords (q0a q1a q2a q3a | q0b q1b q2b q3b) -> in order
    const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    store_block(_mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)), d, b, bits, CH, XQ, XD);
  }
}

}  // namespace
