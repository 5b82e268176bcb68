// AVX2 + FMA kernels of the fused attention (see autograd/attention_kernels.h): the same
// polynomial exp as attention_avx512.cpp, 8 lanes, row tails through padded stack copies; the tile
// GEMM (6×16 register tile) and an 8×8 register transpose.
// No STL here (ODR, see CMakeLists.txt): only <immintrin.h>, <cstdint>.
#include <immintrin.h>

#include <cstdint>

#include "autograd/attention_kernels.h"
#include "autograd/exp_poly.h"

namespace {

// exp(x); 0 for x < -87 (and -inf); NaN propagates.
inline __m256 exp_ps(__m256 x) {
  const __m256 live = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_NLT_UQ);
  x = _mm256_min_ps(_mm256_set1_ps(88.0f), _mm256_max_ps(_mm256_set1_ps(-87.0f), x));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(ft::exp_poly::kLog2e)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(ft::exp_poly::kLn2Hi), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(ft::exp_poly::kLn2Lo), r);
  __m256 p = _mm256_set1_ps(ft::exp_poly::kP0);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(ft::exp_poly::kP1));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(ft::exp_poly::kP2));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(ft::exp_poly::kP3));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(ft::exp_poly::kP4));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(ft::exp_poly::kP5));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  // 2^n through the exponent field (n in [-126, 127] after the clamp).
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_and_ps(live, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

inline float hmax(__m256 v) {
  __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_max_ps(x, _mm_movehl_ps(x, x));
  x = _mm_max_ss(x, _mm_movehdup_ps(x));
  return _mm_cvtss_f32(x);
}
inline float hsum(__m256 v) {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_movehdup_ps(x));
  return _mm_cvtss_f32(x);
}

// Runs f(pointer, count) over a row in 8-wide pieces; the tail goes through a padded copy.
template <class F>
inline void for_chunks(float* row, int64_t n, float pad, F f) {
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) f(row + j, 8);
  if (j < n) {
    alignas(32) float t[8];
    for (int q = 0; q < 8; ++q) t[q] = j + q < n ? row[j + q] : pad;
    f(t, int(n - j));
    for (int q = 0; q < n - j; ++q) row[j + q] = t[q];
  }
}

void softcap(float* S, int64_t m, int64_t n, int64_t ld, float cap) {
  const __m256 vinv = _mm256_set1_ps(1.0f / cap), vcap = _mm256_set1_ps(cap);
  const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f), m2 = _mm256_set1_ps(-2.0f);
  for (int64_t i = 0; i < m; ++i)
    for_chunks(S + i * ld, n, 0.0f, [&](float* p, int) {
      const __m256 y = _mm256_mul_ps(_mm256_loadu_ps(p), vinv);
      const __m256 e = exp_ps(_mm256_mul_ps(m2, _mm256_andnot_ps(sign, y)));
      const __m256 t = _mm256_div_ps(_mm256_sub_ps(one, e), _mm256_add_ps(one, e));
      _mm256_storeu_ps(p, _mm256_mul_ps(vcap, _mm256_or_ps(t, _mm256_and_ps(sign, y))));
    });
}

void online_softmax(float* S, int64_t m, int64_t n, int64_t ld, float* mrow, float* lrow, float* corr) {
  const float ninf = -__builtin_inff();
  for (int64_t i = 0; i < m; ++i) {
    float* row = S + i * ld;
    __m256 vmax = _mm256_set1_ps(ninf);
    for_chunks(row, n, ninf, [&](float* p, int) { vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(p)); });
    float mx = hmax(vmax);
    if (mrow[i] > mx) mx = mrow[i];
    if (mx == ninf) {
      for (int64_t j = 0; j < n; ++j) row[j] = 0.0f;
      corr[i] = 1.0f;
      continue;
    }
    const __m256 vmx = _mm256_set1_ps(mx);
    __m256 vsum = _mm256_setzero_ps();
    for_chunks(row, n, ninf, [&](float* p, int) {
      const __m256 e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(p), vmx));  // padding: exp(-inf) = 0
      _mm256_storeu_ps(p, e);
      vsum = _mm256_add_ps(vsum, e);
    });
    const float c = _mm256_cvtss_f32(exp_ps(_mm256_set1_ps(mrow[i] - mx)));
    corr[i] = c;
    lrow[i] = lrow[i] * c + hsum(vsum);
    mrow[i] = mx;
  }
}

