// Decode attention (see autograd/attention_decode.h): per (batch row, block of keys) two passes
// over the block's key and value rows, each row read once for all query heads; vector code from
// autograd/simd.h (AVX-512 / AVX2 / SSE2 clones, chosen at run time).
#include "autograd/attention_decode.h"

#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "autograd/simd.h"

namespace ft::attn_detail {
namespace {

// Sum of the lanes, as a fixed tree.
template <int N>
FT_INLINE float hadd(typename simd::Vec<N>::F v) {
  if constexpr (N == 4) {
    return (v[0] + v[2]) + (v[1] + v[3]);
  } else {
    typename simd::Vec<N / 2>::F lo, hi;
    std::memcpy(&lo, &v, sizeof lo);
    std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof lo, sizeof hi);
    return hadd<N / 2>(lo + hi);
  }
}

template <int N>
FT_INLINE float dot(const float* x, const float* y, int64_t n) {
  using V = simd::Vec<N>;
  typename V::F acc = V::splat(0.f);
  int64_t d = 0;
  for (; d + N <= n; d += N) acc += V::load(x + d) * V::load(y + d);
  if (d < n) acc += V::load_part(x + d, n - d, 0.f) * V::load_part(y + d, n - d, 0.f);
  return hadd<N>(acc);
}

// o[0, n) += p · x[0, n)
template <int N>
FT_INLINE void axpy(float* o, float p, const float* x, int64_t n) {
  using V = simd::Vec<N>;
  const typename V::F pv = V::splat(p);
  int64_t d = 0;
  for (; d + N <= n; d += N) V::store(o + d, V::load(o + d) + pv * V::load(x + d));
  if (d < n) V::store_part(o + d, V::load_part(o + d, n - d, 0.f) + pv * V::load_part(x + d, n - d, 0.f), n - d);
}

struct Visibility {
  int64_t lo, hi;
  const int32_t* seg;  // this batch row's segment ids, or null
  int32_t qseg;
  bool operator()(int64_t j) const { return j >= lo && j < hi && (!seg || seg[j] == qseg); }
};

Visibility visibility(const DecodeArgs& a, int64_t b) {
  Visibility v;
  v.lo = a.window > 0 ? std::max<int64_t>(0, a.q_off - a.window + 1) : 0;
  v.hi = a.causal ? std::clamp<int64_t>(a.q_off + 1, 0, a.Tk) : a.Tk;
  v.seg = a.seg ? a.seg + b * a.Tk : nullptr;
  v.qseg = a.seg ? v.seg[a.q_off] : 0;
  return v;
}

// Keys [j0, j1) of batch row b: per head h the block's softmax state, m[h] (max score, -inf when
// no key is visible), l[h] = Σ exp(s - m[h]) and o[h·D ..] = Σ exp(s - m[h]) · v (unnormalised).
// Scratch: sc [Hq × (j1 - j0)], qs [Hq × D].
template <int N>
FT_INLINE void block_impl(const DecodeArgs& a, int64_t b, int64_t j0, int64_t j1, float* sc, float* qs, float* o,
                          float* m, float* l) {
  using V = simd::Vec<N>;
  using F = typename V::F;
  const int64_t H = a.Hq, D = a.D, rep = a.Hq / a.Hkv, n = j1 - j0;
  const Visibility vis = visibility(a, b);
  const float* q = a.q + b * a.qsb;
  for (int64_t e = 0; e < H * D; ++e) qs[e] = a.scale * q[e];
  for (int64_t jj = 0; jj < n; ++jj) {  // scores: each key row once, all heads
    const int64_t j = j0 + jj;
    if (!vis(j)) {
      for (int64_t h = 0; h < H; ++h) sc[h * n + jj] = -INFINITY;
      continue;
    }
    const float* kr = a.k + b * a.ksb + j * a.kst;
    for (int64_t h = 0; h < H; ++h) {
      float s = dot<N>(qs + h * D, kr + (h / rep) * D, D);
      if (a.cap > 0) s = a.cap * std::tanh(s / a.cap);
      sc[h * n + jj] = s;
    }
  }
  const F ninf = V::splat(-INFINITY), zero = V::splat(0.f);
  for (int64_t h = 0; h < H; ++h) {  // exp(s - max), masked keys exactly 0
    float* row = sc + h * n;
    F mv = ninf;
    int64_t jj = 0;
    for (; jj + N <= n; jj += N) mv = V::max(mv, V::load(row + jj));
    float mx = V::hmax(mv);
    for (; jj < n; ++jj) mx = std::max(mx, row[jj]);
    m[h] = mx;
    l[h] = 0;
    if (mx == -INFINITY) continue;
    const F mxv = V::splat(mx);
    F sum = zero;
    for (jj = 0; jj + N <= n; jj += N) {
      const F x = V::load(row + jj);
      const F p = x == ninf ? zero : V::exp(x - mxv);
      V::store(row + jj, p);
      sum += p;
    }
    float tail = 0;
    for (; jj < n; ++jj) {
      row[jj] = row[jj] == -INFINITY ? 0.f : std::exp(row[jj] - mx);
      tail += row[jj];
    }
    l[h] = hadd<N>(sum) + tail;
  }
  std::fill(o, o + H * D, 0.f);
  for (int64_t jj = 0; jj < n; ++jj) {  // weighted values: each value row once, all heads
    const int64_t j = j0 + jj;
    if (!vis(j)) continue;
    const float* vr = a.v + b * a.vsb + j * a.vst;
    for (int64_t h = 0; h < H; ++h) {
      const float p = sc[h * n + jj];
      if (p != 0.f) axpy<N>(o + h * D, p, vr + (h / rep) * D, D);
    }
  }
}

FT_SIMD_KERNEL(decode_block, block_impl,
               (const DecodeArgs& a, int64_t b, int64_t j0, int64_t j1, float* sc, float* qs, float* o, float* m, float* l),
               (a, b, j0, j1, sc, qs, o, m, l))

}  // namespace

