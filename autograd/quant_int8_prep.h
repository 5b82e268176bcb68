#pragma once
// Internal to the int8 decode GEMV kernels (quant_int8_avx512.cpp, quant_int8_avx2.h; every includer
// is built with at least AVX2): storing one block of 32 int8 values of x (natural order, a ymm) and
// its scale d in the kernels' layout (autograd/quant_kernels.h). Anonymous namespace; no STL.
#include <immintrin.h>

#include <cstdint>

namespace {

// Block b of a row: 8 bits: XQ[32b ..] as it is. 4 bits: chunks of CH codes, the chunk's even codes
// first, then its odd ones; block k of a chunk gives evens XQ[c0 + 16k ..] and odds XQ[c0 + CH/2 + 16k ..].
// XD: one d per lane, 32/(32/bits) = bits lanes per block (4-bit: 4 lanes of 8 codes; 8-bit: 8 of 4).
inline void store_block(__m256i q, float d, int64_t b, int bits, int64_t CH, int8_t* XQ, float* XD) {
  if (bits == 8) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(XQ + b * 32), q);
  } else {
    const __m256i sh = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,  //
                                        0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    // per 128 bits: 8 evens then 8 odds; qwords (0, 2, 1, 3): the 16 evens, then the 16 odds
    const __m256i t = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(q, sh), 0xd8);
    const int64_t c0 = b * 32 / CH * CH, k = (b * 32 % CH) / 32;
    _mm_storeu_si128(reinterpret_cast<__m128i*>(XQ + c0 + 16 * k), _mm256_castsi256_si128(t));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(XQ + c0 + CH / 2 + 16 * k), _mm256_extracti128_si256(t, 1));
  }
  for (int t = 0; t < bits; ++t) XD[b * bits + t] = d;
}

// d = amax / 127 and id = 1/d (0 when d = 0), scalar fp32 as the portable code.
inline float block_scale(float amax, float* id) {
  const float d = amax / 127.0f;
  *id = d != 0.0f ? 1.0f / d : 0.0f;
  return d;
}

}  // namespace
