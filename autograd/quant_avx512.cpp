// AVX-512 kernels for quantised matrices (semantics: autograd/quant_kernels.h).
// Dequantisation (the GEMM's packing): vector unpacking for 4 and 8 bits, scalar for 2/3/5/6; each
// weight is scale·q rounded, + bias rounded, as MLX (built with -ffp-contract=off).
// The decode GEMV regroups by the affine identity: per 16-word block, vector k of codes
// (words >> k·bits) & mask for bits 2/4/8 (x pre-permuted to that order), a permute + shift pair for
// 3/5/6; fp32 FMAs of the codes with x, one FMA by the block's scales, biases against the group sums
// of x at the end of the row. For bits 2/4/8, one row of A takes 4 rows of W at a time (2 rows: 2),
// sharing the loads of x (independent FMA chains; every output's operations and order unchanged),
// with the codes, scales and biases of the row group two groups ahead prefetched (bench/RESULTS.md,
// "The multi-row GEMV").
// No STL here (ODR, see CMakeLists.txt): only <immintrin.h>, <cstdint>, <cstring>.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "autograd/quant_avx512_util.h"
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

// 16 codes of a row from element c (c % 16 == 0), as fp32 (exact).
template <int BITS>
inline __m512 codes16(const View& v, const uint32_t* row, int64_t c) {
  __m512i q;
  if constexpr (BITS == 4) {
    uint64_t w;
    std::memcpy(&w, row + c / 8, 8);
    const __m512i lo = _mm512_set1_epi32(int(uint32_t(w))), hi = _mm512_set1_epi32(int(uint32_t(w >> 32)));
    const __m512i both = _mm512_mask_blend_epi32(__mmask16(0xff00), lo, hi);
    const __m512i sh = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
    q = _mm512_and_si512(_mm512_srlv_epi32(both, sh), _mm512_set1_epi32(15));
  } else if constexpr (BITS == 8) {
    q = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(reinterpret_cast<const unsigned char*>(row) + c)));
  } else {
    alignas(64) int32_t t[16];
    for (int u = 0; u < 16; ++u) t[u] = int32_t(code_at(row, v.bits, c + u));
    q = _mm512_load_si512(t);
  }
  return _mm512_cvtepi32_ps(q);
}

// 8 codes from c (c % 8 == 0), for the ends of a segment.
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

// Group by group: the scale and offset are broadcast once per group (the group index is one division
// per group, not per vector). w = scale·q rounded, + bias rounded.
template <int BITS>
void dequant(const View& v, int64_t r, int64_t c0, int64_t c1, float* out) {
  const uint32_t* row = v.packed + r * v.wpr;
  const float* sc = v.scales + r * v.gpr;
  const float* bi = v.biases + r * v.gpr;
  int64_t c = c0;
  while (c < c1) {
    const int64_t g = c / v.group, end = (g + 1) * v.group < c1 ? (g + 1) * v.group : c1;
    const __m512 s = _mm512_set1_ps(sc[g]), b = _mm512_set1_ps(bi[g]);
    if (c % 16 != 0) {
      _mm256_storeu_ps(out + (c - c0), _mm256_add_ps(_mm256_mul_ps(_mm512_castps512_ps256(s), codes8<BITS>(v, row, c)),
                                                     _mm512_castps512_ps256(b)));
      c += 8;
    }
    for (; c + 16 <= end; c += 16) _mm512_storeu_ps(out + (c - c0), _mm512_add_ps(_mm512_mul_ps(s, codes16<BITS>(v, row, c)), b));
    if (c < end) {
      _mm256_storeu_ps(out + (c - c0), _mm256_add_ps(_mm256_mul_ps(_mm512_castps512_ps256(s), codes8<BITS>(v, row, c)),
                                                     _mm512_castps512_ps256(b)));
      c += 8;
    }
  }
}

// ---- the decode GEMV (regrouped: Σ_g s_g·Σ q·x + Σ_g b_g·xs_g, see quant_kernels.h)

