// AVX2 + FMA kernels for quantised matrices (semantics: autograd/quant_kernels.h).
// Dequantisation (the GEMM's packing): vector unpacking for 4 and 8 bits, scalar for 2/3/5/6; each
// weight is scale·q rounded, + bias rounded, as MLX (built with -ffp-contract=off).
// The decode GEMV regroups by the affine identity, as quant_avx512.cpp does with 8-lane vectors.
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

// 8 codes of a row from element c (c % 8 == 0), as fp32 (exact).
template <int BITS>
inline __m256 codes8(const View& v, const uint32_t* row, int64_t c) {
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
  return _mm256_cvtepi32_ps(q);
}

// Group by group (scale and offset broadcast once per group): w = scale·q rounded, + bias rounded.
template <int BITS>
void dequant(const View& v, int64_t r, int64_t c0, int64_t c1, float* out) {
  const uint32_t* row = v.packed + r * v.wpr;
  const float* sc = v.scales + r * v.gpr;
  const float* bi = v.biases + r * v.gpr;
  for (int64_t c = c0; c < c1;) {
    const int64_t g = c / v.group, end = (g + 1) * v.group < c1 ? (g + 1) * v.group : c1;
    const __m256 s = _mm256_set1_ps(sc[g]), b = _mm256_set1_ps(bi[g]);
    for (; c < end; c += 8) _mm256_storeu_ps(out + (c - c0), _mm256_add_ps(_mm256_mul_ps(s, codes8<BITS>(v, row, c)), b));
  }
}

