#pragma once
// Small shared helpers for op kernels: parallel loops and broadcasting geometry.
#include <tbb/parallel_for.h>

#include <algorithm>
#include <array>
#include <vector>

#include "autograd/tensor.h"

namespace ft {

// Runs f(begin, end) over [0, n) in parallel chunks of at least `grain` iterations.
template <class F>
inline void parallel_range(int64_t n, int64_t grain, F&& f) {
  if (n <= grain) { if (n > 0) f(int64_t(0), n); return; }
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, grain),
                    [&](const tbb::blocked_range<int64_t>& r) { f(r.begin(), r.end()); });
}

// Runs f(k, begin, end) over [0, sizes[k]) for every k in one parallel loop, in pieces of at most
// `grain` elements: many small tensors (an adapter's hundreds of A and B matrices) then share the
// threads instead of running one after another, each too small for a parallel loop of its own.
template <class F>
inline void parallel_pieces(const std::vector<int64_t>& sizes, int64_t grain, F&& f) {
  std::vector<std::array<int64_t, 3>> pieces;
  for (size_t k = 0; k < sizes.size(); ++k)
    for (int64_t b = 0; b < sizes[k]; b += grain) pieces.push_back({int64_t(k), b, std::min(sizes[k], b + grain)});
  parallel_range(int64_t(pieces.size()), 1, [&](int64_t a, int64_t e) {
    for (int64_t i = a; i < e; ++i) f(size_t(pieces[size_t(i)][0]), pieces[size_t(i)][1], pieces[size_t(i)][2]);
  });
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