// Bits 2, 4, 8 (codes never straddle a word): 16 words per block, vector k = field k of each word
// against x in the permuted layout (quant_kernels.h). The scale enters once per group when whole
// blocks fit in a group, else once per block and lane (a permute of the block's scales). R rows of W
// at a time share the loads of x and keep 2·R·M independent product chains in flight; every output
// is computed with the same operations in the same order whatever R and M are (R only interleaves
// independent rows), so results do not depend on how the rows are split.
template <int M, int BITS, int G, int R, int SK>
inline void rows_shift_r(const View& v, int64_t j, float alpha, const float* XP, int64_t ldxp, const float* XS, int64_t ldxs,
                         float beta, float* C, int64_t ldc, __m512 table, __m512i sidx, __m512i widx, bool prefetch) {
  constexpr int CPL = 32 / BITS, B = 16 * CPL;
  constexpr bool one_group = B <= G;
  constexpr int per = one_group ? G / B : 1;  // blocks per group
  constexpr int ns = one_group ? 1 : B / G;   // groups per block
  const int64_t K = v.cols, gpr = v.gpr, wpr = v.wpr;
  const int64_t nblk = (K + B - 1) / B;
  const int tailw = int((K % B) * BITS / 32);  // words in a partial last block (only when B > G)
  const void* sbase = SK ? static_cast<const void*>(v.scales16) : static_cast<const void*>(v.scales);
  const void* bbase = SK ? static_cast<const void*>(v.biases16) : static_cast<const void*>(v.biases);
  const uint32_t* w[R];
  const void* s[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    w[r] = v.packed + (j + r) * wpr;
    s[r] = sc_ptr<SK>(sbase, (j + r) * gpr);
  }
  // The rows two groups ahead (rows are contiguous; the caller checks that they exist): the hardware
  // prefetcher alone leaves the stream at about half the read bandwidth when the matrix is larger than
  // the L2 cache. Their codes a few lines per block, spread over this group's blocks (all at once, they
  // stall on the line-fill buffers when the weights come from memory), their scales at once.
  const char* pf = prefetch ? reinterpret_cast<const char*>(w[0] + 2 * R * wpr) : nullptr;
  const int64_t pf_per_block = prefetch ? (R * wpr * 4 + 64 * nblk - 1) / (64 * nblk) * 64 : 0;
  if (prefetch) {
    const char* ps = static_cast<const char*>(sc_ptr<SK>(sbase, (j + 2 * R) * gpr));
    const char* pb = static_cast<const char*>(sc_ptr<SK>(bbase, (j + 2 * R) * gpr));
    for (int64_t b = 0; b < R * gpr * (SK ? 2 : 4); b += 64) {
      _mm_prefetch(ps + b, _MM_HINT_T0);
      _mm_prefetch(pb + b, _MM_HINT_T0);
    }
  }
  __m512 acc[R * M], p0[R * M], p1[R * M];
#pragma GCC unroll 4
  for (int u = 0; u < R * M; ++u) acc[u] = _mm512_setzero_ps();
  const __m512i mask = _mm512_set1_epi32(int((1u << BITS) - 1u));
  // p0/p1 (+)= the products of block bi (vector k = field k of the 16 words)
  auto block = [&]<bool FIRST>(int64_t bi) __attribute__((always_inline)) {
    __m512i W[R];
    const bool full = bi + 1 < nblk || tailw == 0;
    for (int64_t b = bi * pf_per_block; b < (bi + 1) * pf_per_block; b += 64) _mm_prefetch(pf + b, _MM_HINT_T0);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) W[r] = full ? _mm512_loadu_si512(w[r] + bi * 16) : _mm512_maskz_loadu_epi32(first_n(tailw), w[r] + bi * 16);
    const float* xb = XP + bi * B;
#pragma GCC unroll 16
    for (int k = 0; k < CPL; ++k) {
      __m512 x[M];
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i) x[i] = _mm512_loadu_ps(xb + i * ldxp + k * 16);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        // 2 and 4 bits: vpermps reads only the low 4 bits of each lane, so a table lookup of the
        // shifted word (table[i] = i & mask, exact floats) replaces the mask and the conversion
        const __m512i sh = k == 0 ? W[r] : _mm512_srli_epi32(W[r], unsigned(k * BITS));
        const __m512 q = BITS <= 4 ? _mm512_permutexvar_ps(sh, table)
                                   : _mm512_cvtepi32_ps(k + 1 < CPL ? _mm512_and_si512(sh, mask) : sh);
#pragma GCC unroll 4
        for (int i = 0; i < M; ++i) {
          const int u = r * M + i;
          if (FIRST && k == 0) p0[u] = _mm512_mul_ps(q, x[i]);
          else if (FIRST && k == 1) p1[u] = _mm512_mul_ps(q, x[i]);
          else if (k % 2 == 0) p0[u] = _mm512_fmadd_ps(q, x[i], p0[u]);
          else p1[u] = _mm512_fmadd_ps(q, x[i], p1[u]);
        }
      }
    }
  };
  if constexpr (one_group) {
    for (int64_t g = 0; g < gpr; ++g) {
      block.template operator()<true>(g * per);
      for (int64_t bi = g * per + 1; bi < (g + 1) * per; ++bi) block.template operator()<false>(bi);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const __m512 sv = sc_bcast<SK>(s[r], g);
#pragma GCC unroll 4
        for (int i = 0; i < M; ++i) acc[r * M + i] = _mm512_fmadd_ps(sv, _mm512_add_ps(p0[r * M + i], p1[r * M + i]), acc[r * M + i]);
      }
    }
  } else {
    for (int64_t bi = 0; bi < nblk; ++bi) {
      block.template operator()<true>(bi);
      const int64_t g0 = bi * ns;
      const __mmask16 sm = first_n(ns < gpr - g0 ? ns : gpr - g0);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const __m512 sv = sc_perm<SK>(s[r], g0, sm, sidx, widx);
#pragma GCC unroll 4
        for (int i = 0; i < M; ++i) acc[r * M + i] = _mm512_fmadd_ps(sv, _mm512_add_ps(p0[r * M + i], p1[r * M + i]), acc[r * M + i]);
      }
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) bias_terms<M, SK>(sc_ptr<SK>(bbase, (j + r) * gpr), gpr, XS, ldxs, acc + r * M, v.bias_mul);
  store_outputs<R, M>(acc, alpha, beta, C, ldc, 0);  // C points at row j's outputs
}

