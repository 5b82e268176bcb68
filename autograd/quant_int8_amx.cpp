// AMX-INT8 kernel of the opt-in int8 products (qgemv_int8 / qgemm_int8, autograd/quant.h) on CPUs
// with AMX (Sapphire Rapids and later; cpu_features().amx_int8: the tile state granted by Linux).
// Built with the AMX and AVX-512 flags and -ffp-contract=off (CMakeLists.txt). No STL here (ODR).
//
// The arithmetic is the portable kernel's (quant.cpp rows_int8_portable), operation for operation,
// so every output is bit-identical to it: per block b of 32 codes the exact int32 sum
// S_b = Σ q·xq (one tdpbusd: W's codes unsigned, x's int8 signed), then per group, with fused
// multiply-adds (one rounding each),
//   ga = fma(d_b, S_b, ga) over the group's blocks,   acc = fma(s_g, ga, acc),   bacc = fma(b_g, xs_g, bacc),
// and alpha·(acc + bacc) (+ beta·C). (The portable code starts ga at 0; fma(d, S, 0) is d·S rounded
// except for the sign of a zero, and a zero ga of either sign leaves acc unchanged: acc starts at +0
// and a sum of nonzero terms is never −0, so ga starts at d_b0·S_b0 here.) The fused forms take a
// third fewer vector operations in the fold than separate multiplies and adds (bench/RESULTS.md).
//
// Tiles: rows of W are tile rows, rows of A tile columns.
//   tmm0..3  C: int32 [16 rows of W] × [16 rows of A], one per block of the group (G = 32·NB)
//   tmm4, 6  A: 16 rows of W × one block's 32 codes as bytes (8-bit codes straight from W's rows;
//            4-bit codes unpacked into a staging buffer as the block's 16 even codes, then its 16 odd
//            ones: low nibbles, then high nibbles)
//   tmm5, 7  B: the block of 16 rows of x in the tiled layout (quant_kernels.h Int8Kernels::tiled),
//            8 rows (k-quads) × 16 rows of A × 4 bytes, in the codes' order
// Each group's C tiles are stored and folded into 16 fp32 accumulators (one zmm per row of W, lanes
// = rows of A) in registers; the biases in a second pass; the outputs transposed on the way out.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <new>

#include "autograd/amx_tiles.h"
#include "autograd/quant_avx512_util.h"
#include "autograd/quant_kernels.h"

