// AVX-512 GEMM micro-kernels (fp32 FMA and AVX512-BF16 dot products), chosen at run time by
// autograd/gemm.cpp. Written with intrinsics rather than Highway's dynamic dispatch: the kernels
// need exact control of the register tile (28 accumulators) and of vdpbf16ps, and the dispatch
// itself is a single table lookup per GEMM, so Highway would add nothing but a dependency.
// No STL here (ODR, see CMakeLists.txt): only <immintrin.h>, <cstdint>, <cstddef>.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "autograd/gemm_kernels.h"

namespace {

constexpr int MR = 14, NR = 32;

inline __mmask16 lanes(int n) { return n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1); }

// Writes the accumulators: C = alpha*acc + beta*C on the m×n corner.
inline void store_tile(const __m512* acc0, const __m512* acc1, float* c, int64_t ldc, int m, int n,
                       float alpha, float beta) {
  const __mmask16 k0 = lanes(n), k1 = lanes(n - 16);
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 14
  for (int r = 0; r < MR; ++r) {
    if (r >= m) break;
    float* cr = c + r * ldc;
    __m512 x0 = _mm512_mul_ps(acc0[r], va), x1 = _mm512_mul_ps(acc1[r], va);
    if (beta != 0.0f) {
      x0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(k0, cr), x0);
      x1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(k1, cr + 16), x1);
    }
    _mm512_mask_storeu_ps(cr, k0, x0);
    _mm512_mask_storeu_ps(cr + 16, k1, x1);
  }
}

void kernel_f32(int64_t depth, const void* ap, const void* bp, float* c, int64_t ldc, int m, int n,
                float alpha, float beta) {
  const float* a = static_cast<const float*>(ap);
  const float* b = static_cast<const float*>(bp);
  __m512 acc0[MR], acc1[MR];
#pragma GCC unroll 14
  for (int r = 0; r < MR; ++r) {
    acc0[r] = acc1[r] = _mm512_setzero_ps();
    if (r < m) {  // the C tile is usually far (L3/DRAM): fetch it while the tile is computed
      _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + NR - 1), _MM_HINT_T0);
    }
  }
  for (int64_t d = 0; d < depth; ++d) {
    const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 14
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(a[r]);
      acc0[r] = _mm512_fmadd_ps(av, b0, acc0[r]);
      acc1[r] = _mm512_fmadd_ps(av, b1, acc1[r]);
    }
    a += MR;
    b += NR;
  }
  store_tile(acc0, acc1, c, ldc, m, n, alpha, beta);
}

void kernel_bf16(int64_t depth, const void* ap, const void* bp, float* c, int64_t ldc, int m, int n,
                 float alpha, float beta) {
  const int32_t* a = static_cast<const int32_t*>(ap);
  const uint32_t* b = static_cast<const uint32_t*>(bp);
  __m512 acc0[MR], acc1[MR];
#pragma GCC unroll 14
  for (int r = 0; r < MR; ++r) {
    acc0[r] = acc1[r] = _mm512_setzero_ps();
    if (r < m) {  // the C tile is usually far (L3/DRAM): fetch it while the tile is computed
      _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + NR - 1), _MM_HINT_T0);
    }
  }
  for (int64_t d = 0; d < depth; ++d) {
    const __m512bh b0 = (__m512bh)_mm512_load_si512(b), b1 = (__m512bh)_mm512_load_si512(b + 16);
#pragma GCC unroll 14
    for (int r = 0; r < MR; ++r) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(a[r]);
      acc0[r] = _mm512_dpbf16_ps(acc0[r], av, b0);
      acc1[r] = _mm512_dpbf16_ps(acc1[r], av, b1);
    }
    a += MR;
    b += NR;
  }
  store_tile(acc0, acc1, c, ldc, m, n, alpha, beta);
}

