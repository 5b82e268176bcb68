#pragma once
// ft's GEMM: every matmul in ft goes through these. Row-major, BLAS semantics:
//   C[M×N] = alpha · op(A) · op(B) + beta · C
// op(A) is M×K: A[i*lda + k], or with trans_a A is stored K×M and op(A)[i][k] = A[k*lda + i].
// op(B) is K×N: B[k*ldb + j], or with trans_b B is stored N×K and op(B)[k][j] = B[j*ldb + k].
// beta == 0: C is write-only (its old contents, even NaN/inf, are ignored).
// alpha == 0 or K == 0: A and B are not read; C = beta·C.
// Leading dimensions must be >= the stored row width (and >= 1); bad arguments throw ft::Error.
//
// Packed, cache-blocked (BLIS-style) with register-blocked micro-kernels chosen at run time
// (autograd/cpu.h; FT_ISA overrides): AVX-512 14×32, AVX2 6×16, portable SSE2 6×8.
// Parallel with TBB over blocks of C using every core (num_threads()); safe and not
// oversubscribing when called from inside a TBB parallel region (nested tasks share the pool).
// With AVX-512, M <= 4 and trans_b (decode-time x·Wᵀ) skip packing: B is streamed once.
// Summation order depends on the K-blocking (from the L2 size) and the path, never on the
// thread count: results are deterministic for a given machine, ISA path and shape.
#include <cstdint>

namespace ft {

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
           const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
           int64_t ldc);

// Same, but B holds bf16 values (raw uint16_t bits; weights), A and C are fp32. Two precisions,
// the same on every CPU and ISA path (only the summation order differs between paths):
//   round_a = false (the default; inference): exact — the fp32 product of A with B's bf16 values
//     (B is widened to fp32 exactly while packing), as transformers computes with dtype=float32.
//   round_a = true (`--dtype bfloat16` training, `--compute bfloat16`; torch.autocast's matmul
//     semantics): A is first rounded to bf16 (round to nearest even, relative error <= 2^-9; fp32
//     denormals may become 0) and the exact bf16×bf16 products are summed in fp32. Computed on
//     AMX tiles (tdpbf16ps) where cpu_features().amx, with vdpbf16ps where fast_bf16_dot (AMD Zen
//     4/5), and elsewhere by rounding A's packed panels and running the fp32 kernel on them.
// gemm_bf16_dot_path() names the kernel the rounding mode uses now.
void gemm_bf16w(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                const float* A, int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C,
                int64_t ldc, bool round_a = false);
// "amx", "avx512bf16" (vdpbf16ps) or "fp32" (rounded A, widened B, fp32 FMA): what gemm_bf16w
// with round_a uses under the ISA in effect.
const char* gemm_bf16_dot_path();

// In place: p[i] = bf16_to_f32(f32_to_bf16(p[i])) (the rounding of gemm_bf16w's round_a).
void round_to_bf16(float* p, int64_t n);

// Same, but B holds IEEE fp16 values (raw uint16_t bits; `--dtype float16` base weights). B is
// widened to fp32 exactly while packing (F16C vcvtph2ps in the AVX2 / AVX-512 packers, a scalar
// conversion on the portable path); no fp32 copy of B is made. The result is bit-identical to
// sgemm on the widened B.
void gemm_f16w(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
               const float* A, int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C,
               int64_t ldc);

// Same, but B is a quantised matrix (autograd/quant.h) [rows, cols]: with trans_b N = rows and
// K = cols (y = x·Wᵀ), without it K = rows and N = cols (dX = dY·W). B is dequantised while packing
// (AVX-512 / AVX2 kernels for 4 and 8 bits, portable otherwise), never copied whole; the result is
// bit-identical to sgemm on the dequantised fp32 matrix (same ISA path) — except M <= kGemvMaxRows
// with trans_b, which reads the packed codes directly (qgemv: fp32 but regrouped by the affine
// identity, within the error bound stated in autograd/quant.h).
// round_a (bf16 autocast, `--dtype bfloat16` training): op(A) and the dequantised B are rounded to
// bf16 and their products summed in fp32 (bf16 dot products / AMX where the CPU has them) — bit for
// bit gemm_bf16w(round_a) on the bf16-rounded dequantised matrix. The decode GEMV (M <= kGemvMaxRows
// with trans_b) ignores it and stays exact fp32.
// Int8ComputeGuard (`--compute int8`, autograd/quant.h): with trans_b and a 4- or 8-bit W in groups
// of 32/64/128, x is rounded to int8 per block of 32 and the product runs on the packed codes —
// qgemv_int8 for M <= kGemvMaxRows, qgemm_int8 (the cache-blocked int8 GEMM) above, each row of C
// bit for bit what qgemv_int8 gives for that row alone; round_a is then ignored. Without trans_b
// (backward dX = dY·W) and for other widths nothing changes.
struct QuantParams;
void gemm_qw(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
             const QuantParams& B, float beta, float* C, int64_t ldc, bool round_a = false);

// batch independent sgemms: item b uses A + b*stride_a, B + b*stride_b, C + b*stride_c
// (e.g. attention scores per head). Parallel over items and blocks within them.
void sgemm_batched(bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K,
                   float alpha, const float* A, int64_t lda, int64_t stride_a, const float* B,
                   int64_t ldb, int64_t stride_b, float beta, float* C, int64_t ldc,
                   int64_t stride_c);

}  // namespace ft
