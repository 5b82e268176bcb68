#pragma once
// The `quantization` block of an MLX-quantised checkpoint's config.json (mlx-lm; duplicated as
// `quantization_config`): {"group_size": 64, "bits": 4, "mode": "affine", "<module path>":
// {"group_size", "bits"} | false, ...}. See ../shared/docs/formats.md "MLX quantised weights".
#include <map>
#include <optional>
#include <string>

#include "autograd/tensor.h"

namespace ft {

class CheckpointReader;

struct QuantSetting {
  int bits = 0, group_size = 0;
  bool operator==(const QuantSetting&) const = default;
};

struct QuantConfig {
  bool present = false;                                          // config.json has a quantization block
  QuantSetting base;                                             // its group_size / bits
  std::map<std::string, std::optional<QuantSetting>> overrides;  // module path -> setting, or nullopt (`false`: float)
  // The setting of module `path`: its override, else the base. nullopt when exempt (`false`).
  std::optional<QuantSetting> for_module(const std::string& path) const;
  bool has_override(const std::string& path) const { return overrides.count(path) > 0; }
};

// Reads dir/config.json. Errors (naming config.json and the key): a mode other than "affine", bits
// or group sizes ft does not support, a quant_method that is not MLX's (GPTQ, AWQ, bitsandbytes,
// ...), and `quantization` / `quantization_config` blocks that contradict each other.
QuantConfig read_quant_config(const std::string& dir);

// The MLX-quantised matrix of `module` ([out, in] = expect) from its checkpoint records:
// `module.weight` uint32 [out, in·bits/32], `module.scales` / `module.biases` float [out, in/group].
// Every mismatch (dtype, shapes that do not fit bits/group, a missing biases tensor) is an error
// naming the tensor and the setting.
Tensor load_quantized_matrix(const CheckpointReader& ck, const std::string& module, const Shape& expect, const QuantSetting& s);

}  // namespace ft
