#pragma once
// The one list of a decoder's tensors. Every supported family (Llama, Mistral, Qwen2, Qwen3, Gemma,
// Gemma 2, Gemma 3, Phi-3) has the same layout up to the variants in ModelConfig (fused q/k/v and
// gate/up, biases, q/k norms, sandwich norms, tied head), so the table in models/tensors.cpp has one
// row per tensor kind with the config condition that selects it, its shape as a function of the
// config, its role and its GGUF name. Loading, random initialisation, parameter counts, projections(),
// weight_bytes(), expected_weights(), export and the trainer's parameter choice all walk this list;
// a new family or name scheme (GGUF) or a storage kind (quantised) is a change here.
#include <cstdint>
#include <string>
#include <vector>

#include "models/config.h"

namespace ft {

enum class TensorRole { Embedding, Norm, Projection, Head };
// How a tensor is stored. Quantized is reserved for quantised bases (weights plus scales/biases).
enum class TensorStorage { Float, Quantized };
// Where a tensor lives in Model / DecoderLayer (Model::tensor maps a slot to the member).
enum class TensorSlot {
  Embed, FinalNorm, LmHead,
  InputNorm, PostAttnNorm, PreFfNorm, PostFfNorm, QNorm, KNorm,
  Q, K, V, QKV, O, Gate, Up, GateUp, Down,
};

struct ModelTensor {
  std::string name;       // HF name, e.g. "model.layers.3.self_attn.q_proj.weight"
  std::string gguf_name;  // llama.cpp name, e.g. "blk.3.attn_q.weight"
  std::vector<int64_t> shape;
  TensorRole role = TensorRole::Norm;
  TensorSlot slot = TensorSlot::Embed;
  int64_t layer = -1;     // decoder layer, or -1 (embedding, final norm, head)
  bool bias = false;      // a projection's bias (the projection's weight has bias == false)
  TensorStorage storage = TensorStorage::Float;
  // Big matrices (embedding, head, projection weights) take the model's storage dtype; norm weights
  // and biases are float32.
  bool matrix() const { return role != TensorRole::Norm && !bias; }
  // Projections: the module path ("model.layers.3.self_attn.q_proj").
  std::string module() const;
};

// Every tensor of a model with config `c`, in checkpoint order: embed; per layer the norms, then each
// projection's weight and bias; the final norm; lm_head unless tied. Names use c.weight_prefix and
// c.lm_head_name (see resolve_weight_names).
std::vector<ModelTensor> model_tensors(const ModelConfig& c);

}  // namespace ft
