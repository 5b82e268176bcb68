#pragma once
// Small shared helpers for op kernels: parallel loops and broadcasting geometry.
#include <tbb/parallel_for.h>

#include "autograd/tensor.h"

namespace ft {

// Runs f(begin, end) over [0, n) in parallel chunks of at least `grain` iterations.
template <class F>
inline void parallel_range(int64_t n, int64_t grain, F&& f) {
  if (n <= grain) { if (n > 0) f(int64_t(0), n); return; }
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, grain),
                    [&](const tbb::blocked_range<int64_t>& r) { f(r.begin(), r.end()); });
}

// Float32 contiguous version of t (no copy when it already is one).
inline Tensor f32c(const Tensor& t) { return t.to(DType::F32).contiguous(); }

// Broadcast shape of a and b (numpy rules); throws naming the op.
Shape broadcast_shape(const Shape& a, const Shape& b, const char* op);
// Strides of `s` (contiguous) seen from the broadcast shape `out` (0 on broadcast dims).
Shape broadcast_strides(const Shape& s, const Shape& out);

}  // namespace ft
