// AVX-512 kernels of the fused attention (see autograd/attention_kernels.h): vectorised exp/tanh
// (Cephes-style polynomial, exact 0 below -87), masked tails; an unpacked tile GEMM with broadcast
// A operand (12×32 register tile) and a 16×16 register transpose.
// No STL here (ODR, see CMakeLists.txt): only <immintrin.h>, <cstdint>.
#include <immintrin.h>

#include <cstdint>

#include "autograd/attention_kernels.h"
#include "autograd/exp_poly.h"

namespace {

inline __mmask16 lanes(int64_t n) { return n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1); }

// exp(x); 0 for x < -87 (and -inf); NaN propagates.
inline __m512 exp_ps(__m512 x) {
  const __mmask16 live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_NLT_UQ);
  x = _mm512_min_ps(_mm512_set1_ps(88.0f), _mm512_max_ps(_mm512_set1_ps(-87.0f), x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(ft::exp_poly::kLog2e)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(ft::exp_poly::kLn2Hi), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(ft::exp_poly::kLn2Lo), r);
  __m512 p = _mm512_set1_ps(ft::exp_poly::kP0);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(ft::exp_poly::kP1));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(ft::exp_poly::kP2));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(ft::exp_poly::kP3));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(ft::exp_poly::kP4));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(ft::exp_poly::kP5));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_maskz_scalef_ps(live, p, n);
}

inline float exp_scalar(float x) {
  return _mm_cvtss_f32(_mm512_castps512_ps128(exp_ps(_mm512_set1_ps(x))));
}

void softcap(float* S, int64_t m, int64_t n, int64_t ld, float cap) {
  const __m512 vinv = _mm512_set1_ps(1.0f / cap), vcap = _mm512_set1_ps(cap);
  const __m512 one = _mm512_set1_ps(1.0f), sign = _mm512_set1_ps(-0.0f);
  for (int64_t i = 0; i < m; ++i) {
    float* row = S + i * ld;
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 k = lanes(n - j);
      const __m512 y = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, row + j), vinv);
      const __m512 e = exp_ps(_mm512_mul_ps(_mm512_set1_ps(-2.0f), _mm512_andnot_ps(sign, y)));
      const __m512 t = _mm512_div_ps(_mm512_sub_ps(one, e), _mm512_add_ps(one, e));
      const __m512 st = _mm512_or_ps(t, _mm512_and_ps(sign, y));  // tanh(|y|) with y's sign
      _mm512_mask_storeu_ps(row + j, k, _mm512_mul_ps(vcap, st));
    }
  }
}

void online_softmax(float* S, int64_t m, int64_t n, int64_t ld, float* mrow, float* lrow, float* corr) {
  const __m512 ninf = _mm512_set1_ps(-__builtin_inff());
  for (int64_t i = 0; i < m; ++i) {
    float* row = S + i * ld;
    __m512 vmax = ninf;
    for (int64_t j = 0; j < n; j += 16)
      vmax = _mm512_max_ps(vmax, _mm512_mask_loadu_ps(ninf, lanes(n - j), row + j));
    float mx = _mm512_reduce_max_ps(vmax);
    if (mrow[i] > mx) mx = mrow[i];
    if (mx == -__builtin_inff()) {
      for (int64_t j = 0; j < n; j += 16) _mm512_mask_storeu_ps(row + j, lanes(n - j), _mm512_setzero_ps());
      corr[i] = 1.0f;
      continue;
    }
    const __m512 vmx = _mm512_set1_ps(mx);
    __m512 vsum = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 k = lanes(n - j);
      const __m512 p = _mm512_maskz_mov_ps(k, exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, row + j), vmx)));
      _mm512_mask_storeu_ps(row + j, k, p);
      vsum = _mm512_add_ps(vsum, p);
    }
    const float c = exp_scalar(mrow[i] - mx);
    corr[i] = c;
    lrow[i] = lrow[i] * c + _mm512_reduce_add_ps(vsum);
    mrow[i] = mx;
  }
}

void softmax_bwd(float* S, float* dP, int64_t m, int64_t n, int64_t ld, const float* lse,
                 const float* delta, float cap) {
  const __m512 one = _mm512_set1_ps(1.0f), vinv = _mm512_set1_ps(cap > 0 ? 1.0f / cap : 0.0f);
  for (int64_t i = 0; i < m; ++i) {
    float* srow = S + i * ld;
    float* drow = dP + i * ld;
    const __m512 vl = _mm512_set1_ps(lse[i]), vd = _mm512_set1_ps(delta[i]);
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 k = lanes(n - j);
      const __m512 s = _mm512_maskz_loadu_ps(k, srow + j);
      const __m512 p = exp_ps(_mm512_sub_ps(s, vl));
      __m512 ds = _mm512_mul_ps(p, _mm512_sub_ps(_mm512_maskz_loadu_ps(k, drow + j), vd));
      if (cap > 0) {
        const __m512 t = _mm512_min_ps(one, _mm512_max_ps(-one, _mm512_mul_ps(s, vinv)));
        ds = _mm512_mul_ps(ds, _mm512_fnmadd_ps(t, t, one));
      }
      _mm512_mask_storeu_ps(srow + j, k, p);
      _mm512_mask_storeu_ps(drow + j, k, ds);
    }
  }
}

