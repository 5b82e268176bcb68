#pragma once
// Element types and exact conversions.
// bf16: round-to-nearest-even, NaN stays NaN (quiet), inf preserved.
// f16 : IEEE binary16 with subnormals, round-to-nearest-even, overflow -> inf.
#include <cstdint>
#include <cstring>
#include <cstddef>
#include <string>

namespace ft {

// Q: a quantised matrix (packed integers + per-group parameters + a format tag; autograd/quant.h).
// It has a logical shape [rows, cols] but no per-element size: its bytes are in its QuantParams.
enum class DType : uint8_t { F32, BF16, F16, I32, I64, Q };

size_t dtype_size(DType t);
const char* dtype_name(DType t);          // "float32", "bfloat16", ...
DType dtype_from_name(const std::string& s);  // accepts float32/fp32/f32, bfloat16/bf16, float16/fp16/f16; throws
inline bool is_float(DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F16; }

inline float bits_to_f32(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t f32_to_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

inline float bf16_to_f32(uint16_t h) { return bits_to_f32(uint32_t(h) << 16); }
inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x0040u);  // NaN -> quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);                                            // RNE
  return uint16_t(u >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// Converts n elements between any two float dtypes (parallel for large n).
void convert(const void* src, DType st, void* dst, DType dt, size_t n);

}  // namespace ft