void attention_decode(const DecodeArgs& a) {
  const int64_t H = a.Hq, D = a.D, nblk = std::max<int64_t>(1, (a.Tk + kDecodeKeyBlock - 1) / kDecodeKeyBlock);
  const int64_t tasks = a.B * nblk, stride = H * (D + 2);
  std::vector<float> part(size_t(tasks * stride));  // per task: o [H·D], m [H], l [H]
  auto task = [&](int64_t t) {
    const int64_t b = t / nblk, c = t % nblk;
    const int64_t j0 = c * kDecodeKeyBlock, j1 = std::min(a.Tk, j0 + kDecodeKeyBlock);
    std::vector<float> scratch(size_t(H * std::max<int64_t>(j1 - j0, 0) + H * D));
    float* P = part.data() + t * stride;
    decode_block(a, b, j0, j1, scratch.data(), scratch.data() + H * std::max<int64_t>(j1 - j0, 0), P, P + H * D,
                 P + H * D + H);
  };
  if (tasks == 1) task(0);
  else tbb::parallel_for(int64_t(0), tasks, task);
  for (int64_t b = 0; b < a.B; ++b)  // merge the blocks in order
    for (int64_t h = 0; h < H; ++h) {
      float mx = -INFINITY;
      for (int64_t c = 0; c < nblk; ++c) mx = std::max(mx, part[size_t((b * nblk + c) * stride + H * D + h)]);
      float* out = a.out + (b * H + h) * D;
      std::fill(out, out + D, 0.f);
      if (a.lse) a.lse[b * H + h] = -INFINITY;
      if (mx == -INFINITY) continue;  // no visible key: zeros, as the tiled path
      float lsum = 0;
      for (int64_t c = 0; c < nblk; ++c) {
        const float* P = part.data() + (b * nblk + c) * stride;
        const float ls = P[H * D + H + h];
        if (ls == 0.f) continue;
        const float w = nblk == 1 ? 1.f : std::exp(P[H * D + h] - mx);
        lsum += ls * w;
        for (int64_t d = 0; d < D; ++d) out[d] += w * P[h * D + d];
      }
      const float inv = lsum > 0 ? 1.f / lsum : 0.f;
      for (int64_t d = 0; d < D; ++d) out[d] *= inv;
      if (a.lse && lsum > 0) a.lse[b * H + h] = mx + std::log(lsum);
    }
}

}  // namespace ft::attn_detail
