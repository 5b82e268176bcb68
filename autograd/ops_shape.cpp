// Shape ops: reshape (a view), transpose/permute/slice/concat/split (materialised copies), casts.
#include <cstring>

#include "autograd/kernels.h"
#include "autograd/ops.h"
#include "autograd/profile.h"

namespace ft {

namespace {
struct ReshapeNode : Node {
  const char* name() const override { return "reshape"; }
  std::vector<Tensor> backward(const Tensor& g) override { return {g.contiguous().view(inputs[0].shape())}; }
};
struct PermuteNode : Node {
  std::vector<int64_t> perm;
  const char* name() const override { return "permute"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    std::vector<int64_t> inv(perm.size());
    for (size_t i = 0; i < perm.size(); ++i) inv[size_t(perm[i])] = int64_t(i);
    NoGradGuard ng;
    return {permute(g, inv)};
  }
};
struct SliceNode : Node {
  int64_t dim, start, end;
  const char* name() const override { return "slice"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor gx = Tensor::zeros(inputs[0].shape());
    Tensor dst = gx.slice(dim, start, end);
    Tensor src = f32c(g);
    // Copy g into the strided window of gx: rows of the slice are contiguous runs.
    int64_t outer = 1, inner = 1;
    for (int64_t i = 0; i < dim; ++i) outer *= gx.size(i);
    for (int64_t i = dim + 1; i < gx.dim(); ++i) inner *= gx.size(i);
    int64_t len = end - start, full = gx.size(dim);
    const float* ps = src.data<float>();
    float* pd = gx.data<float>();
    parallel_range(outer, 16, [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o)
        std::memcpy(pd + (o * full + start) * inner, ps + o * len * inner, size_t(len * inner) * 4);
    });
    return {gx};
  }
};
struct ConcatNode : Node {
  int64_t dim;
  const char* name() const override { return "concat"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    std::vector<Tensor> r;
    int64_t off = 0;
    NoGradGuard ng;
    for (size_t i = 0; i < inputs.size(); ++i) {
      int64_t n = inputs[i].size(dim);
      if (needs(i)) r.push_back(g.slice(dim, off, off + n).contiguous());
      else r.emplace_back();
      off += n;
    }
    return r;
  }
};
struct CastNode : Node {
  const char* name() const override { return "to_dtype"; }
  std::vector<Tensor> backward(const Tensor& g) override { return {g.to(DType::F32)}; }
};

int64_t norm_dim(int64_t d, int64_t nd, const char* op) {
  if (d < 0) d += nd;
  FT_CHECK(d >= 0 && d < nd, op, ": dim out of range for a ", nd, "-d tensor");
  return d;
}
}  // namespace

Tensor reshape(const Tensor& x, const Shape& shape) {
  FT_PROFILE_SCOPE("reshape");
  Tensor out = x.contiguous().view(shape);  // a fresh impl sharing storage: no copy
  if (should_record({&x})) {
    auto node = std::make_shared<ReshapeNode>();
    node->inputs = {graph_edge(x)};  // the vjp needs x's shape only
    return record(out, node);
  }
  return out;
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& perm) {
  FT_PROFILE_SCOPE("permute");
  FT_CHECK(int64_t(perm.size()) == x.dim(), "permute: ", perm.size(), " dims given for ", x.shape_str());
  std::vector<bool> used(perm.size());
  auto impl = std::make_shared<TensorImpl>(*x.impl());
  impl->grad_fn.reset(); impl->grad.reset(); impl->requires_grad = false;
  for (size_t i = 0; i < perm.size(); ++i) {
    int64_t p = norm_dim(perm[i], x.dim(), "permute");
    FT_CHECK(!used[size_t(p)], "permute: dim ", p, " repeated");
    used[size_t(p)] = true;
    impl->shape[i] = x.shape()[size_t(p)];
    impl->strides[i] = x.strides()[size_t(p)];
  }
  Tensor out = Tensor(impl).clone();
  if (x.dtype() != DType::F32 && is_float(x.dtype())) out = out.to(DType::F32);
  if (should_record({&x})) {
    auto node = std::make_shared<PermuteNode>();
    node->perm = perm;
    for (auto& p : node->perm) p = norm_dim(p, x.dim(), "permute");
    node->inputs = {graph_edge(x)};  // the vjp needs x's shape only
    return record(out, node);
  }
  return out;
}

