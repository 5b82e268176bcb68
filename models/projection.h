#pragma once
// A linear projection of the model and the forward of an adapter on it (PEFT semantics). The
// projection lives with the decoder (models/); attaching, reading, writing and merging adapters is
// lora/'s job (lora/adapter.h).
//   LoRA: y = W x + b + scaling · B (A dropout(x))           A [r, in], B [out, r]
//   DoRA: PEFT's formulation with a magnitude vector m [out] and the (detached) row norms of
//         W + scaling·B·A — see models/projection.cpp.
//   scaling = alpha / r, or alpha / sqrt(r) with rsLoRA.
#include <memory>
#include <string>
#include <vector>

#include "autograd/tensor.h"

namespace ft {

struct LoraAdapter {
  Tensor A;          // [r, in] float32
  Tensor B;          // [out, r] float32
  Tensor magnitude;  // [out] float32 (DoRA), undefined for plain LoRA
  float scaling = 1.0f;
  float dropout = 0.0f;
  int64_t rank() const { return A.size(0); }
};

// A linear projection of the model: base weight [out, in] (frozen unless fully fine-tuned), optional
// bias, optional adapter. `name` is the HF module path, e.g. "model.layers.0.self_attn.q_proj".
struct Projection {
  std::string name;
  Tensor weight, bias;
  std::shared_ptr<LoraAdapter> lora;
  int64_t in_features() const { return weight.size(1); }
  int64_t out_features() const { return weight.size(0); }
  // y = x·Wᵀ + b (+ adapter) (+ residual, fused for plain LoRA). graph_only: see lora_linear
  // (honoured for plain LoRA only; otherwise y is computed).
  Tensor forward(const Tensor& x, bool training, const Tensor& residual = Tensor(), bool graph_only = false) const;

 private:
  Tensor dora_forward(const Tensor& x, const Tensor& xd, bool training) const;
};

// W + s·B·A in float32 [out, in]: a new tensor (a quantized W is dequantized), no gradient.
Tensor lora_merged_weight(const Tensor& weight, const LoraAdapter& l);
// The Euclidean norm of each row of a float32 matrix [out, in], summed in double.
std::vector<double> row_norms(const Tensor& w);
// DoRA's weight norm ‖W + s·B·A‖₂ per output row [out], float32, no gradient: DoRA's init
// (lora/adapter.cpp) and forward (below) use it; merge (lora/merge.cpp) takes the double norms of the
// merged matrix it builds anyway (row_norms). W (float32/bfloat16/float16 or quantised) is read one
// row at a time (widened or dequantised into a one-row buffer per task) and B·A formed per row, so
// neither a float copy of W nor the [out, in] product exists: per row (B·A)[o,i] summed over k in
// order in fp32, w = W[o,i] + s·(B·A)[o,i] in fp32, the sum of squares in double. Parallel over rows
// (thread-count independent).
Tensor dora_weight_norm(const Tensor& weight, const LoraAdapter& l);

}  // namespace ft
