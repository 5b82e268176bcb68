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
  // best. The kept tokens are a suffix of that order, so only the top of it is sorted: the K best
  // finite scores (ties: the higher index is later in the stable ascending order, so "better"),
  // K = 64, 256, ... until they hold more than top_p of the mass. Every other token then has
  // cum <= 1 - top_p and is dropped. (A full stable sort of a 49k vocabulary took ~5 ms per token.)
  std::vector<int32_t> idx;
  for (int64_t i = 0; i < vocab; ++i)
    if (s[i] != -INFINITY) idx.push_back(int32_t(i));
  if (idx.empty()) return;
  auto better = [&](int32_t a, int32_t b) { return s[a] > s[b] || (s[a] == s[b] && a > b); };
  size_t K = std::min<size_t>(idx.size(), 64);
  for (;;) {
    std::partial_sort(idx.begin(), idx.begin() + std::ptrdiff_t(K), idx.end(), better);
    double top = 0;
    for (size_t r = 0; r < K; ++r) top += p[size_t(idx[r])];
    if (K == idx.size() || top > top_p + 1e-9) break;
    K = std::min(idx.size(), K * 4);
  }
  double cum = 0;  // ascending: the tokens below the K best first (all dropped), then the K best
  for (size_t r = K; r < idx.size(); ++r) {
    cum += p[size_t(idx[r])];
    s[idx[r]] = -INFINITY;
  }
  for (size_t r = K; r-- > 0;) {
    const int32_t i = idx[r];
    cum += p[size_t(i)];
    if (cum <= 1.0 - top_p && r > 0) s[i] = -INFINITY;  // r == 0: the best, always kept
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