// ---------------------------------------------------------------- packing (see PackFn)
inline __mmask16 mask16(int64_t n) { return n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1); }
inline __mmask32 mask32(int64_t n) { return n >= 32 ? __mmask32(0xffffffffu) : n <= 0 ? __mmask32(0) : __mmask32((1u << n) - 1); }

// In-register transpose of a 16×16 block of 32-bit elements: r[i][j] -> r[j][i].
inline void transpose16(__m512i* r) {
  __m512i t[16];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {  // r[4i + c]: rows 4i..4i+3 of columns c + 4·(128-bit lane)
    r[4 * i + 0] = _mm512_unpacklo_epi64(t[4 * i + 0], t[4 * i + 2]);
    r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i + 0], t[4 * i + 2]);
    r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
#pragma GCC unroll 4
  for (int c = 0; c < 4; ++c) {
    const __m512i a = _mm512_shuffle_i32x4(r[c], r[4 + c], 0x88);
    const __m512i b = _mm512_shuffle_i32x4(r[c], r[4 + c], 0xdd);
    const __m512i cc = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0x88);
    const __m512i dd = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0xdd);
    t[c] = _mm512_shuffle_i32x4(a, cc, 0x88);
    t[c + 8] = _mm512_shuffle_i32x4(a, cc, 0xdd);
    t[c + 4] = _mm512_shuffle_i32x4(b, dd, 0x88);
    t[c + 12] = _mm512_shuffle_i32x4(b, dd, 0xdd);
  }
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

// Source element types (gemm_detail::kSrc*): 0 float, 1 bf16, 2 fp16. Pairs only from 0 and 1.
// 16 fp32 bit patterns from 16 bf16 / fp16 values (exact).
template <int SRC>
inline __m512i widen16(__m256i h) {
  if (SRC == 2) return _mm512_castps_si512(_mm512_cvtph_ps(h));
  return _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16);
}

