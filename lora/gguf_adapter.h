#pragma once
// LoRA adapter -> GGUF as llama.cpp loads it (`--lora file.gguf`, ollama `ADAPTER`):
// general.type = adapter, adapter.type = lora, adapter.lora.alpha, and per adapted projection
// `<base tensor>.lora_a` (ne [in, r] = PEFT's A [r, in]) and `.lora_b` (ne [r, out] = B [out, r]).
// llama.cpp scales every pair by alpha / r with one alpha per file; ft writes alpha so that the
// first projection's scaling is exact and folds any other projection's different scaling
// (rsLoRA, rank_pattern, alpha_pattern) into its lora_b. The base model's conventions apply to
// lora_b as to the weights it adapts (llama/mistral q/k row permutation, Gemma 2's query scale fold).
// DoRA has no llama.cpp form: refused, with the advice to merge.
#include <string>
#include <vector>

#include "lora/adapter.h"
#include "models/model.h"

namespace ft {

// Writes the adapters attached to `m` to `path`; returns notes (as export_gguf).
std::vector<std::string> export_gguf_adapter(const Model& m, const LoraConfig& cfg, const std::string& path);

// An ollama Modelfile: FROM base_gguf, ADAPTER adapter_gguf (paths as given).
std::string ollama_modelfile(const std::string& base_gguf, const std::string& adapter_gguf);

}  // namespace ft
