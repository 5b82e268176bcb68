#pragma once
// Internal to the AMX kernels (gemm_amx.cpp, quant_int8_amx.cpp; both built with the AMX flags, see
// CMakeLists.txt): the tile configuration and the compiler barrier their buffers need. Anonymous
// namespace (each includer gets its own copy); no STL.
#include <immintrin.h>

#include <cstdint>

namespace {

struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// GCC's tile intrinsics are asm statements that do not tell the compiler which memory they read
// (tileloadd: none; ldtilecfg: only the first 8 bytes of the configuration). A buffer filled here
// and read by them must be published first, or its stores may be dropped or moved past the asm.
inline void publish(const void* p) { __asm__ volatile("" : : "r"(p) : "memory"); }

// Loads `want` unless it is this thread's current configuration. Checked by each kernel at the start
// of its work, not remembered per thread: other AMX code in the process (the other ft kernel, oneDNN
// inside PyTorch) configures other tile shapes or releases the tiles (tilerelease), after which a tile
// instruction would compute with wrong shapes or fault (SIGILL).
inline void ensure_tile_config(const TileConfig& want) {
  TileConfig cur;
  _tile_storeconfig(&cur);
  __asm__ volatile("" : : "r"(&cur) : "memory");  // sttilecfg's stores, seen by the compare below
  if (__builtin_memcmp(&cur, &want, sizeof want) == 0) return;
  publish(&want);
  _tile_loadconfig(&want);
}

}  // namespace
