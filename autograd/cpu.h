#pragma once
// Run-time CPU feature detection, ISA override and thread count.
//
// Hot kernels live in files named *_avx2.cpp / *_avx512.cpp (compiled with those ISAs) and are
// chosen per call from cpu_features(). The environment variable FT_ISA caps the ISA so every
// path can be tested on one machine:
//   FT_ISA=baseline   portable x86-64 (SSE2) code only
//   FT_ISA=avx2       AVX2 + FMA kernels (no VNNI)
//   FT_ISA=avx2vnni   AVX2 + FMA + AVX-VNNI (the 256-bit vpdpbusd): not in the default ladder, for tests
//                     of the int8 decode kernels (autograd/quant.h qgemv_int8)
//   FT_ISA=avx512f    AVX-512 (F/BW/VL/DQ) kernels, but no AVX512-BF16 or VNNI instructions
//   FT_ISA=avx512     AVX-512 incl. AVX512-BF16 and AVX512-VNNI (where present), but no AMX tiles
//   FT_ISA=amx        everything this CPU has (default; same as "native")
// A level above what the CPU supports is capped to the hardware (never an illegal instruction).
#include <string>

namespace ft {

struct CpuFeatures {
  bool avx2 = false;        // AVX2 + FMA + F16C (the *_avx2.cpp kernels need all three)
  bool fma = false;
  bool avx512f = false;     // AVX-512 F + BW + VL + DQ (the *_avx512.cpp kernels need all four)
  bool avx512bf16 = false;  // AVX512-BF16 (vdpbf16ps, vcvtne2ps2bf16)
  // vdpbf16ps at twice the fp32 FMA rate (AMD Zen 4/5). Intel's (Cooper Lake, Sapphire Rapids)
  // measured at half the FMA rate, so bf16 kernels there widen to fp32 instead.
  bool fast_bf16_dot = false;
  // Integer dot products (vpdpbusd: u8 × s8 → int32, 4 products per 32-bit lane), used only by the
  // opt-in int8 decode GEMV (autograd/quant.h qgemv_int8): AVX512-VNNI (zmm, needs avx512f) and
  // AVX-VNNI (the VEX form on ymm, needs avx2).
  bool avx512vnni = false;
  bool avxvnni = false;
  // AMX-TILE + AMX-BF16 (Sapphire Rapids and later) with the tile state granted by the kernel:
  // detection asks Linux once for permission (arch_prctl ARCH_REQ_XCOMP_PERM, XTILEDATA); a
  // refusal, an older kernel or a CPU without AMX leaves this false (bf16 GEMMs then use the
  // AVX-512 / AVX2 kernels).
  bool amx = false;
  // AMX-INT8 as well (tdpbusd; the opt-in int8 products of quantised weights, autograd/quant.h).
  bool amx_int8 = false;
};

// Features in effect: hardware capped by FT_ISA (read once) or by set_isa(). Cheap to call.
const CpuFeatures& cpu_features();
// What the hardware (and OS, via XCR0) supports, ignoring any override.
const CpuFeatures& cpu_features_hw();
// Caps the features in effect to `level` (baseline|avx2|avx2vnni|avx512f|avx512|amx|native); throws ft::Error
// on an unknown name. Meant for tests and benchmarks; not thread-safe against running kernels.
void set_isa(const std::string& level);
// Name of the level in effect: "baseline", "avx2", "avx2vnni", "avx512f", "avx512" or "amx".
const char* isa_name();

// Threads ft's parallel loops may use: TBB's concurrency, limited by set_num_threads.
int num_threads();
// Limits TBB parallelism process-wide (a tbb::global_control held until the next call);
// n <= 0 restores the default (all cores). The CLI calls this for FT_NUM_THREADS / --threads.
void set_num_threads(int n);

}  // namespace ft