namespace {

using ft::quant_detail::View;

template <int N>
struct IntC {
  static constexpr int value = N;
};

// This kernel's tile shapes, loaded when the thread's current configuration differs (other AMX code,
// ft's bf16 GEMM included, configures its own shapes; each checks at its start).
void configure_tiles() {
  TileConfig want = {};
  want.palette_id = 1;
  for (int t = 0; t < 4; ++t) {
    want.colsb[t] = 64;
    want.rows[t] = 16;
  }
  want.colsb[4] = want.colsb[6] = 32;
  want.rows[4] = want.rows[6] = 16;
  want.colsb[5] = want.colsb[7] = 64;
  want.rows[5] = want.rows[7] = 8;
  ensure_tile_config(want);
}

// C tile c = A·B, A (tmm4 or tmm6: ab = 0 or 1) from `a` with row stride as, B (tmm5 or tmm7) from
// `b`. The tile macros need the register numbers as literals, hence the cases.
template <int c, int ab>
inline void block_product(const void* a, int64_t as, const void* b) {
  if constexpr (ab == 0) {
    _tile_loadd(4, a, as);
    _tile_loadd(5, b, 64);
  } else {
    _tile_loadd(6, a, as);
    _tile_loadd(7, b, 64);
  }
  if constexpr (c == 0) _tile_zero(0);
  else if constexpr (c == 1) _tile_zero(1);
  else if constexpr (c == 2) _tile_zero(2);
  else _tile_zero(3);
  if constexpr (c == 0 && ab == 0) _tile_dpbusd(0, 4, 5);
  else if constexpr (c == 0) _tile_dpbusd(0, 6, 7);
  else if constexpr (c == 1 && ab == 0) _tile_dpbusd(1, 4, 5);
  else if constexpr (c == 1) _tile_dpbusd(1, 6, 7);
  else if constexpr (c == 2 && ab == 0) _tile_dpbusd(2, 4, 5);
  else if constexpr (c == 2) _tile_dpbusd(2, 6, 7);
  else if constexpr (ab == 0) _tile_dpbusd(3, 4, 5);
  else _tile_dpbusd(3, 6, 7);
}

template <int c>
inline void store_c(int32_t* dst) {
  if constexpr (c == 0) _tile_stored(0, dst, 64);
  else if constexpr (c == 1) _tile_stored(1, dst, 64);
  else if constexpr (c == 2) _tile_stored(2, dst, 64);
  else _tile_stored(3, dst, 64);
}

// Groups alternate between two sets of tiles (parity P) when a group needs at most two C tiles, so
// that the products of group g+1 run on the tile unit while group g's are folded in: block k of a
// group of parity P goes to C tile c_of, through A/B pair ab_of.
template <int NB, int P, int k>
constexpr int c_of = NB == 4 ? k : NB * P + k;
template <int NB, int P, int k>
constexpr int ab_of = NB == 1 ? P : k % 2;

template <int NB, int P>
inline void group_products(const void* const* a, int64_t as, const int8_t* xg) {
  block_product<c_of<NB, P, 0>, ab_of<NB, P, 0>>(a[0], as, xg);
  if constexpr (NB > 1) block_product<c_of<NB, P, 1>, ab_of<NB, P, 1>>(a[1], as, xg + 512);
  if constexpr (NB > 2) block_product<c_of<NB, P, 2>, ab_of<NB, P, 2>>(a[2], as, xg + 1024);
  if constexpr (NB > 3) block_product<c_of<NB, P, 3>, ab_of<NB, P, 3>>(a[3], as, xg + 1536);
}

template <int NB, int P>
inline void group_store(int32_t (*cs)[256]) {
  store_c<c_of<NB, P, 0>>(cs[0]);
  if constexpr (NB > 1) store_c<c_of<NB, P, 1>>(cs[1]);
  if constexpr (NB > 2) store_c<c_of<NB, P, 2>>(cs[2]);
  if constexpr (NB > 3) store_c<c_of<NB, P, 3>>(cs[3]);
  publish(cs);
}

// 16 rows of 4-bit codes, one block (16 bytes per row at w[r] + off), into dst (32 bytes per row:
// the low nibbles, then the high ones).
inline void unpack4(const unsigned char* const* w, int64_t off, unsigned char* dst) {
  const __m512i nib = _mm512_set1_epi8(0x0f);
  const __m512i i0 = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11), i1 = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
#pragma GCC unroll 4
  for (int r = 0; r < 16; r += 4) {
    __m512i v = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[r] + off)));
    v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[r + 1] + off)), 1);
    v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[r + 2] + off)), 2);
    v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[r + 3] + off)), 3);
    const __m512i lo = _mm512_and_si512(v, nib), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), nib);
    _mm512_store_si512(dst + r * 32, _mm512_permutex2var_epi64(lo, i0, hi));
    _mm512_store_si512(dst + r * 32 + 64, _mm512_permutex2var_epi64(lo, i1, hi));
  }
}

// A per-thread buffer of at least `bytes` (64-byte aligned), kept for the thread's next calls.
unsigned char* stage_buffer(int64_t bytes) {
  struct Buf {
    unsigned char* p = nullptr;
    int64_t cap = 0;
    ~Buf() { ::operator delete[](p, std::align_val_t(64)); }
  };
  thread_local Buf buf;
  if (buf.cap < bytes) {
    ::operator delete[](buf.p, std::align_val_t(64));
    buf.p = static_cast<unsigned char*>(::operator new[](size_t(bytes), std::align_val_t(64)));
    buf.cap = bytes;
  }
  return buf.p;
}

