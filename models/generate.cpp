#include "models/generate.h"

#include <cmath>

#include <algorithm>
#include <chrono>
#include <set>

#include "autograd/ops.h"
#include "autograd/quant.h"

namespace ft {

std::vector<int32_t> eos_ids(const Model& model, std::optional<int32_t> tokenizer_eos) {
  std::set<int32_t> eos;
  if (!model.dir.empty())
    for (int64_t e : load_generation_config(model.dir, &model.cfg).eos_token_ids) eos.insert(int32_t(e));
  for (int64_t e : model.cfg.eos_token_ids) eos.insert(int32_t(e));
  if (tokenizer_eos) eos.insert(*tokenizer_eos);
  return {eos.begin(), eos.end()};
}

namespace {
double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
bool is_eos(const GenerateOptions& o, int32_t id) { return std::find(o.eos_ids.begin(), o.eos_ids.end(), id) != o.eos_ids.end(); }
}  // namespace

std::vector<int32_t> generate(const Model& model, const std::vector<int32_t>& prompt, const GenerateOptions& opt,
                              const std::function<bool(int32_t)>& on_token, GenerateStats* stats) {
  FT_CHECK(!prompt.empty(), "generate: the prompt is empty (nothing to condition on)");
  FT_CHECK(opt.compute == DType::F32 || opt.compute == DType::BF16, "generate: compute must be float32 or bfloat16, got ",
           dtype_name(opt.compute));
  NoGradGuard ng;
  AutocastBF16Guard bf(opt.compute == DType::BF16);
  Int8ComputeGuard i8(opt.int8_activations);
  const int64_t V = model.cfg.vocab_size;
  for (int32_t id : prompt) FT_CHECK(id >= 0 && id < V, "generate: prompt token id ", id, " is outside the vocabulary [0, ", V, ")");
  KVCache cache = model.make_cache(1, int64_t(prompt.size()) + std::max<int64_t>(opt.max_tokens, 1), opt.kv_cache);
  Sampler sampler(opt.sampling);
  std::vector<int32_t> context = prompt, out;
  GenerateStats st;
  st.prompt_tokens = int64_t(prompt.size());
  double t0 = now();
  ForwardOptions fo;
  fo.cache = &cache;
  Tensor h = model.hidden(Tensor::from_ids(prompt, {1, int64_t(prompt.size())}), fo);
  Tensor last = model.logits(h.slice(1, h.size(1) - 1, h.size(1)).contiguous());
  st.prompt_seconds = now() - t0;
  double t1 = now();
  st.finish_reason = "length";
  for (int64_t step = 0; step < opt.max_tokens; ++step) {
    std::vector<float> lg = last.to_vector();
    float t1v = -INFINITY, t2v = -INFINITY;
    for (float x : lg)
      if (x > t1v) t2v = t1v, t1v = x;
      else if (x > t2v) t2v = x;
    st.margins.push_back(t1v - t2v);
    int32_t id = sampler.sample(lg.data(), V, context);
    if (is_eos(opt, id)) { st.finish_reason = "eos"; break; }
    out.push_back(id);
    context.push_back(id);
    if (on_token && !on_token(id)) { st.finish_reason = "stop"; break; }
    if (step + 1 == opt.max_tokens) break;
    last = model.forward(Tensor::from_ids({id}, {1, 1}), fo);
  }
  st.generated_tokens = int64_t(out.size());
  st.generation_seconds = now() - t1;
  if (stats) *stats = st;
  return out;
}

std::vector<std::vector<int32_t>> generate_batch(const Model& model, const std::vector<std::vector<int32_t>>& prompts,
                                                 const GenerateOptions& opt, GenerateStats* stats) {
  FT_CHECK(opt.compute == DType::F32 || opt.compute == DType::BF16, "generate_batch: compute must be float32 or bfloat16, got ",
           dtype_name(opt.compute));
  NoGradGuard ng;
  AutocastBF16Guard bf(opt.compute == DType::BF16);
  Int8ComputeGuard i8(opt.int8_activations);
  const int64_t B = int64_t(prompts.size()), V = model.cfg.vocab_size;
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(B));
  if (B == 0) return out;
  int64_t Tp = 0;
  for (auto& p : prompts) {
    FT_CHECK(!p.empty(), "generate_batch: an empty prompt");
    for (int32_t id : p) FT_CHECK(id >= 0 && id < V, "generate_batch: token id ", id, " is outside the vocabulary [0, ", V, ")");
    Tp = std::max<int64_t>(Tp, int64_t(p.size()));
  }
  const int64_t cap = Tp + std::max<int64_t>(opt.max_tokens, 1);
  KVCache cache = model.make_cache(B, cap, opt.kv_cache);
  // Left padding: row b starts at pad[b]; pads are segment 0, real tokens segment 1.
  std::vector<int32_t> ids(size_t(B * Tp), 0), pos(size_t(B * Tp), 0), seg(size_t(B * cap), 1);
  std::vector<int64_t> len(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[size_t(b)];
    int64_t pad = Tp - int64_t(p.size());
    for (int64_t t = 0; t < Tp; ++t) {
      ids[size_t(b * Tp + t)] = t < pad ? p[0] : p[size_t(t - pad)];
      pos[size_t(b * Tp + t)] = int32_t(std::max<int64_t>(0, t - pad));
      if (t < pad) seg[size_t(b * cap + t)] = 0;
    }
    len[size_t(b)] = int64_t(p.size());
  }
  Tensor segs = Tensor::from_ids(seg, {B, cap});
  std::vector<Sampler> samplers;
  for (int64_t b = 0; b < B; ++b) {
    SamplingParams sp = opt.sampling;
    sp.seed = opt.sampling.seed + uint64_t(b);
    samplers.emplace_back(sp);
  }
  std::vector<std::vector<int32_t>> context = prompts;
  std::vector<bool> done(size_t(B), false);
  GenerateStats st;
  st.prompt_tokens = 0;
  for (auto& p : prompts) st.prompt_tokens += int64_t(p.size());
  double t0 = now();
  ForwardOptions fo;
  fo.cache = &cache;
  fo.positions = Tensor::from_ids(pos, {B, Tp});
  fo.segment_ids = segs.slice(1, 0, Tp).contiguous();
  Tensor h = model.hidden(Tensor::from_ids(ids, {B, Tp}), fo);
  Tensor logits = model.logits(h.slice(1, Tp - 1, Tp).contiguous());  // [B, 1, V]
  st.prompt_seconds = now() - t0;
  double t1 = now();
  st.finish_reason = "length";
  for (int64_t step = 0; step < opt.max_tokens; ++step) {
    std::vector<float> lg = logits.to_vector();
    std::vector<int32_t> next(size_t(B), 0), npos(static_cast<size_t>(B));
    bool all_done = true;
    for (int64_t b = 0; b < B; ++b) {
      if (done[size_t(b)]) { next[size_t(b)] = prompts[size_t(b)].back(); npos[size_t(b)] = int32_t(len[size_t(b)]); continue; }
      int32_t id = samplers[size_t(b)].sample(lg.data() + b * V, V, context[size_t(b)]);
      if (is_eos(opt, id)) done[size_t(b)] = true;
      else {
        out[size_t(b)].push_back(id);
        context[size_t(b)].push_back(id);
        ++st.generated_tokens;
        if (int64_t(out[size_t(b)].size()) >= opt.max_tokens) done[size_t(b)] = true;
      }
      next[size_t(b)] = id;
      npos[size_t(b)] = int32_t(len[size_t(b)]++);
      all_done = all_done && done[size_t(b)];
    }
    if (all_done || step + 1 == opt.max_tokens) break;
    fo.positions = Tensor::from_ids(npos, {B, 1});
    fo.segment_ids = segs.slice(1, 0, cache.len + 1).contiguous();
    logits = model.forward(Tensor::from_ids(next, {B, 1}), fo);
  }
  st.generation_seconds = now() - t1;
  if (stats) *stats = st;
  return out;
}

}  // namespace ft
