#pragma once
// Internal to autograd/gemv*.cpp: the row kernel each ISA file exports.
// Included by *_avx2.cpp / *_avx512.cpp, so: no STL, only plain types.
#include <cstdint>

namespace ft::gemv_detail {

// Weight rows j < n, A rows i < m (1 <= m <= 4):
//   C[i*ldc + j] = alpha · Σ_{k<K} A_i[k] · W[j*ldw + k] + beta · C[i*ldc + j]   (beta == 0: C not read)
// mode 0: A float (row i at A + i*lda), W float.
// mode 1: A float, W bf16 (widened to fp32 exactly).
// mode 2: A bf16 (already rounded; row i at A + i*lda, in bf16 elements), W bf16; products
//         summed with vdpbf16ps (AVX512-BF16 only).
// mode 3: A float, W fp16 (widened to fp32 exactly).
using RowsFn = void (*)(int mode, int m, int64_t n, int64_t K, float alpha, const void* A,
                        int64_t lda, const void* W, int64_t ldw, float beta, float* C, int64_t ldc);

RowsFn rows_avx512();  // gemv_avx512.cpp (modes 0-3)
RowsFn rows_avx2();    // gemv_avx2.cpp (modes 0, 1, 3)

}  // namespace ft::gemv_detail
