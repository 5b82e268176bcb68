#pragma once
// Internal: what the parts of lora/ share. adapter.cpp: targets and attaching; peft_format.cpp and
// mlx_format.cpp: the two adapter formats; merge.cpp: folding adapters into the base weights.
#include <cstdint>
#include <map>
#include <regex>
#include <string>

#include "lora/adapter.h"
#include "models/safetensors.h"

namespace ft::lora_detail {

inline const std::string kPeftPrefix = "base_model.model.";

// Layer index of a module path "...layers.N....", or -1.
int64_t layer_of(const std::string& name);
// The last component of a module path: "q_proj".
std::string short_name(const std::string& module);
// Module path -> projection.
std::map<std::string, Projection*> projection_map(Model& m);

// PEFT's rank_pattern / alpha_pattern: the first pattern matching the end of the module path.
template <class V>
V pattern_value(const std::map<std::string, V>& pat, const std::string& name, V dflt) {
  for (const auto& [k, v] : pat)
    if (std::regex_match(name, std::regex("(.*\\.)?(" + k + ")"))) return v;
  return dflt;
}

// Attaches one adapter from tensors A [r, in], B [out, r] (already in PEFT orientation); checks their
// shapes against the projection (errors name `file` and `module`).
void attach_loaded(Projection* p, Tensor A, Tensor B, Tensor mag, double scaling, double dropout, bool trainable,
                   const std::string& file, const std::string& module);
// A copy of a tensor of an open safetensors file.
Tensor record_tensor(const TensorRecord& r);

}  // namespace ft::lora_detail