template <int M, int BITS, int G, int SK>
void rows_shift_s(const View& v, int64_t j0, int64_t n, float alpha, const float* XP, int64_t ldxp, const float* XS, int64_t ldxs,
                float beta, float* C, int64_t ldc) {
  constexpr int CPL = 32 / BITS, B = 16 * CPL;
  constexpr int R = M == 1 ? 4 : M == 2 ? 2 : 1;  // rows of W at a time: R·M <= 4 outputs
  alignas(64) int32_t t[16];
  for (int l = 0; l < 16; ++l) t[l] = B <= G ? 0 : int32_t(l * CPL / G);
  const __m512i sidx = _mm512_load_si512(t), widx = sc_widx(t);
  alignas(64) float tab[16];
  for (int i = 0; i < 16; ++i) tab[i] = float(i & ((1 << BITS) - 1));
  const __m512 table = _mm512_load_ps(tab);
  int64_t j = 0;
  for (; j + R <= n; j += R)
    rows_shift_r<M, BITS, G, R, SK>(v, j0 + j, alpha, XP, ldxp, XS, ldxs, beta, C + j, ldc, table, sidx, widx, j + 3 * R <= n);
  for (; j < n; ++j) rows_shift_r<M, BITS, G, 1, SK>(v, j0 + j, alpha, XP, ldxp, XS, ldxs, beta, C + j, ldc, table, sidx, widx, false);
}

