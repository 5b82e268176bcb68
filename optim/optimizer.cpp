#include "optim/optimizer.h"

#include <cmath>

#include "autograd/kernels.h"

namespace ft {

Optimizer::Optimizer(std::vector<NamedParam> params, OptimizerConfig cfg) : params_(std::move(params)), cfg_(std::move(cfg)) {
  parse_setting("optimizer", cfg_.type, type_);
  for (auto& p : params_) {
    FT_CHECK(p.value.dtype() == DType::F32 && p.value.is_contiguous(), "optimizer: parameter '", p.name, "' must be a contiguous float32 tensor");
    m_.push_back(Tensor::zeros(p.value.shape()));
    v_.push_back(type_ == OptimizerType::AdamW ? Tensor::zeros(p.value.shape()) : Tensor());
  }
}

void Optimizer::zero_grad() {
  for (auto& p : params_) p.value.zero_grad();
}

void Optimizer::step(float lr) {
  ++t_;
  const OptimizerConfig c = cfg_;
  const double bc1 = 1.0 - std::pow(double(c.beta1), double(t_)), bc2 = 1.0 - std::pow(double(c.beta2), double(t_));
  // Every parameter with a gradient, all updated in one parallel loop (element by element: the
  // result does not depend on how the elements are split).
  std::vector<Tensor> grads(params_.size());
  std::vector<int64_t> sizes(params_.size(), 0);
  for (size_t k = 0; k < params_.size(); ++k) {
    Tensor g = params_[k].value.grad();
    if (!g.defined()) continue;
    grads[k] = g.to(DType::F32).contiguous();
    sizes[k] = params_[k].value.numel();
  }
  const float step_size = float(lr / bc1), sq = float(1.0 / std::sqrt(bc2)), decay = 1.f - lr * c.weight_decay;
  const bool first = t_ == 1;
  parallel_pieces(sizes, 1 << 14, [&](size_t k, int64_t s, int64_t e) {
    float* p = params_[k].value.data<float>();
    const float* pg = grads[k].data<float>();
    float* m = m_[k].data<float>();
    if (type_ == OptimizerType::AdamW) {
      float* v = v_[k].data<float>();
      for (int64_t i = s; i < e; ++i) {
        p[i] *= decay;
        m[i] = c.beta1 * m[i] + (1.f - c.beta1) * pg[i];
        v[i] = c.beta2 * v[i] + (1.f - c.beta2) * pg[i] * pg[i];
        p[i] -= step_size * m[i] / (std::sqrt(v[i]) * sq + c.eps);
      }
    } else {
      for (int64_t i = s; i < e; ++i) {
        float gi = pg[i] + c.weight_decay * p[i];
        if (c.momentum != 0.f) { m[i] = first ? gi : c.momentum * m[i] + gi; gi = m[i]; }
        p[i] -= lr * gi;
      }
    }
  });
}

std::map<std::string, Tensor> Optimizer::state() const {
  std::map<std::string, Tensor> st;
  for (size_t k = 0; k < params_.size(); ++k) {
    if (type_ == OptimizerType::AdamW) {
      st[params_[k].name + ".exp_avg"] = m_[k];
      st[params_[k].name + ".exp_avg_sq"] = v_[k];
    } else {
      st[params_[k].name + ".momentum"] = m_[k];
    }
  }
  return st;
}

void Optimizer::load_state(const std::map<std::string, Tensor>& st, int64_t steps) {
  auto load = [&](const std::string& key, Tensor& dst) {
    auto it = st.find(key);
    FT_CHECK(it != st.end(), "training state: optimizer state '", key, "' is missing");
    FT_CHECK(it->second.shape() == dst.shape(), "training state: '", key, "' has shape ", it->second.shape_str(), ", expected ", dst.shape_str());
    dst.copy_(it->second);
  };
  for (size_t k = 0; k < params_.size(); ++k) {
    if (type_ == OptimizerType::AdamW) {
      load(params_[k].name + ".exp_avg", m_[k]);
      load(params_[k].name + ".exp_avg_sq", v_[k]);
    } else {
      load(params_[k].name + ".momentum", m_[k]);
    }
  }
  t_ = steps;
}

double grad_norm(const std::vector<NamedParam>& params) {
  double total = 0;
  for (auto& p : params) {
    Tensor g = p.value.grad();
    if (!g.defined()) continue;
    std::vector<float> v = g.to_vector();
    for (float x : v) total += double(x) * x;
  }
  return std::sqrt(total);
}

double clip_grad_norm(const std::vector<NamedParam>& params, double max_norm) {
  double norm = grad_norm(params);
  if (max_norm > 0 && std::isfinite(norm) && norm > max_norm) {
    float s = float(max_norm / (norm + 1e-6));
    for (auto& p : params) {
      Tensor g = p.value.grad();
      if (!g.defined()) continue;
      float* pg = g.data<float>();
      for (int64_t i = 0, n = g.numel(); i < n; ++i) pg[i] *= s;
    }
  }
  return norm;
}

Schedule make_schedule(const std::string& type, float lr, int64_t warmup, int64_t total) {
  ScheduleType t = ScheduleType::Constant;
  parse_setting("lr_schedule", type, t);
  return make_schedule(t, lr, warmup, total);
}

Schedule make_schedule(ScheduleType type, float lr, int64_t warmup, int64_t total) {
  FT_CHECK(lr >= 0 && std::isfinite(lr), "learning rate must be a finite number >= 0, got ", lr);
  FT_CHECK(warmup >= 0, "warmup_steps must be >= 0, got ", warmup);
  Schedule s;
  s.type = type;
  s.lr = lr;
  s.warmup_steps = warmup;
  s.total_steps = std::max<int64_t>(total, 1);
  return s;
}

// HF transformers semantics with `current_step` = step (0-based, the step about to be taken):
//   warmup (step < warmup): lr · step / warmup  — HF starts at 0; we use (step+1)/warmup so the first
//   update is not wasted (torchtune/mlx-lm style linear warmup ending at lr).
//   linear: lr · max(0, (total - step) / (total - warmup))
//   cosine: lr · 0.5·(1 + cos(π · (step - warmup)/(total - warmup)))
float Schedule::at(int64_t step) const {
  if (warmup_steps > 0 && step < warmup_steps) return lr * float(step + 1) / float(warmup_steps);
  if (type == ScheduleType::Constant) return lr;
  double span = double(std::max<int64_t>(total_steps - warmup_steps, 1));
  double prog = std::min(1.0, double(step - warmup_steps) / span);
  double f = type == ScheduleType::Linear ? 1.0 - prog : 0.5 * (1.0 + std::cos(M_PI * prog));
  return float(lr * (min_lr_ratio + (1.0 - min_lr_ratio) * f));
}

}  // namespace ft
