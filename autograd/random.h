#pragma once
// Counter-based randomness: value i of stream `seed` is a pure function of (seed, i), so results do
// not depend on thread count or evaluation order, and a recomputation (checkpointing) reproduces them.
#include <cmath>
#include <cstdint>

namespace ft {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
inline uint64_t hash2(uint64_t seed, uint64_t i) { return splitmix64(splitmix64(seed) ^ (i * 0xd1342543de82ef95ull)); }
// Uniform in [0, 1) with 24 random bits.
inline float uniform_at(uint64_t seed, uint64_t i) { return float(hash2(seed, i) >> 40) * (1.0f / 16777216.0f); }
inline float normal_at(uint64_t seed, uint64_t i) {  // Box-Muller
  uint64_t h = hash2(seed, i);
  double u1 = (double((h >> 11) & ((1ull << 26) - 1)) + 0.5) / double(1ull << 26);
  double u2 = double(h >> 38) / double(1ull << 26);
  return float(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
}

// The process-wide stream that dropout draws seeds from. Saved with the training state; checkpointed
// segments save and restore it so a recomputed forward draws the same masks.
struct RngState { uint64_t seed = 0, counter = 0; };
RngState& global_rng();
inline uint64_t next_seed() { RngState& r = global_rng(); return hash2(r.seed, r.counter++); }
// Data-parallel training (optim/dist.h): a rank that computes rows [base, base + b) of a batch draws
// those rows' dropout masks: element i of a dropout input [b, ...] uses index i + base x (numel / b), so
// the masks do not depend on how a batch is split over ranks. 0 (the default) changes nothing.
int64_t& dropout_row_base();

}  // namespace ft