template <int M, int BITS, int G>
void rows_shift(const View& v, int64_t j0, int64_t n, float alpha, const float* XP, int64_t ldxp, const float* XS, int64_t ldxs,
                float beta, float* C, int64_t ldc) {
  switch (v.skind) {
    case 1: return rows_shift_s<M, BITS, G, 1>(v, j0, n, alpha, XP, ldxp, XS, ldxs, beta, C, ldc);
    case 2: return rows_shift_s<M, BITS, G, 2>(v, j0, n, alpha, XP, ldxp, XS, ldxs, beta, C, ldc);
    default: return rows_shift_s<M, BITS, G, 0>(v, j0, n, alpha, XP, ldxp, XS, ldxs, beta, C, ldc);
  }
}

template <int M, int BITS>
void rows_shift_g(const View& v, int64_t j0, int64_t n, float alpha, const float* XP, int64_t ldxp, const float* XS, int64_t ldxs,
                  float beta, float* C, int64_t ldc) {
  switch (v.group) {
    case 16: return rows_shift<M, BITS, 16>(v, j0, n, alpha, XP, ldxp, XS, ldxs, beta, C, ldc);
    case 32: return rows_shift<M, BITS, 32>(v, j0, n, alpha, XP, ldxp, XS, ldxs, beta, C, ldc);
    case 64: return rows_shift<M, BITS, 64>(v, j0, n, alpha, XP, ldxp, XS, ldxs, beta, C, ldc);
    default: return rows_shift<M, BITS, 128>(v, j0, n, alpha, XP, ldxp, XS, ldxs, beta, C, ldc);
  }
}

