#pragma once
// Internal to autograd/ops_attention.cpp: the parts of a flash-attention tile (softcap, online
// softmax, softmax backward, tile GEMM), one table per ISA (attention_avx512.cpp, attention_avx2.cpp,
// a portable one in ops_attention.cpp). Included by the ISA files, so: no STL, only plain types.
//
// A tile is m rows × n columns of scores, row-major with row stride ld (floats). Masked scores are
// -inf. Exponentials of arguments below about -87 are exactly 0 (masked entries contribute nothing).
#include <cstdint>

namespace ft::attn_detail {

struct RowKernels {
  // S = cap · tanh(S / cap), in place.
  void (*softcap)(float* S, int64_t m, int64_t n, int64_t ld, float cap);
  // One online-softmax step. Per row i: mx = max(mrow[i], max_j S[i][j]). When mx is -inf (nothing
  // visible yet) the row of S becomes 0 and corr[i] = 1. Otherwise S[i][j] = exp(S[i][j] - mx),
  // corr[i] = exp(mrow[i] - mx), lrow[i] = lrow[i]·corr[i] + Σ_j S[i][j], mrow[i] = mx.
  void (*online_softmax)(float* S, int64_t m, int64_t n, int64_t ld, float* mrow, float* lrow,
                         float* corr);
  // Softmax backward. Per row i, with lse[i] (+inf for a row without any visible key) and
  // delta[i] = Σ_d dO·O:  P = exp(S - lse[i]) written over S;
  // dS = P · (dP - delta[i]) · (cap > 0 ? 1 - clamp(S / cap, -1, 1)² : 1) written over dP
  // (S here is the soft-capped, masked score before the exponential).
  void (*softmax_bwd)(float* S, float* dP, int64_t m, int64_t n, int64_t ld, const float* lse,
                      const float* delta, float cap);
  // Optional (null: the driver uses ft::sgemm). Tile GEMM with the A operand read through strides:
  // C[i][c] = (acc ? C[i][c] : 0) + Σ_{k<K} A[i·sai + k·sak] · B[k·ldb + c],  i < m, c < n.
  void (*gemm)(int64_t m, int64_t n, int64_t K, const float* A, int64_t sai, int64_t sak, const float* B,
               int64_t ldb, float* C, int64_t ldc, bool acc);
  // dst[c·ldd + r] = src[r·lds + c] for r < rows, c < cols. Set together with gemm.
  void (*transpose)(const float* src, int64_t lds, int64_t rows, int64_t cols, float* dst, int64_t ldd);
};

// Test hook (ops_attention.cpp): forces the tile sizes, query positions × keys per block (0 =
// automatic), so that tests reach many blocks, partial tiles and split keys with small tensors, and
// the backward schedule (0 = automatic, 1 = two sweeps, 2 = one pass per (batch, kv head)).
void set_test_overrides(int64_t positions, int64_t keys, int backward);

const RowKernels* row_kernels_avx2();    // attention_avx2.cpp
const RowKernels* row_kernels_avx512();  // attention_avx512.cpp

}  // namespace ft::attn_detail
