#pragma once
// The one decoder for every supported family. Per-family differences are data in ModelConfig
// (models/config.h); the forward pass below reads them, it is not copied per family.
//
//   h = embed[ids] · embed_scale
//   per layer:  a = attn(norm_in(h));           (sandwich: a = post_attn_norm(a))    h = h + a
//               m = mlp(norm_2(h));             (sandwich: m = post_ff_norm(m))      h = h + m
//               norm_2 = pre_ff_norm (sandwich) or post_attention_layernorm
//   logits = softcap(final_norm(h) · W_lmᵀ)
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "models/projection.h"
#include "autograd/param.h"
#include "models/config.h"
#include "models/tensors.h"

namespace ft {

struct DecoderLayer {
  Tensor input_norm, post_attn_norm, pre_ff_norm, post_ff_norm, q_norm, k_norm;  // undefined when unused
  Projection q, k, v, qkv, o;          // qkv used instead of q/k/v when cfg.fused_qkv
  Projection gate, up, gate_up, down;  // gate_up used instead of gate/up when cfg.fused_gate_up
};

// Keys and values of past positions, per layer: [B, capacity, Hkv, D], float32 or bfloat16
// (Model::make_cache).
struct KVCache {
  std::vector<Tensor> k, v;
  int64_t len = 0, capacity = 0, batch = 0;
  int64_t max_seq_seen = 0;  // for RoPE types that depend on the running length (dynamic NTK)
};

struct ForwardOptions {
  bool training = false;         // dropout on
  int64_t checkpoint_every = 0;  // gradient checkpointing: recompute every k-th block (1 = all; 0 = off)
  bool checkpoint_keep_qkv = true;  // selective (keep q/k/v, recompute the rest) or full (keep only x)
  Tensor positions;              // int32 [B, T]: explicit positions (packing); default offset + t
  Tensor segment_ids;            // int32 [B, T]: packed rows (no attention across segments)
  KVCache* cache = nullptr;      // decode: appends keys/values, attends to the cache
};

struct LoadOptions {
  // Storage dtype of the big matrices (projections, embeddings): "" keeps the checkpoint's dtype
  // (f16 becomes f32), "float32", "bfloat16" or "float16" converts. Norm weights and biases are always
  // float32.
  std::string dtype;
  // Quantise on load (0 = off): every matrix (embeddings, LM head, projections) whose input dimension
  // is a multiple of group_size, with MLX's affine rounding (autograd/quant.h); the rest stays as
  // dtype says. An MLX-quantised checkpoint is read as it is (its config.json quantization block).
  int quantize = 0;
  int group_size = 64;
};

class Model {
 public:
  ModelConfig cfg;
  Tensor embed, lm_head, final_norm;  // lm_head aliases embed when tied
  std::vector<DecoderLayer> layers;
  std::string dir;
  int64_t checkpoint_parameters = 0;  // elements of every tensor in the checkpoint files
  std::string checkpoint_dtype;       // dtype of most checkpoint bytes
  // The dtype written models keep by default: the checkpoint's bfloat16 / float16, else float32.
  DType base_dtype() const {
    return checkpoint_dtype == "BF16" ? DType::BF16 : checkpoint_dtype == "F16" ? DType::F16 : DType::F32;
  }

  static Model load(const std::string& dir, const LoadOptions& opt = {});
  // A freshly initialised model from dir/config.json alone (training from scratch): matrices
  // ~ N(0, std) (HF's initializer_range, default 0.02), norm weights 1 (Gemma-style: 0), biases 0.
  static Model init_random(const std::string& dir, uint64_t seed, double std = 0.0);
  // True when dir holds weights (model.safetensors or a sharded index).
  static bool has_weights(const std::string& dir);

  // ids int32 [B, T] -> final hidden states [B, T, hidden] (after the final norm).
  Tensor hidden(const Tensor& ids, const ForwardOptions& opt = {}) const;
  // hidden [..., hidden] -> logits [..., vocab] (final softcap applied).
  Tensor logits(const Tensor& hidden) const;
  Tensor forward(const Tensor& ids, const ForwardOptions& opt = {}) const { return logits(hidden(ids, opt)); }
  // Summed token cross-entropy of logits(hidden) against targets (int32, one per row of hidden;
  // -100 = ignored), fused with the LM head: the [rows, vocab] logits are never materialised.
  Tensor loss_sum(const Tensor& hidden, const Tensor& targets) const;

  // dtype of the cached keys/values: F32 (default) or BF16 (half the memory and the bytes each
  // decode step reads; keys/values rounded to bf16, as a bf16 model's cache in HF).
  KVCache make_cache(int64_t batch, int64_t capacity, DType dtype = DType::F32) const;

  // The member a row of model_tensors(cfg) names (undefined when this model lacks it); for a
  // projection's row, its weight or bias.
  Tensor& tensor(const ModelTensor& t);
  const Tensor& tensor(const ModelTensor& t) const;
  // The projection a row of role Projection belongs to; nullptr for other roles.
  Projection* projection(const ModelTensor& t);
  const Projection* projection(const ModelTensor& t) const;

  // Full fine-tuning: every weight whose HF name `want` accepts becomes a float32 trainable copy;
  // returns them (HF names) in the order embedding, final norm, head, layer norms, projections.
  std::vector<NamedParam> make_trainable(const std::function<bool(const std::string&)>& want);

  // Every linear projection in the model (module path in Projection::name).
  std::vector<Projection*> projections();
  // Bytes of base weights as stored (adapters excluded; quantized matrices: codes + scales + biases).
  int64_t weight_bytes() const;
  // The matrices (embedding, LM head, projections) that are quantized (autograd/quant.h), by name.
  std::vector<std::pair<std::string, const Tensor*>> quantized_matrices() const;
  bool quantized() const { return !quantized_matrices().empty(); }

 private:
  // graph_only: the layer's output value will not be read (a checkpointed layer recomputed for
  // backward): its last projection only records its node (lora_linear's graph_only).
  // One decoder block = layer_qkv (norm, q/k/v projections, q/k norms, RoPE) then layer_rest
  // (attention, o projection, MLP, residuals). Gradient checkpointing recomputes only layer_rest:
  // q, k, v stay saved (selective checkpointing: the cheapest third of the block to keep).
  struct Qkv {
    Tensor q, k, v;  // [B,T,Hq,D], [B,T,Hkv,D] x 2, after RoPE
  };
  Qkv layer_qkv(int64_t i, const Tensor& x, const Tensor& cos, const Tensor& sin, const ForwardOptions& opt) const;
  Tensor layer_rest(int64_t i, const Tensor& x, Qkv qkv, const ForwardOptions& opt, int64_t offset,
                    bool graph_only = false) const;
};


}  // namespace ft