// Bits 3, 5, 6: 32 codes (= BITS words) at a time in natural order; lane u of half h takes its code
// from words idx = o >> 5 and idx + 1, o = (16h + u)·BITS (shifts of 32 give 0 in vpsrlvd/vpsllvd).
template <int M>
void rows_generic(const View& v, int64_t j0, int64_t n, float alpha, const float* XP, int64_t ldxp, const float* XS, int64_t ldxs,
                  float beta, float* C, int64_t ldc) {
  const int bits = v.bits;
  const int64_t G = v.group, gpr = v.gpr;
  __m512i ilo[2], ihi[2], slo[2], shi[2];
  for (int h = 0; h < 2; ++h) {
    alignas(64) int32_t a[16], b[16], c[16], d[16];
    for (int u = 0; u < 16; ++u) {
      const int o = (16 * h + u) * bits;
      a[u] = o >> 5;
      b[u] = (o >> 5) + 1;
      c[u] = o & 31;
      d[u] = 32 - (o & 31);
    }
    ilo[h] = _mm512_load_si512(a);
    ihi[h] = _mm512_load_si512(b);
    slo[h] = _mm512_load_si512(c);
    shi[h] = _mm512_load_si512(d);
  }
  const __m512i mask = _mm512_set1_epi32(int((1u << bits) - 1u));
  const __mmask16 wmask = first_n(bits);
  auto unpack = [&](__m512i W, int h) __attribute__((always_inline)) {
    const __m512i lo = _mm512_srlv_epi32(_mm512_permutexvar_epi32(ilo[h], W), slo[h]);
    const __m512i hi = _mm512_sllv_epi32(_mm512_permutexvar_epi32(ihi[h], W), shi[h]);
    return _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_or_si512(lo, hi), mask));
  };
  for (int64_t j = 0; j < n; ++j) {
    const uint32_t* w = v.packed + (j0 + j) * v.wpr;
    const float* s = v.scales + (j0 + j) * gpr;
    __m512 acc[M];
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) acc[i] = _mm512_setzero_ps();
    if (G == 16) {  // groups of 16 (GGUF Q6_K): one scale per half; four chains (by half and 32-step parity)
      __m512 a[3][M];
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i) a[0][i] = a[1][i] = a[2][i] = _mm512_setzero_ps();
      auto step = [&]<int ODD>(int64_t c) __attribute__((always_inline)) {
        const __m512i W = _mm512_maskz_loadu_epi32(wmask, w + c / 32 * bits);
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) {
          const __m512 q = unpack(W, h), sv = _mm512_set1_ps(s[c / 16 + h]);
#pragma GCC unroll 4
          for (int i = 0; i < M; ++i) {
            const __m512 p = _mm512_mul_ps(q, _mm512_loadu_ps(XP + i * ldxp + c + 16 * h));
            if (ODD == 0 && h == 0) acc[i] = _mm512_fmadd_ps(sv, p, acc[i]);
            else a[2 * ODD + h - 1][i] = _mm512_fmadd_ps(sv, p, a[2 * ODD + h - 1][i]);
          }
        }
      };
      for (int64_t c = 0; c < v.cols; c += 64) {
        step.template operator()<0>(c);
        if (c + 32 < v.cols) step.template operator()<1>(c + 32);
      }
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i) acc[i] = _mm512_add_ps(_mm512_add_ps(acc[i], a[1][i]), _mm512_add_ps(a[0][i], a[2][i]));
    } else {
      for (int64_t g = 0; g < gpr; ++g) {
        __m512 p0[M], p1[M];
#pragma GCC unroll 4
        for (int i = 0; i < M; ++i) p0[i] = p1[i] = _mm512_setzero_ps();
        for (int64_t c = g * G; c < (g + 1) * G; c += 32) {
          const __m512i W = _mm512_maskz_loadu_epi32(wmask, w + c / 32 * bits);
          for (int h = 0; h < 2; ++h) {
            const __m512 q = unpack(W, h);
#pragma GCC unroll 4
            for (int i = 0; i < M; ++i) {
              const __m512 x = _mm512_loadu_ps(XP + i * ldxp + c + 16 * h);
              if (h == 0) p0[i] = _mm512_fmadd_ps(q, x, p0[i]);
              else p1[i] = _mm512_fmadd_ps(q, x, p1[i]);
            }
          }
        }
        const __m512 sv = _mm512_set1_ps(s[g]);
#pragma GCC unroll 4
        for (int i = 0; i < M; ++i) acc[i] = _mm512_fmadd_ps(sv, _mm512_add_ps(p0[i], p1[i]), acc[i]);
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
    case 2: return rows_shift_g<M, 2>(v, j0, n, alpha, XP, ldxp, XS, ldxs, beta, C, ldc);
    case 4: return rows_shift_g<M, 4>(v, j0, n, alpha, XP, ldxp, XS, ldxs, beta, C, ldc);
    case 8: return rows_shift_g<M, 8>(v, j0, n, alpha, XP, ldxp, XS, ldxs, beta, C, ldc);
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
// rows_shift_s reads 16-bit scales itself (SK 1, 2) for bits 2/4/8 (tested on the 16-core Sapphire Rapids
// host, 2026-12-05: Quant*, QuantInt8*, Gguf* pass).
const ft::quant_detail::Kernels kKernels = {dequant_any, rows_any, 16, (1u << 2) | (1u << 4) | (1u << 8)};

}  // namespace

const ft::quant_detail::Kernels* ft::quant_detail::kernels_avx512() { return &kKernels; }

void ft::quant_detail::expand_codes_avx512(const int8_t* codes, const float* sup, int64_t g0, int64_t n, int sg, float* out) {
  // 16 groups a vector: one multiplier (sg a multiple of 16) or two (sg == 8: the low and high 8 lanes)
  int64_t k = g0 / sg, left = sg - g0 % sg;  // super-group of group g0 + i, and its groups from g0 + i on
  for (int64_t i = 0; i < n; i += 16) {
    const __m512 c = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + i))));
    __m512 m;
    if (left >= 16) {
      m = _mm512_set1_ps(sup[k]);
      if ((left -= 16) == 0) ++k, left = sg;
    } else {  // left == 8 (sg == 8): this super-group's last 8, then the next one's first 8
      m = _mm512_insertf32x8(_mm512_set1_ps(sup[k]), _mm256_set1_ps(sup[k + 1]), 1);
      ++k;
    }
    _mm512_storeu_ps(out + i, _mm512_mul_ps(m, c));
  }
}
