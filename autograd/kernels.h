#pragma once
// Small shared helpers for op kernels: parallel loops and broadcasting geometry.
#include <tbb/parallel_for.h>

#include <algorithm>

#include "autograd/tensor.h"

namespace ft {

// Runs f(begin, end) over [0, n) in parallel chunks of at least `grain` iterations.
template <class F>
inline void parallel_range(int64_t n, int64_t grain, F&& f) {
  if (n <= grain) { if (n > 0) f(int64_t(0), n); return; }
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, grain),
                    [&](const tbb::blocked_range<int64_t>& r) { f(r.begin(), r.end()); });
}

// How many tasks a row-parallel kernel cuts N rows into when each task should get at least
// min_rows rows: 1 when P <= 1 or the rows fill fewer than two tasks; otherwise a multiple of P
// (equal tasks keep every thread busy to the end: 5 tasks on 2 threads leave one idle for a
// fifth of the time), at most 4 per thread (load balance on a busy machine).
inline int64_t row_task_count(int64_t N, int64_t min_rows, int P) {
  const int64_t t = N / std::max<int64_t>(1, min_rows);
  if (P <= 1 || t <= 1) return 1;
  if (t < 4 * int64_t(P)) return P;
  return 4 * int64_t(P);
}

// Float32 contiguous version of t (no copy when it already is one).
inline Tensor f32c(const Tensor& t) { return t.to(DType::F32).contiguous(); }

// Broadcast shape of a and b (numpy rules); throws naming the op.
Shape broadcast_shape(const Shape& a, const Shape& b, const char* op);
// Strides of `s` (contiguous) seen from the broadcast shape `out` (0 on broadcast dims).
Shape broadcast_strides(const Shape& s, const Shape& out);

}  // namespace ft
