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
  const float* scales;       // rows × gpr, fp32 (skind 0)
  const float* biases;       // rows × gpr
  // skind 1 (fp16) / 2 (bf16): the scales and biases are 16-bit values in scales16 / biases16 instead,
  // widened exactly by the kernel as it reads them. Only the kernels that say so (Kernels::rows16_bits,
  // Int8Kernels::reads16) get such a View; quant.cpp widens a block of rows into fp32 for the others.
  int skind = 0;
  const uint16_t* scales16 = nullptr;
  const uint16_t* biases16 = nullptr;
  // Nonzero (QuantParams::bias_from_scale, direct Views only): biases / biases16 point at the scales
  // and each group's bias is bias_mul (a power of two) times its scale, an exact fp32 product; the
  // kernels that read a direct View multiply as they read. Views with widened scales carry explicit
  // fp32 biases (bias_mul 0).
  float bias_mul = 0.0f;
};

// out[c - c0] = W[r][c] for c in [c0, c1); c0 and c1 multiples of 8 (an 8-chunk never straddles a
// group, nor does a 16-chunk starting at a multiple of 16: groups are 16, 32, 64 or 128). w = scale·q + bias: product rounded, then sum rounded.
using DequantFn = void (*)(const View& v, int64_t r, int64_t c0, int64_t c1, float* out);

// The decode GEMV (see qgemv in autograd/quant.h) regroups each dot product by the affine identity
//   Σ_c x[c]·(s_g·q[c] + b_g) = Σ_g ( s_g · Σ_{c∈g} q[c]·x[c] ) + Σ_g b_g · xs[g],  xs[g] = Σ_{c∈g} x[c]
// in fp32 (codes widened to float exactly, products fused into fp32 accumulators, no int8 x).
// The caller prepares each row i of A once per call:
//   XP + i·ldxp: x in the kernel's unpack order, zero-padded to a whole number of blocks (see
//                permuted_layout); XS + i·ldxs: the group sums xs[0 .. gpr) of the unpermuted x.
// Groups of 16 (GGUF Q6_K) and MLX's 32, 64, 128; K a multiple of 32. Rows j0 .. j0+n-1 of W, m (1..4) rows of A:
//   C[i·ldc + j] = alpha · (Σ_g s_g·Σ q·x + Σ_g b_g·xs[g]) + beta · C[i·ldc + j]   (beta == 0: C not read)
// Each output is summed in an order fixed by the ISA path, bits, group and K alone (never by j0, n,
// m or the thread count).
using RowsFn = void (*)(const View& v, int m, int64_t j0, int64_t n, float alpha, const float* XP, int64_t ldxp,
                        const float* XS, int64_t ldxs, float beta, float* C, int64_t ldc);

// The unpack order of a kernel with `lanes` 32-bit lanes (16 AVX-512, 8 AVX2) for bits 2, 4 and 8
// (codes never straddle a word): a block of `lanes` consecutive words holds B = lanes·(32/bits) codes;
// vector k (k < 32/bits) of a block holds in lane l the code (block + l·(32/bits) + k), so
//   XP[block + k·lanes + l] = x[block + l·(32/bits) + k]   (0 past K; XP is padded to whole blocks).
// Other bit widths (3, 5, 6), and lanes == 0 (the portable kernel), use x in its natural order.
inline bool permuted_layout(int lanes, int bits) { return lanes > 0 && (bits == 2 || bits == 4 || bits == 8); }


struct Kernels {
  DequantFn dequant;
  RowsFn rows;
  int lanes;
  unsigned rows16_bits;  // bit b set: `rows` reads 16-bit scales (View::skind 1, 2) itself for b-bit codes
};

// dst[i] = the 16-bit value src[i] widened to fp32 (exact), i < n: IEEE fp16 (F16C vcvtph2ps) or
// bf16 (a 16-bit shift). quant_avx2.cpp (needs avx2 + f16c).
void widen16_avx2(const uint16_t* src, float* dst, int64_t n, bool bf16);

// Two-level scales (QuantParams::two_level): out[i] = sup[(g0 + i) / sg] · codes[i] for i < n (fp32
// products, as the portable loop computes them), g0, n and sg multiples of 8. quant_avx2.cpp.
void expand_codes_avx2(const int8_t* codes, const float* sup, int64_t g0, int64_t n, int sg, float* out);
// The same for g0, n multiples of 16 and sg == 8 or a multiple of 16. quant_avx512.cpp.
void expand_codes_avx512(const int8_t* codes, const float* sup, int64_t g0, int64_t n, int sg, float* out);

const Kernels* kernels_avx2();    // quant_avx2.cpp
const Kernels* kernels_avx512();  // quant_avx512.cpp

