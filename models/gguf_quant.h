#pragma once
// ggml's block-quantised weight formats (ggml-common.h is the spec; shared/docs/formats.md "GGUF").
// Rows are quantised independently; n (elements of the row) must be a multiple of the block size.
//
//   Q8_0  32: f16 d, i8 q[32]                          x = d·q
//   Q4_0  32: f16 d, u8 qs[16] (j low, j+16 high)      x = d·(q − 8)
//   Q4_1  32: f16 d, f16 m, u8 qs[16]                  x = d·q + m
//   Q5_0  32: f16 d, u32 qh (bit 5 of each), qs[16]    x = d·(q − 16)
//   Q5_1  32: f16 d, f16 m, u32 qh, qs[16]             x = d·q + m
//   Q4_K 256: f16 d, f16 dmin, 12 bytes of 6-bit (scale, min) for 8 sub-blocks of 32, qs[128]
//                                                      x = d·sc·q − dmin·m
//   Q5_K 256: as Q4_K plus qh[32] (the fifth bits)
//   Q6_K 256: ql[128], qh[64], i8 scales[16] (sub-blocks of 16), f16 d     x = d·sc·(q − 32)
//
// The quantisers (Q8_0 and Q4_0 exactly as ggml's reference ones; Q4_K and Q6_K with a least-squares
// search of each sub-block's scale (weighted for Q4_K), as ggml's reference K-quantisers do without an
// importance matrix — not bit-identical to them) write blocks any ggml reader decodes; the
// dequantisers are exact (the value ggml computes, in float32).
#include <cstddef>
#include <cstdint>

#include "models/gguf.h"

namespace ft {

// Quantises n floats (a multiple of ggml_block_size(t)) into ggml_row_bytes(t, n) bytes.
// t: Q8_0, Q4_0, Q4_K or Q6_K (others: ft::Error).
void ggml_quantize_row(GgmlType t, const float* x, int64_t n, void* dst);
// Decodes n elements of any type ft reads (F32, F16, BF16 and every quantised type of GgmlType).
void ggml_dequantize_row(GgmlType t, const void* src, int64_t n, float* y);
size_t ggml_row_bytes(GgmlType t, int64_t n);

}  // namespace ft
