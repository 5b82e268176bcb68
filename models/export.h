#pragma once
// Writes a model in HF layout: config.json (torch_dtype updated), generation_config.json and the
// tokenizer files copied from the source directory, and the weights as safetensors (sharded when
// larger than max_shard_bytes). Every file is written atomically (temp name + rename).
#include <cstdint>
#include <string>

#include "autograd/dtype.h"
#include "models/model.h"

namespace ft {

struct ExportOptions {
  std::string dtype;                       // "" = each tensor's current dtype (f32 stays f32; quantized matrices in MLX's
                                           // layout with config.json "quantization"), else float32/bfloat16/float16 (dequantized)
  uint64_t max_shard_bytes = 5ull << 30;  // HF's default 5 GB
};

void export_model(const Model& model, const std::string& dir, const ExportOptions& opt);

}  // namespace ft
