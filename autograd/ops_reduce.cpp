// Reductions (sum, mean), softmax and log-softmax over the last dim, and sum_to (un-broadcast).
#include <algorithm>
#include <cmath>

#include "autograd/kernels.h"
#include "autograd/ops.h"
#include "autograd/profile.h"

namespace ft {

namespace {

// Sums x over the contiguous block of dims [d0, d1] -> shape with those dims set to 1 (float32).
Tensor sum_block(const Tensor& x_in, int64_t d0, int64_t d1) {
  Tensor x = f32c(x_in);
  const Shape& s = x.shape();
  int64_t outer = 1, red = 1, inner = 1;
  for (int64_t i = 0; i < d0; ++i) outer *= s[size_t(i)];
  for (int64_t i = d0; i <= d1; ++i) red *= s[size_t(i)];
  for (int64_t i = d1 + 1; i < int64_t(s.size()); ++i) inner *= s[size_t(i)];
  Shape os = s;
  for (int64_t i = d0; i <= d1; ++i) os[size_t(i)] = 1;
  Tensor out = Tensor::zeros(os);
  const float* px = x.data<float>();
  float* po = out.data<float>();
  if (inner == 1) {
    parallel_range(outer, std::max<int64_t>(1, 4096 / std::max<int64_t>(red, 1)), [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) {
        double acc = 0;
        const float* p = px + o * red;
        for (int64_t r = 0; r < red; ++r) acc += p[r];
        po[o] = float(acc);
      }
    });
  } else {
    // Parallel over (outer, inner-chunk); accumulate rows in double for accuracy.
    int64_t chunks = (inner + 255) / 256;
    parallel_range(outer * chunks, 1, [&](int64_t b, int64_t e) {
      std::vector<double> acc(256);
      for (int64_t t = b; t < e; ++t) {
        int64_t o = t / chunks, c0 = (t % chunks) * 256, c1 = std::min(inner, c0 + 256);
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t r = 0; r < red; ++r) {
          const float* p = px + (o * red + r) * inner;
          for (int64_t i = c0; i < c1; ++i) acc[size_t(i - c0)] += p[i];
        }
        for (int64_t i = c0; i < c1; ++i) po[o * inner + i] = float(acc[size_t(i - c0)]);
      }
    });
  }
  return out;
}

// Normalised, sorted, unique dims; {} means all.
std::vector<int64_t> norm_dims(std::vector<int64_t> dims, int64_t nd, const char* op) {
  if (dims.empty()) for (int64_t i = 0; i < nd; ++i) dims.push_back(i);
  for (auto& d : dims) {
    if (d < 0) d += nd;
    FT_CHECK(d >= 0 && d < nd, op, ": dim out of range for a ", nd, "-d tensor");
  }
  std::sort(dims.begin(), dims.end());
  dims.erase(std::unique(dims.begin(), dims.end()), dims.end());
  return dims;
}

// Keep-dim sum over `dims` (no autograd).
Tensor sum_keep(const Tensor& x, const std::vector<int64_t>& dims) {
  Tensor r = x;
  // Merge runs of consecutive dims into blocks; reduce from the last block.
  size_t i = dims.size();
  while (i > 0) {
    size_t j = i - 1;
    while (j > 0 && dims[j - 1] == dims[j] - 1) --j;
    r = sum_block(r, dims[j], dims[i - 1]);
    i = j;
  }
  return dims.empty() ? f32c(x).clone() : r;
}

// Broadcasts g (shape compatible) up to `shape` (no autograd).
Tensor expand_to(const Tensor& g, const Shape& shape) {
  Tensor z = Tensor::zeros(shape);
  NoGradGuard ng;
  return add(z, g);
}

struct SumNode : Node {
  Shape keep_shape;
  float factor = 1;
  const char* name() const override { return "sum"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor gk = f32c(g).view(keep_shape);
    Tensor gx = expand_to(gk, inputs[0].shape());
    if (factor != 1) {
      float* p = gx.data<float>();
      for (int64_t i = 0, n = gx.numel(); i < n; ++i) p[i] *= factor;
    }
    return {gx};
  }
};

Tensor reduce(const Tensor& x, std::vector<int64_t> dims_in, bool keepdim, bool is_mean) {
  FT_PROFILE_SCOPE(is_mean ? "mean" : "sum");
  auto dims = norm_dims(std::move(dims_in), x.dim(), is_mean ? "mean" : "sum");
  Tensor r = sum_keep(x, dims);
  int64_t count = 1;
  for (int64_t d : dims) count *= x.size(d);
  float factor = is_mean ? 1.f / float(std::max<int64_t>(count, 1)) : 1.f;
  if (is_mean) {
    float* p = r.data<float>();
    for (int64_t i = 0, n = r.numel(); i < n; ++i) p[i] *= factor;
  }
  Shape keep = r.shape();
  if (!keepdim) {
    Shape s;
    for (int64_t i = 0; i < x.dim(); ++i)
      if (!std::binary_search(dims.begin(), dims.end(), i)) s.push_back(x.size(i));
    r = r.view(s);
  }
  if (should_record({&x})) {
    auto node = std::make_shared<SumNode>();
    node->keep_shape = keep;
    node->factor = factor;
    node->inputs = {graph_edge(x)};
    return record(r, node);
  }
  return r;
}

}  // namespace

