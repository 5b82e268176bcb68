// AVX512-VNNI kernel of the opt-in int8 decode GEMV (qgemv_int8, autograd/quant.h; layouts:
// autograd/quant_kernels.h). Built with the AVX-512 flags plus -mavx512vnni (CMakeLists.txt) and
// called only when the CPU has both. Per 64 bytes of a row of W (a chunk: 128 4-bit or 64 8-bit
// codes): 8-bit codes go to vpdpbusd as they are; 4-bit codes as two vectors (low nibbles = even
// codes, high nibbles = odd codes) against x's even and odd int8 values, two vpdpbusd into the same
// int32 lanes (lane l = the 8 codes of word l). Each chunk's int32 sums are exact (at most
// 8·15·127 or 4·255·127 per lane); they are converted to fp32 and scaled by the lane's block scale
// d_b and group scale s_g. One row of A takes 4 rows of W at a time (2 rows: 2), sharing the loads of
// x, with the codes and scales of the row group two groups ahead prefetched, as quant_avx512.cpp;
// every output's operations and their order are the same whatever its neighbours (R, M), so results
// do not depend on how rows are split.
// No STL here (ODR, see CMakeLists.txt): only <immintrin.h>, <cstdint>.
#include <immintrin.h>

#include <cstdint>

#include "autograd/quant_avx512_util.h"
#include "autograd/quant_int8_prep.h"
#include "autograd/quant_kernels.h"