Tensor transpose(const Tensor& x, int64_t a, int64_t b) {
  FT_PROFILE_SCOPE("transpose");
  std::vector<int64_t> perm(size_t(x.dim()));
  for (int64_t i = 0; i < x.dim(); ++i) perm[size_t(i)] = i;
  a = norm_dim(a, x.dim(), "transpose");
  b = norm_dim(b, x.dim(), "transpose");
  std::swap(perm[size_t(a)], perm[size_t(b)]);
  return permute(x, perm);
}

Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end) {
  FT_PROFILE_SCOPE("slice");
  dim = norm_dim(dim, x.dim(), "slice");
  Tensor out = x.slice(dim, start, end).clone();
  if (is_float(out.dtype())) out = out.to(DType::F32);
  if (should_record({&x})) {
    auto node = std::make_shared<SliceNode>();
    node->dim = dim; node->start = start; node->end = end;
    node->inputs = {graph_edge(x)};  // the vjp needs x's shape only
    return record(out, node);
  }
  return out;
}

Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
  FT_PROFILE_SCOPE("concat");
  FT_CHECK(!xs.empty(), "concat: no tensors");
  dim = norm_dim(dim, xs[0].dim(), "concat");
  Shape os = xs[0].shape();
  os[size_t(dim)] = 0;
  for (const Tensor& t : xs) {
    FT_CHECK(t.dim() == xs[0].dim(), "concat: ", t.shape_str(), " and ", xs[0].shape_str(), " differ in rank");
    for (int64_t i = 0; i < t.dim(); ++i)
      FT_CHECK(i == dim || t.size(i) == xs[0].size(i), "concat along dim ", dim, ": shapes ", t.shape_str(), " and ", xs[0].shape_str(), " differ");
    os[size_t(dim)] += t.size(dim);
  }
  Tensor out = Tensor::empty(os);
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < dim; ++i) outer *= os[size_t(i)];
  for (int64_t i = dim + 1; i < int64_t(os.size()); ++i) inner *= os[size_t(i)];
  int64_t off = 0;
  float* po = out.data<float>();
  for (const Tensor& t : xs) {
    Tensor c = f32c(t);
    int64_t n = t.size(dim);
    const float* pc = c.data<float>();
    parallel_range(outer, 16, [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o)
        std::memcpy(po + (o * os[size_t(dim)] + off) * inner, pc + o * n * inner, size_t(n * inner) * 4);
    });
    off += n;
  }
  if (should_record(xs)) {
    auto node = std::make_shared<ConcatNode>();
    node->dim = dim;
    for (const Tensor& x : xs) node->inputs.push_back(graph_edge(x));
    return record(out, node);
  }
  return out;
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  FT_PROFILE_SCOPE("split");
  dim = norm_dim(dim, x.dim(), "split");
  int64_t total = 0;
  for (int64_t s : sizes) total += s;
  FT_CHECK(total == x.size(dim), "split: sizes sum to ", total, " but dim ", dim, " of ", x.shape_str(), " is ", x.size(dim));
  std::vector<Tensor> r;
  int64_t off = 0;
  for (int64_t s : sizes) { r.push_back(slice(x, dim, off, off + s)); off += s; }
  return r;
}

Tensor to_dtype(const Tensor& x, DType dtype) {
  FT_PROFILE_SCOPE("to_dtype");
  Tensor out = x.to(dtype);
  if (out.impl() == x.impl()) return x;
  if (should_record({&x}) && is_float(dtype)) {
    auto node = std::make_shared<CastNode>();
    node->inputs = {graph_edge(x)};  // the vjp needs x's shape only
    return record(out, node);
  }
  return out;
}

}  // namespace ft
