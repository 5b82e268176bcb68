// AVX-512 row kernels of the fused attention (see autograd/attention_kernels.h): vectorised
// exp/tanh (Cephes-style polynomial, ~1 ulp-ish, exact 0 below -87), masked tails.
// No STL here (ODR, see CMakeLists.txt): only <immintrin.h>, <cstdint>.
#include <immintrin.h>

#include <cstdint>

#include "autograd/attention_kernels.h"

namespace {

inline __mmask16 lanes(int64_t n) { return n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1); }

// exp(x); 0 for x < -87 (and -inf); NaN propagates.
inline __m512 exp_ps(__m512 x) {
  const __mmask16 live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_NLT_UQ);
  x = _mm512_min_ps(_mm512_set1_ps(88.0f), _mm512_max_ps(_mm512_set1_ps(-87.0f), x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
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

const ft::attn_detail::RowKernels kKernels = {softcap, online_softmax, softmax_bwd};

}  // namespace

const ft::attn_detail::RowKernels* ft::attn_detail::row_kernels_avx512() { return &kKernels; }
