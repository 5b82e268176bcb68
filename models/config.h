#pragma once
// ModelConfig: every per-family difference of the supported decoders as data, so one decoder serves
// Llama, Mistral, Qwen2, Qwen3, Gemma, Gemma 2, Gemma 3 (text) and Phi-3. Parsed from HF config.json in
// both the transformers v4 style (rope_theta / rope_scaling / rope_local_base_freq / sliding_window_pattern
// / use_sliding_window) and the v5 style (rope_parameters, possibly per layer type); layer_types wins when
// present. Semantics follow transformers' modelling code (docs: shared/docs/model-reference.md).
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "autograd/activation.h"
#include "models/rope.h"

namespace ft {


struct LayerSpec {
  bool sliding = false;  // sliding-window attention: query q sees keys k with q - window < k <= q
  int64_t window = 0;    // number of keys visible (itself included) when sliding
  RopeParams rope;       // this layer's RoPE (Gemma 3: local vs global layers differ)
  bool operator==(const LayerSpec&) const = default;
};

struct ModelConfig {
  std::string model_type;    // llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3_text, phi3
  std::string architecture;  // architectures[0] of config.json, or ""
  bool multimodal = false;   // gemma3 ForConditionalGeneration: text tower read from text_config

  int64_t vocab_size = 0, hidden_size = 0, intermediate_size = 0;
  int64_t num_layers = 0, num_heads = 0, num_kv_heads = 0, head_dim = 0;  // H*head_dim may differ from hidden
  double rms_norm_eps = 1e-6;
  int64_t max_position_embeddings = 0;
  bool tie_word_embeddings = false;  // lm_head = embed_tokens (no lm_head tensor)

  // attention
  bool qkv_bias = false;     // q_proj/k_proj/v_proj have biases (Qwen2; attention_bias elsewhere)
  bool o_bias = false;       // o_proj has a bias (attention_bias for Llama/Qwen3/Gemma*)
  bool qk_norm = false;      // per-head RMSNorm on q and k after projection (Qwen3, Gemma 3)
  bool fused_qkv = false;    // Phi-3: self_attn.qkv_proj = [q; k; v] rows
  double attn_scale = 0;     // scores = (q.k) * attn_scale: head_dim^-0.5 or query_pre_attn_scalar^-0.5
  double attn_logit_softcap = 0;  // scores = tanh(s / cap) * cap before the mask; 0 = off (Gemma 2)
  // MLP
  bool mlp_bias = false;       // gate/up/down biases (Llama mlp_bias)
  bool fused_gate_up = false;  // Phi-3: mlp.gate_up_proj = [gate; up] rows
  Activation act = Activation::SiLU;
  // norms, embeddings, head
  bool norm_plus_one = false;   // Gemma RMSNorm: x * (1 + w), computed in fp32 (also q/k norms)
  bool sandwich_norms = false;  // Gemma 2/3: post_attention_layernorm on the attention output,
                                // pre_/post_feedforward_layernorm around the MLP
  double embed_scale = 1.0;     // Gemma: sqrt(hidden_size); HF rounds it to float32, then to the
                                // embedding weight dtype (bf16: 55.4256 -> 55.5) before multiplying
  double final_logit_softcap = 0;  // logits = tanh(logits / cap) * cap; 0 = off

  std::vector<LayerSpec> layers;  // num_layers entries

  // weight names: <weight_prefix>embed_tokens.weight, <weight_prefix>layers.N.self_attn.q_proj.weight, ...
  std::string weight_prefix = "model.";      // multimodal Gemma 3: "language_model.model." (or the
                                             // "model.language_model." of transformers >= 4.52 saves;
                                             // resolve_weight_names picks the one a checkpoint has)
  std::string lm_head_name = "lm_head.weight";

  std::optional<int64_t> bos_token_id, pad_token_id;
  std::vector<int64_t> eos_token_ids;  // eos_token_id may be an int or a list
  std::string torch_dtype;             // "bfloat16", "float32", ... ("torch_dtype" or v5 "dtype"), or ""

  int64_t q_dim() const { return num_heads * head_dim; }
  int64_t kv_dim() const { return num_kv_heads * head_dim; }
  std::string weight(const std::string& suffix) const { return weight_prefix + suffix; }
  std::string layer_weight(int64_t layer, const std::string& suffix) const {
    return weight_prefix + "layers." + std::to_string(layer) + "." + suffix;
  }
  bool operator==(const ModelConfig&) const = default;
};

// Parses config.json text; `source` names the file in errors ("config.json: key 'hidden_size' must be an
// integer, got string"). Unknown model_type -> ft::Error listing the supported ones.
ModelConfig parse_model_config(const std::string& json_text, const std::string& source = "config.json");
// Reads `path` (a config.json file or a model directory holding one).
ModelConfig load_model_config(const std::string& path);

// Every tensor a checkpoint of this config holds (HF names and [out, in] shapes), in checkpoint order:
// the names and shapes of model_tensors() (models/tensors.h), defined there.
struct WeightSpec {
  std::string name;
  std::vector<int64_t> shape;
  bool operator==(const WeightSpec&) const = default;
};
std::vector<WeightSpec> expected_weights(const ModelConfig& c);

// Picks weight_prefix / lm_head_name among the layouts HF has used (model., language_model.model.,
// model.language_model.) by probing `has_tensor(name)` for <prefix>embed_tokens.weight.
void resolve_weight_names(ModelConfig& c, const std::function<bool(const std::string&)>& has_tensor);

// generation_config.json: the model's sampling defaults, with HF GenerationConfig's defaults for keys
// it does not set (top_k 50, temperature 1, top_p 1, repetition_penalty 1, do_sample false).
struct GenerationDefaults {
  std::optional<int64_t> bos_token_id, pad_token_id;
  std::vector<int64_t> eos_token_ids;
  bool do_sample = false;
  double temperature = 1.0;
  int64_t top_k = 50;
  double top_p = 1.0;
  std::optional<double> min_p;
  double repetition_penalty = 1.0;
  std::optional<int64_t> max_new_tokens, max_length;
  bool operator==(const GenerationDefaults&) const = default;
};
GenerationDefaults parse_generation_config(const std::string& json_text,
                                           const std::string& source = "generation_config.json");
// Reads dir/generation_config.json; without one, returns the defaults with the token ids of `model`.
GenerationDefaults load_generation_config(const std::string& dir, const ModelConfig* model = nullptr);

}  // namespace ft
