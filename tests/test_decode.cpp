// Decode-time paths: top-p against the full stable sort HF does, on many distributions; attention
// of one query position over a cache (autograd/attention_decode.cpp) against a naive reference
// with softcap, window, segments, GQA, odd head sizes, several key blocks, fp32 and bf16 keys and
// values, every ISA path; batch-1 decode with a KV cache against the full forward (fp32 weights
// and cache; bf16 weights and cache).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <random>
#include <vector>

#include "autograd/cpu.h"
#include "autograd/ops.h"
#include "models/generate.h"
#include "models/model.h"
#include "models/sampling.h"

using namespace ft;
namespace fs = std::filesystem;

namespace {

// HF's TopPLogitsWarper, literally: stable ascending sort, cumulative softmax, drop cum <= 1 - p
// (never the best token).
void top_p_reference(float* s, int64_t vocab, double top_p) {
  float m = *std::max_element(s, s + vocab);
  std::vector<double> p(static_cast<size_t>(vocab));
  double z = 0;
  for (int64_t i = 0; i < vocab; ++i) z += p[size_t(i)] = s[i] == -INFINITY ? 0.0 : std::exp(double(s[i] - m));
  for (auto& x : p) x /= z;
  std::vector<int32_t> idx(static_cast<size_t>(vocab));
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return s[a] < s[b]; });
  double cum = 0;
  for (int64_t r = 0; r < vocab; ++r) {
    int32_t i = idx[size_t(r)];
    cum += p[size_t(i)];
    if (cum <= 1.0 - top_p && r < vocab - 1) s[i] = -INFINITY;
  }
}

TEST(Decode, TopPEqualsFullSort) {
  std::mt19937 rng(3);
  int cases = 0;
  for (int64_t vocab : {1, 2, 7, 100, 5000, 49152})
    for (double sigma : {0.01, 1.0, 4.0, 20.0})
      for (double top_p : {0.05, 0.5, 0.9, 0.99})
        for (int variant = 0; variant < 3; ++variant) {
          std::normal_distribution<float> n(0.f, float(sigma));
          std::vector<float> s(static_cast<size_t>(vocab));
          for (float& x : s) x = n(rng);
          if (variant == 1)  // many exact ties
            for (float& x : s) x = std::round(x * 2.f) / 2.f;
          if (variant == 2)  // after a top-k: most scores -inf
            for (size_t i = 0; i < s.size(); ++i)
              if (i % 11 != 3) s[i] = -INFINITY;
          if (variant == 2 && vocab < 4) continue;
          std::vector<float> want = s, got = s;
          top_p_reference(want.data(), vocab, top_p);
          apply_top_p(got.data(), vocab, top_p);
          ASSERT_EQ(got, want) << "vocab " << vocab << " sigma " << sigma << " top_p " << top_p << " variant " << variant;
          ++cases;
        }
  EXPECT_GT(cases, 250);
}

// Naive attention of query position q_off (Tq = 1) in double: q [B,1,Hq,D], k/v [B,Tk,Hkv,D].
std::vector<double> attention_reference(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                                        const std::vector<int32_t>& seg, int64_t B, int64_t Tk, int64_t Hq, int64_t Hkv,
                                        int64_t D, const AttentionOptions& o) {
  std::vector<double> out(size_t(B * Hq * D), 0.0);
  const double scale = o.scale != 0 ? o.scale : 1.0 / std::sqrt(double(D));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t g = h / (Hq / Hkv), t = o.q_offset;
      std::vector<double> s(size_t(Tk), -INFINITY);
      double mx = -INFINITY;
      for (int64_t j = 0; j < Tk; ++j) {
        if (o.causal && j > t) continue;
        if (o.window > 0 && t - j >= o.window) continue;
        if (!seg.empty() && seg[size_t(b * Tk + j)] != seg[size_t(b * Tk + t)]) continue;
        double d = 0;
        for (int64_t c = 0; c < D; ++c) d += double(q[size_t((b * Hq + h) * D + c)]) * double(k[size_t(((b * Tk + j) * Hkv + g) * D + c)]);
        d *= scale;
        if (o.softcap > 0) d = o.softcap * std::tanh(d / o.softcap);
        s[size_t(j)] = d;
        mx = std::max(mx, d);
      }
      if (mx == -INFINITY) continue;
      double z = 0;
      for (double& x : s) z += x = x == -INFINITY ? 0.0 : std::exp(x - mx);
      for (int64_t j = 0; j < Tk; ++j)
        for (int64_t c = 0; c < D; ++c)
          out[size_t((b * Hq + h) * D + c)] += s[size_t(j)] / z * double(v[size_t(((b * Tk + j) * Hkv + g) * D + c)]);
    }
  return out;
}

