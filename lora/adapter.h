#pragma once
// Attaching adapters to a model, and reading/writing them in the PEFT and mlx-lm formats.
//
// Target selection follows PEFT: a list of names matches a module whose path equals the name or ends
// with "." + name; a single string is a regex that must match the whole module path; "all-linear"
// selects every projection of the decoder layers (lm_head excluded). `layers` restricts to those layer
// indices (PEFT layers_to_transform); rank_pattern / alpha_pattern override per module (PEFT: the
// pattern matches the end of the module path, "(.*\.)?(pattern)$").
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/model.h"
#include "autograd/param.h"

namespace ft {

struct LoraConfig {
  int64_t rank = 8;
  double alpha = 16;
  double dropout = 0.0;
  bool rslora = false;  // scaling = alpha / sqrt(r)
  bool dora = false;
  std::vector<std::string> targets = {"all-linear"};  // names, or one entry "all-linear"
  std::string target_regex;                           // when set, used instead of `targets`
  std::vector<int64_t> layers;                        // empty = all layers
  std::map<std::string, int64_t> rank_pattern;
  std::map<std::string, double> alpha_pattern;
  std::string init = "default";  // default (A Kaiming-uniform, B zero) | gaussian (A ~ N(0, 1/r), B zero)
  uint64_t seed = 0;
  std::string base_model;        // base_model_name_or_path written to adapter_config.json

  double scaling_for(int64_t r, double a) const;
};

// Resolves `layers` from "last N layers" (num_layers <= 0 or >= total: all).
std::vector<int64_t> last_layers(int64_t total, int64_t num_layers);

// Attaches fresh adapters to every matching projection; returns the trainable parameters
// (PEFT tensor names). Throws when nothing matches (names the targets and lists the module names).
std::vector<NamedParam> attach_lora(Model& model, const LoraConfig& cfg);
// Trainable parameters of already attached adapters (PEFT names), e.g. after loading an adapter.
std::vector<NamedParam> lora_parameters(Model& model);
// Removes all adapters.
void detach_lora(Model& model);

// PEFT: dir/adapter_config.json + dir/adapter_model.safetensors. Written atomically.
void save_peft_adapter(const std::string& dir, Model& model, const LoraConfig& cfg);
// Reads a PEFT adapter and attaches it (trainable = requires_grad). Validates rank/targets/shapes
// against the model: errors name the file and the tensor/key. Returns its config.
LoraConfig load_peft_adapter(const std::string& dir, Model& model, bool trainable = false);
LoraConfig parse_peft_config(const nlohmann::json& j, const std::string& source);

// mlx-lm: dir/adapter_config.json (fine_tune_type, num_layers, lora_parameters{rank,scale,dropout,keys})
// + dir/adapters.safetensors (lora_a [in, r], lora_b [r, out]; DoRA magnitude ".m").
void save_mlx_adapter(const std::string& dir, Model& model, const LoraConfig& cfg);
LoraConfig load_mlx_adapter(const std::string& dir, Model& model, bool trainable = false);

// Detects the format of an adapter directory ("peft" or "mlx") and loads it.
LoraConfig load_adapter(const std::string& dir, Model& model, bool trainable = false);

// Folds every adapter into its base weight (W += s·B·A; DoRA: W = m/‖W+s·B·A‖·(W+s·B·A)), in float32,
// then stores the result in `dtype` (F32/BF16/F16). Adapters are removed. Quantized base weights:
// the merged matrix is dequantized + update, then re-quantized with the base's bits, group size and
// scale dtype when `requantize` (what mlx-lm's fuse does by default; not for groups of 16 — a GGUF
// Q6_K base — which MLX does not write), else stored in `dtype`;
// quantized weights without an adapter stay as they are.
void merge_lora(Model& model, DType dtype, bool requantize = false);

}  // namespace ft
