#pragma once
// Rotary position embeddings exactly as transformers' modeling_rope_utils.py computes them
// (default, linear, dynamic NTK, yarn, longrope, llama3), in float32 where HF uses float32.
//
// Layout is HF's non-interleaved "rotate_half": for rot_dim = int(head_dim * partial_rotary_factor),
// cos/sin rows hold rot_dim values = concat(c, c) with c[i] = cos(pos * inv_freq[i]) * attention_scaling.
// Apply: for i < rot_dim/2: out[i] = x[i]*cos[i] - x[i+rot_dim/2]*sin[i]; out[i+rot_dim/2] = x[i+rot_dim/2]*cos[i]
// + x[i]*sin[i]; dims >= rot_dim pass through. (HF casts cos/sin to the activation dtype before applying.)
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace ft {

enum class RopeType { Default, Linear, Dynamic, Yarn, LongRope, Llama3 };
const char* rope_type_name(RopeType t);  // "default", "linear", "dynamic", "yarn", "longrope", "llama3"

// One resolved set of RoPE parameters (HF's standardized `rope_parameters` for one layer type).
struct RopeParams {
  RopeType type = RopeType::Default;
  double theta = 10000.0;
  double partial_rotary_factor = 1.0;
  std::optional<double> factor;                   // linear/dynamic/yarn/llama3 (required); longrope (optional)
  int64_t original_max_position_embeddings = 0;  // yarn/longrope/llama3 (resolved by the config parser)
  int64_t max_position_embeddings = 0;           // the model's; dynamic NTK and default factors use it
  std::optional<double> attention_factor;         // yarn/longrope: explicit cos/sin scaling
  std::optional<double> beta_fast, beta_slow;     // yarn (defaults 32 / 1)
  std::optional<double> mscale, mscale_all_dim;   // yarn
  bool truncate = true;                          // yarn: floor/ceil the correction range
  std::vector<double> short_factor, long_factor;  // longrope, rot_dim/2 each
  double low_freq_factor = 1.0, high_freq_factor = 4.0;  // llama3

  bool operator==(const RopeParams&) const = default;
};

struct RopeFreqs {
  std::vector<float> inv_freq;      // rot_dim / 2 values
  float attention_scaling = 1.0f;   // multiplies cos and sin
};

int rope_rot_dim(const RopeParams& p, int head_dim);  // int(head_dim * partial_rotary_factor)

// seq_len = the current total length (max position + 1) for the types that depend on it: dynamic
// (recomputed when seq_len > max_position_embeddings) and longrope (long factors when seq_len >
// original_max_position_embeddings). 0 = "at init" (HF's seq_len=None).
RopeFreqs rope_inv_freq(const RopeParams& p, int head_dim, int64_t seq_len = 0);

// cos/sin for positions 0..n_positions-1 (seq_len = n_positions), each [n_positions][rot_dim].
void rope_cos_sin(const RopeParams& p, int head_dim, int64_t n_positions, std::vector<float>& cos,
                  std::vector<float>& sin);
// cos/sin for arbitrary positions with an explicit seq_len (KV-cache decoding: seq_len = past + new).
// Note: HF's dynamic NTK keeps the largest seq_len seen until the length drops back under
// max_position_embeddings; callers decoding past that length pass the running maximum.
void rope_cos_sin(const RopeParams& p, int head_dim, const int64_t* positions, int64_t n, int64_t seq_len,
                  std::vector<float>& cos, std::vector<float>& sin);

}  // namespace ft
