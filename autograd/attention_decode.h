#pragma once
// Internal to autograd/ops_attention.cpp: attention of one query position per batch row over a
// KV cache (decode). The tiled flash-attention path reads each kv head's keys separately through a
// transposed tile (for a cache [B, T, Hkv, D] that is a strided walk over memory that is cold
// during decode, and the keys are copied once more); here every key and value row is read once,
// front to back, for all heads. Same semantics as ft::attention for Tq == 1 (ops.h).
#include <cstdint>

namespace ft::attn_detail {

struct DecodeArgs {
  int64_t B = 0, Tk = 0, Hq = 0, Hkv = 0, D = 0;
  const float* q = nullptr;  // query of batch row b, head h: q + b·qsb + h·D
  int64_t qsb = 0;
  bool kv_bf16 = false;      // keys and values: float, or bf16 bits (uint16_t)
  const void* k = nullptr;   // key j of batch row b, kv head g: element b·ksb + j·kst + g·D
  int64_t ksb = 0, kst = 0;
  const void* v = nullptr;   // likewise
  int64_t vsb = 0, vst = 0;
  float* out = nullptr;      // [B, Hq, D], contiguous
  float* lse = nullptr;      // optional [B, Hq]: log Σ exp(s) over the visible keys (-inf: none)
  float scale = 1, cap = 0;  // s = scale·q·k; cap > 0: s = cap·tanh(s / cap)
  bool causal = true;        // key j visible iff j <= q_off (and, with window > 0, q_off - j < window)
  int64_t window = 0, q_off = 0;
  const int32_t* seg = nullptr;  // [B, Tk] or null: key j visible iff seg[b][j] == seg[b][q_off]
};

// Keys are taken in blocks of kDecodeKeyBlock, one task per (batch row, block), partial softmax
// states merged in block order: results do not depend on the thread count.
constexpr int64_t kDecodeKeyBlock = 512;

void attention_decode(const DecodeArgs& a);

}  // namespace ft::attn_detail
