// AMX bf16 GEMM micro-kernel (Sapphire Rapids and later: AMX-TILE + AMX-BF16), chosen by
// autograd/gemm.cpp for gemm_bf16w with round_a when cpu_features().amx (autograd/cpu.cpp asks
// Linux for the tile state first). Compiled with -mamx-tile -mamx-bf16 plus the AVX-512 flags.
// No STL here (ODR, see CMakeLists.txt).
//
// Register tile: 32×32 of C in four 16×16 fp32 tiles (tmm0..3), A as two 16-row tiles (tmm4, 5),
// B as two 16-lane tiles (tmm6, 7); one tdpbf16ps per pair per 16 k-pairs (32 k). All eight tiles
// have the same shape (16 rows × 64 bytes), so one configuration serves every call.
//   B panel (the AVX-512 packer, pairs): Bpanel[d*32 + j] = bf16 pair (k = 2d, 2d+1) of lane j,
//     so 16 depth pairs × 16 lanes are a tile with a 128-byte row stride.
//   A panel (pack_a below): per chunk of 16 depth pairs, 32 rows of up to 16 pairs each
//     (chunk c at dst + 512·c; rows cu = min(16, units − 16c) pairs apart), i.e. two tiles of
//     16 rows with a 64-byte stride when the chunk is full.
// The last, partial chunk of a depth block is copied into zero-padded tiles on the stack (the
// GEMM driver makes depth blocks multiples of 16 pairs, so only a product's last block has one).
// Full 32×32 tiles with alpha 1, beta 0/1 load and store C directly (C's tile loads: beta = 1 sums
// C + products in the tile, the same as the epilogue's fp32 add).
// bf16×bf16 products are exact in fp32; tdpbf16ps flushes denormal inputs and outputs to zero.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "autograd/amx_tiles.h"
#include "autograd/gemm_kernels.h"

namespace {

constexpr int MR = 32, NR = 32;

// The tile configuration ft's kernel needs (amx_tiles.h), checked at the start of every GEMM task
// (Kernels::prepare; between its kernel calls a task runs only ft's packers). Not per kernel call:
// sttilecfg waits for the tile unit to drain (perf put a quarter of the kernel's samples just after
// it; GEMM throughput did not measurably change once it moved, 2026-12-05).
void configure_tiles() {
  TileConfig want = {};
  want.palette_id = 1;
  for (int t = 0; t < 8; ++t) {
    want.colsb[t] = 64;
    want.rows[t] = 16;
  }
  ensure_tile_config(want);
}

inline __mmask16 lanes(int n) { return n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1); }