void softmax_bwd(float* S, float* dP, int64_t m, int64_t n, int64_t ld, const float* lse,
                 const float* delta, float cap) {
  const __m256 one = _mm256_set1_ps(1.0f), vinv = _mm256_set1_ps(cap > 0 ? 1.0f / cap : 0.0f);
  for (int64_t i = 0; i < m; ++i) {
    float* srow = S + i * ld;
    float* drow = dP + i * ld;
    const __m256 vl = _mm256_set1_ps(lse[i]), vd = _mm256_set1_ps(delta[i]);
    auto step = [&](float* sp, float* dp) {
      const __m256 s = _mm256_loadu_ps(sp);
      const __m256 p = exp_ps(_mm256_sub_ps(s, vl));
      __m256 ds = _mm256_mul_ps(p, _mm256_sub_ps(_mm256_loadu_ps(dp), vd));
      if (cap > 0) {
        const __m256 t = _mm256_min_ps(one, _mm256_max_ps(_mm256_sub_ps(_mm256_setzero_ps(), one),
                                                          _mm256_mul_ps(s, vinv)));
        ds = _mm256_mul_ps(ds, _mm256_fnmadd_ps(t, t, one));
      }
      _mm256_storeu_ps(sp, p);
      _mm256_storeu_ps(dp, ds);
    };
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) step(srow + j, drow + j);
    if (j < n) {
      alignas(32) float ts[8], td[8];
      for (int q = 0; q < 8; ++q) {
        ts[q] = j + q < n ? srow[j + q] : -__builtin_inff();
        td[q] = j + q < n ? drow[j + q] : 0.0f;
      }
      step(ts, td);
      for (int q = 0; q < n - j; ++q) { srow[j + q] = ts[q]; drow[j + q] = td[q]; }
    }
  }
}