inline float hsum(__m256 v) {  // as gemv_avx2.cpp
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

// ---- the decode GEMV (regrouped: Σ_g s_g·Σ q·x + Σ_g b_g·xs_g, see quant_kernels.h)

inline __m256i first_n(int64_t n) {  // lanes < n all ones
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n > 8 ? 8 : n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

template <int M>
inline void bias_terms(const float* b, int64_t gpr, const float* XS, int64_t ldxs, __m256* acc) {
  for (int64_t g = 0; g < gpr; g += 8) {
    const __m256i mk = first_n(gpr - g);
    const __m256 bv = _mm256_maskload_ps(b + g, mk);
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) acc[i] = _mm256_fmadd_ps(bv, _mm256_maskload_ps(XS + i * ldxs + g, mk), acc[i]);
  }
}

template <int M>
inline void store_rows(const __m256* acc, float alpha, float beta, float* C, int64_t ldc, int64_t j) {
#pragma GCC unroll 4
  for (int i = 0; i < M; ++i) {
    const float val = alpha * hsum(acc[i]);
    float* c = C + i * ldc + j;
    *c = beta != 0.0f ? val + beta * *c : val;
  }
}

// Bits 2, 4, 8 (codes never straddle a word): LANES words per block, vector k = field k of each word
// against x in the permuted layout (quant_kernels.h). The scale enters once per group when whole
// blocks fit in a group, else once per block and lane (a permute of the block's scales).
#define LANES 8
#define VF __m256
#define VI __m256i
#define LOADI(t) _mm256_load_si256(reinterpret_cast<const __m256i*>(t))
#define LOADU_W(p) _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))
#define MASKLOAD_W(p, n) _mm256_maskload_epi32(reinterpret_cast<const int*>(p), first_n(n))
#define MASKLOAD_F(p, n) _mm256_maskload_ps(p, first_n(n))
#define PERMF(idx, v) _mm256_permutevar8x32_ps(v, idx)
#define CVT(x) _mm256_cvtepi32_ps(x)
#define AND(a, b) _mm256_and_si256(a, b)
#define SET1I(x) _mm256_set1_epi32(x)
#define SRLI(a, n) _mm256_srli_epi32(a, n)
#define LOADU_F(p) _mm256_loadu_ps(p)
#define FMADD(a, b, c) _mm256_fmadd_ps(a, b, c)
#define ZERO() _mm256_setzero_ps()
#define SET1F(x) _mm256_set1_ps(x)
#define ADDF(a, b) _mm256_add_ps(a, b)
#define MULF(a, b) _mm256_mul_ps(a, b)
template <int M, int BITS>
void rows_shift(const View& v, int64_t j0, int64_t n, float alpha, const float* XP, int64_t ldxp, const float* XS, int64_t ldxs,
                float beta, float* C, int64_t ldc) {
  constexpr int CPL = 32 / BITS, B = LANES * CPL;
  const int64_t K = v.cols, G = v.group, gpr = v.gpr;
  const int64_t nblk = (K + B - 1) / B;
  const int tailw = int((K % B) * BITS / 32);  // words in a partial last block (only when B > G)
  const bool one_group = B <= G;               // whole blocks per group: the scale enters once per group
  const int ns = one_group ? 1 : int(B / G);   // groups per block otherwise (<= LANES)
  alignas(64) int32_t t[LANES];
  for (int l = 0; l < LANES; ++l) t[l] = one_group ? 0 : int32_t(l * CPL / G);
  const VI sidx = LOADI(t);
  const VF table = _mm256_setr_ps(0.f, 1.f, 2.f, 3.f, 0.f, 1.f, 2.f, 3.f);
  // p0/p1 += the products of one block (vector k = field k of the 16/8 words, see permuted_layout)
  auto block = [&]<bool FIRST>(const uint32_t* w, int64_t bi, VF* p0, VF* p1) __attribute__((always_inline)) {
    const VI W = (bi + 1 < nblk || tailw == 0) ? LOADU_W(w + bi * LANES) : MASKLOAD_W(w + bi * LANES, tailw);
    const float* xb = XP + bi * B;
#pragma GCC unroll 16
    for (int k = 0; k < CPL; ++k) {
      // 2 bits: vpermps reads only the low 3 bits of each lane, so a table lookup of the shifted
      // word (table[i] = i & 3, exact floats) replaces the mask and the conversion
      const VF q = BITS == 2 ? _mm256_permutevar8x32_ps(table, k == 0 ? W : SRLI(W, k * BITS))
                             : CVT(k + 1 < CPL ? AND(k == 0 ? W : SRLI(W, k * BITS), SET1I(int((1u << BITS) - 1u))) : SRLI(W, 32 - BITS));
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i) {
        const VF x = LOADU_F(xb + i * ldxp + k * LANES);
        if (FIRST && k == 0) p0[i] = MULF(q, x);
        else if (FIRST && k == 1) p1[i] = MULF(q, x);
        else if (k % 2 == 0) p0[i] = FMADD(q, x, p0[i]);
        else p1[i] = FMADD(q, x, p1[i]);
      }
    }
  };
  for (int64_t j = 0; j < n; ++j) {
    const uint32_t* w = v.packed + (j0 + j) * v.wpr;
    const float* s = v.scales + (j0 + j) * gpr;
    VF acc[M], p0[M], p1[M];
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) acc[i] = ZERO();
    if (one_group) {
      const int64_t per = G / B;
      for (int64_t g = 0; g < gpr; ++g) {
        block.template operator()<true>(w, g * per, p0, p1);
        for (int64_t bi = g * per + 1; bi < (g + 1) * per; ++bi) block.template operator()<false>(w, bi, p0, p1);
        const VF sv = SET1F(s[g]);
#pragma GCC unroll 4
        for (int i = 0; i < M; ++i) acc[i] = FMADD(sv, ADDF(p0[i], p1[i]), acc[i]);
      }
    } else {
      for (int64_t bi = 0; bi < nblk; ++bi) {
        block.template operator()<true>(w, bi, p0, p1);
        const int64_t g0 = bi * B / G;
        const VF sv = PERMF(sidx, MASKLOAD_F(s + g0, ns < gpr - g0 ? ns : gpr - g0));
#pragma GCC unroll 4
        for (int i = 0; i < M; ++i) acc[i] = FMADD(sv, ADDF(p0[i], p1[i]), acc[i]);
      }
    }
    bias_terms<M>(v.biases + (j0 + j) * gpr, gpr, XS, ldxs, acc);
    store_rows<M>(acc, alpha, beta, C, ldc, j);
  }
}

#undef LANES
#undef VF
#undef VI
#undef LOADI
#undef LOADU_W
#undef MASKLOAD_W
#undef MASKLOAD_F
#undef PERMF
#undef CVT
#undef AND
#undef SET1I
#undef SRLI
#undef LOADU_F
#undef FMADD
#undef ZERO
#undef SET1F
#undef ADDF
#undef MULF

