// Decode attention (see autograd/attention_decode.h): per (batch row, block of keys) two passes
// over the block's key and value rows (float or bf16; 4 rows at a time), each row read once for all
// query heads; vector code from autograd/simd.h (AVX-512 / AVX2 / SSE2 clones, chosen at run time).
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

// k (<= N) keys/values from p as floats (bf16 widened exactly); lanes past k are 0.
template <int N>
FT_INLINE typename simd::Vec<N>::F load_kv(const float* p, int64_t k) {
  return k == N ? simd::Vec<N>::load(p) : simd::Vec<N>::load_part(p, k, 0.f);
}
template <int N> struct Bf16Vec;  // N bf16 bits, and N uint32 lanes
template <> struct Bf16Vec<4> {
  typedef uint16_t H __attribute__((vector_size(8)));
  typedef uint32_t U __attribute__((vector_size(16)));
};
template <> struct Bf16Vec<8> {
  typedef uint16_t H __attribute__((vector_size(16)));
  typedef uint32_t U __attribute__((vector_size(32)));
};
template <> struct Bf16Vec<16> {
  typedef uint16_t H __attribute__((vector_size(32)));
  typedef uint32_t U __attribute__((vector_size(64)));
};
template <int N>
FT_INLINE typename simd::Vec<N>::F load_kv(const uint16_t* p, int64_t k) {
  using H = typename Bf16Vec<N>::H;
  using U = typename Bf16Vec<N>::U;
  H h;
  if (k == N) {
    std::memcpy(&h, p, sizeof h);
  } else {
    h = H{};
    std::memcpy(&h, p, size_t(k) * 2);
  }
  const U u = __builtin_convertvector(h, U) << 16;
  typename simd::Vec<N>::F f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

template <int N, class T>
FT_INLINE float dot(const float* x, const T* y, int64_t n) {
  using V = simd::Vec<N>;
  typename V::F acc = V::splat(0.f), acc1 = acc;
  int64_t d = 0;
  for (; d + 2 * N <= n; d += 2 * N) {
    acc += V::load(x + d) * load_kv<N>(y + d, N);
    acc1 += V::load(x + d + N) * load_kv<N>(y + d + N, N);
  }
  if (d + N <= n) acc += V::load(x + d) * load_kv<N>(y + d, N), d += N;
  if (d < n) acc1 += V::load_part(x + d, n - d, 0.f) * load_kv<N>(y + d, n - d);
  return hadd<N>(acc + acc1);
}

// out[i] = x · y[i] over n elements, for 4 rows y[i].
template <int N, class T>
FT_INLINE void dot4(const float* x, const T* const* y, int64_t n, float* out) {
  using V = simd::Vec<N>;
  typename V::F a0 = V::splat(0.f), a1 = a0, a2 = a0, a3 = a0;
  int64_t d = 0;
  for (; d + N <= n; d += N) {
    const typename V::F xv = V::load(x + d);
    a0 += xv * load_kv<N>(y[0] + d, N), a1 += xv * load_kv<N>(y[1] + d, N);
    a2 += xv * load_kv<N>(y[2] + d, N), a3 += xv * load_kv<N>(y[3] + d, N);
  }
  if (d < n) {
    const int64_t k = n - d;
    const typename V::F xv = V::load_part(x + d, k, 0.f);
    a0 += xv * load_kv<N>(y[0] + d, k), a1 += xv * load_kv<N>(y[1] + d, k);
    a2 += xv * load_kv<N>(y[2] + d, k), a3 += xv * load_kv<N>(y[3] + d, k);
  }
  out[0] = hadd<N>(a0), out[1] = hadd<N>(a1), out[2] = hadd<N>(a2), out[3] = hadd<N>(a3);
}

// o[0, n) += p · x[0, n)
template <int N, class T>
FT_INLINE void axpy(float* o, float p, const T* x, int64_t n) {
  using V = simd::Vec<N>;
  const typename V::F pv = V::splat(p);
  int64_t d = 0;
  for (; d + N <= n; d += N) V::store(o + d, V::load(o + d) + pv * load_kv<N>(x + d, N));
  if (d < n) V::store_part(o + d, V::load_part(o + d, n - d, 0.f) + pv * load_kv<N>(x + d, n - d), n - d);
}

// o[0, n) += Σ_i p[i] · x[i][0, n) over 4 rows: one load and store of o per 4 multiply-adds.
template <int N, class T>
FT_INLINE void axpy4(float* o, const float* p, const T* const* x, int64_t n) {
  using V = simd::Vec<N>;
  const typename V::F p0 = V::splat(p[0]), p1 = V::splat(p[1]), p2 = V::splat(p[2]), p3 = V::splat(p[3]);
  int64_t d = 0;
  for (; d + N <= n; d += N)
    V::store(o + d, V::load(o + d) + (p0 * load_kv<N>(x[0] + d, N) + p1 * load_kv<N>(x[1] + d, N)) +
                        (p2 * load_kv<N>(x[2] + d, N) + p3 * load_kv<N>(x[3] + d, N)));
  if (d < n) {
    const int64_t k = n - d;
    V::store_part(o + d, V::load_part(o + d, k, 0.f) + (p0 * load_kv<N>(x[0] + d, k) + p1 * load_kv<N>(x[1] + d, k)) +
                             (p2 * load_kv<N>(x[2] + d, k) + p3 * load_kv<N>(x[3] + d, k)), k);
  }
}

// bf16 keys/values: 2N values (64 bytes with AVX-512) are widened as N 32-bit pairs, the even
// elements by a shift, the odd ones by a mask (a lane-crossing widen costs several shuffles here).
// The other operand is then "pair-split": in each full chunk of 2N elements the N even elements
// come first, then the N odd ones (split_pairs); the tail past the last full chunk keeps its order.
template <int N>
FT_INLINE void load_pairs(const uint16_t* p, typename simd::Vec<N>::F& even, typename simd::Vec<N>::F& odd) {
  using U = typename Bf16Vec<N>::U;
  U u;
  std::memcpy(&u, p, sizeof u);
  const U e = u << 16, o = u & 0xffff0000u;
  std::memcpy(&even, &e, sizeof even);
  std::memcpy(&odd, &o, sizeof odd);
}
template <int N>
void split_pairs(float* x, int64_t n) {
  float t[2 * N];
  for (int64_t c = 0; c + 2 * N <= n; c += 2 * N) {
    std::memcpy(t, x + c, sizeof t);
    for (int l = 0; l < N; ++l) x[c + l] = t[2 * l], x[c + N + l] = t[2 * l + 1];
  }
}
template <int N>
void unsplit_pairs(float* x, int64_t n) {
  float t[2 * N];
  for (int64_t c = 0; c + 2 * N <= n; c += 2 * N) {
    std::memcpy(t, x + c, sizeof t);
    for (int l = 0; l < N; ++l) x[c + 2 * l] = t[l], x[c + 2 * l + 1] = t[N + l];
  }
}

template <int N>
FT_INLINE float dot(const float* x, const uint16_t* y, int64_t n) {  // x pair-split
  using V = simd::Vec<N>;
  typename V::F acc = V::splat(0.f), acc1 = acc, e, o;
  int64_t d = 0;
  for (; d + 2 * N <= n; d += 2 * N) {
    load_pairs<N>(y + d, e, o);
    acc += V::load(x + d) * e, acc1 += V::load(x + d + N) * o;
  }
  for (; d < n; d += N) {
    const int64_t k = n - d < N ? n - d : N;
    acc += V::load_part(x + d, k, 0.f) * load_kv<N>(y + d, k);
  }
  return hadd<N>(acc + acc1);
}

template <int N>
FT_INLINE void dot4(const float* x, const uint16_t* const* y, int64_t n, float* out) {  // x pair-split
  using V = simd::Vec<N>;
  typename V::F a0 = V::splat(0.f), a1 = a0, a2 = a0, a3 = a0, e, o;
  int64_t d = 0;
  for (; d + 2 * N <= n; d += 2 * N) {
    const typename V::F xe = V::load(x + d), xo = V::load(x + d + N);
    load_pairs<N>(y[0] + d, e, o), a0 += xe * e + xo * o;
    load_pairs<N>(y[1] + d, e, o), a1 += xe * e + xo * o;
    load_pairs<N>(y[2] + d, e, o), a2 += xe * e + xo * o;
    load_pairs<N>(y[3] + d, e, o), a3 += xe * e + xo * o;
  }
  for (; d < n; d += N) {
    const int64_t k = n - d < N ? n - d : N;
    const typename V::F xv = V::load_part(x + d, k, 0.f);
    a0 += xv * load_kv<N>(y[0] + d, k), a1 += xv * load_kv<N>(y[1] + d, k);
    a2 += xv * load_kv<N>(y[2] + d, k), a3 += xv * load_kv<N>(y[3] + d, k);
  }
  out[0] = hadd<N>(a0), out[1] = hadd<N>(a1), out[2] = hadd<N>(a2), out[3] = hadd<N>(a3);
}

template <int N>
FT_INLINE void axpy(float* o, float p, const uint16_t* x, int64_t n) {  // o pair-split
  using V = simd::Vec<N>;
  const typename V::F pv = V::splat(p);
  typename V::F e, od;
  int64_t d = 0;
  for (; d + 2 * N <= n; d += 2 * N) {
    load_pairs<N>(x + d, e, od);
    V::store(o + d, V::load(o + d) + pv * e);
    V::store(o + d + N, V::load(o + d + N) + pv * od);
  }
  for (; d < n; d += N) {
    const int64_t k = n - d < N ? n - d : N;
    V::store_part(o + d, V::load_part(o + d, k, 0.f) + pv * load_kv<N>(x + d, k), k);
  }
}

template <int N>
FT_INLINE void axpy4(float* o, const float* p, const uint16_t* const* x, int64_t n) {  // o pair-split
  using V = simd::Vec<N>;
  const typename V::F p0 = V::splat(p[0]), p1 = V::splat(p[1]), p2 = V::splat(p[2]), p3 = V::splat(p[3]);
  typename V::F e0, o0, e1, o1, e2, o2, e3, o3;
  int64_t d = 0;
  for (; d + 2 * N <= n; d += 2 * N) {
    load_pairs<N>(x[0] + d, e0, o0), load_pairs<N>(x[1] + d, e1, o1);
    load_pairs<N>(x[2] + d, e2, o2), load_pairs<N>(x[3] + d, e3, o3);
    V::store(o + d, V::load(o + d) + (p0 * e0 + p1 * e1) + (p2 * e2 + p3 * e3));
    V::store(o + d + N, V::load(o + d + N) + (p0 * o0 + p1 * o1) + (p2 * o2 + p3 * o3));
  }
  for (; d < n; d += N) {
    const int64_t k = n - d < N ? n - d : N;
    V::store_part(o + d, V::load_part(o + d, k, 0.f) + (p0 * load_kv<N>(x[0] + d, k) + p1 * load_kv<N>(x[1] + d, k)) +
                             (p2 * load_kv<N>(x[2] + d, k) + p3 * load_kv<N>(x[3] + d, k)), k);
  }
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
template <int N, class T>
FT_INLINE void block_t(const DecodeArgs& a, int64_t b, int64_t j0, int64_t j1, float* sc, float* qs, float* o,
                       float* m, float* l) {
  using V = simd::Vec<N>;
  using F = typename V::F;
  const int64_t H = a.Hq, D = a.D, rep = a.Hq / a.Hkv, n = j1 - j0;
  const Visibility vis = visibility(a, b);
  const float* q = a.q + b * a.qsb;
  for (int64_t e = 0; e < H * D; ++e) qs[e] = a.scale * q[e];
  constexpr bool kPairs = sizeof(T) == 2;  // bf16 keys/values: q and o pair-split
  if (kPairs)
    for (int64_t h = 0; h < H; ++h) split_pairs<N>(qs + h * D, D);
  auto krow = [&](int64_t j) { return static_cast<const T*>(a.k) + b * a.ksb + j * a.kst; };
  auto score1 = [&](int64_t jj) {  // one key row, all heads
    const int64_t j = j0 + jj;
    if (!vis(j)) {
      for (int64_t h = 0; h < H; ++h) sc[h * n + jj] = -INFINITY;
      return;
    }
    const T* kr = krow(j);
    for (int64_t g = 0, h = 0; g < a.Hkv; ++g)
      for (int64_t r = 0; r < rep; ++r, ++h) sc[h * n + jj] = dot<N>(qs + h * D, kr + g * D, D);
  };
  int64_t j4 = 0;
  for (; j4 + 4 <= n; j4 += 4) {  // scores: each key row once, all heads; 4 rows at a time
    const int64_t j = j0 + j4;
    if (!(vis(j) && vis(j + 1) && vis(j + 2) && vis(j + 3))) {
      for (int64_t u = 0; u < 4; ++u) score1(j4 + u);
      continue;
    }
    const T* kr[4] = {krow(j), krow(j + 1), krow(j + 2), krow(j + 3)};
    for (int64_t g = 0, h = 0; g < a.Hkv; ++g) {
      const T* kg[4] = {kr[0] + g * D, kr[1] + g * D, kr[2] + g * D, kr[3] + g * D};
      for (int64_t r = 0; r < rep; ++r, ++h) dot4<N>(qs + h * D, kg, D, sc + h * n + j4);
    }
  }
  for (; j4 < n; ++j4) score1(j4);
  if (a.cap > 0)
    for (int64_t e = 0; e < H * n; ++e)
      if (sc[e] != -INFINITY) sc[e] = a.cap * std::tanh(sc[e] / a.cap);
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
  auto vrow = [&](int64_t j) { return static_cast<const T*>(a.v) + b * a.vsb + j * a.vst; };
  int64_t jj = 0;
  for (; jj + 4 <= n; jj += 4) {  // weighted values: each value row once, all heads; 4 rows at a time
    const int64_t j = j0 + jj;
    if (vis(j) && vis(j + 1) && vis(j + 2) && vis(j + 3)) {
      const T* vr[4] = {vrow(j), vrow(j + 1), vrow(j + 2), vrow(j + 3)};
      for (int64_t g = 0, h = 0; g < a.Hkv; ++g) {
        const T* vg[4] = {vr[0] + g * D, vr[1] + g * D, vr[2] + g * D, vr[3] + g * D};
        for (int64_t r = 0; r < rep; ++r, ++h) {
          const float p[4] = {sc[h * n + jj], sc[h * n + jj + 1], sc[h * n + jj + 2], sc[h * n + jj + 3]};
          axpy4<N>(o + h * D, p, vg, D);
        }
      }
      continue;
    }
    for (int64_t u = 0; u < 4; ++u) {
      if (!vis(j + u)) continue;
      const T* vr = vrow(j + u);
      for (int64_t g = 0, h = 0; g < a.Hkv; ++g)
        for (int64_t r = 0; r < rep; ++r, ++h) axpy<N>(o + h * D, sc[h * n + jj + u], vr + g * D, D);
    }
  }
  for (; jj < n; ++jj) {
    if (!vis(j0 + jj)) continue;
    const T* vr = vrow(j0 + jj);
    for (int64_t g = 0, h = 0; g < a.Hkv; ++g)
      for (int64_t r = 0; r < rep; ++r, ++h) axpy<N>(o + h * D, sc[h * n + jj], vr + g * D, D);
  }
  if (kPairs)
    for (int64_t h = 0; h < H; ++h) unsplit_pairs<N>(o + h * D, D);
}

template <int N>
FT_INLINE void block_impl(const DecodeArgs& a, int64_t b, int64_t j0, int64_t j1, float* sc, float* qs, float* o,
                          float* m, float* l) {
  if (a.kv_bf16) block_t<N, uint16_t>(a, b, j0, j1, sc, qs, o, m, l);
  else block_t<N, float>(a, b, j0, j1, sc, qs, o, m, l);
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