namespace {

using ft::quant_detail::View;

inline __mmask64 first_bytes(int64_t n) { return n >= 64 ? ~__mmask64(0) : (__mmask64(1) << n) - 1; }

// R rows of W (j .. j+R-1) × M rows of A. CH codes per chunk; one_group: a group spans whole chunks
// (the group scale enters once per group), else a chunk spans ns = CH/G groups (a permute of the
// chunk's group scales gives each lane its scale).
template <int M, int BITS, int G, int R, int SK>
inline void rows_r(const View& v, int64_t j, float alpha, const int8_t* XQ, int64_t ldxq, const float* XD, int64_t ldxd,
                   const float* XS, int64_t ldxs, float beta, float* C, int64_t ldc, __m512i sidx, __m512i widx, bool prefetch) {
  constexpr int CPL = 32 / BITS, CH = 16 * CPL;
  constexpr bool one_group = CH <= G;
  constexpr int per = one_group ? G / CH : 1;  // chunks per group
  constexpr int ns = one_group ? 1 : CH / G;   // groups per chunk
  const int64_t K = v.cols, gpr = v.gpr, wpr = v.wpr;
  const int64_t nch = (K + CH - 1) / CH;
  const int64_t tailb = (K % CH) * BITS / 8;  // bytes of W in a partial last chunk (only when !one_group)
  const void* sbase = SK ? static_cast<const void*>(v.scales16) : static_cast<const void*>(v.scales);
  const void* bbase = SK ? static_cast<const void*>(v.biases16) : static_cast<const void*>(v.biases);
  const unsigned char* w[R];
  const void* s[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    w[r] = reinterpret_cast<const unsigned char*>(v.packed + (j + r) * wpr);
    s[r] = sc_ptr<SK>(sbase, (j + r) * gpr);
  }
  // The codes of the row group two groups ahead (the caller checks that they exist) are prefetched a
  // few lines per chunk, spread over this group's chunks (as quant_int8_avx2.h; all at once, they stall
  // on the line-fill buffers when the weights come from memory), their scales at once.
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
  const __m512i nib = _mm512_set1_epi8(0x0f), zero = _mm512_setzero_si512();
  __m512 acc[R * M], t[R * M];
#pragma GCC unroll 4
  for (int u = 0; u < R * M; ++u) acc[u] = _mm512_setzero_ps();
  // f[u] = the chunk's products (fp32, per lane: the exact int32 sum), times the lane's d_b
  auto chunk = [&](int64_t ci, __m512* f) __attribute__((always_inline)) {
    const bool full = ci + 1 < nch || tailb == 0;
    for (int64_t b = ci * pf_per_chunk; b < (ci + 1) * pf_per_chunk; b += 64) _mm_prefetch(pf + b, _MM_HINT_T0);
    __m512i x0[M], x1[M];
    __m512 d[M];
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) {
      const int8_t* xq = XQ + i * ldxq + ci * CH;
      x0[i] = _mm512_loadu_si512(xq);
      if constexpr (BITS == 4) x1[i] = _mm512_loadu_si512(xq + 64);
      d[i] = _mm512_loadu_ps(XD + i * ldxd + ci * 16);
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m512i W = full ? _mm512_loadu_si512(w[r] + ci * 64) : _mm512_maskz_loadu_epi8(first_bytes(tailb), w[r] + ci * 64);
      if constexpr (BITS == 4) {
        const __m512i lo = _mm512_and_si512(W, nib), hi = _mm512_and_si512(_mm512_srli_epi16(W, 4), nib);
#pragma GCC unroll 4
        for (int i = 0; i < M; ++i) {
          const __m512i q = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, lo, x0[i]), hi, x1[i]);
          f[r * M + i] = _mm512_mul_ps(_mm512_cvtepi32_ps(q), d[i]);
        }
      } else {
#pragma GCC unroll 4
        for (int i = 0; i < M; ++i) f[r * M + i] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(zero, W, x0[i])), d[i]);
      }
    }
  };
  __m512 f[R * M];
  if constexpr (one_group) {
    for (int64_t g = 0; g < gpr; ++g) {
      chunk(g * per, t);
      for (int64_t ci = g * per + 1; ci < (g + 1) * per; ++ci) {
        chunk(ci, f);
#pragma GCC unroll 4
        for (int u = 0; u < R * M; ++u) t[u] = _mm512_add_ps(t[u], f[u]);
      }
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const __m512 sv = sc_bcast<SK>(s[r], g);
#pragma GCC unroll 4
        for (int i = 0; i < M; ++i) acc[r * M + i] = _mm512_fmadd_ps(sv, t[r * M + i], acc[r * M + i]);
      }
    }
  } else {
    for (int64_t ci = 0; ci < nch; ++ci) {
      chunk(ci, f);
      const int64_t g0 = ci * ns;
      const __mmask16 sm = first_n(ns < gpr - g0 ? ns : gpr - g0);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const __m512 sv = sc_perm<SK>(s[r], g0, sm, sidx, widx);
#pragma GCC unroll 4
        for (int i = 0; i < M; ++i) acc[r * M + i] = _mm512_fmadd_ps(sv, f[r * M + i], acc[r * M + i]);
      }
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) bias_terms<M, SK>(sc_ptr<SK>(bbase, (j + r) * gpr), gpr, XS, ldxs, acc + r * M, v.bias_mul);
  store_outputs<R, M>(acc, alpha, beta, C, ldc, 0);  // C points at row j's outputs
}

