#pragma once
// Internal to autograd/quant*.cpp: the kernels each ISA file exports for quantised matrices
// (format MlxAffine, every bit width; vector unpacking for 4 and 8 bits).
// Included by *_avx2.cpp / *_avx512.cpp, so: no STL, only plain types.
#include <cstdint>

namespace ft::quant_detail {

// One quantised matrix W [rows, cols] (see autograd/quant.h).
struct View {
  int bits, group;
  int64_t cols, wpr, gpr;    // columns, uint32 words per row, groups per row
  const uint32_t* packed;    // rows × wpr
  const float* scales;       // rows × gpr
  const float* biases;       // rows × gpr
};

// out[c - c0] = W[r][c] for c in [c0, c1); c0 and c1 multiples of 8 (an 8-chunk never straddles a
// group, nor does a 16-chunk starting at a multiple of 16: groups are 16, 32, 64 or 128). w = scale·q + bias: product rounded, then sum rounded.
using DequantFn = void (*)(const View& v, int64_t r, int64_t c0, int64_t c1, float* out);

// Rows j0 .. j0+n-1 of W, m (1..4) rows of A (row i at A + i·lda, K = cols, a multiple of 32):
//   C[i·ldc + j] = alpha · Σ_k A_i[k]·W[j0+j][k] + beta · C[i·ldc + j]   (beta == 0: C not read)
// with the weights dequantised as DequantFn does and summed in the order of ft::gemv's fp32 kernel
// of the same ISA (autograd/gemv_avx*.cpp), so the results are those of gemv on the dequantised W.
using RowsFn = void (*)(const View& v, int m, int64_t j0, int64_t n, float alpha, const float* A, int64_t lda, float beta,
                        float* C, int64_t ldc);

struct Kernels {
  DequantFn dequant;
  RowsFn rows;
};

const Kernels* kernels_avx2();    // quant_avx2.cpp
const Kernels* kernels_avx512();  // quant_avx512.cpp

}  // namespace ft::quant_detail