Tensor sum(const Tensor& x, std::vector<int64_t> dims, bool keepdim) { return reduce(x, std::move(dims), keepdim, false); }
Tensor mean(const Tensor& x, std::vector<int64_t> dims, bool keepdim) { return reduce(x, std::move(dims), keepdim, true); }

Tensor sum_to(const Tensor& g, const Shape& shape) {
  FT_PROFILE_SCOPE("sum_to");
  if (g.shape() == shape) return g;
  int64_t lead = g.dim() - int64_t(shape.size());
  FT_CHECK(lead >= 0, "sum_to: cannot reduce ", g.shape_str(), " to ", shape_str(shape));
  std::vector<int64_t> dims;
  for (int64_t i = 0; i < g.dim(); ++i) {
    if (i < lead) dims.push_back(i);
    else if (shape[size_t(i - lead)] == 1 && g.size(i) != 1) dims.push_back(i);
    else FT_CHECK(shape[size_t(i - lead)] == g.size(i), "sum_to: cannot reduce ", g.shape_str(), " to ", shape_str(shape));
  }
  NoGradGuard ng;
  return sum_keep(g, dims).view(shape);
}

namespace {
struct SoftmaxNode : Node {
  bool log;
  const char* name() const override { return log ? "log_softmax" : "softmax"; }
  std::vector<Tensor> backward(const Tensor& g_in) override {
    Tensor y = saved[0], g = f32c(g_in);
    int64_t C = y.size(-1), R = y.numel() / std::max<int64_t>(C, 1);
    Tensor gx = Tensor::empty(y.shape());
    const float *py = y.data<float>(), *pg = g.data<float>();
    float* po = gx.data<float>();
    bool lg = log;
    parallel_range(R, std::max<int64_t>(1, 8192 / std::max<int64_t>(C, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const float *yr = py + r * C, *gr = pg + r * C;
        float* o = po + r * C;
        double s = 0;
        if (lg) {
          for (int64_t c = 0; c < C; ++c) s += gr[c];
          for (int64_t c = 0; c < C; ++c) o[c] = gr[c] - std::exp(yr[c]) * float(s);
        } else {
          for (int64_t c = 0; c < C; ++c) s += double(gr[c]) * yr[c];
          for (int64_t c = 0; c < C; ++c) o[c] = yr[c] * (gr[c] - float(s));
        }
      }
    });
    return {gx};
  }
};

Tensor softmax_impl(const Tensor& x_in, bool lg) {
  FT_PROFILE_SCOPE(lg ? "log_softmax" : "softmax");
  FT_CHECK(x_in.dim() >= 1, lg ? "log_softmax" : "softmax", ": needs at least 1 dim");
  Tensor x = f32c(x_in);
  int64_t C = x.size(-1), R = x.numel() / std::max<int64_t>(C, 1);
  Tensor y = Tensor::empty(x.shape());
  const float* px = x.data<float>();
  float* py = y.data<float>();
  parallel_range(R, std::max<int64_t>(1, 8192 / std::max<int64_t>(C, 1)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const float* xr = px + r * C;
      float* yr = py + r * C;
      float m = -INFINITY;
      for (int64_t c = 0; c < C; ++c) m = std::max(m, xr[c]);
      if (m == -INFINITY) {  // fully masked row: zeros (softmax) / -inf (log_softmax)
        for (int64_t c = 0; c < C; ++c) yr[c] = lg ? -INFINITY : 0.f;
        continue;
      }
      double s = 0;
      for (int64_t c = 0; c < C; ++c) s += std::exp(double(xr[c] - m));
      if (lg) {
        float lse = m + float(std::log(s));
        for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] - lse;
      } else {
        float inv = float(1.0 / s);
        for (int64_t c = 0; c < C; ++c) yr[c] = std::exp(xr[c] - m) * inv;
      }
    }
  });
  if (should_record({&x_in})) {
    auto node = std::make_shared<SoftmaxNode>();
    node->log = lg;
    node->inputs = {x_in};
    node->saved = {y.detach()};  // detached: no cycle output -> node -> output
    return record(y, node);
  }
  return y;
}
}  // namespace

Tensor softmax(const Tensor& x) { return softmax_impl(x, false); }
Tensor log_softmax(const Tensor& x) { return softmax_impl(x, true); }

}  // namespace ft