template <int M, int BITS, int G, int SK>
void rows_mbgs(const View& v, int64_t j0, int64_t n, float alpha, const int8_t* XQ, int64_t ldxq, const float* XD, int64_t ldxd,
              const float* XS, int64_t ldxs, float beta, float* C, int64_t ldc) {
  constexpr int CPL = 32 / BITS, CH = 16 * CPL;
  constexpr int R = M == 1 ? 4 : M == 2 ? 2 : 1;  // rows of W at a time: R·M <= 4 outputs
  alignas(64) int32_t t[16];
  for (int l = 0; l < 16; ++l) t[l] = CH <= G ? 0 : int32_t(l * CPL / G);
  const __m512i sidx = _mm512_load_si512(t), widx = sc_widx(t);
  int64_t j = 0;
  for (; j + R <= n; j += R)
    rows_r<M, BITS, G, R, SK>(v, j0 + j, alpha, XQ, ldxq, XD, ldxd, XS, ldxs, beta, C + j, ldc, sidx, widx, j + 3 * R <= n);
  for (; j < n; ++j) rows_r<M, BITS, G, 1, SK>(v, j0 + j, alpha, XQ, ldxq, XD, ldxd, XS, ldxs, beta, C + j, ldc, sidx, widx, false);
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
// (up to 4 × 4 = 16 accumulators), x's int8 values and block scales taken straight from memory as
// vpdpbusd / vmulps operands. Every output gets exactly rows_r's operations in rows_r's order:
//   per chunk f = cvt(int32 lane sums)·d (vmulps); one_group: t = f, t += f over the group's further
//   chunks, acc = fma(s_g, t, acc); else acc = fma(permuted group scales, f, acc); then bias_terms,
//   the same 16-lane reduction (reduce4) and alpha·sum (+ beta·C)
// so each output is bit-identical to qgemv_int8's for that row of A alone.
template <int M, int BITS, int G, int R>
inline void tile(const View& v, int64_t j, float alpha, const int8_t* XQ, int64_t ldxq, const float* XD, int64_t ldxd,
                 const float* XS, int64_t ldxs, float beta, float* C, int64_t ldc, __m512i sidx) {
  constexpr int CPL = 32 / BITS, CH = 16 * CPL;
  constexpr bool one_group = CH <= G;
  constexpr int per = one_group ? G / CH : 1;
  constexpr int ns = one_group ? 1 : CH / G;
  const int64_t K = v.cols, gpr = v.gpr, wpr = v.wpr;
  const int64_t nch = (K + CH - 1) / CH;
  const int64_t tailb = (K % CH) * BITS / 8;
  const unsigned char* w[R];
  const float* s[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    w[r] = reinterpret_cast<const unsigned char*>(v.packed + (j + r) * wpr);
    s[r] = v.scales + (j + r) * gpr;
  }
  const __m512i nib = _mm512_set1_epi8(0x0f), zero = _mm512_setzero_si512();
  __m512 acc[R * M];
#pragma GCC unroll 16
  for (int u = 0; u < R * M; ++u) acc[u] = _mm512_setzero_ps();
  // f = chunk ci's products of W row r with A row i (fp32 lanes: the exact int32 sums times d_b)
  auto prod = [&](int64_t ci, __m512i lo, __m512i hi, int i) __attribute__((always_inline)) {
    const int8_t* xq = XQ + i * ldxq + ci * CH;
    __m512i q;
    if constexpr (BITS == 4)
      q = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, lo, _mm512_loadu_si512(xq)), hi, _mm512_loadu_si512(xq + 64));
    else
      q = _mm512_dpbusd_epi32(zero, lo, _mm512_loadu_si512(xq));
    return _mm512_mul_ps(_mm512_cvtepi32_ps(q), _mm512_loadu_ps(XD + i * ldxd + ci * 16));
  };
  auto load_w = [&](int64_t ci, int r, __m512i& lo, __m512i& hi) __attribute__((always_inline)) {
    const bool full = ci + 1 < nch || tailb == 0;
    const __m512i W = full ? _mm512_loadu_si512(w[r] + ci * 64) : _mm512_maskz_loadu_epi8(first_bytes(tailb), w[r] + ci * 64);
    if constexpr (BITS == 4) {
      lo = _mm512_and_si512(W, nib);
      hi = _mm512_and_si512(_mm512_srli_epi16(W, 4), nib);
    } else {
      lo = W;
      hi = W;
    }
  };
  if constexpr (one_group && per > 1) {  // 8-bit codes in groups of 128: two chunks per group
    __m512 t[R * M];
    for (int64_t g = 0; g < gpr; ++g) {
      for (int k = 0; k < per; ++k) {
        const int64_t ci = g * per + k;
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
          __m512i lo, hi;
          load_w(ci, r, lo, hi);
#pragma GCC unroll 4
          for (int i = 0; i < M; ++i) {
            const __m512 f = prod(ci, lo, hi, i);
            t[r * M + i] = k == 0 ? f : _mm512_add_ps(t[r * M + i], f);
          }
        }
      }
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const __m512 sv = _mm512_set1_ps(s[r][g]);
#pragma GCC unroll 4
        for (int i = 0; i < M; ++i) acc[r * M + i] = _mm512_fmadd_ps(sv, t[r * M + i], acc[r * M + i]);
      }
    }
  } else {
    for (int64_t ci = 0; ci < nch; ++ci) {
      const int64_t g0 = ci * ns;
      const __mmask16 sm = first_n(ns < gpr - g0 ? ns : gpr - g0);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        __m512i lo, hi;
        load_w(ci, r, lo, hi);
        const __m512 sv = one_group ? _mm512_set1_ps(s[r][ci]) : _mm512_permutexvar_ps(sidx, _mm512_maskz_loadu_ps(sm, s[r] + g0));
#pragma GCC unroll 4
        for (int i = 0; i < M; ++i) acc[r * M + i] = _mm512_fmadd_ps(sv, prod(ci, lo, hi, i), acc[r * M + i]);
      }
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) bias_terms<M>(v.biases + (j + r) * gpr, gpr, XS, ldxs, acc + r * M);
  // the outputs in groups of four accumulators (reduce4: an output's bits do not depend on its group)
  alignas(16) float sum[4];
