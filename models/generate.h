#pragma once
// Text generation with a KV cache: one prefill pass over the prompt, then one decode step per token.
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "models/model.h"
#include "models/sampling.h"

namespace ft {

struct GenerateOptions {
  int64_t max_tokens = 256;
  SamplingParams sampling;
  std::vector<int32_t> eos_ids;  // stop (the EOS token is not emitted) on any of these
  DType kv_cache = DType::F32;   // KV cache dtype: F32 or BF16 (half the memory; faster at long contexts)
  // Matmul precision with bf16 weights (autograd/ops.h, AutocastBF16Guard): F32 = exact fp32 on every CPU
  // (default; transformers with dtype=float32), BF16 = inputs rounded to bf16, fp32 accumulation (faster
  // where the CPU has bf16 hardware).
  DType compute = DType::F32;
  // Opt-in, inexact (autograd/quant.h qgemv_int8 / qgemm_int8, Int8ComputeGuard): the products with
  // quantised weights (prompt GEMMs and decode GEMVs) round their input to int8 per block of 32 and
  // sum integer products, as llama.cpp does.
  // Orthogonal to `compute` (which concerns bf16 weights); off = exact fp32.
  bool int8_activations = false;
};

struct GenerateStats {
  int64_t prompt_tokens = 0, generated_tokens = 0;
  double prompt_seconds = 0, generation_seconds = 0;
  double prompt_tps() const { return prompt_seconds > 0 ? double(prompt_tokens) / prompt_seconds : 0; }
  double generation_tps() const { return generation_seconds > 0 ? double(generated_tokens) / generation_seconds : 0; }
  std::string finish_reason;  // "eos", "length", "stop"
  std::vector<float> margins;  // generate(): top-1 minus top-2 logit of each step (how firm a greedy choice was)
};

// The ids that end a generation, one list for generate, eval and training samples: the model
// directory's generation_config.json eos_token_id, config.json's, and the tokenizer's EOS (sorted,
// without duplicates).
std::vector<int32_t> eos_ids(const Model& model, std::optional<int32_t> tokenizer_eos);

// Calls on_token(id) for each generated token; returning false stops (e.g. a stop string matched).
// Returns the generated ids (EOS excluded).
std::vector<int32_t> generate(const Model& model, const std::vector<int32_t>& prompt, const GenerateOptions& opt,
                              const std::function<bool(int32_t)>& on_token, GenerateStats* stats = nullptr);

// Many prompts decoded together (left-padded; per-row positions; pads masked out). Each row stops on
// its own EOS or max_tokens. Greedy results equal generate() on each prompt alone.
std::vector<std::vector<int32_t>> generate_batch(const Model& model, const std::vector<std::vector<int32_t>>& prompts,
                                                 const GenerateOptions& opt, GenerateStats* stats = nullptr);

}  // namespace ft