// ---- the opt-in int8 GEMV (qgemv_int8 in autograd/quant.h): bits 4 and 8, groups 32, 64, 128.
// The caller prepares each row i of A once per call (quant.cpp), in the layout of a kernel with
// `lanes` 32-bit lanes (0: the portable kernel):
//   XQ + i·ldxq: x rounded to int8 per block of 32. lanes == 0: natural order. lanes L > 0: chunks
//     of CH = L·(32/bits) codes (the codes of 4L bytes of a row of W: lane l of a vpdpbusd covers
//     word l, i.e. codes l·(32/bits) .. +32/bits of the chunk); 8 bits: natural order; 4 bits: the
//     chunk's even codes, then its odd ones (byte j of W holds codes 2j and 2j+1 in its low and high
//     nibble):  XQ[c·CH + j] = xq[c·CH + 2j],  XQ[c·CH + 4L + j] = xq[c·CH + 2j + 1]  (j < 4L).
//     Zero-padded to whole chunks.
//   XD + i·ldxd: the block scales d. lanes == 0: d[b] per block of 32. lanes L > 0: per chunk c and
//     lane l the d of the block holding the lane's codes, XD[c·L + l] = d[(c·CH + l·32/bits) / 32]
//     (0 past K).
//   XS + i·ldxs: the group sums of the ROUNDED x, Σ_{b∈g} d_b·Σ_{c∈b} xq_c (fp32, block order).
//   C[i·ldc + j] = alpha·(Σ_g s_g·Σ_b d_b·Σ q·xq + Σ_g b_g·XS[g]) + beta·C[i·ldc + j] (beta == 0: not read)
using Int8RowsFn = void (*)(const View& v, int m, int64_t j0, int64_t n, float alpha, const int8_t* XQ, int64_t ldxq,
                            const float* XD, int64_t ldxd, const float* XS, int64_t ldxs, float beta, float* C, int64_t ldc);
// Rounds one row x[0 .. K) (K a multiple of 32) to int8 per block of 32 exactly as qgemv_int8
// states (d = amax/127, id = 1/d or 0, x·id clamped to [−127, 127] — a NaN to −127 — rounded to
// nearest even) and writes XQ and XD in the kernel's layout; the padding past K is left as it is
// (the caller zeroes it), and BS[b] = Σ xq over block b (exact).
using Int8PrepFn = void (*)(const float* x, int64_t K, int bits, int8_t* XQ, float* XD, int32_t* BS);
// The int8 GEMM (qgemm_int8 in autograd/quant.h): the same contract as Int8RowsFn but m is any
// count >= 1 (the kernel tiles the rows of A itself; the caller picks m and n so that the rows of A
// stay in L2), and every output bit-identical to what `rows` gives for that row of A alone (the same
// operations in the same order). nullptr: the caller runs `rows` over panels of W instead.
struct Int8Kernels {
  Int8PrepFn prep;
  Int8RowsFn rows;
  Int8RowsFn gemm;  // may be nullptr
  int lanes;
  const char* name;
  bool reads16;  // `rows` (and `gemm`) read 16-bit scales (View::skind 1, 2) themselves
  // The AMX tile layout instead of the one above (rows of A in tiles of 16; the caller starts every
  // block of rows it passes at a multiple of 16 and zero-pads the last tile). For tile t of rows
  // 16t .. 16t+15 (lane l = row 16t + l), from XQ + 16t·ldxq (ldxq = K), XD + 16t·ldxd (ldxd = K/32),
  // XS + 16t·ldxs (ldxs = groups per row):
  //   XQ: per block b of 32, 512 bytes at b·512: byte 64r + 4l + i = xq_l[32b + o(4r + i)] (r < 8,
  //       i < 4), o(p) = p for 8-bit codes; 4-bit: the block's even codes then its odd ones,
  //       o(p) = 2p (p < 16), 2(p − 16) + 1 (p >= 16)
  //   XD: d_b of row l at b·16 + l;   XS: the group sum of row l at g·16 + l.
  // `prep` then writes one row in natural order with one d per block (lanes == 0's layout), and the
  // caller scatters it. Both `rows` and `gemm` take this layout.
  bool tiled = false;
};
const Int8Kernels* int8_kernels_amx();         // quant_int8_amx.cpp (needs amx_int8 + avx512f)
const Int8Kernels* int8_kernels_avx512vnni();  // quant_int8_avx512.cpp (needs avx512f + avx512vnni)
const Int8Kernels* int8_kernels_avxvnni();     // quant_int8_avxvnni.cpp (avx2 + avxvnni)
const Int8Kernels* int8_kernels_avx2();        // quant_int8_avx2.cpp (avx2: vpmaddubsw / vpmaddwd)

}  // namespace ft::quant_detail
