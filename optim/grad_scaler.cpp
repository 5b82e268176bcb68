#include "optim/grad_scaler.h"

#include <atomic>
#include <cmath>

#include "autograd/error.h"
#include "autograd/kernels.h"

namespace ft {

GradScaler::GradScaler(GradScalerConfig cfg) : cfg_(cfg), scale_(float(cfg.init_scale)) {
  FT_CHECK(std::isfinite(scale_) && scale_ > 0, "loss_scale_init must be a finite number > 0 (at most 3.4e38), got ", cfg.init_scale);
  FT_CHECK(cfg.growth_factor > 1 && std::isfinite(cfg.growth_factor), "loss scale growth factor must be > 1, got ", cfg.growth_factor);
  FT_CHECK(cfg.backoff_factor > 0 && cfg.backoff_factor < 1, "loss scale backoff factor must be in (0, 1), got ", cfg.backoff_factor);
  FT_CHECK(cfg.growth_interval > 0, "loss_scale_growth_interval must be > 0, got ", cfg.growth_interval);
}

bool GradScaler::unscale(const std::vector<NamedParam>& params) const {
  const float inv = float(1.0 / double(scale_));  // as GradScaler: scale.double().reciprocal().float()
  std::atomic<bool> found{false};
  for (const NamedParam& p : params) {
    Tensor g = p.value.grad();
    if (!g.defined()) continue;
    FT_CHECK(g.dtype() == DType::F32 && g.is_contiguous(), "GradScaler: gradient of '", p.name, "' is not contiguous float32");
    float* pg = g.data<float>();
    parallel_range(g.numel(), 1 << 14, [&](int64_t b, int64_t e) {
      bool bad = false;
      for (int64_t i = b; i < e; ++i) {
        bad |= !std::isfinite(pg[i]);
        pg[i] *= inv;
      }
      if (bad) found = true;
    });
  }
  return found;
}

void GradScaler::update(bool found_inf) {
  if (found_inf) {
    scale_ = float(double(scale_) * cfg_.backoff_factor);
    tracker_ = 0;
    ++skipped_;
    return;
  }
  if (++tracker_ == cfg_.growth_interval) {
    const float grown = float(double(scale_) * cfg_.growth_factor);
    if (std::isfinite(grown)) scale_ = grown;  // never grow past fp32's range
    tracker_ = 0;
  }
}

nlohmann::json GradScaler::state() const {
  return {{"scale", double(scale_)}, {"growth_tracker", tracker_}, {"skipped_steps", skipped_}};
}

void GradScaler::load_state(const nlohmann::json& j) {
  FT_CHECK(j.is_object() && j.contains("scale") && j["scale"].is_number() && j.contains("growth_tracker") &&
               j["growth_tracker"].is_number_integer() && j.contains("skipped_steps") && j["skipped_steps"].is_number_integer(),
           "training state: grad_scaler needs numbers scale, growth_tracker and skipped_steps, got ", j.dump());
  const float s = float(j["scale"].get<double>());
  FT_CHECK(std::isfinite(s) && s > 0, "training state: grad_scaler scale must be finite and > 0, got ", j["scale"].dump());
  scale_ = s;
  tracker_ = j["growth_tracker"].get<int64_t>();
  skipped_ = j["skipped_steps"].get<int64_t>();
}

}  // namespace ft
