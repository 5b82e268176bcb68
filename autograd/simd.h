#pragma once
// Portable SIMD for row kernels (RMSNorm, cross-entropy, ...): GCC/Clang vector extensions, compiled
// once per ISA through target attributes and chosen at run time from cpu_features() (so FT_ISA picks
// the path, as for the GEMM). Unlike *_avx2.cpp files this needs no special compile flags: the
// always-inline templates below are instantiated only inside the FT_SIMD_KERNEL clones.
//
//   template <int N> FT_INLINE void my_row(const float* x, int64_t n) { using V = simd::Vec<N>; ... }
//   FT_SIMD_KERNEL(my_kernel, my_row, (const float* x, int64_t n), (x, n))
//   -> my_kernel(x, n) runs my_row<16> (AVX-512), my_row<8> (AVX2+FMA) or my_row<4> (SSE2).
#include <cstdint>
#include <cstring>

#include "autograd/cpu.h"
#include "autograd/exp_poly.h"

// Vectors wider than the baseline ISA are only ever used inside the matching target clones.
#pragma GCC diagnostic ignored "-Wpsabi"

#define FT_INLINE inline __attribute__((always_inline))
// GCC's prefer-vector-width keeps its auto-vectoriser on 512-bit registers in these clones; clang
// does not know it in a target string (and would then ignore the whole attribute).
#if defined(__clang__)
#define FT_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c"), min_vector_width(512)))
#else
#define FT_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c,prefer-vector-width=512")))
#endif
#define FT_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))

// Defines `void name PARAMS` dispatching to impl<16|8|4> ARGS compiled for AVX-512 / AVX2 / SSE2.
#define FT_SIMD_KERNEL(name, impl, PARAMS, ARGS)       \
  FT_TARGET_AVX512 void name##_w16 PARAMS { impl<16> ARGS; } \
  FT_TARGET_AVX2 void name##_w8 PARAMS { impl<8> ARGS; }     \
  void name##_w4 PARAMS { impl<4> ARGS; }                    \
  void name PARAMS {                                         \
    switch (::ft::simd::width()) {                           \
      case 16: name##_w16 ARGS; return;                      \
      case 8: name##_w8 ARGS; return;                        \
      default: name##_w4 ARGS; return;                       \
    }                                                        \
  }

namespace ft::simd {

// Floats per vector register for the ISA in effect: 16 (AVX-512), 8 (AVX2 + FMA) or 4 (SSE2).
inline int width() {
  const CpuFeatures& f = cpu_features();
  return f.avx512f ? 16 : f.avx2 ? 8 : 4;
}

template <int N> struct VecTypes;
template <> struct VecTypes<4> {
  typedef float F __attribute__((vector_size(16)));
  typedef int32_t I __attribute__((vector_size(16)));
};
template <> struct VecTypes<8> {
  typedef float F __attribute__((vector_size(32)));
  typedef int32_t I __attribute__((vector_size(32)));
};
template <> struct VecTypes<16> {
  typedef float F __attribute__((vector_size(64)));
  typedef int32_t I __attribute__((vector_size(64)));
};

// N floats. Loads/stores are unaligned; *_part touch only the first k < N elements (row tails).
template <int N>
struct Vec {
  using F = typename VecTypes<N>::F;
  using I = typename VecTypes<N>::I;
  static FT_INLINE F splat(float s) { F v = {}; return v + s; }
  static FT_INLINE F load(const float* p) { F v; std::memcpy(&v, p, sizeof v); return v; }
  static FT_INLINE F load_part(const float* p, int64_t k, float pad) {
    if (k >= N) return load(p);  // a whole vector: one load (the copy below is a variable-length memcpy)
    F v = splat(pad);
    std::memcpy(&v, p, size_t(k) * sizeof(float));
    return v;
  }
  static FT_INLINE void store(float* p, F v) { std::memcpy(p, &v, sizeof v); }
  static FT_INLINE void store_part(float* p, F v, int64_t k) {
    if (k >= N) return store(p, v);
    std::memcpy(p, &v, size_t(k) * sizeof(float));
  }
  static FT_INLINE F max(F a, F b) { return a > b ? a : b; }
  static FT_INLINE double hsum(F v) {  // lanes in fixed order, in double
    double s = 0;
    for (int l = 0; l < N; ++l) s += double(v[l]);
    return s;
  }
  static FT_INLINE float hmax(F v) {
    float m = v[0];
    for (int l = 1; l < N; ++l) m = v[l] > m ? v[l] : m;
    return m;
  }
  // exp(x), ~1 ulp (autograd/exp_poly.h). x < −87.3 gives ~1e-38
  // (never inf/NaN); x > 88.3 is clamped; NaN stays NaN.
  static FT_INLINE F exp(F x) {
    x = x < splat(-87.3f) ? splat(-87.3f) : x;
    x = x > splat(88.3f) ? splat(88.3f) : x;
    using namespace exp_poly;
    F t = x * kLog2e + 12582912.f;  // + 1.5·2^23 rounds x·log2(e) to an integer in the mantissa
    F k = t - 12582912.f;
    F r = x - k * kLn2Hi;
    r = r - k * kLn2Lo;
    F p = splat(kP0);
    p = p * r + kP1;
    p = p * r + kP2;
    p = p * r + kP3;
    p = p * r + kP4;
    p = p * r + kP5;
    p = p * r * r + r + 1.f;
    I bits = ((I)t - (0x4B400000 - 127)) << 23;  // 2^k
    return p * (F)bits;
  }
};

}  // namespace ft::simd
