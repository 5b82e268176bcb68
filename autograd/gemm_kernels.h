#pragma once
// Internal to the GEMM (autograd/gemm*.cpp): the micro-kernel table each ISA file exports.
// Included by *_avx2.cpp / *_avx512.cpp, so: no STL, only plain types.
#include <cstddef>
#include <cstdint>

namespace ft::gemm_detail {

// One register tile: C[m×n] (row-major, ldc; m <= mr, n <= nr) =
//   alpha · Σ_d Apanel[d] ⊗ Bpanel[d] + beta · C        (beta == 0: C is not read)
// over depth d < depth. Panels are packed with 4-byte elements:
//   fp32 kernels:  Apanel[d*mr + r] = op(A)[r][d],  Bpanel[d*nr + j] = op(B)[d][j]   (float)
//   bf16 kernels:  d counts k-pairs; Apanel[d*mr + r] = bf16 pair (op(A)[r][2d], op(A)[r][2d+1])
//                  (low half = even k), Bpanel[d*nr + j] likewise for op(B)[2d..2d+1][j].
// Rows r >= m and columns j >= n of the panels are zero padding; the kernel writes only m×n.
// Panels are 64-byte aligned.
using Kernel = void (*)(int64_t depth, const void* a, const void* b, float* c, int64_t ldc, int m,
                        int n, float alpha, float beta);

// Packs lanes x < n and k < kc into ceil(n/w) consecutive panels of width w (mr or nr), each
// units×w (units = kc, or ceil(kc/2) with pairs); lanes past n are zero. Element (k, x) is at
//   src[x*ld + k]   when lanes_are_rows (A not transposed, B transposed), else
//   src[k*ld + x]   (A transposed, B not transposed).
// The source is float, bf16 or fp16 (src_type: kSrc*). Panel q gets float elements (bf16/fp16 widened
// exactly), dst[q*units*w + k*w + x - q*w], or with pairs (float or bf16 sources only) bf16 pairs
// (RNE-rounded from float), dst[d*w + x] = (elem(2d, x), elem(2d+1, x)) for d < ceil(kc/2), a
// missing odd k being zero.
enum : int { kSrcF32 = 0, kSrcBF16 = 1, kSrcF16 = 2, kSrcQuant = 3 /* gemm.cpp's own packer only */ };
using PackFn = void (*)(const void* src, int64_t ld, int src_type, bool lanes_are_rows, bool pairs,
                        int w, int n, int64_t kc, uint32_t* dst);

struct Kernels {
  int mr, nr;
  Kernel f32;       // fp32 × fp32 -> fp32 (FMA)
  Kernel bf16;      // bf16 pairs × bf16 pairs -> fp32 (vdpbf16ps); null where the ISA has none
  PackFn pack;      // float / bf16 sources; null: the portable packer in gemm.cpp
  PackFn pack_f16;  // fp16 sources (F16C); null: the portable packer
  // A panels in pairs mode, when the bf16 kernel wants another layout than `pack` gives (AMX:
  // see gemm_amx.cpp); null: `pack`. Same panel size (ceil(kc/2)·w pairs per panel).
  PackFn pack_a_pairs;
  // Called once at the start of every task (on the thread that then runs its kernels) before the
  // first kernel call; null: nothing to prepare. AMX loads its tile configuration here, not in every
  // kernel call (sttilecfg waits for the tile unit to drain).
  void (*prepare)();
};

// One entry per ISA file.
const Kernels* kernels_avx2();    // gemm_avx2.cpp
const Kernels* kernels_avx512();  // gemm_avx512.cpp
const Kernels* kernels_amx();     // gemm_amx.cpp (bf16 only: f32 is null); needs cpu_features().amx

}  // namespace ft::gemm_detail
