#pragma once
// Optimisers over named float32 parameters (the trainable ones: LoRA A/B, DoRA magnitudes, or full
// weights). Semantics follow torch.optim:
//   AdamW: p -= lr·wd·p (decoupled), m = β1·m + (1-β1)·g, v = β2·v + (1-β2)·g²,
//          p -= lr · (m / (1-β1ᵗ)) / (sqrt(v / (1-β2ᵗ)) + eps)
//   SGD:   g += wd·p (coupled L2); with momentum μ: b = μ·b + g (b = g at the first step); p -= lr·b
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "autograd/param.h"
#include "autograd/tensor.h"
#include "optim/settings.h"

namespace ft {

struct OptimizerConfig {
  std::string type = "adamw";  // adamw | sgd: parsed once by the Optimizer (ft::Error naming the key otherwise)
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float weight_decay = 0.0f;
  float momentum = 0.0f;       // sgd
};

class Optimizer {
 public:
  Optimizer(std::vector<NamedParam> params, OptimizerConfig cfg);
  // One update with learning rate lr from the parameters' .grad() (parameters without grad are skipped).
  void step(float lr);
  void zero_grad();
  int64_t steps() const { return t_; }
  const std::vector<NamedParam>& params() const { return params_; }
  const OptimizerConfig& config() const { return cfg_; }
  // State for checkpoints: "<param>.exp_avg", "<param>.exp_avg_sq" (adamw), "<param>.momentum" (sgd).
  std::map<std::string, Tensor> state() const;
  void load_state(const std::map<std::string, Tensor>& st, int64_t steps);

 private:
  std::vector<NamedParam> params_;
  OptimizerConfig cfg_;
  OptimizerType type_;
  std::vector<Tensor> m_, v_;  // adamw moments or sgd momentum buffers (m_)
  int64_t t_ = 0;
};

// Global-norm clipping as torch.nn.utils.clip_grad_norm_: scales all grads by max_norm/(norm+1e-6)
// when norm > max_norm. Returns the norm before clipping (inf/NaN passes through).
double clip_grad_norm(const std::vector<NamedParam>& params, double max_norm);
double grad_norm(const std::vector<NamedParam>& params);

// Learning-rate schedules with linear warmup (HF transformers' get_*_schedule_with_warmup):
//   warmup: lr·(step+1)/warmup for step < warmup ... see schedule.cpp for the exact formulas.
struct Schedule {
  ScheduleType type = ScheduleType::Constant;
  float lr = 1e-5f;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  float min_lr_ratio = 0.0f;      // cosine/linear decay floor as a fraction of lr
  float at(int64_t step) const;   // step counts from 0 (the lr used for the first update)
};
Schedule make_schedule(ScheduleType type, float lr, int64_t warmup, int64_t total);
// The same from the text form (constant | linear | cosine); ft::Error naming lr_schedule otherwise.
Schedule make_schedule(const std::string& type, float lr, int64_t warmup, int64_t total);

}  // namespace ft