void kernel_amx(int64_t depth, const void* ap, const void* bp, float* c, int64_t ldc, int m, int n,
                float alpha, float beta) {
  const char* a = static_cast<const char*>(ap);
  const char* b = static_cast<const char*>(bp);
  // A whole tile with alpha = 1 and beta 0 or 1 (every depth block of ft's GEMMs but the
  // partial edges): accumulate straight into C's rows, no stack round trip.
  const bool direct = m == MR && n == NR && alpha == 1.0f && (beta == 0.0f || beta == 1.0f);
  if (direct && beta == 1.0f) {
    const int64_t ld = ldc * 4;
    _tile_loadd(0, c, ld);
    _tile_loadd(1, c + 16, ld);
    _tile_loadd(2, c + 16 * ldc, ld);
    _tile_loadd(3, c + 16 * ldc + 16, ld);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  const int64_t full = depth / 16, tail = depth - full * 16;
  for (int64_t ch = 0; ch < full; ++ch) {
    const char* ac = a + ch * 2048;  // 32 rows × 16 pairs × 4 bytes
    const char* bc = b + ch * 2048;  // 16 pairs × 32 lanes × 4 bytes
    _tile_loadd(4, ac, 64);
    _tile_loadd(6, bc, 128);
    _tile_loadd(7, bc + 64, 128);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_loadd(5, ac + 1024, 64);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  if (tail) {
    alignas(64) uint32_t at[MR * 16], bt[16 * NR];
    const uint32_t* as = reinterpret_cast<const uint32_t*>(a + full * 2048);
    const uint32_t* bs = reinterpret_cast<const uint32_t*>(b + full * 2048);
    const __mmask16 k = lanes(int(tail));
    for (int r = 0; r < MR; ++r) _mm512_store_si512(at + r * 16, _mm512_maskz_loadu_epi32(k, as + r * tail));
    for (int d = 0; d < 16; ++d) {
      const bool on = d < tail;
      _mm512_store_si512(bt + d * NR, on ? _mm512_loadu_si512(bs + d * NR) : _mm512_setzero_si512());
      _mm512_store_si512(bt + d * NR + 16, on ? _mm512_loadu_si512(bs + d * NR + 16) : _mm512_setzero_si512());
    }
    publish(at);
    publish(bt);
    _tile_loadd(4, at, 64);
    _tile_loadd(5, at + 16 * 16, 64);
    _tile_loadd(6, bt, 128);
    _tile_loadd(7, bt + 16, 128);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  if (direct) {
    const int64_t ld = ldc * 4;
    _tile_stored(0, c, ld);
    _tile_stored(1, c + 16, ld);
    _tile_stored(2, c + 16 * ldc, ld);
    _tile_stored(3, c + 16 * ldc + 16, ld);
    return;
  }
  alignas(64) float acc[MR * NR];
  _tile_stored(0, acc, 128);
  _tile_stored(1, acc + 16, 128);
  _tile_stored(2, acc + 16 * NR, 128);
  _tile_stored(3, acc + 16 * NR + 16, 128);
  publish(acc);
  const __mmask16 k0 = lanes(n), k1 = lanes(n - 16);
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  for (int r = 0; r < m; ++r) {
    float* cr = c + r * ldc;
    __m512 x0 = _mm512_mul_ps(_mm512_load_ps(acc + r * NR), va);
    __m512 x1 = _mm512_mul_ps(_mm512_load_ps(acc + r * NR + 16), va);
    if (beta != 0.0f) {
      x0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(k0, cr), x0);
      x1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(k1, cr + 16), x1);
    }
    _mm512_mask_storeu_ps(cr, k0, x0);
    _mm512_mask_storeu_ps(cr + 16, k1, x1);
  }
}

// f32 -> bf16 bits, round to nearest even (NaN quiet), as ft::f32_to_bf16.
inline uint32_t bf16_bits(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x0040u;
  return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

inline __mmask16 mask16(int64_t n) { return n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1); }

// A panels for kernel_amx (PackFn semantics; float source, pairs, w == MR): see the layout above.
void pack_a(const void* src, int64_t ld, int /*src_type*/, bool lanes_are_rows, bool /*pairs*/, int w, int n,
            int64_t kc, uint32_t* dst) {
  const float* s = static_cast<const float*>(src);
  const int64_t units = (kc + 1) / 2;
  const int np = (n + w - 1) / w;
  for (int q = 0; q < np; ++q) {
    uint32_t* pd = dst + q * units * w;
    for (int64_t u0 = 0; u0 < units; u0 += 16) {
      const int64_t cu = units - u0 < 16 ? units - u0 : 16;
      uint32_t* pc = pd + u0 * w;
      const int64_t k0 = 2 * u0;
      for (int x = 0; x < w; ++x) {
        const int lane = q * w + x;
        uint32_t* o = pc + x * cu;
        if (lane >= n) {
          _mm512_mask_storeu_epi32(o, mask16(cu), _mm512_setzero_si512());
          continue;
        }
        if (lanes_are_rows) {  // row `lane` of op(A) is contiguous in k
          const float* p = s + lane * ld + k0;
          const __m512 lo = _mm512_maskz_loadu_ps(mask16(kc - k0), p);
          const __m512 hi = _mm512_maskz_loadu_ps(mask16(kc - k0 - 16), p + 16);
          _mm512_mask_storeu_epi32(o, mask16(cu), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
        } else {  // op(A) transposed: element (k, lane) at s[k*ld + lane]
          for (int64_t u = 0; u < cu; ++u) {
            const int64_t k = k0 + 2 * u;
            const uint32_t lo = bf16_bits(s[k * ld + lane]);
            const uint32_t hi = k + 1 < kc ? bf16_bits(s[(k + 1) * ld + lane]) : 0u;
            o[u] = lo | (hi << 16);
          }
        }
      }
    }
  }
}

}  // namespace

const ft::gemm_detail::Kernels* ft::gemm_detail::kernels_amx() {
  static const Kernels t = {MR, NR, nullptr, kernel_amx, kernels_avx512()->pack, kernels_avx512()->pack_f16, pack_a, configure_tiles};
  return &t;
}
