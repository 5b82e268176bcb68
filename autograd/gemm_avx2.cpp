// AVX2 + FMA GEMM micro-kernel (fp32, 6×16 register tile), chosen at run time by autograd/gemm.cpp.
// bf16 and fp16 weights are widened to fp32 while packing (the vector packer below, fp32 sources too),
// so there is no bf16 kernel here.
// No STL here (ODR, see CMakeLists.txt): only <immintrin.h>, <cstdint>, <cstddef>.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "autograd/gemm_kernels.h"

namespace {

constexpr int MR = 6, NR = 16;

void kernel_f32(int64_t depth, const void* ap, const void* bp, float* c, int64_t ldc, int m, int n,
                float alpha, float beta) {
  const float* a = static_cast<const float*>(ap);
  const float* b = static_cast<const float*>(bp);
  __m256 acc0[MR], acc1[MR];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) acc0[r] = acc1[r] = _mm256_setzero_ps();
  for (int64_t d = 0; d < depth; ++d) {
    const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + r);
      acc0[r] = _mm256_fmadd_ps(av, b0, acc0[r]);
      acc1[r] = _mm256_fmadd_ps(av, b1, acc1[r]);
    }
    a += MR;
    b += NR;
  }
  const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
  if (m == MR && n == NR) {
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      float* cr = c + r * ldc;
      __m256 x0 = _mm256_mul_ps(acc0[r], va), x1 = _mm256_mul_ps(acc1[r], va);
      if (beta != 0.0f) {
        x0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(cr), x0);
        x1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(cr + 8), x1);
      }
      _mm256_storeu_ps(cr, x0);
      _mm256_storeu_ps(cr + 8, x1);
    }
    return;
  }
  alignas(32) float t[MR][NR];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
    _mm256_store_ps(t[r], _mm256_mul_ps(acc0[r], va));
    _mm256_store_ps(t[r] + 8, _mm256_mul_ps(acc1[r], va));
  }
  for (int r = 0; r < m; ++r) {
    float* cr = c + r * ldc;
    if (beta != 0.0f)
      for (int j = 0; j < n; ++j) cr[j] = t[r][j] + beta * cr[j];
    else
      for (int j = 0; j < n; ++j) cr[j] = t[r][j];
  }
}

// ---------------------------------------------------------------- packing (see PackFn)
// fp32, bf16 and fp16 sources, widened exactly (bf16: a 16-bit shift; fp16: F16C).

inline __m256i lane_mask(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// 8 source values from p (cnt valid, the rest zero), as fp32. T: kSrcF32, kSrcBF16 or kSrcF16.
template <int T>
inline __m256 load8(const void* p, int64_t cnt) {
  using ft::gemm_detail::kSrcBF16;
  using ft::gemm_detail::kSrcF32;
  if constexpr (T == kSrcF32) {
    const float* f = static_cast<const float*>(p);
    return cnt >= 8 ? _mm256_loadu_ps(f) : _mm256_maskload_ps(f, lane_mask(cnt));
  } else {
    const uint16_t* h = static_cast<const uint16_t*>(p);
    __m128i v;
    if (cnt >= 8) {
      v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(h));
    } else {
      alignas(16) uint16_t t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int64_t i = 0; i < cnt; ++i) t[i] = h[i];
      v = _mm_load_si128(reinterpret_cast<const __m128i*>(t));
    }
    if constexpr (T == kSrcBF16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
    else return _mm256_cvtph_ps(v);
  }
}

// r[i][j] -> r[j][i] for an 8×8 block of floats.
inline void transpose8(__m256* r) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

template <int T>
void pack_t(const void* src, int64_t ld, bool lanes_are_rows, int w, int n, int64_t kc, uint32_t* dst) {
  constexpr int64_t esz = T == ft::gemm_detail::kSrcF32 ? 4 : 2;
  const char* s = static_cast<const char*>(src);
  const int np = (n + w - 1) / w;
  for (int q = 0; q < np; ++q) {
    float* pd = reinterpret_cast<float*>(dst) + q * kc * w;
    for (int x0 = 0; x0 < w; x0 += 8) {  // 8 lanes at a time (w is a multiple of 8 or smaller)
      const int lane = q * w + x0;
      const int nv = n - lane < 8 ? (n - lane > 0 ? n - lane : 0) : 8, wv = w - x0 < 8 ? w - x0 : 8;
      if (lanes_are_rows) {  // element (k, x) at s[x*ld + k]: 8 rows × 8 k, transposed in registers
        for (int64_t k0 = 0; k0 < kc; k0 += 8) {
          const int64_t kk = kc - k0 < 8 ? kc - k0 : 8;
          __m256 r[8];
          for (int i = 0; i < 8; ++i) r[i] = i < nv ? load8<T>(s + ((lane + i) * ld + k0) * esz, kk) : _mm256_setzero_ps();
          transpose8(r);
          for (int64_t d = 0; d < kk; ++d) {
            float* o = pd + (k0 + d) * w + x0;
            if (wv == 8) {
              _mm256_storeu_ps(o, r[d]);
            } else {
              alignas(32) float t[8];
              _mm256_store_ps(t, r[d]);
              for (int x = 0; x < wv; ++x) o[x] = t[x];
            }
          }
        }
      } else {  // element (k, x) at s[k*ld + x]: row k's 8 lanes are contiguous
        for (int64_t k = 0; k < kc; ++k) {
          const __m256 v = nv > 0 ? load8<T>(s + (k * ld + lane) * esz, nv) : _mm256_setzero_ps();
          float* o = pd + k * w + x0;
          if (wv == 8) {
            _mm256_storeu_ps(o, v);
          } else {
            alignas(32) float t[8];
            _mm256_store_ps(t, v);
            for (int x = 0; x < wv; ++x) o[x] = t[x];
          }
        }
      }
    }
  }
}

// pairs never comes here: this table has no bf16 kernel, so gemm.cpp never runs it in pairs mode.
void pack(const void* src, int64_t ld, int src_type, bool lanes_are_rows, bool /*pairs: never*/, int w, int n, int64_t kc,
          uint32_t* dst) {
  using namespace ft::gemm_detail;
  if (src_type == kSrcBF16) return pack_t<kSrcBF16>(src, ld, lanes_are_rows, w, n, kc, dst);
  if (src_type == kSrcF16) return pack_t<kSrcF16>(src, ld, lanes_are_rows, w, n, kc, dst);
  return pack_t<kSrcF32>(src, ld, lanes_are_rows, w, n, kc, dst);
}

const ft::gemm_detail::Kernels kTable = {MR, NR, kernel_f32, nullptr, pack, pack, nullptr, nullptr};

}  // namespace

const ft::gemm_detail::Kernels* ft::gemm_detail::kernels_avx2() { return &kTable; }
