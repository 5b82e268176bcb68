#pragma once
// Quantised weight matrices: packed integers + per-group parameters + a format tag.
//
// A quantised matrix is an ordinary Tensor of dtype DType::Q with the logical shape [rows, cols]
// (a Projection's weight [out, in], an embedding [vocab, hidden]); its bytes live in the
// QuantParams it carries (TensorImpl::quant). It is frozen: it never requires a gradient, and it
// never exists as a full float copy — the GEMM dequantises it while packing (autograd/gemm.h,
// gemm_qw), the decode GEMV reads the packed integers (qgemv: regrouped, not bit-identical to the
// GEMM), the embedding dequantises the rows it gathers. Tensor::to(F32) (dequantize()) makes an explicit float copy, for merging/exporting.
//
// Format MlxAffine (mlx `affine_quantize`, mlx/backend/cpu/quantized.cpp as of commit 784203f,
// 2025; docs: ../shared/docs/formats.md "MLX quantised weights"):
//   packed  uint32 [rows, cols·bits/32]: each row one little-endian, LSB-first bit stream of
//           `bits`-bit codes q (element c at bit c·bits of the row), bits 2, 3, 4, 5, 6, 8.
//   scales, biases [rows, cols/group_size] (group_size 32, 64, 128 — MLX's sizes — or 16, which
//           MLX does not write but GGUF's Q6_K needs; groups run along a row; cols a multiple of 32):
//           w[r][c] = scale·q + bias, evaluated in fp32 as MLX's float kernels do: the product
//           rounded, then the sum rounded (never fused: the quant kernels are built with
//           -ffp-contract=off).
// Scales and biases are held in 16 bits (fp16 or bf16) wherever that is exact — as an MLX
// checkpoint stores them, as quantize_affine rounds them for a 16-bit input, and for GGUF blocks
// whose scales are the file's own fp16 values (compact_quant_scales) — as two levels for GGUF's
// K-quants (an 8-bit code per group times an fp32 multiplier per super-block: QuantParams::two_level)
// and as fp32 otherwise (fp32 checkpoints). The kernels widen them exactly to fp32, a
// block of rows at a time, so the arithmetic is the same either way; 16 bits cut the bytes a decode
// step reads (4-bit in groups of 32: 6 → 5 bits per weight) and the memory of a quantised model.
// scale_dtype records the dtype they are written back in.
// GGUF's block formats (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) are re-expressed exactly
// in this format when a GGUF file is read (models/gguf_packed.h): every block is groups of 16 or 32
// codes with one scale and one offset each.
#include <cstdint>
#include <memory>
#include <string>

#include "autograd/tensor.h"