TEST(Decode, AttentionOneQueryMatchesReference) {
  struct C { int64_t B, Tk, Hq, Hkv, D; bool causal; int64_t window; float cap; bool seg; int64_t q_off; };
  const C cases[] = {{2, 1030, 9, 3, 19, true, 0, 0.f, false, 1029},   // three key blocks, odd D
                     {1, 700, 8, 2, 64, true, 300, 0.f, false, 699},   // window across blocks
                     {2, 90, 4, 1, 33, true, 0, 5.f, true, 60},        // softcap, segments, q_off < Tk - 1
                     {3, 17, 2, 2, 8, false, 5, 0.f, true, 9},         // non-causal window, segments
                     {1, 600, 4, 4, 16, true, 0, 0.f, true, 599}};     // blocks without visible keys
  const std::string saved = isa_name();
  for (const char* isa : {"baseline", "avx2", "avx512"}) {
    set_isa(isa);
    for (const C& c : cases) {
      SCOPED_TRACE(std::string(isa) + " B=" + std::to_string(c.B) + " Tk=" + std::to_string(c.Tk) + " D=" + std::to_string(c.D));
      Tensor q = Tensor::randn({c.B, 1, c.Hq, c.D}, 21, 1.f), k = Tensor::randn({c.B, c.Tk, c.Hkv, c.D}, 22, 1.f);
      Tensor v = Tensor::randn({c.B, c.Tk, c.Hkv, c.D}, 23, 1.f);
      AttentionOptions o;
      o.causal = c.causal, o.window = c.window, o.softcap = c.cap, o.q_offset = c.q_off;
      std::vector<int32_t> seg;
      if (c.seg) {  // runs of 1..40 positions; the last run ends inside blocks
        std::mt19937 rng(5);
        int32_t id = 0;
        for (int64_t b = 0; b < c.B; ++b)
          for (int64_t j = 0, left = 0; j < c.Tk; ++j, --left) {
            if (left <= 0) left = 1 + int64_t(rng() % 40), ++id;
            seg.push_back(id);
          }
        if (c.Tk == 600) std::fill(seg.begin(), seg.begin() + 520, -1);  // blocks 0 and part of 1 hidden
        o.segment_ids = Tensor::from_ids(seg, {c.B, c.Tk});
      }
      for (DType kv : {DType::F32, DType::BF16}) {  // a bf16 KV cache is read as is
        const Tensor kc = k.to(kv), vc = v.to(kv);
        std::vector<double> want = attention_reference(q.to_vector(), kc.to_vector(), vc.to_vector(), seg, c.B, c.Tk, c.Hq, c.Hkv, c.D, o);
        NoGradGuard ng;
        std::vector<float> got = attention(q, kc, vc, o).to_vector();
        ASSERT_EQ(got.size(), want.size());
        double err = 0;
        for (size_t e = 0; e < got.size(); ++e) err = std::max(err, std::fabs(double(got[e]) - want[e]));
        EXPECT_LE(err, 2e-5) << dtype_name(kv);
      }
    }
  }
  set_isa(saved);
}

