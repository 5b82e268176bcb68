// AVX2 + FMA GEMM micro-kernel (fp32, 6×16 register tile), chosen at run time by autograd/gemm.cpp.
// bf16 weights are widened to fp32 while packing, so there is no bf16 kernel here.
// No STL here (ODR, see CMakeLists.txt): only <immintrin.h>, <cstdint>, <cstddef>.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "autograd/gemm_kernels.h"

namespace {

constexpr int MR = 6, NR = 16;

void kernel_f32(int64_t depth, const void* ap, const void* bp, float* c, int64_t ldc, int m, int n,
                float alpha, float beta) {
  const float* a = static_cast<const float*>(ap);
  const float* b = static_cast<const float*>(bp);
  __m256 acc0[MR], acc1[MR];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) acc0[r] = acc1[r] = _mm256_setzero_ps();
  for (int64_t d = 0; d < depth; ++d) {
    const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + r);
      acc0[r] = _mm256_fmadd_ps(av, b0, acc0[r]);
      acc1[r] = _mm256_fmadd_ps(av, b1, acc1[r]);
    }
    a += MR;
    b += NR;
  }
  const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
  if (m == MR && n == NR) {
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      float* cr = c + r * ldc;
      __m256 x0 = _mm256_mul_ps(acc0[r], va), x1 = _mm256_mul_ps(acc1[r], va);
      if (beta != 0.0f) {
        x0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(cr), x0);
        x1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(cr + 8), x1);
      }
      _mm256_storeu_ps(cr, x0);
      _mm256_storeu_ps(cr + 8, x1);
    }
    return;
  }
  alignas(32) float t[MR][NR];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
    _mm256_store_ps(t[r], _mm256_mul_ps(acc0[r], va));
    _mm256_store_ps(t[r] + 8, _mm256_mul_ps(acc1[r], va));
  }
  for (int r = 0; r < m; ++r) {
    float* cr = c + r * ldc;
    if (beta != 0.0f)
      for (int j = 0; j < n; ++j) cr[j] = t[r][j] + beta * cr[j];
    else
      for (int j = 0; j < n; ++j) cr[j] = t[r][j];
  }
}

const ft::gemm_detail::Kernels kTable = {MR, NR, kernel_f32, nullptr, nullptr, nullptr};

}  // namespace

const ft::gemm_detail::Kernels* ft::gemm_detail::kernels_avx2() { return &kTable; }