// Bits 3, 5, 6: 32 codes (= bits words <= 6) at a time in natural order, four 8-lane quarters; lane u
// of quarter h from words o >> 5 and o >> 5 + 1, o = (8h + u)·bits (shifts of 32 give 0).
template <int M>
void rows_generic(const View& v, int64_t j0, int64_t n, float alpha, const float* XP, int64_t ldxp, const float* XS, int64_t ldxs,
                  float beta, float* C, int64_t ldc) {
  const int bits = v.bits;
  const int64_t G = v.group, gpr = v.gpr;
  __m256i ilo[4], ihi[4], slo[4], shi[4];
  for (int h = 0; h < 4; ++h) {
    alignas(32) int32_t a[8], b[8], c[8], d[8];
    for (int u = 0; u < 8; ++u) {
      const int o = (8 * h + u) * bits;
      a[u] = o >> 5;
      b[u] = ((o >> 5) + 1) & 7;  // the word after the last is never needed (its bits are masked off)
      c[u] = o & 31;
      d[u] = 32 - (o & 31);
    }
    ilo[h] = _mm256_load_si256(reinterpret_cast<const __m256i*>(a));
    ihi[h] = _mm256_load_si256(reinterpret_cast<const __m256i*>(b));
    slo[h] = _mm256_load_si256(reinterpret_cast<const __m256i*>(c));
    shi[h] = _mm256_load_si256(reinterpret_cast<const __m256i*>(d));
  }
  const __m256i mask = _mm256_set1_epi32(int((1u << bits) - 1u));
  const __m256i wmask = first_n(bits);
  auto unpack = [&](__m256i W, int h) __attribute__((always_inline)) {
    const __m256i lo = _mm256_srlv_epi32(_mm256_permutevar8x32_epi32(W, ilo[h]), slo[h]);
    const __m256i hi = _mm256_sllv_epi32(_mm256_permutevar8x32_epi32(W, ihi[h]), shi[h]);
    return _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_or_si256(lo, hi), mask));
  };
  for (int64_t j = 0; j < n; ++j) {
    const uint32_t* w = v.packed + (j0 + j) * v.wpr;
    const float* s = v.scales + (j0 + j) * gpr;
    __m256 acc[M];
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) acc[i] = _mm256_setzero_ps();
    if (G == 16) {  // groups of 16 (GGUF Q6_K): one scale per two quarters
      for (int64_t c = 0; c < v.cols; c += 32) {
        const __m256i W = _mm256_maskload_epi32(reinterpret_cast<const int*>(w + c / 32 * bits), wmask);
        for (int hh = 0; hh < 2; ++hh) {
          const __m256 sv = _mm256_set1_ps(s[c / 16 + hh]);
          const __m256 q0 = unpack(W, 2 * hh), q1 = unpack(W, 2 * hh + 1);
#pragma GCC unroll 4
          for (int i = 0; i < M; ++i) {
            const __m256 p = _mm256_fmadd_ps(q1, _mm256_loadu_ps(XP + i * ldxp + c + 16 * hh + 8),
                                             _mm256_mul_ps(q0, _mm256_loadu_ps(XP + i * ldxp + c + 16 * hh)));
            acc[i] = _mm256_fmadd_ps(sv, p, acc[i]);
          }
        }
      }
    } else {
      for (int64_t g = 0; g < gpr; ++g) {
        __m256 p0[M], p1[M];
#pragma GCC unroll 4
        for (int i = 0; i < M; ++i) p0[i] = p1[i] = _mm256_setzero_ps();
        for (int64_t c = g * G; c < (g + 1) * G; c += 32) {
          const __m256i W = _mm256_maskload_epi32(reinterpret_cast<const int*>(w + c / 32 * bits), wmask);
          for (int h = 0; h < 4; ++h) {
            const __m256 q = unpack(W, h);
#pragma GCC unroll 4
            for (int i = 0; i < M; ++i) {
              const __m256 x = _mm256_loadu_ps(XP + i * ldxp + c + 8 * h);
              if (h % 2 == 0) p0[i] = _mm256_fmadd_ps(q, x, p0[i]);
              else p1[i] = _mm256_fmadd_ps(q, x, p1[i]);
            }
          }
        }
        const __m256 sv = _mm256_set1_ps(s[g]);
#pragma GCC unroll 4
        for (int i = 0; i < M; ++i) acc[i] = _mm256_fmadd_ps(sv, _mm256_add_ps(p0[i], p1[i]), acc[i]);
      }
    }
    bias_terms<M>(v.biases + (j0 + j) * gpr, gpr, XS, ldxs, acc);
    store_rows<M>(acc, alpha, beta, C, ldc, j);
  }
}

