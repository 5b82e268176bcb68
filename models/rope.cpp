#include "models/rope.h"

#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>

#include "autograd/error.h"

namespace ft {

namespace {

constexpr double kPi = 3.14159265358979323846;

// float32 pow as torch computes `base ** float32_tensor` (correctly rounded up to the last ulp).
float powf32(float base, float e) { return float(std::pow(double(base), double(e))); }

// HF: torch.arange(0, dim, 2).float() / dim, in float32.
float exponent(int i, int dim) { return float(2 * i) / float(dim); }

std::vector<float> default_inv(float base, int dim) {
  std::vector<float> inv(dim / 2);
  for (int i = 0; i < dim / 2; ++i) inv[i] = 1.0f / powf32(base, exponent(i, dim));
  return inv;
}

double need_factor(const RopeParams& p) {
  FT_CHECK(p.factor.has_value(), "rope_type '", rope_type_name(p.type), "' needs a 'factor'");
  return *p.factor;
}

double yarn_mscale(double scale, double m) { return scale <= 1 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; }

}  // namespace

const char* rope_type_name(RopeType t) {
  switch (t) {
    case RopeType::Default: return "default";
    case RopeType::Linear: return "linear";
    case RopeType::Dynamic: return "dynamic";
    case RopeType::Yarn: return "yarn";
    case RopeType::LongRope: return "longrope";
    case RopeType::Llama3: return "llama3";
  }
  return "?";
}

int rope_rot_dim(const RopeParams& p, int head_dim) {
  int d = int(double(head_dim) * p.partial_rotary_factor);
  FT_CHECK(d >= 2 && d % 2 == 0 && d <= head_dim, "rope: rotary dim ", d, " (head_dim ", head_dim,
           " x partial_rotary_factor ", p.partial_rotary_factor, ") must be even, >= 2 and <= head_dim");
  return d;
}

RopeFreqs rope_inv_freq(const RopeParams& p, int head_dim, int64_t seq_len) {
  const int dim = rope_rot_dim(p, head_dim);
  FT_CHECK(p.theta > 0, "rope: rope_theta must be positive, got ", p.theta);
  const float base = float(p.theta);
  RopeFreqs r;
  switch (p.type) {
    case RopeType::Default:
      r.inv_freq = default_inv(base, dim);
      break;
    case RopeType::Linear: {
      const float f = float(need_factor(p));
      r.inv_freq = default_inv(base, dim);
      for (float& v : r.inv_freq) v /= f;
      break;
    }
    case RopeType::Dynamic: {
      const double factor = need_factor(p);
      const int64_t maxp = p.max_position_embeddings;
      FT_CHECK(maxp > 0, "rope: dynamic scaling needs max_position_embeddings");
      if (seq_len <= maxp) {  // HF keeps the init-time frequencies (base unchanged) up to max_position_embeddings
        r.inv_freq = default_inv(base, dim);
      } else {  // HF recomputes in forward with a tensor seq_len: float32 arithmetic throughout
        float s = float(factor) * float(seq_len) / float(maxp) - float(factor - 1);
        float b = base * powf32(s, float(double(dim) / double(dim - 2)));
        r.inv_freq = default_inv(b, dim);
      }
      break;
    }
    case RopeType::Yarn: {
      const int64_t orig = p.original_max_position_embeddings;
      FT_CHECK(orig > 0, "rope: yarn needs original_max_position_embeddings");
      FT_CHECK(p.theta != 1.0, "rope: yarn needs rope_theta != 1");
      const double factor = p.factor ? *p.factor : double(p.max_position_embeddings) / double(orig);
      double af;
      if (p.attention_factor) af = *p.attention_factor;
      else if (p.mscale.value_or(0) != 0 && p.mscale_all_dim.value_or(0) != 0)
        af = yarn_mscale(factor, *p.mscale) / yarn_mscale(factor, *p.mscale_all_dim);
      else af = yarn_mscale(factor, 1.0);
      r.attention_scaling = float(af);
      const double bf = p.beta_fast.value_or(0) != 0 ? *p.beta_fast : 32.0;
      const double bs = p.beta_slow.value_or(0) != 0 ? *p.beta_slow : 1.0;
      auto corr = [&](double rot) { return (dim * std::log(double(orig) / (rot * 2 * kPi))) / (2 * std::log(p.theta)); };
      double low = corr(bf), high = corr(bs);
      if (p.truncate) { low = std::floor(low); high = std::ceil(high); }
      low = std::max(low, 0.0);
      high = std::min(high, double(dim - 1));
      if (low == high) high += 0.001;
      const float lo = float(low), span = float(high - low), f = float(factor);
      r.inv_freq.resize(dim / 2);
      for (int i = 0; i < dim / 2; ++i) {
        float ramp = std::clamp((float(i) - lo) / span, 0.0f, 1.0f);
        float ext = 1.0f - ramp;
        float pos = powf32(base, exponent(i, dim));
        float extrap = 1.0f / pos, interp = 1.0f / (f * pos);
        r.inv_freq[i] = interp * (1.0f - ext) + extrap * ext;
      }
      break;
    }
    case RopeType::LongRope: {
      const int64_t orig = p.original_max_position_embeddings;
      FT_CHECK(orig > 0, "rope: longrope needs original_max_position_embeddings");
      FT_CHECK(p.short_factor.size() == size_t(dim / 2) && p.long_factor.size() == size_t(dim / 2),
               "rope: longrope short_factor/long_factor must hold rot_dim/2 = ", dim / 2, " values, got ",
               p.short_factor.size(), " and ", p.long_factor.size());
      const double factor = p.factor ? *p.factor : double(p.max_position_embeddings) / double(orig);
      double af = p.attention_factor ? *p.attention_factor
                                     : (factor <= 1 ? 1.0 : std::sqrt(1 + std::log(factor) / std::log(double(orig))));
      r.attention_scaling = float(af);
      const auto& ext = seq_len > orig ? p.long_factor : p.short_factor;
      r.inv_freq.resize(dim / 2);
      for (int i = 0; i < dim / 2; ++i) r.inv_freq[i] = 1.0f / (float(ext[i]) * powf32(base, exponent(i, dim)));
      break;
    }
    case RopeType::Llama3: {
      const double factor = need_factor(p);
      const double old = double(p.original_max_position_embeddings);
      FT_CHECK(old > 0, "rope: llama3 needs original_max_position_embeddings");
      FT_CHECK(p.high_freq_factor != p.low_freq_factor, "rope: llama3 high_freq_factor must differ from low_freq_factor");
      const float low_wl = float(old / p.low_freq_factor), high_wl = float(old / p.high_freq_factor);
      const float f = float(factor), two_pi = float(2 * kPi);
      r.inv_freq = default_inv(base, dim);
      for (float& inv : r.inv_freq) {
        float wl = two_pi / inv;
        float scaled = wl > low_wl ? inv / f : inv;
        if (!(wl < high_wl) && !(wl > low_wl)) {
          float s = (float(old) / wl - float(p.low_freq_factor)) / float(p.high_freq_factor - p.low_freq_factor);
          scaled = (1.0f - s) * scaled / f + s * scaled;
        }
        inv = scaled;
      }
      break;
    }
  }
  return r;
}

void rope_cos_sin(const RopeParams& p, int head_dim, const int64_t* positions, int64_t n, int64_t seq_len,
                  std::vector<float>& cos, std::vector<float>& sin) {
  RopeFreqs f = rope_inv_freq(p, head_dim, seq_len);
  const int64_t half = int64_t(f.inv_freq.size()), rd = 2 * half;
  cos.resize(size_t(n * rd));
  sin.resize(size_t(n * rd));
  const float sc = f.attention_scaling;
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, 256), [&](const tbb::blocked_range<int64_t>& rg) {
    for (int64_t t = rg.begin(); t < rg.end(); ++t) {
      const float pos = float(positions[t]);
      float* c = cos.data() + t * rd;
      float* s = sin.data() + t * rd;
      for (int64_t i = 0; i < half; ++i) {
        const double a = double(pos * f.inv_freq[i]);  // float32 product, as HF
        c[i] = c[i + half] = float(std::cos(a)) * sc;
        s[i] = s[i + half] = float(std::sin(a)) * sc;
      }
    }
  });
}

void rope_cos_sin(const RopeParams& p, int head_dim, int64_t n_positions, std::vector<float>& cos,
                  std::vector<float>& sin) {
  std::vector<int64_t> pos(size_t(std::max<int64_t>(n_positions, 0)));
  for (int64_t i = 0; i < n_positions; ++i) pos[size_t(i)] = i;
  rope_cos_sin(p, head_dim, pos.data(), n_positions, n_positions, cos, sin);
}

}  // namespace ft