// Rows j0 .. j0+n-1 of W × m rows of A (tiled layout, from an m-tile boundary); see the top.
template <int BITS, int NB, int SK>
void amx_rows(const View& v, int m, int64_t j0, int64_t n, float alpha, const int8_t* XB, int64_t ldxq, const float* DT, int64_t ldxd,
              const float* ST, int64_t ldxs, float beta, float* C, int64_t ldc) {
  configure_tiles();
  constexpr int64_t BB = 32 * BITS / 8;  // bytes of W per row and block
  const int64_t gpr = v.gpr, wpr = v.wpr;
  const int mtiles = (m + 15) / 16;
  const void* sbase = SK ? static_cast<const void*>(v.scales16) : static_cast<const void*>(v.scales);  // read 16-bit or fp32
  const void* bbase = SK ? static_cast<const void*>(v.biases16) : static_cast<const void*>(v.biases);
  const int64_t nb = v.cols / 32;
  alignas(64) int32_t cs[2][NB][256];
  alignas(64) float out[256];
  for (int64_t jt = 0; jt < n; jt += 16) {
    const int nr = n - jt < 16 ? int(n - jt) : 16;
    const unsigned char* w[16];
    for (int r = 0; r < 16; ++r)  // rows past n repeat the last row (read, never written out)
      w[r] = reinterpret_cast<const unsigned char*>(v.packed + (j0 + jt + (r < nr ? r : nr - 1)) * wpr);
    const bool direct = BITS == 8 && nr == 16;  // A tiles straight from W (rows wpr·4 bytes apart)
    // The 16 rows' scales and biases widened to fp32 once for every tile of A (row r's at r·gpr), and,
    // unless direct, their codes staged: block b at b·512, 32 bytes a row.
    float* sw = reinterpret_cast<float*>(stage_buffer(2 * 16 * gpr * 4 + (direct ? 0 : nb * 512)));
    float* bw = sw + 16 * gpr;
    unsigned char* stage = reinterpret_cast<unsigned char*>(bw + 16 * gpr);
    for (int r = 0; r < 16; ++r) {
      const int64_t row = j0 + jt + (r < nr ? r : nr - 1);
      const void* sr = sc_ptr<SK>(sbase, row * gpr);
      const void* br = sc_ptr<SK>(bbase, row * gpr);
      for (int64_t g = 0; g < gpr; g += 16) {
        const __mmask16 k = first_n(gpr - g);
        _mm512_mask_storeu_ps(sw + r * gpr + g, k, sc_load<SK>(sr, g, k));
        const __m512 bv = sc_load<SK>(br, g, k);  // View::bias_mul: b = bias_mul · scale, exact
        _mm512_mask_storeu_ps(bw + r * gpr + g, k, v.bias_mul != 0.0f ? _mm512_mul_ps(bv, _mm512_set1_ps(v.bias_mul)) : bv);
      }
    }
    if (!direct) {
      for (int64_t b = 0; b < nb; ++b) {
        if constexpr (BITS == 4) {
          unpack4(w, b * BB, stage + b * 512);
        } else {
#pragma GCC unroll 16
          for (int r = 0; r < 16; ++r)
            _mm256_store_si256(reinterpret_cast<__m256i*>(stage + b * 512 + r * 32), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[r] + b * BB)));
        }
      }
      publish(stage);
    }
    for (int mt = 0; mt < mtiles; ++mt) {
      const int8_t* xb = XB + int64_t(mt) * 16 * ldxq;
      const float* dt = DT + int64_t(mt) * 16 * ldxd;
      const float* st = ST + int64_t(mt) * 16 * ldxs;
      __m512 acc[16];
#pragma GCC unroll 16
      for (int r = 0; r < 16; ++r) acc[r] = _mm512_setzero_ps();
      // group g's products (A tiles from W itself or from the staged panel)
      auto issue = [&](int64_t g, auto PP) __attribute__((always_inline)) {
        constexpr int P = decltype(PP)::value;
        if (mt == 0 && direct)
#pragma GCC unroll 16
          for (int r = 0; r < 16; ++r) _mm_prefetch(reinterpret_cast<const char*>(w[r] + (g + 4) * NB * BB), _MM_HINT_T0);
        const void* a[NB];
#pragma GCC unroll 4
        for (int k = 0; k < NB; ++k) a[k] = direct ? static_cast<const void*>(w[0] + (g * NB + k) * BB) : stage + (g * NB + k) * 512;
        const int64_t as = direct ? wpr * 4 : 32;
        group_products<NB, P>(a, as, xb + g * NB * 512);
      };
      // group g's integer sums folded into the accumulators
      auto finish = [&](int64_t g, auto PP) __attribute__((always_inline)) {
        constexpr int P = decltype(PP)::value;
        group_store<NB, P>(cs[P]);
        __m512 dv[NB];
#pragma GCC unroll 4
        for (int k = 0; k < NB; ++k) dv[k] = _mm512_loadu_ps(dt + (g * NB + k) * 16);
#pragma GCC unroll 16
        for (int r = 0; r < 16; ++r) {
          __m512 ga = _mm512_mul_ps(dv[0], _mm512_cvtepi32_ps(_mm512_load_si512(cs[P][0] + r * 16)));
#pragma GCC unroll 4
          for (int k = 1; k < NB; ++k) ga = _mm512_fmadd_ps(dv[k], _mm512_cvtepi32_ps(_mm512_load_si512(cs[P][k] + r * 16)), ga);
          acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(sw[r * gpr + g]), ga, acc[r]);
        }
      };
      if constexpr (NB == 4) {
        for (int64_t g = 0; g < gpr; ++g) {
          issue(g, IntC<0>{});
          finish(g, IntC<0>{});
        }
      } else {
        issue(0, IntC<0>{});
        for (int64_t g = 0; g < gpr; g += 2) {
          if (g + 1 < gpr) issue(g + 1, IntC<1>{});
          finish(g, IntC<0>{});
          if (g + 1 < gpr) {
            if (g + 2 < gpr) issue(g + 2, IntC<0>{});
            finish(g + 1, IntC<1>{});
          }
        }
      }
      // the bias terms, bacc = bacc + b_g·xs_g over the groups: eight rows' chains side by side
      const __m512 va = _mm512_set1_ps(alpha);