// 16 depth units of one source row (lanes_are_rows), starting at unit u0, as 32-bit elements.
template <int SRC, bool PR>
inline __m512i load_units(const void* row, int64_t u0, int64_t kc) {
  if (!PR) {
    if (SRC != 0)
      return widen16<SRC>(_mm256_maskz_loadu_epi16(mask16(kc - u0), static_cast<const uint16_t*>(row) + u0));
    return _mm512_castps_si512(_mm512_maskz_loadu_ps(mask16(kc - u0), static_cast<const float*>(row) + u0));
  }
  const int64_t k0 = 2 * u0;
  if (SRC == 1) return _mm512_maskz_loadu_epi16(mask32(kc - k0), static_cast<const uint16_t*>(row) + k0);
  const float* p = static_cast<const float*>(row) + k0;
  const __m512 lo = _mm512_maskz_loadu_ps(mask16(kc - k0), p);
  const __m512 hi = _mm512_maskz_loadu_ps(mask16(kc - k0 - 16), p + 16);
  return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

// 16 lanes (from x0, nv valid) of depth row k of a lanes-contiguous 16-bit source (raw bits).
inline __m256i load_lanes16(const void* src, int64_t ld, int64_t k, int x0, int nv) {
  return _mm256_maskz_loadu_epi16(mask16(nv), static_cast<const uint16_t*>(src) + k * ld + x0);
}

template <int SRC, bool PR>
void pack_t(const void* src, int64_t ld, bool lanes_are_rows, int w, int n, int64_t kc, uint32_t* dst) {
  const int64_t units = PR ? (kc + 1) / 2 : kc;
  const int np = (n + w - 1) / w;
  const size_t esz = SRC != 0 ? 2 : 4;
  if (lanes_are_rows) {  // per 16 lanes × 16 units: load rows, transpose in registers, store
    for (int q = 0; q < np; ++q) {
      uint32_t* pd = dst + q * units * w;
      for (int x0 = 0; x0 < w; x0 += 16) {
        const int lane = q * w + x0;
        const int nv = n - lane < 16 ? n - lane : 16, wv = w - x0 < 16 ? w - x0 : 16;
        const __mmask16 st = mask16(wv);
        for (int64_t u0 = 0; u0 < units; u0 += 16) {
          __m512i r[16];
#pragma GCC unroll 16
          for (int i = 0; i < 16; ++i)
            r[i] = i < nv ? load_units<SRC, PR>(static_cast<const char*>(src) + (lane + i) * ld * esz, u0, kc)
                          : _mm512_setzero_si512();
          transpose16(r);
          const int64_t du = units - u0 < 16 ? units - u0 : 16;
#pragma GCC unroll 16
          for (int d = 0; d < 16; ++d)
            if (d < du) _mm512_mask_storeu_epi32(pd + (u0 + d) * w + x0, st, r[d]);
        }
      }
    }
    return;
  }
  // lanes contiguous: walk the source row by row (each row once, sequentially) for all panels
  for (int64_t d = 0; d < units; ++d) {
    for (int q = 0; q < np; ++q) {
      uint32_t* pd = dst + q * units * w + d * w;
      for (int x0 = 0; x0 < w; x0 += 16) {
        const int lane = q * w + x0;
        const int nv = n - lane < 16 ? n - lane : 16, wv = w - x0 < 16 ? w - x0 : 16;
        __m512i v = _mm512_setzero_si512();
        if (nv > 0) {
          // rows are ld apart, too far for the hardware prefetcher: fetch 8 rows ahead
          if (d + 8 < units)
            _mm_prefetch(static_cast<const char*>(src) + ((PR ? 2 : 1) * (d + 8) * ld + lane) * esz, _MM_HINT_T0);
          if (PR && d + 8 < units)
            _mm_prefetch(static_cast<const char*>(src) + ((2 * (d + 8) + 1) * ld + lane) * esz, _MM_HINT_T0);
          if (!PR) {
            v = SRC != 0 ? widen16<SRC>(load_lanes16(src, ld, d, lane, nv))
                         : _mm512_castps_si512(_mm512_maskz_loadu_ps(mask16(nv), static_cast<const float*>(src) + d * ld + lane));
          } else {
            __m512i lo, hi = _mm512_setzero_si512();
            if (SRC == 1) {  // bf16 bits in the low half of each 32-bit element
              lo = _mm512_cvtepu16_epi32(load_lanes16(src, ld, 2 * d, lane, nv));
              if (2 * d + 1 < kc) hi = _mm512_cvtepu16_epi32(load_lanes16(src, ld, 2 * d + 1, lane, nv));
            } else {
              const float* p = static_cast<const float*>(src) + 2 * d * ld + lane;
              lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask16(nv), p)));
              if (2 * d + 1 < kc)
                hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask16(nv), p + ld)));
            }
            v = _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
          }
        }
        _mm512_mask_storeu_epi32(pd + x0, mask16(wv), v);
      }
    }
  }
}

void pack(const void* src, int64_t ld, int src_type, bool lanes_are_rows, bool pairs, int w, int n,
          int64_t kc, uint32_t* dst) {
  if (src_type == ft::gemm_detail::kSrcF16) {  // never in pairs mode (fp16 is not bf16)
    pack_t<2, false>(src, ld, lanes_are_rows, w, n, kc, dst);
  } else if (src_type == ft::gemm_detail::kSrcBF16) {
    if (pairs) pack_t<1, true>(src, ld, lanes_are_rows, w, n, kc, dst);
    else pack_t<1, false>(src, ld, lanes_are_rows, w, n, kc, dst);
  } else {
    if (pairs) pack_t<0, true>(src, ld, lanes_are_rows, w, n, kc, dst);
    else pack_t<0, false>(src, ld, lanes_are_rows, w, n, kc, dst);
  }
}

const ft::gemm_detail::Kernels kTable = {MR, NR, kernel_f32, kernel_bf16, pack, pack, nullptr, nullptr};

}  // namespace

const ft::gemm_detail::Kernels* ft::gemm_detail::kernels_avx512() { return &kTable; }
