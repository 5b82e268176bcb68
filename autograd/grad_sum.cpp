#include "autograd/grad_sum.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <functional>

#include "autograd/cpu.h"
#include "autograd/error.h"
#include "autograd/kernels.h"

namespace ft {

namespace {
thread_local GradSum64* t_current = nullptr;
}

GradSum64* current_grad_sum64() { return t_current; }

GradSum64::GradSum64(const std::vector<Tensor>& params) : params_(params), sums_(params.size()), has_(params.size(), 0) {
  for (size_t i = 0; i < params_.size(); ++i) sums_[i].assign(size_t(params_[i].numel()), 0.0);
}

GradSum64::Scope::Scope(GradSum64* sums) : prev_(t_current) { t_current = sums; }
GradSum64::Scope::~Scope() { t_current = prev_; }

double* GradSum64::sum_of(const Tensor& t) {
  for (size_t i = 0; i < params_.size(); ++i)
    if (params_[i].impl() == t.impl()) {
      has_[i] = 1;
      return sums_[i].data();
    }
  return nullptr;
}

// Both fold every parameter in one parallel loop (autograd/kernels.h parallel_pieces): an adapter has
// hundreds of small A and B matrices, each too small for a parallel loop of its own.
void GradSum64::absorb() {
  std::vector<Tensor> grads(params_.size());
  std::vector<int64_t> sizes(params_.size(), 0);
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor g = params_[i].grad();
    if (!g.defined()) continue;
    grads[i] = g.to(DType::F32).contiguous();
    FT_CHECK(grads[i].numel() == int64_t(sums_[i].size()), "internal: gradient of shape ", grads[i].shape_str(), " for a parameter of ",
             sums_[i].size(), " elements");
    sizes[i] = grads[i].numel();
  }
  parallel_pieces(sizes, 1 << 14, [&](size_t i, int64_t a, int64_t b) {
    const float* pg = grads[i].data<float>();
    double* s = sums_[i].data();
    for (int64_t j = a; j < b; ++j) s[j] += double(pg[j]);
  });
  for (size_t i = 0; i < params_.size(); ++i)
    if (grads[i].defined()) {
      has_[i] = 1;
      params_[i].zero_grad();
    }
}

void GradSum64::finish() {
  absorb();
  std::vector<Tensor> grads(params_.size());
  std::vector<int64_t> sizes(params_.size(), 0);
  for (size_t i = 0; i < params_.size(); ++i)
    if (has_[i]) {
      grads[i] = Tensor::empty(params_[i].shape());
      sizes[i] = grads[i].numel();
    }
  parallel_pieces(sizes, 1 << 14, [&](size_t i, int64_t a, int64_t b) {
    float* pg = grads[i].data<float>();
    double* s = sums_[i].data();
    for (int64_t j = a; j < b; ++j) {  // beyond float's range: ±inf (the conversion itself would be UB)
      const double v = s[j];
      pg[j] = std::abs(v) > double(std::numeric_limits<float>::max()) && std::isfinite(v) ? std::copysign(std::numeric_limits<float>::infinity(), float(v > 0 ? 1 : -1)) : float(v);
      s[j] = 0.0;
    }
  });
  for (size_t i = 0; i < params_.size(); ++i)
    if (has_[i]) {
      params_[i].set_grad(grads[i]);
      has_[i] = 0;
    }
}

void add_row_chunks64(int64_t rows, int64_t seq, size_t n, double* acc, const std::function<void(int64_t, int64_t, float*)>& part) {
  if (rows <= 0 || n == 0) return;
  seq = seq > 0 ? seq : rows;
  std::vector<std::pair<int64_t, int64_t>> chunks;
  for (int64_t s0 = 0; s0 < rows; s0 += seq)
    for (int64_t c = s0; c < std::min(rows, s0 + seq); c += kGradRowChunk) chunks.push_back({c, std::min({c + kGradRowChunk, s0 + seq, rows})});
  // Waves of up to one chunk per thread (the fp32 partials of one wave in memory at a time).
  const size_t wave = std::max<size_t>(1, std::min<size_t>(chunks.size(), size_t(num_threads())));
  std::vector<float> parts(wave * n);
  for (size_t c0 = 0; c0 < chunks.size(); c0 += wave) {
    const size_t w = std::min(wave, chunks.size() - c0);
    parallel_range(int64_t(w), 1, [&](int64_t a, int64_t b) {
      for (int64_t i = a; i < b; ++i) {
        float* out = parts.data() + size_t(i) * n;
        std::fill(out, out + n, 0.f);
        part(chunks[c0 + size_t(i)].first, chunks[c0 + size_t(i)].second, out);
      }
    });
    // ~16K additions a task (an adapter's A or B has only a few thousand elements: with a fixed grain
    // of 4096 of them, 16 threads summed 16 chunks in 1-3 tasks)
    parallel_range(int64_t(n), std::max<int64_t>(128, int64_t(16384 / w)), [&](int64_t a, int64_t b) {
      for (int64_t j = a; j < b; ++j) {
        double s = acc[j];
        for (size_t i = 0; i < w; ++i) s += double(parts[i * n + size_t(j)]);
        acc[j] = s;
      }
    });
  }
}

}  // namespace ft
