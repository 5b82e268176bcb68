#include "autograd/dtype.h"

#include <tbb/parallel_for.h>

#include "autograd/error.h"

namespace ft {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: case DType::I32: return 4;
    case DType::BF16: case DType::F16: return 2;
    case DType::I64: return 8;
    case DType::Q: return 0;  // packed: see autograd/quant.h
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::BF16: return "bfloat16";
    case DType::F16: return "float16";
    case DType::I32: return "int32";
    case DType::I64: return "int64";
    case DType::Q: return "quantized";
  }
  return "?";
}

DType dtype_from_name(const std::string& s) {
  if (s == "float32" || s == "fp32" || s == "f32" || s == "F32") return DType::F32;
  if (s == "bfloat16" || s == "bf16" || s == "BF16") return DType::BF16;
  if (s == "float16" || s == "fp16" || s == "f16" || s == "F16" || s == "half") return DType::F16;
  if (s == "int32" || s == "I32") return DType::I32;
  if (s == "int64" || s == "I64") return DType::I64;
  throw Error(cat("unknown dtype '", s, "' (use float32, bfloat16 or float16)"));
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0) {
    if (man == 0) return bits_to_f32(sign);
    // subnormal: value = man * 2^-24
    float v = float(man) * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  if (exp == 31) return bits_to_f32(sign | 0x7f800000u | (man << 13) | (man ? 0x400000u : 0));
  return bits_to_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t f32_to_f16(float f) {
  uint32_t u = f32_to_bits(f);
  uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00u | uint16_t((a >> 13) & 0x3ffu);  // NaN (quiet)
  if (a >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to inf (and inf)
  if (a < 0x38800000u) {                        // below smallest normal 2^-14: subnormal or zero
    if (a < 0x33000000u) return sign;           // < 2^-25 rounds to zero (ties at 2^-25 -> 0 even)
    uint32_t e = a >> 23;                       // biased exponent 102..112
    uint32_t m = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e;                   // 14..24
    uint32_t r = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) ++r;
    return sign | uint16_t(r);
  }
  uint32_t r = a - 0x38000000u;  // rebias exponent (127-15)<<23
  r += 0xfffu + ((r >> 13) & 1u);
  return sign | uint16_t(r >> 13);
}

namespace {
template <class F>
void par(size_t n, F f) {
  if (n < (1u << 16)) { f(size_t(0), n); return; }
  tbb::parallel_for(tbb::blocked_range<size_t>(0, n, 1u << 14),
                    [&](const tbb::blocked_range<size_t>& r) { f(r.begin(), r.end()); });
}
float load(const void* p, DType t, size_t i) {
  switch (t) {
    case DType::F32: return static_cast<const float*>(p)[i];
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::I32: return float(static_cast<const int32_t*>(p)[i]);
    case DType::I64: return float(static_cast<const int64_t*>(p)[i]);
    case DType::Q: break;
  }
  return 0;
}
void store(void* p, DType t, size_t i, float v) {
  switch (t) {
    case DType::F32: static_cast<float*>(p)[i] = v; break;
    case DType::BF16: static_cast<uint16_t*>(p)[i] = f32_to_bf16(v); break;
    case DType::F16: static_cast<uint16_t*>(p)[i] = f32_to_f16(v); break;
    case DType::I32: static_cast<int32_t*>(p)[i] = int32_t(v); break;
    case DType::I64: static_cast<int64_t*>(p)[i] = int64_t(v); break;
    case DType::Q: break;
  }
}
}  // namespace

void convert(const void* src, DType st, void* dst, DType dt, size_t n) {
  FT_CHECK(st != DType::Q && dt != DType::Q, "convert: a quantized matrix has no per-element layout (dequantise it: autograd/quant.h)");
  if (n == 0) return;  // empty tensors may have null data (e.g. an empty std::vector): memcpy(null) is UB
  if (st == dt) { std::memcpy(dst, src, n * dtype_size(st)); return; }
  if (st == DType::I64 && dt == DType::I32) {
    par(n, [&](size_t b, size_t e) { for (size_t i = b; i < e; ++i) static_cast<int32_t*>(dst)[i] = int32_t(static_cast<const int64_t*>(src)[i]); });
    return;
  }
  if (st == DType::I32 && dt == DType::I64) {
    par(n, [&](size_t b, size_t e) { for (size_t i = b; i < e; ++i) static_cast<int64_t*>(dst)[i] = static_cast<const int32_t*>(src)[i]; });
    return;
  }
  if (st == DType::BF16 && dt == DType::F32) {
    par(n, [&](size_t b, size_t e) {
      const uint16_t* s = static_cast<const uint16_t*>(src); float* d = static_cast<float*>(dst);
      for (size_t i = b; i < e; ++i) d[i] = bf16_to_f32(s[i]);
    });
    return;
  }
  if (st == DType::F32 && dt == DType::BF16) {
    par(n, [&](size_t b, size_t e) {
      const float* s = static_cast<const float*>(src); uint16_t* d = static_cast<uint16_t*>(dst);
      for (size_t i = b; i < e; ++i) d[i] = f32_to_bf16(s[i]);
    });
    return;
  }
  par(n, [&](size_t b, size_t e) { for (size_t i = b; i < e; ++i) store(dst, dt, i, load(src, st, i)); });
}

}  // namespace ft