// ---------------------------------------------------------------- tile GEMM and transpose
// C[MR × 16·NV] (+)= Σ_k A(i, k) · B[k][:], A(i, k) = A[i·sai + k·sak] broadcast from memory, B rows
// read directly (no packing: tiles are small and stay in L1/L2). k0/k1 mask the columns.
template <int MR, int NV>
inline void gemm_tile(int64_t K, const float* A, int64_t sai, int64_t sak, const float* B, int64_t ldb,
                      float* C, int64_t ldc, __mmask16 k0, __mmask16 k1, bool acc) {
  __m512 c[NV][MR];
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) {
    c[0][r] = acc ? _mm512_maskz_loadu_ps(k0, C + r * ldc) : _mm512_setzero_ps();
    if (NV == 2) c[NV - 1][r] = acc ? _mm512_maskz_loadu_ps(k1, C + r * ldc + 16) : _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < K; ++k, A += sak, B += ldb) {
    const __m512 b0 = _mm512_maskz_loadu_ps(k0, B);
    const __m512 b1 = NV == 2 ? _mm512_maskz_loadu_ps(k1, B + 16) : b0;
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
      const __m512 a = _mm512_set1_ps(A[r * sai]);
      c[0][r] = _mm512_fmadd_ps(a, b0, c[0][r]);
      if (NV == 2) c[NV - 1][r] = _mm512_fmadd_ps(a, b1, c[NV - 1][r]);
    }
  }
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) {
    _mm512_mask_storeu_ps(C + r * ldc, k0, c[0][r]);
    if (NV == 2) _mm512_mask_storeu_ps(C + r * ldc + 16, k1, c[NV - 1][r]);
  }
}

template <int NV>
inline void gemm_rows(int mr, int64_t K, const float* A, int64_t sai, int64_t sak, const float* B, int64_t ldb,
                      float* C, int64_t ldc, __mmask16 k0, __mmask16 k1, bool acc) {
  switch (mr) {
#define FT_CASE(R) case R: return gemm_tile<R, NV>(K, A, sai, sak, B, ldb, C, ldc, k0, k1, acc);
    FT_CASE(1) FT_CASE(2) FT_CASE(3) FT_CASE(4) FT_CASE(5) FT_CASE(6)
    FT_CASE(7) FT_CASE(8) FT_CASE(9) FT_CASE(10) FT_CASE(11) FT_CASE(12)
#undef FT_CASE
  }
}

void gemm(int64_t m, int64_t n, int64_t K, const float* A, int64_t sai, int64_t sak, const float* B,
          int64_t ldb, float* C, int64_t ldc, bool acc) {
  for (int64_t c0 = 0; c0 < n; c0 += 32) {
    const int64_t nc = n - c0 < 32 ? n - c0 : 32;
    const __mmask16 k0 = lanes(nc), k1 = nc > 16 ? lanes(nc - 16) : __mmask16(0);
    for (int64_t i0 = 0; i0 < m;) {
      const int mr = m - i0 >= 12 ? 12 : int(m - i0);
      if (nc > 16)
        gemm_rows<2>(mr, K, A + i0 * sai, sai, sak, B + c0, ldb, C + i0 * ldc + c0, ldc, k0, k1, acc);
      else
        gemm_rows<1>(mr, K, A + i0 * sai, sai, sak, B + c0, ldb, C + i0 * ldc + c0, ldc, k0, k1, acc);
      i0 += mr;
    }
  }
}

// dst (cols × rows) = transpose of a rows × cols block (rows, cols <= 16).
inline void transpose16(const float* src, int64_t lds, int rows, int cols, float* dst, int64_t ldd) {
  __m512 r[16], t[16];
  const __mmask16 kc = lanes(cols);
  for (int i = 0; i < 16; ++i) r[i] = i < rows ? _mm512_maskz_loadu_ps(kc, src + i * lds) : _mm512_setzero_ps();
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < 4; ++i) {
      t[8 * h + i] = _mm512_shuffle_f32x4(r[8 * h + i], r[8 * h + 4 + i], 0x88);
      t[8 * h + 4 + i] = _mm512_shuffle_f32x4(r[8 * h + i], r[8 * h + 4 + i], 0xdd);
    }
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0x88);
    r[8 + i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0xdd);
  }
  const __mmask16 kr = lanes(rows);
  for (int c = 0; c < cols; ++c) _mm512_mask_storeu_ps(dst + c * ldd, kr, r[c]);
}

void transpose(const float* src, int64_t lds, int64_t rows, int64_t cols, float* dst, int64_t ldd) {
  for (int64_t r0 = 0; r0 < rows; r0 += 16)
    for (int64_t c0 = 0; c0 < cols; c0 += 16)
      transpose16(src + r0 * lds + c0, lds, rows - r0 < 16 ? int(rows - r0) : 16,
                  cols - c0 < 16 ? int(cols - c0) : 16, dst + c0 * ldd + r0, ldd);
}

const ft::attn_detail::RowKernels kKernels = {softcap, online_softmax, softmax_bwd, gemm, transpose};

}  // namespace

const ft::attn_detail::RowKernels* ft::attn_detail::row_kernels_avx512() { return &kKernels; }