#pragma GCC unroll 4
  for (int u0 = 0; u0 < R * M; u0 += 4) {
    const int nu = R * M - u0 < 4 ? R * M - u0 : 4;
    _mm_store_ps(sum, _mm_mul_ps(_mm_set1_ps(alpha), reduce4(acc + u0, nu)));
    for (int k = 0; k < nu; ++k) {
      const int r = (u0 + k) / M, i = (u0 + k) % M;
      float* c = C + i * ldc + r;
      *c = beta != 0.0f ? sum[k] + beta * *c : sum[k];
    }
  }
}

template <int N>
struct IntC {
  static constexpr int value = N;
};

// Rows j0 .. j0+n-1 of W × m (any) rows of A: panels of R rows of W (R·K/2 or R·K bytes of codes,
// kept in L1) over which every 4-row block of A passes in turn; the last n mod R rows one at a time.
template <int BITS, int G>
void gemm_bg(const View& v, int m, int64_t j0, int64_t n, float alpha, const int8_t* XQ, int64_t ldxq, const float* XD, int64_t ldxd,
             const float* XS, int64_t ldxs, float beta, float* C, int64_t ldc) {
  constexpr int CPL = 32 / BITS, CH = 16 * CPL;
  constexpr int R = CH < G ? 2 : 4;  // two chunks per group need 2·R·M accumulators
  alignas(64) int32_t t[16];
  for (int l = 0; l < 16; ++l) t[l] = CH <= G ? 0 : int32_t(l * CPL / G);
  const __m512i sidx = _mm512_load_si512(t);
  auto blocks = [&](auto rr, int64_t j) __attribute__((always_inline)) {
    constexpr int RR = decltype(rr)::value;
    int i0 = 0;
    for (; i0 + 4 <= m; i0 += 4)
      tile<4, BITS, G, RR>(v, j0 + j, alpha, XQ + i0 * ldxq, ldxq, XD + i0 * ldxd, ldxd, XS + i0 * ldxs, ldxs, beta, C + i0 * ldc + j, ldc, sidx);
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

// x rounded to int8 per block of 32 (quant_kernels.h Int8PrepFn; quant_avx512_util.h round_block32).
void prep(const float* x, int64_t K, int bits, int8_t* XQ, float* XD, int32_t* BS) {
  const int64_t CH = 16 * (32 / bits);
  for (int64_t b = 0; b < K / 32; ++b) {
    float d;
    const __m256i q = round_block32(x + 32 * b, &d, BS + b);
    store_block(q, d, b, bits, CH, XQ, XD);
  }
}

// rows_mbgs reads 16-bit scales itself (SK 1, 2); gemm_any is a 4×4 vpdpbusd tile for prefill (tested on the
// 16-core Sapphire Rapids host, 2026-12-05: QuantInt8* pass; BM_QGemm 1.3-1.9x the panels of `rows`).
const ft::quant_detail::Int8Kernels kKernels = {prep, rows_any, gemm_any, 16, "avx512vnni", true, false};

}  // namespace

const ft::quant_detail::Int8Kernels* ft::quant_detail::int8_kernels_avx512vnni() { return &kKernels; }