// One token at a time through the KV cache gives the logits of the full forward over the sequence
// (the GEMV for M = 1 vs the packed GEMM; attention over the cache vs causal attention).
void check_decode_matches_forward(const Model& m, double tol, DType cache_dtype) {
  NoGradGuard ng;
  const std::vector<int32_t> ids = {1, 343, 223, 83, 42, 425, 81, 484, 315, 3, 223, 42};
  const int64_t T = int64_t(ids.size()), V = m.cfg.vocab_size;
  std::vector<float> full = m.forward(Tensor::from_ids(ids, {1, T})).to_vector();
  KVCache cache = m.make_cache(1, T, cache_dtype);
  ASSERT_EQ(cache.k[0].dtype(), cache_dtype);
  ForwardOptions fo;
  fo.cache = &cache;
  const int64_t prompt = 3;
  std::vector<int32_t> head(ids.begin(), ids.begin() + prompt);
  std::vector<float> got = m.forward(Tensor::from_ids(head, {1, prompt}), fo).to_vector();
  for (int64_t t = prompt; t < T; ++t) {
    std::vector<float> step = m.forward(Tensor::from_ids({ids[size_t(t)]}, {1, 1}), fo).to_vector();
    got.insert(got.end(), step.begin(), step.end());
  }
  ASSERT_EQ(got.size(), full.size());
  double worst = 0;
  for (size_t e = 0; e < got.size(); ++e) worst = std::max(worst, std::fabs(double(got[e]) - double(full[e])) / (1.0 + std::fabs(double(full[e]))));
  EXPECT_LE(worst, tol) << "max relative logit difference over " << T << " positions × " << V << " vocab";
}

const fs::path kLlama = fs::path(FT_TEST_DATA).parent_path() / "fixtures" / "models" / "llama";

// generate() and generate_batch() with a bf16 KV cache: batched greedy equals one by one, and the
// tokens mostly agree with the fp32 cache (the fixture model is tiny and random: small margins).
TEST(Decode, GenerateWithBf16Cache) {
  Model m = Model::load(kLlama.string(), {"float32"});
  const std::vector<std::vector<int32_t>> prompts = {{1, 343, 223, 83}, {1, 42, 425, 81, 484, 315, 3, 223, 42}};
  GenerateOptions o;
  o.max_tokens = 12;
  o.kv_cache = DType::BF16;
  std::vector<std::vector<int32_t>> batched = generate_batch(m, prompts, o);
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::vector<int32_t> one = generate(m, prompts[i], o, nullptr);
    EXPECT_EQ(batched[i], one) << "prompt " << i;
    GenerateOptions f = o;
    f.kv_cache = DType::F32;
    std::vector<int32_t> ref = generate(m, prompts[i], f, nullptr);
    ASSERT_EQ(ref.size(), one.size());
    EXPECT_EQ(ref[0], one[0]) << "prompt " << i;  // the first token comes from the prefill alone
  }
}

TEST(Decode, CachedStepsMatchFullForwardF32) {
  Model m = Model::load(kLlama.string(), {"float32"});
  EXPECT_EQ(m.make_cache(1, 4).k[0].dtype(), DType::F32);  // the default
  check_decode_matches_forward(m, 1e-4, DType::F32);
}

// bf16 weights. Where gemm_bf16w rounds x to bf16 (AVX512-BF16), the decode GEMV and the packed
// GEMM sum in different orders, and a ~1e-6 difference upstream can flip a bf16 rounding of an
// activation (2^-9 relative) downstream: measured 8.5e-3 with an fp32 cache (1.5e-6 where x is not
// rounded). A bf16 cache rounds keys and values too: measured 1.8e-2 (AVX512-BF16) and 9.5e-3
// (AVX2). Bounds are bf16-sized; an indexing error gives O(1).
TEST(Decode, CachedStepsMatchFullForwardBf16) {
  Model m = Model::load(kLlama.string(), {"bfloat16"});
  EXPECT_THROW(m.make_cache(1, 4, DType::F16), Error);
  check_decode_matches_forward(m, 2e-2, DType::F32);
  check_decode_matches_forward(m, 5e-2, DType::BF16);
}

}  // namespace
