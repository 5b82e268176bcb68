#pragma once
// Skinny products with a row-major weight, the memory-bound core of batch-1 decode:
//   C[M×N] = alpha · A[M×K] · Wᵀ + beta · C        W stored [N, K] (row j at W + j·ldw)
// A and C are fp32; W is fp32, bf16 or fp16 (raw uint16_t bits). beta == 0: C is write-only.
//
// Every weight byte is read once, row after row (one sequential stream per task), and each row's
// dot products with all M rows of A are done while the row is in L1, so it runs at the memory's
// read bandwidth for M up to a few rows. Parallel with TBB over blocks of output rows (>= 32 KiB
// of weights per task). Kernels per ISA (autograd/gemv_avx512.cpp, gemv_avx2.cpp, a portable
// one in gemv.cpp), chosen at run time from cpu_features() (FT_ISA caps them).
//
// Precision: fp32 accumulation with 16 (AVX-512) / 8 (AVX2) / 8 (portable) partial sums per
// row; the order is fixed by the ISA path and K: results never depend on the thread count, on M
// (a row of A gives the same output alone or beside others) or on the weights' alignment, and
// fp16 / bf16 (widened) weights give the same bits as their fp32 values. bf16 weights with round_a:
// as gemm_bf16w (gemm.h) — A is rounded to bf16 (RNE), then summed with vdpbf16ps where
// fast_bf16_dot, elsewhere as fp32 products with the widened weights. fp16 / fp32 weights ignore
// round_a (always exact).
//
// sgemm / gemm_bf16w / gemm_f16w call this for M <= kGemvMaxRows with trans_b (a transposed A
// is first copied to rows).
#include <cstdint>

#include "autograd/dtype.h"

namespace ft {

// The GEMM hands products with at most this many rows of A to gemv.
constexpr int64_t kGemvMaxRows = 4;

// Any M >= 0 works (rows of A are taken kGemvMaxRows at a time, each group reading W once).
// lda >= K, ldw >= K, ldc >= N; w_dtype F32, BF16 or F16. Bad arguments throw ft::Error.
// allow_parallel = false runs on the calling thread only.
void gemv(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const void* W,
          DType w_dtype, int64_t ldw, float beta, float* C, int64_t ldc, bool allow_parallel = true,
          bool round_a = false);

}  // namespace ft
