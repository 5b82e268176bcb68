#pragma once
// Dynamic loss scaling for float16 training (autograd/ops.h: AutocastF16Guard), with the semantics of
// torch.amp.GradScaler (defaults init_scale 2^16, growth_factor 2, backoff_factor 0.5,
// growth_interval 2000):
//   backward of loss·scale()                   gradients are scaled, so small ones survive fp16
//   found_inf = unscale(params)                every .grad() *= float(1/scale) (fp32); found_inf when any
//                                              scaled gradient was inf/NaN (checked before unscaling)
//   if (!found_inf) { clip; optimizer.step(); } otherwise the step is skipped: weights and moments untouched
//   update(found_inf)                          inf: scale *= backoff_factor, tracker = 0; else tracker += 1
//                                              and at growth_interval: scale *= growth_factor (unless that
//                                              overflows fp32), tracker = 0
// The scale is a float32, as torch's. The trainer (optim/trainer.cpp) counts a skipped step as a step
// (data consumed, step counter and LR schedule advance, as with GradScaler + an LR scheduler stepped every
// iteration) but not as an optimiser step (AdamW's bias-correction count t does not advance).
#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "optim/optimizer.h"

namespace ft {

struct GradScalerConfig {
  double init_scale = 65536.0, growth_factor = 2.0, backoff_factor = 0.5;
  int64_t growth_interval = 2000;
};

class GradScaler {
 public:
  explicit GradScaler(GradScalerConfig cfg = {});  // ft::Error on a non-positive/non-finite setting
  float scale() const { return scale_; }
  int64_t growth_tracker() const { return tracker_; }  // consecutive good steps since the last change
  int64_t skipped_steps() const { return skipped_; }   // steps skipped for inf/NaN gradients, in total
  // Unscales every defined .grad() in place; true when any scaled gradient was inf or NaN.
  bool unscale(const std::vector<NamedParam>& params) const;
  void update(bool found_inf);
  // {"scale", "growth_tracker", "skipped_steps"}: exact round trip (the scale is a float32 in a double).
  nlohmann::json state() const;
  void load_state(const nlohmann::json& j);  // ft::Error naming the missing/bad key

 private:
  GradScalerConfig cfg_;
  float scale_;
  int64_t tracker_ = 0, skipped_ = 0;
};

}  // namespace ft