template <int M>
void rows_m(const View& v, int64_t j0, int64_t n, float alpha, const float* XP, int64_t ldxp, const float* XS, int64_t ldxs,
            float beta, float* C, int64_t ldc) {
  switch (v.bits) {
    case 2: return rows_shift<M, 2>(v, j0, n, alpha, XP, ldxp, XS, ldxs, beta, C, ldc);
    case 4: return rows_shift<M, 4>(v, j0, n, alpha, XP, ldxp, XS, ldxs, beta, C, ldc);
    case 8: return rows_shift<M, 8>(v, j0, n, alpha, XP, ldxp, XS, ldxs, beta, C, ldc);
    default: return rows_generic<M>(v, j0, n, alpha, XP, ldxp, XS, ldxs, beta, C, ldc);
  }
}

void rows_any(const View& v, int m, int64_t j0, int64_t n, float alpha, const float* XP, int64_t ldxp, const float* XS,
              int64_t ldxs, float beta, float* C, int64_t ldc) {
  switch (m) {
    case 1: return rows_m<1>(v, j0, n, alpha, XP, ldxp, XS, ldxs, beta, C, ldc);
    case 2: return rows_m<2>(v, j0, n, alpha, XP, ldxp, XS, ldxs, beta, C, ldc);
    case 3: return rows_m<3>(v, j0, n, alpha, XP, ldxp, XS, ldxs, beta, C, ldc);
    default: return rows_m<4>(v, j0, n, alpha, XP, ldxp, XS, ldxs, beta, C, ldc);
  }
}

void dequant_any(const View& v, int64_t r, int64_t c0, int64_t c1, float* out) {
  if (v.bits == 4) dequant<4>(v, r, c0, c1, out);
  else if (v.bits == 8) dequant<8>(v, r, c0, c1, out);
  else dequant<0>(v, r, c0, c1, out);
}
// fp16 → fp32, 8 at a time (F16C); the tail through a zero-padded 8-element copy.
void widen_f16(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  if (i < n) {
    uint16_t t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    float o[8];
    std::memcpy(t, src + i, size_t(n - i) * sizeof(uint16_t));
    _mm256_storeu_ps(o, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t))));
    std::memcpy(dst + i, o, size_t(n - i) * sizeof(float));
  }
}

// bf16 → fp32: 8 at a time (zero-extend to 32 bits, shift left by 16); the tail one by one.
void widen_bf16(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm256_slli_epi32(w, 16));
  }
  for (; i < n; ++i) {
    const uint32_t u = uint32_t(src[i]) << 16;
    std::memcpy(dst + i, &u, 4);
  }
}

const ft::quant_detail::Kernels kKernels = {dequant_any, rows_any, 8, 0u};

}  // namespace

const ft::quant_detail::Kernels* ft::quant_detail::kernels_avx2() { return &kKernels; }

void ft::quant_detail::widen16_avx2(const uint16_t* src, float* dst, int64_t n, bool bf16) {
  if (bf16) widen_bf16(src, dst, n);
  else widen_f16(src, dst, n);
}

void ft::quant_detail::expand_codes_avx2(const int8_t* codes, const float* sup, int64_t g0, int64_t n, int sg, float* out) {
  // 8 groups share one multiplier (sg is a multiple of 8, g0 too); no division in the loop
  int64_t k = g0 / sg, left = sg - g0 % sg;  // super-group of group g0 + i, and its groups from g0 + i on
  for (int64_t i = 0; i < n; i += 8) {
    long long c8;
    __builtin_memcpy(&c8, codes + i, 8);
    const __m256 c = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(c8)));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_set1_ps(sup[k]), c));
    if ((left -= 8) == 0) ++k, left = sg;
  }
}
