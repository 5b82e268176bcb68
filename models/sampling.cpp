#include "models/sampling.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "autograd/error.h"
#include "autograd/random.h"

namespace ft {

Sampler::Sampler(SamplingParams p) : p_(p) {
  FT_CHECK(p.temperature >= 0 && std::isfinite(p.temperature), "temperature must be >= 0, got ", p.temperature);
  FT_CHECK(p.top_k >= 0, "top-k must be >= 0, got ", p.top_k);
  FT_CHECK(p.top_p > 0 && p.top_p <= 1, "top-p must be in (0, 1], got ", p.top_p);
  FT_CHECK(p.min_p >= 0 && p.min_p <= 1, "min-p must be in [0, 1], got ", p.min_p);
  FT_CHECK(p.repetition_penalty > 0, "repetition penalty must be > 0, got ", p.repetition_penalty);
}

void apply_repetition_penalty(float* s, int64_t vocab, const std::vector<int32_t>& context, double penalty) {
  if (penalty == 1.0) return;
  std::unordered_set<int32_t> seen(context.begin(), context.end());
  for (int32_t id : seen) {
    if (id < 0 || id >= vocab) continue;
    s[id] = s[id] < 0 ? float(s[id] * penalty) : float(s[id] / penalty);
  }
}

void apply_top_k(float* s, int64_t vocab, int64_t k) {
  if (k <= 0 || k >= vocab) return;
  std::vector<float> v(s, s + vocab);
  std::nth_element(v.begin(), v.begin() + (k - 1), v.end(), std::greater<float>());
  float thr = v[size_t(k - 1)];
  for (int64_t i = 0; i < vocab; ++i)
    if (s[i] < thr) s[i] = -INFINITY;
}

namespace {
std::vector<double> softmax_d(const float* s, int64_t vocab) {
  float m = *std::max_element(s, s + vocab);
  std::vector<double> p(static_cast<size_t>(vocab));
  double z = 0;
  for (int64_t i = 0; i < vocab; ++i) z += p[size_t(i)] = s[i] == -INFINITY ? 0.0 : std::exp(double(s[i] - m));
  for (auto& x : p) x /= z;
  return p;
}
}  // namespace

void apply_top_p(float* s, int64_t vocab, double top_p) {
  if (top_p >= 1.0) return;
  std::vector<double> p = softmax_d(s, vocab);
  // HF: sort ascending by score (stable), cumulative sum, drop where cum <= 1 - p, always keep the
  // best. A full sort of a 49k vocabulary took ~5 ms per token; instead the finite scores go into
  // kB buckets by value (monotone), and from the top down the first bucket B where the mass
  // reaches top_p is found. Every token below B has cum <= mass below B <= 1 - top_p: dropped;
  // every token above B has cum >= 1 - (mass above B) > 1 - top_p: kept; only B's tokens are
  // sorted (ties: the higher index is later in the stable ascending order). Where rounding could
  // matter (a bucket edge within 1e-9 of top_p) all finite tokens form B.
  constexpr int kB = 2048;
  float lo = INFINITY, hi = -INFINITY;
  for (int64_t i = 0; i < vocab; ++i)
    if (s[i] != -INFINITY) lo = std::min(lo, s[i]), hi = std::max(hi, s[i]);
  if (!(lo <= hi)) return;  // no finite score
  const double width = double(hi) - double(lo);
  auto bucket = [&](float x) { return width > 0 ? std::min(kB - 1, int((double(x) - double(lo)) / width * kB)) : 0; };
  std::vector<double> mass(kB, 0.0);
  for (int64_t i = 0; i < vocab; ++i)
    if (s[i] != -INFINITY) mass[size_t(bucket(s[i]))] += p[size_t(i)];
  int b = kB - 1;
  double above = 0;
  while (b > 0 && above + mass[size_t(b)] < top_p) above += mass[size_t(b--)];
  const bool exact = above <= top_p - 1e-9 && above + mass[size_t(b)] >= top_p + 1e-9;
  const int b_lo = exact ? b : 0, b_hi = exact ? b : kB - 1;  // B = buckets [b_lo, b_hi]
  std::vector<int32_t> in_b;
  double cum = 0;  // ascending: everything below B first (all dropped)
  for (int64_t i = 0; i < vocab; ++i) {
    if (s[i] == -INFINITY) continue;
    const int k = bucket(s[i]);
    if (k < b_lo) {
      cum += p[size_t(i)];
      s[i] = -INFINITY;
    } else if (k <= b_hi) {
      in_b.push_back(int32_t(i));
    }
  }
  std::sort(in_b.begin(), in_b.end(), [&](int32_t x, int32_t y) { return s[x] < s[y] || (s[x] == s[y] && x < y); });
  const bool best_in_b = b_hi == kB - 1;  // the best token is the last of B then
  for (size_t r = 0; r < in_b.size(); ++r) {
    const int32_t i = in_b[r];
    cum += p[size_t(i)];
    if (cum <= 1.0 - top_p && !(best_in_b && r + 1 == in_b.size())) s[i] = -INFINITY;
  }
}

void apply_min_p(float* s, int64_t vocab, double m) {
  if (m <= 0) return;
  std::vector<double> p = softmax_d(s, vocab);
  double mx = *std::max_element(p.begin(), p.end());
  for (int64_t i = 0; i < vocab; ++i)
    if (p[size_t(i)] < m * mx) s[i] = -INFINITY;
}

int32_t Sampler::sample(float* s, int64_t vocab, const std::vector<int32_t>& context) {
  FT_CHECK(vocab > 0, "sample: empty vocabulary");
  apply_repetition_penalty(s, vocab, context, p_.repetition_penalty);
  if (p_.temperature == 0) return int32_t(std::max_element(s, s + vocab) - s);
  if (p_.temperature != 1.0)
    for (int64_t i = 0; i < vocab; ++i) s[i] = float(s[i] / p_.temperature);
  apply_top_k(s, vocab, p_.top_k);
  apply_top_p(s, vocab, p_.top_p);
  apply_min_p(s, vocab, p_.min_p);
  std::vector<double> p = softmax_d(s, vocab);
  double u = double(uniform_at(p_.seed, draws_++)), cum = 0;
  int32_t last = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    if (p[size_t(i)] <= 0) continue;
    last = int32_t(i);
    cum += p[size_t(i)];
    if (u < cum) return int32_t(i);
  }
  return last;
}

}  // namespace ft