namespace ft {

enum class QuantFormat : uint8_t { MlxAffine };
const char* quant_format_name(QuantFormat f);  // "affine"

struct QuantParams {
  QuantFormat format = QuantFormat::MlxAffine;
  int bits = 4;
  int group_size = 64;
  int64_t rows = 0, cols = 0;
  Tensor packed;                   // I32 (raw uint32 words) [rows, words_per_row()], contiguous
  Tensor scales, biases;           // F32, F16 or BF16 (one dtype for both) [rows, groups_per_row()], contiguous
  DType scale_dtype = DType::F32;  // dtype of scales/biases in the checkpoint (and when saved)
  // Two-level scales (GGUF's K-quants), super_group > 0: `scales` and `biases` are undefined; every
  // group has a signed 8-bit scale code and bias code (scale_codes / bias_codes: I32 [rows, gpr/4],
  // four codes per word, group g in byte g % 4 of word g / 4), and every super_group consecutive groups
  // of a row share an fp32 multiplier pair (super_scales / super_biases: F32 [rows, gpr/super_group]):
  //   scale[r][g] = super_scales[r][g / super_group] · code,   bias likewise   (fp32 products)
  // The kernels widen them into fp32 a block of rows at a time, as they do 16-bit scales, so the
  // arithmetic is that of a one-level fp32 copy holding those products. For the K-quants the products
  // are exact (fp16 d or dmin times an integer of at most 8 bits): 4.75 bits a weight for Q4_K in
  // memory instead of 6 with one fp32 scale and bias per group of 32 (the file: 4.5).
  int super_group = 0;
  Tensor scale_codes, bias_codes, super_scales, super_biases;
  // Biases derived from the scales (GGUF's symmetric Q4_0, Q5_0, Q8_0: bias = −2^(bits−1)·d), when
  // nonzero: `biases` is undefined and every group's bias is bias_from_scale · its scale, a power of two
  // (−2^(bits−1)) times the scale, so the fp32 product is exact and every kernel computes what it
  // would with those biases stored (0.5 bit a weight less in memory: Q4_0 4.5, Q8_0 8.5).
  int bias_from_scale = 0;
  int64_t words_per_row() const { return cols * bits / 32; }
  int64_t groups_per_row() const { return group_size ? cols / group_size : 0; }
  bool two_level() const { return super_group > 0; }
  size_t nbytes() const;  // packed + scales + biases, as held in memory
};

inline bool is_quantized(const Tensor& t) { return t.defined() && t.dtype() == DType::Q; }
// The parameters of a quantised tensor (throws ft::Error when t is not quantised).
const QuantParams& quant_params(const Tensor& t);

// Checks bits (2, 3, 4, 5, 6, 8), group size (16, 32, 64, 128), cols divisible by the group and by
// 32, and the shapes/dtypes of packed/scales/biases against rows × cols; `what` (a tensor name)
// starts every error message.
void check_quant_params(const QuantParams& p, const std::string& what);
bool quant_bits_supported(int bits);
bool quant_group_supported(int group_size);  // MLX's group sizes (checkpoints, --group-size): 32, 64, 128
bool quant_group_valid(int group_size);      // what the kernels run: 16 (GGUF Q6_K) and MLX's

// Stores fp32 scales and biases in fp16, else bf16, when every value converts there and back
// bit for bit (nothing changes otherwise, or when they are 16-bit already).
void compact_quant_scales(QuantParams& p);

// The fp32 scales (biases: false) or biases (true) of rows [r0, r1) as a new F32 tensor [r1 − r0, gpr]:
// the stored values widened, or the two-level products.
Tensor quant_group_params(const QuantParams& p, bool biases, int64_t r0, int64_t r1);
Tensor quant_group_params(const QuantParams& p, bool biases);  // every row

// Wraps checked params as a DType::Q tensor [rows, cols]. packed must be 4-byte aligned.
Tensor make_quantized(QuantParams p, const std::string& what = "quantized weight");

// MLX affine quantisation of a float matrix w [rows, cols] (F32, BF16 or F16) with MLX's
// integers: per group, w_min/w_max; scale = max((max − min)/(2^bits − 1), 1e-7), negated unless
// |min| > |max|; edge = the larger-magnitude end; q0 = rint(edge/scale); if q0 != 0:
// scale = edge/q0, bias = edge, else bias = 0; q = clamp(rint((w − bias)/scale), 0, 2^bits − 1)
// with that fp32 scale/bias; the stored scale/bias are then rounded to scale_dtype and kept in it
// (as MLX stores them in the input's dtype; fp32 unless scale_dtype is BF16 or F16). Works row block by row block (no float copy of w is made).
// group_size: quant_group_valid.
Tensor quantize_affine(const Tensor& w, int bits, int group_size, DType scale_dtype, const std::string& what = "weight");

// Dequantises rows [r0, r1) × columns [c0, c1) into out (row stride ldo), any bounds.
void dequantize_block(const QuantParams& q, int64_t r0, int64_t r1, int64_t c0, int64_t c1, float* out, int64_t ldo);
Tensor dequantize(const Tensor& w);  // F32 [rows, cols] (an explicit full copy)
// Code of element (r, c): the unsigned integer in the packed stream.
uint32_t quant_code(const QuantParams& q, int64_t r, int64_t c);

// Rows [r0, r1) of a quantised matrix as a quantised matrix (views, no copy).
Tensor quant_slice_rows(const Tensor& w, int64_t r0, int64_t r1);

// C[M×N] = alpha · A[M×K] · Wᵀ + beta · C with W quantised [N, K]: the decode GEMV, reading the
// packed codes (AVX-512 / AVX2 kernels, portable otherwise). It uses the affine identity
//   y = Σ_g ( s_g · Σ_{c∈g} q_c·x_c ) + Σ_g b_g · (Σ_{c∈g} x_c)
// with Σ x per group computed once per row of A: the codes are widened to fp32 exactly and every
// product and sum is fp32 (no reduced-precision inputs), but the rounding order differs from a GEMV
// on the dequantised weights (scale·q + bias rounded per weight), so results are not bit-identical
// to gemm_qw's GEMM path or to sgemm on dequantize(W). Error bound (tests/test_quant.cpp,
// Quant.GemvMatchesDoubleReference): |y − y_exact| <= K·2⁻²³·Σ_g(|s_g|·Σ|q·x| + |b_g|·|Σ x|) + tiny,
// y_exact the dot with the dequantised weights in double. The order of the sums is fixed by the ISA
// path, bits, group size and K: results never depend on the thread count, on M (a row of A gives
// the same output alone or beside others) or on which rows a task gets.
void qgemv(int64_t M, const float* A, int64_t lda, const QuantParams& W, float alpha, float beta, float* C, int64_t ldc,
           bool allow_parallel = true);

// ---- opt-in int8 activations (`ft generate|eval --compute int8`, Int8ComputeGuard below)
// The same product with x rounded to int8, as llama.cpp's quantised dot products do (its Q8_0 / Q8_1
// activations): NOT exact, never the default. Each row of A is cut into blocks of 32 (within a
// group); per block b
//   amax = max |x_c|,  d_b = amax / 127 (fp32),  id = d_b != 0 ? 1 / d_b : 0 (fp32),
//   xq_c = x_c·id (fp32) rounded to the nearest integer, ties to even, in [−127, 127]
// (llama.cpp: the same with ties away from zero, and d_b stored as fp16), and the product is the
// dequantised weights' dot with the rounded x̃_c = d_b·xq_c:
//   C = alpha · Σ_g Σ_{b∈g} d_b · ( s_g·Σ_{c∈b} q_c·xq_c + b_g·Σ_{c∈b} xq_c ) + beta · C
// where the integer sums are exact (int32: AVX512-VNNI / AVX-VNNI vpdpbusd, AVX2 vpmaddubsw +
// vpmaddwd for 4-bit codes and a widening vpmaddwd for 8-bit ones, or scalar) and only the fp32
// combination rounds:
//   |C − C_exact| <= (K/32 + groups + 40)·2⁻²³·Σ_g Σ_{b∈g} d_b·(|s_g|·Σ|q·xq| + |b_g|·Σ|xq|)
// (alpha = 1, beta = 0), C_exact the formula in exact arithmetic (tests/test_quant_int8.cpp). The
// bias term uses the rounded x's sums, as llama.cpp's Q4_1/Q4_K dot products (Q8_1's s = d·Σ xq):
// with the unrounded Σ x instead, the error of the codes' term s·q·(x̃ − x) is not cancelled by the
// bias's and the output error doubles (measured: 2.2% against 1.2% relative RMS error on a 4-bit
// g64 matrix; bench/RESULTS.md). The summation order is fixed by the ISA path, bits, group and K:
// results never depend on the thread count, on M or on neighbouring rows. On CPUs with AMX-INT8 the
// GEMM (qgemm_int8: prompts and eval batches) multiplies on AMX tiles with the portable kernel's
// order (per block the exact int32 sum, then d_b·sum summed over the group's blocks, s_g· that,
// the bias terms apart, each a fused multiply-add), bit for bit the portable kernel's; the decode GEMV (M <= 4) keeps the
// AVX512-VNNI order, so there a prompt row and a decode row of the same x may differ in the last bits
// (both within the bound above; tests/test_quant_int8.cpp). Supported: bits 4 and 8,
// groups 32, 64, 128 (qgemv_int8_supported: MLX 4/8-bit, GGUF Q4_0, Q4_1, Q4_K, Q8_0); other widths
// (2, 3, 5, 6 bits: GGUF Q5_*) and groups of 16 (GGUF Q6_K) run the exact qgemv.
bool qgemv_int8_supported(const QuantParams& W);
// The mode, per thread (off by default; set for a scope by generate/eval with --compute int8): while
// on, the GEMM entry points (autograd/gemm.h gemm_qw, through linear, lora_linear and the LM head)
// route every forward product y = x·Wᵀ (trans_b) with a weight that qgemv_int8_supported accepts to
// the int8 kernels: the decode GEMV (M <= kGemvMaxRows rows) to qgemv_int8, anything larger (prefill,
// eval batches) to qgemm_int8; each output row is the same either way (except on AMX-INT8 CPUs, see
// above). Products without trans_b
// (backward dX = dY·W), weights of other widths (exact qgemv / the exact GEMM), non-quantised weights
// and training are unchanged. Read on the calling thread when the product starts.
bool int8_compute();
struct Int8ComputeGuard {
  bool prev;
  explicit Int8ComputeGuard(bool on = true);
  ~Int8ComputeGuard();
  Int8ComputeGuard(const Int8ComputeGuard&) = delete;
  Int8ComputeGuard& operator=(const Int8ComputeGuard&) = delete;
};
// qgemv_int8: the decode schedule (each task a range of W's rows, all M rows of A over them) for
// M <= 4, qgemm_int8's for more rows. Unsupported W: the exact qgemv.
void qgemv_int8(int64_t M, const float* A, int64_t lda, const QuantParams& W, float alpha, float beta, float* C, int64_t ldc,
                bool allow_parallel = true);
// The int8 GEMM (prefill, `--compute int8`): the same arithmetic as qgemv_int8, cache-blocked for
// many rows of A: each row of A rounded to int8 once per call, then tasks of (a block of A's rows,
// kept in L2) × (a chunk of W's rows, walked in panels kept in L1), with 4 × 4 register tiles
// (vpdpbusd) on AVX512-VNNI, 16 × 16 AMX tiles (tdpbusd) on AMX-INT8. Every output is bit-identical
// to qgemv_int8 on its row of A alone — on AMX-INT8, to the portable kernel's (the qgemv_int8 of
// FT_ISA=baseline) — whatever M, the thread count or the tiling (tests/test_quant_int8.cpp
// QuantInt8.GemmRowsAreTheGemvBitForBit). Unsupported W: the exact qgemv.
void qgemm_int8(int64_t M, const float* A, int64_t lda, const QuantParams& W, float alpha, float beta, float* C, int64_t ldc,
                bool allow_parallel = true);
// The ISA path qgemv_int8 takes now: "avx512vnni", "avxvnni", "avx2" (vpmaddubsw/vpmaddwd) or "portable".
const char* qgemv_int8_path();
// The path qgemm_int8 takes now: "amx" on AMX-INT8 CPUs, else qgemv_int8_path().
const char* qgemm_int8_path();

}  // namespace ft