#pragma GCC unroll 2
      for (int r0 = 0; r0 < 16; r0 += 8) {
        __m512 bacc[8];
#pragma GCC unroll 8
        for (int r = 0; r < 8; ++r) bacc[r] = _mm512_setzero_ps();
        for (int64_t g = 0; g < gpr; ++g) {
          const __m512 xs = _mm512_loadu_ps(st + g * 16);
#pragma GCC unroll 8
          for (int r = 0; r < 8; ++r) bacc[r] = _mm512_fmadd_ps(_mm512_set1_ps(bw[(r0 + r) * gpr + g]), xs, bacc[r]);
        }
#pragma GCC unroll 8
        for (int r = 0; r < 8; ++r) _mm512_store_ps(out + (r0 + r) * 16, _mm512_mul_ps(va, _mm512_add_ps(acc[r0 + r], bacc[r])));
      }
      // out is [row of W][row of A]: each row of A's outputs gathered (a transpose), then c = val + beta·c
      const int mr = m - mt * 16 < 16 ? m - mt * 16 : 16;
      const __m512i col = _mm512_setr_epi32(0, 16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240);
      const __mmask16 nm = first_n(nr);
      for (int l = 0; l < mr; ++l) {
        float* c = C + (int64_t(mt) * 16 + l) * ldc + jt;
        __m512 val = _mm512_i32gather_ps(col, out + l, 4);
        if (beta != 0.0f) val = _mm512_add_ps(val, _mm512_mul_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(nm, c)));
        _mm512_mask_storeu_ps(c, nm, val);
      }
    }
  }
}

template <int BITS, int NB>
void rows_bg(const View& v, int m, int64_t j0, int64_t n, float alpha, const int8_t* XB, int64_t ldxq, const float* DT, int64_t ldxd,
             const float* ST, int64_t ldxs, float beta, float* C, int64_t ldc) {
  switch (v.skind) {
    case 1: return amx_rows<BITS, NB, 1>(v, m, j0, n, alpha, XB, ldxq, DT, ldxd, ST, ldxs, beta, C, ldc);
    case 2: return amx_rows<BITS, NB, 2>(v, m, j0, n, alpha, XB, ldxq, DT, ldxd, ST, ldxs, beta, C, ldc);
    default: return amx_rows<BITS, NB, 0>(v, m, j0, n, alpha, XB, ldxq, DT, ldxd, ST, ldxs, beta, C, ldc);
  }
}

template <int BITS>
void rows_b(const View& v, int m, int64_t j0, int64_t n, float alpha, const int8_t* XB, int64_t ldxq, const float* DT, int64_t ldxd,
            const float* ST, int64_t ldxs, float beta, float* C, int64_t ldc) {
  switch (v.group) {
    case 32: return rows_bg<BITS, 1>(v, m, j0, n, alpha, XB, ldxq, DT, ldxd, ST, ldxs, beta, C, ldc);
    case 64: return rows_bg<BITS, 2>(v, m, j0, n, alpha, XB, ldxq, DT, ldxd, ST, ldxs, beta, C, ldc);
    default: return rows_bg<BITS, 4>(v, m, j0, n, alpha, XB, ldxq, DT, ldxd, ST, ldxs, beta, C, ldc);
  }
}

void rows_any(const View& v, int m, int64_t j0, int64_t n, float alpha, const int8_t* XB, int64_t ldxq, const float* DT, int64_t ldxd,
              const float* ST, int64_t ldxs, float beta, float* C, int64_t ldc) {
  if (v.bits == 4) return rows_b<4>(v, m, j0, n, alpha, XB, ldxq, DT, ldxd, ST, ldxs, beta, C, ldc);
  return rows_b<8>(v, m, j0, n, alpha, XB, ldxq, DT, ldxd, ST, ldxs, beta, C, ldc);
}

// x rounded to int8 per block of 32, natural order, one d per block (quant_avx512_util.h round_block32).
void prep(const float* x, int64_t K, int /*bits*/, int8_t* XQ, float* XD, int32_t* BS) {
  for (int64_t b = 0; b < K / 32; ++b) {
    const __m256i q = round_block32(x + 32 * b, XD + b, BS + b);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(XQ + 32 * b), q);
  }
}

const ft::quant_detail::Int8Kernels kKernels = {prep, rows_any, rows_any, 0, "amx", true, true};

}  // namespace

const ft::quant_detail::Int8Kernels* ft::quant_detail::int8_kernels_amx() { return &kKernels; }
