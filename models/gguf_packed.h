#pragma once
// GGUF's quantised blocks kept packed: each block format re-expressed exactly as affine groups of
// DType::Q (autograd/quant.h: unsigned codes u, one scale s and one bias b per group, w = s·u + b,
// the product rounded and then the sum rounded). Block layouts: models/gguf_quant.h.
//
//   type   bits group  code u                 scale s        bias b
//   Q8_0    8    32    q + 128                d              −128·d
//   Q4_0    4    32    q (0..15)              d              −8·d
//   Q4_1    4    32    q                      d              m
//   Q5_0    5    32    q (0..31)              d              −16·d
//   Q5_1    5    32    q                      d              m
//   Q4_K    4    32    q                      d·sc_j         −dmin·m_j      (j: sub-block of 32)
//   Q5_K    5    32    q                      d·sc_j         −dmin·m_j
//   Q6_K    6    16    q (0..63)              d·sc_j         −32·d·sc_j     (j: sub-block of 16)
//
// Exactness (every value equals what ggml's dequantiser, ggml_dequantize_row, computes in fp32):
// d, dmin and m are fp16 values (11 significant bits), sc_j/m_j integers of at most 6 bits (8 for
// Q6_K's int8 scales, |sc| <= 128: 7 significant bits), so the scale d·sc_j (<= 18 bits), the bias
// products (a power of two times an exact scale, or dmin·m_j <= 17 bits) and s·u (<= 18 + 6 = 24
// bits for Q6_K, fewer for the others) are all exact in fp32. Then:
//  - Q4_1, Q5_1: ggml computes d·q + m — the same two roundings in the same order.
//  - Q4_K, Q5_K: ggml computes (d·sc)·q − dmin·m; s·u + b is that sum, the one rounding of the same
//    exact operands (x − y and x + (−y) round identically).
//  - Q8_0, Q4_0, Q5_0, Q6_K: ggml computes d·(q − z) (Q6_K: (d·sc)·(q − 32)), a product of at most
//    23 significant bits, so exact; s·u + b = s·(u − z) exactly (both terms exact, the exact sum is
//    representable), hence equal. The one difference: where q − z = 0 and s < 0, ggml gives −0 and
//    the affine form +0 (equal values, and no sum or product of the model tells them apart except in
//    the sign of an exactly-zero result).
// Every product being exact, an FMA (as compilers may emit for llama.cpp's own kernels) gives the
// same values too. This holds for finite d/dmin; a file with inf/NaN scales gives NaNs either way.
#include <cstdint>
#include <string>
#include <vector>

#include "autograd/quant.h"
#include "models/gguf.h"

namespace ft {

struct GgufAffine {
  int bits = 0, group = 0;
};
// The affine form of a GGUF block type; bits 0 for types not kept packed (F32, F16, BF16).
GgufAffine gguf_affine_of(GgmlType t);

// A quantised GGUF matrix [rows, cols] (row r's blocks at data + r·ggml_row_bytes(t, cols)) as a
// DType::Q tensor, converted block by block (no float copy is made). row_src (optional, rows
// entries) reorders the rows: destination row i is source row row_src[i]. scale_dtype of the
// result is F32 (the products d·sc are not all fp16 values); the scales and biases are held in fp16
// where every value is one (compact_quant_scales: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0), and the symmetric
// types' offsets −2^(bits−1)·d are derived from the scales, not stored (QuantParams::bias_from_scale:
// 4.5 bits a weight for Q4_0, 5.5 for Q5_0, 8.5 for Q8_0, as in the file); the K-quants keep
// their two levels (QuantParams::two_level: the 8-bit sub-block codes and one fp32 d and −dmin
// (Q6_K: d and −32·d) per super-block of 256, the products being the table's scales and biases
// exactly): 4.75 bits a weight for Q4_K (fp32 per group: 6), 5.75 for Q5_K (7), 7.25 for Q6_K (10).
// `what` names the tensor in errors.
Tensor gguf_repack(GgmlType t, const uint8_t* data, int64_t rows, int64_t cols, const std::vector<int64_t>* row_src,
                   const std::string& what);

}  // namespace ft
