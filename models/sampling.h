#pragma once
// Next-token selection in HF generate()'s order: repetition penalty -> (if sampling) temperature ->
// top-k -> top-p -> min-p -> multinomial; greedy (argmax) when temperature == 0 / do_sample false.
#include <cstdint>
#include <optional>
#include <vector>

namespace ft {

struct SamplingParams {
  double temperature = 0.0;         // 0 = greedy
  int64_t top_k = 0;                // 0 = off
  double top_p = 1.0;               // 1 = off
  double min_p = 0.0;               // 0 = off
  double repetition_penalty = 1.0;  // 1 = off
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(SamplingParams p);
  // Picks the next id from fp32 logits [vocab]; `context` = all ids so far (prompt included), used by
  // the repetition penalty. Logits are modified in place.
  int32_t sample(float* logits, int64_t vocab, const std::vector<int32_t>& context);
  const SamplingParams& params() const { return p_; }

 private:
  SamplingParams p_;
  uint64_t draws_ = 0;
};

// Exposed for tests: the processors on their own.
void apply_repetition_penalty(float* logits, int64_t vocab, const std::vector<int32_t>& context, double penalty);
void apply_top_k(float* logits, int64_t vocab, int64_t k);
void apply_top_p(float* logits, int64_t vocab, double p);
void apply_min_p(float* logits, int64_t vocab, double m);

}  // namespace ft
