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
  for (int r = 0; r < MR; ++r) acc0[r] = acc1[r] = _mm512_setzero_ps();
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
  for (int r = 0; r < MR; ++r) acc0[r] = acc1[r] = _mm512_setzero_ps();
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

const ft::gemm_detail::Kernels kTable = {MR, NR, kernel_f32, kernel_bf16};

}  // namespace

const ft::gemm_detail::Kernels* ft::gemm_detail::kernels_avx512() { return &kTable; }