// ---------------------------------------------------------------- tile GEMM and transpose
// Same scheme as attention_avx512.cpp with 8-lane vectors: C[MR × 8·NV] (+)= Σ_k A(i, k)·B[k][:],
// A broadcast from memory through strides, B rows read directly. MASK: partial column chunk.
inline __m256i lanes8(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n < 0 ? 0 : n > 8 ? 8 : n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

template <int MR, int NV, bool MASK>
inline void gemm_tile(int64_t K, const float* A, int64_t sai, int64_t sak, const float* B, int64_t ldb,
                      float* C, int64_t ldc, __m256i k0, __m256i k1, bool acc) {
  auto load = [](const float* p, __m256i k) { return MASK ? _mm256_maskload_ps(p, k) : _mm256_loadu_ps(p); };
  __m256 c[NV][MR];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
    c[0][r] = acc ? load(C + r * ldc, k0) : _mm256_setzero_ps();
    if (NV == 2) c[NV - 1][r] = acc ? load(C + r * ldc + 8, k1) : _mm256_setzero_ps();
  }
  for (int64_t k = 0; k < K; ++k, A += sak, B += ldb) {
    const __m256 b0 = load(B, k0);
    const __m256 b1 = NV == 2 ? load(B + 8, k1) : b0;
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      const __m256 a = _mm256_broadcast_ss(A + r * sai);
      c[0][r] = _mm256_fmadd_ps(a, b0, c[0][r]);
      if (NV == 2) c[NV - 1][r] = _mm256_fmadd_ps(a, b1, c[NV - 1][r]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
    if (MASK) {
      _mm256_maskstore_ps(C + r * ldc, k0, c[0][r]);
      if (NV == 2) _mm256_maskstore_ps(C + r * ldc + 8, k1, c[NV - 1][r]);
    } else {
      _mm256_storeu_ps(C + r * ldc, c[0][r]);
      if (NV == 2) _mm256_storeu_ps(C + r * ldc + 8, c[NV - 1][r]);
    }
  }
}

template <int NV, bool MASK>
inline void gemm_rows(int mr, int64_t K, const float* A, int64_t sai, int64_t sak, const float* B, int64_t ldb,
                      float* C, int64_t ldc, __m256i k0, __m256i k1, bool acc) {
  switch (mr) {
#define FT_CASE(R) case R: return gemm_tile<R, NV, MASK>(K, A, sai, sak, B, ldb, C, ldc, k0, k1, acc);
    FT_CASE(1) FT_CASE(2) FT_CASE(3) FT_CASE(4) FT_CASE(5) FT_CASE(6)
#undef FT_CASE
  }
}

void gemm(int64_t m, int64_t n, int64_t K, const float* A, int64_t sai, int64_t sak, const float* B,
          int64_t ldb, float* C, int64_t ldc, bool acc) {
  for (int64_t c0 = 0; c0 < n; c0 += 16) {
    const int64_t nc = n - c0 < 16 ? n - c0 : 16;
    const __m256i k0 = lanes8(nc), k1 = lanes8(nc - 8);
    for (int64_t i0 = 0; i0 < m;) {
      const int mr = m - i0 >= 6 ? 6 : int(m - i0);
      const float* a = A + i0 * sai;
      float* c = C + i0 * ldc + c0;
      if (nc == 16) gemm_rows<2, false>(mr, K, a, sai, sak, B + c0, ldb, c, ldc, k0, k1, acc);
      else if (nc > 8) gemm_rows<2, true>(mr, K, a, sai, sak, B + c0, ldb, c, ldc, k0, k1, acc);
      else if (nc == 8) gemm_rows<1, false>(mr, K, a, sai, sak, B + c0, ldb, c, ldc, k0, k1, acc);
      else gemm_rows<1, true>(mr, K, a, sai, sak, B + c0, ldb, c, ldc, k0, k1, acc);
      i0 += mr;
    }
  }
}

// dst (cols × rows) = transpose of a rows × cols block (rows, cols <= 8).
inline void transpose8(const float* src, int64_t lds, int rows, int cols, float* dst, int64_t ldd) {
  __m256 r[8], t[8];
  const __m256i kc = lanes8(cols);
  for (int i = 0; i < 8; ++i) r[i] = i < rows ? _mm256_maskload_ps(src + i * lds, kc) : _mm256_setzero_ps();
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {
    r[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    r[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm256_permute2f128_ps(r[i], r[4 + i], 0x20);
    t[4 + i] = _mm256_permute2f128_ps(r[i], r[4 + i], 0x31);
  }
  if (rows == 8) {
    for (int c = 0; c < cols; ++c) _mm256_storeu_ps(dst + c * ldd, t[c]);
  } else {
    const __m256i kr = lanes8(rows);
    for (int c = 0; c < cols; ++c) _mm256_maskstore_ps(dst + c * ldd, kr, t[c]);
  }
}

void transpose(const float* src, int64_t lds, int64_t rows, int64_t cols, float* dst, int64_t ldd) {
  for (int64_t r0 = 0; r0 < rows; r0 += 8)
    for (int64_t c0 = 0; c0 < cols; c0 += 8)
      transpose8(src + r0 * lds + c0, lds, rows - r0 < 8 ? int(rows - r0) : 8, cols - c0 < 8 ? int(cols - c0) : 8,
                 dst + c0 * ldd + r0, ldd);
}

const ft::attn_detail::RowKernels kKernels = {softcap, online_softmax, softmax_bwd, gemm, transpose};

}  // namespace

const ft::attn_detail::RowKernels* ft::attn_detail::row_kernels_avx2() { return &kKernels; }
